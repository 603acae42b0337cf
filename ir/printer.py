"""Print a Graph as IR text that ``parse_ir`` reads back exactly (grammar: ir/ir.lark).

    graph @mlp(%x: f32[batch,784]) -> (%z: f32[batch,128]) {
      %w = const f32[784,128] @weights[0:401408]
      %h = MatMul(%x, %w) : f32[batch,128]
      %z = Relu(%h) : f32[batch,128]
    }

One op per line, a type on every value. Names that are not plain identifiers are quoted
(``%"gpu_0/conv 1"``); floats print in their shortest exact form (``inf``, ``nan``, ``-0.0``).
Constant data prints inline when small (``[1.0, 2.5]``), as ``splat(0.0)`` when every element
is the same, as a slice ``@weights[a:b]`` of a weights blob when one is given, else as
``hex"..."`` bytes (little-endian), so the text alone is always exact. After lowering, a
kernel op lists its dispatches below it and the graph ends with its shaders' WGSL; after
planning, values carry ``at @buffer[start:end]`` placements.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .graph import Graph, Op, Value
from .kernel import Dim, Kernel, Ref, Slot
from .symbolic import Expr
from .types import DType, TensorType

INLINE_LIMIT = 16  # constants with at most this many elements print their values inline
BLOB_ALIGN = 64  # byte alignment of each tensor in a weights blob

_BARE_SYM = re.compile(r"[A-Za-z0-9_.$/-]+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_INDENT = "  "
# Words the grammar reads as keywords somewhere: never printed bare where a name is meant.
RESERVED = frozenset(
    "stage weights graph const opset metadata names buffer shader dispatch grid write at workgroup fold flops "
    "splat true false none inf nan hex dims dim _".split()
)
_CANONICAL_NAN = 0x7FF8000000000000


class WeightBlob:
    """The bytes that ``@weights[a:b]`` slices refer to, appended as constants print.

    Identical tensors are stored once. With ``keep=False`` only offsets are computed (for
    text shown on a terminal, where the blob itself is not wanted)."""

    def __init__(self, keep: bool = True):
        self.keep = keep
        self.data = bytearray()
        self.size = 0
        self._seen: dict[bytes, tuple[int, int]] = {}

    def add(self, arr: np.ndarray) -> tuple[int, int]:
        raw = np.ascontiguousarray(arr).tobytes()
        key = hashlib.sha256(arr.dtype.str.encode() + raw).digest()
        if key in self._seen:
            return self._seen[key]
        start = -(-self.size // BLOB_ALIGN) * BLOB_ALIGN
        if self.keep:
            self.data += bytes(start - len(self.data)) + raw
        self.size = start + len(raw)
        self._seen[key] = (start, self.size)
        return start, self.size

    def __bytes__(self) -> bytes:
        return bytes(self.data)


# -- names and literals ---------------------------------------------------------------------------
def quote(s: str) -> str:
    """A string literal: JSON-like escapes, non-printable characters as \\uXXXX / \\UXXXXXXXX."""
    out = ['"']
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def sym(sigil: str, name: str) -> str:
    """%value, @global or #node, quoted unless the name is plain."""
    return sigil + (name if _BARE_SYM.fullmatch(name) else quote(name))


def word(name: str) -> str:
    """An op kind, domain, dict key or dim symbol: bare if a plain non-reserved word."""
    return name if _WORD.fullmatch(name) and name not in RESERVED else quote(name)


def kernel_text(k: Kernel) -> str:
    """A kernel after its shader's name: ``(buffers) workgroup(n) [fold(...)]`` and its parts
    as a text block, with ``${name}`` for a buffer reference and ``${@slot}`` for a slot."""
    buffers = ", ".join(f"{b.name}: {word(b.elem)} {b.access}" for b in k.buffers)
    fold = f" fold({k.fold.gx}, {k.fold.gy}, {k.fold.total}, {k.fold.x}, {k.fold.y})" if k.fold else ""
    text = "".join(
        p
        if isinstance(p, str)
        else "${"
        + (
            p.name
            if isinstance(p, Ref)
            else ("#" if isinstance(p, Dim) else "@") + (p.kind if isinstance(p, Slot) else p.name)
        )
        + "}"
        for p in k.parts
    )
    # a text block ends at the first """: a text holding one, or ending in ", is quoted
    body = '"""\n' + text + '"""' if '"""' not in text and not text.endswith('"') else quote(text)
    return f"({buffers}) workgroup({k.workgroup}){fold} {body}"


def float_text(x: float) -> str:
    """A Python float in a form that parses back to the same bits (inf, nan, -0.0 included)."""
    if math.isnan(x):
        bits = struct.unpack("<Q", struct.pack("<d", x))[0]
        return "nan" if bits == _CANONICAL_NAN else f"nan(0x{bits:016x})"
    s = repr(x)
    return s if any(c in s for c in ".en") else s + ".0"


def dim_text(d) -> str:
    """A dim: an int, a symbol's name, ``(expr)`` for a symbolic expression, or an unbound name."""
    if isinstance(d, int):
        return str(d)
    if isinstance(d, Expr):
        text = str(d)
        return text if len(d.symbols) == 1 and text == next(iter(d.symbols)).name else f"({text})"
    return word(d)


def type_text(t: TensorType) -> str:
    return f"{t.dtype.value}[{','.join(dim_text(d) for d in t.shape)}]"


# -- tensor data ---------------------------------------------------------------------------------
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_INT_LIKE = (DType.u4, DType.i4, DType.u2, DType.i2)


def bits_view(a: np.ndarray) -> np.ndarray | None:
    """``a`` seen as unsigned integers of its item size (bitwise compares), if it has one."""
    u = _UINT.get(a.dtype.itemsize)
    if u is None or a.dtype == np.dtype(object):
        return None
    return a.view(u)


def splat_of(a: np.ndarray) -> np.ndarray | None:
    """The one element (as a 0-d array) if every element of ``a`` has the same bits."""
    if a.size < 2 or a.dtype == np.dtype(object):
        return None
    first = a[(slice(0, 1),) * a.ndim].reshape(())
    if all(s == 0 for s in a.strides):
        return first.copy()
    bits = bits_view(a)
    if bits is None:
        raw = first.tobytes()
        flat = a.reshape(-1)
        return first.copy() if all(flat[i : i + 1].tobytes() == raw for i in range(flat.size)) else None
    flat = bits.reshape(-1)
    ref = flat[0]
    if flat[-1] != ref or flat[flat.size // 2] != ref:  # most non-splats differ here already
        return None
    step = 1 << 22
    for i in range(0, flat.size, step):
        if not (flat[i : i + step] == ref).all():
            return None
    return first.copy()


def _elements(a: np.ndarray, dt: DType) -> list[str] | None:
    """Decimal text of each element, or None if decimals would not give back the same bits."""
    flat = a.reshape(-1)
    if dt == DType.string or a.dtype == np.dtype(object):
        vals = flat.tolist()
        if not all(isinstance(v, str) for v in vals):
            raise ValueError(f"a {dt} tensor holds non-string elements")
        return [quote(v) for v in vals]
    if dt == DType.bool:
        return ["true" if v else "false" for v in flat.tolist()]
    if dt.is_int or dt in _INT_LIKE:
        text = [str(int(v)) for v in flat]
        back = np.array([int(s) for s in text], dtype=np.uint64 if dt == DType.u64 else np.int64)
        return text if _same_bits(back.astype(a.dtype), flat) else None
    if dt in (DType.c64, DType.c128):
        return None
    for fmt in (str, lambda v: float_text(float(v))):
        try:
            text = [_number(fmt(v)) for v in flat]
            with np.errstate(all="ignore"):
                back = np.array([float(s) for s in text], dtype=np.float64).astype(a.dtype)
        except (TypeError, ValueError, OverflowError):
            continue
        if _same_bits(back, flat):
            return text
    return None


def _number(s: str) -> str:
    if s in ("inf", "-inf", "nan"):
        return s
    if not re.fullmatch(r"-?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)", s):
        if re.fullmatch(r"-?[0-9]+", s):
            return s + ".0"
        raise ValueError(s)
    return s


def _same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    bx, by = bits_view(x), bits_view(y)
    if bx is None or by is None:
        return x.tobytes() == y.tobytes()
    return bool(np.array_equal(bx, by))


# -- the printer ---------------------------------------------------------------------------------
class _Printer:
    def __init__(self, weights: WeightBlob | None):
        self.weights = weights
        self.lines: list[str] = []

    def data(self, a: np.ndarray, dt: DType) -> str:
        if a.dtype != dt.numpy:
            raise ValueError(f"data of dtype {a.dtype} cannot print as {dt}")
        if a.size > 1:
            one = splat_of(a)
            if one is not None:
                elems = _elements(one.reshape(1), dt)
                return f"splat({elems[0] if elems else _hex(one)})"
        if a.size <= INLINE_LIMIT or a.dtype == np.dtype(object):
            elems = _elements(a, dt)
            if elems is not None:
                return "[" + ", ".join(elems) + "]"
        if self.weights is not None:
            start, end = self.weights.add(a)
            return f"@weights[{start}:{end}]"
        return _hex(a)

    def value(self, v: Any, depth: int, scope: _Names) -> str:
        """An attribute / metadata literal."""
        if isinstance(v, (bool, np.bool_)):
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return float_text(float(v))
        if isinstance(v, str):
            return quote(v)
        if v is None:
            return "none"
        if isinstance(v, Expr):
            return f"dim({quote(str(v))})"
        if isinstance(v, np.ndarray):
            dt = DType.string if v.dtype == np.dtype(object) else DType.from_numpy(v.dtype)
            return f"{type_text(TensorType(dt, v.shape))} {self.data(v, dt)}"
        if isinstance(v, Graph):
            return self.graph_text(v, depth, scope)
        if isinstance(v, list):
            return "[" + ", ".join(self.value(x, depth, scope) for x in v) + "]"
        if isinstance(v, tuple):
            inner = [self.value(x, depth, scope) for x in v]
            return "(" + inner[0] + ",)" if len(inner) == 1 else "(" + ", ".join(inner) + ")"
        if isinstance(v, dict):
            return self.dict_text(v, depth, scope)
        raise TypeError(f"cannot print a {type(v).__name__} ({v!r:.60}) in IR text")

    def dict_text(self, d: dict, depth: int, scope: _Names) -> str:
        items = []
        for k, x in d.items():
            if not isinstance(k, str):
                raise TypeError(f"dict keys must be strings in IR text, not {k!r}")
            items.append(f"{word(k)} = {self.value(x, depth, scope)}")
        return "{" + ", ".join(items) + "}"

    # graphs ---------------------------------------------------------------------------------
    def graph_text(self, g: Graph, depth: int, outer: _Names | None) -> str:
        saved = self.lines
        self.lines = []
        self.graph(g, depth, outer)
        text = "\n".join(self.lines)
        self.lines = saved
        return text

    def graph(self, g: Graph, depth: int, outer: _Names | None) -> None:
        names = _Names(outer)
        pad = _INDENT * (depth + 1)
        params = []
        for v in g.inputs:
            names.define(v)
            params.append(f"{sym('%', v.name)}: {type_text(v.type)}{_stored(v)}{_place(v)}")
        own_consts = [v for v in g.constants() if outer is None or not outer.has(v)]
        for v in own_consts:
            names.define(v)
        for op in g.ops:
            for v in op.outputs:
                names.define(v)
        for v in g.outputs:
            names.ref(v)
        results = ", ".join(f"{names.ref(v)}: {type_text(v.type)}" for v in g.outputs)
        head = f"graph {sym('@', g.name)}({', '.join(params)}) -> ({results}) {{"
        self.lines.append(head)
        if g.opset:
            self.lines.append(pad + "opset " + self.dict_text(g.opset, depth + 1, names))
        if g.metadata:
            self.lines.append(pad + "metadata " + self.dict_text(g.metadata, depth + 1, names))
        for buf, spec in g.buffers.items():
            self.lines.append(f"{pad}buffer {sym('@', buf)} {self.dict_text(spec, depth + 1, names)}")
        for v in own_consts:
            self.lines.append(
                f"{pad}{sym('%', v.name)} = const {type_text(v.type)}{_stored(v)} {self.data(v.data, v.dtype)}{_place(v)}"
            )
        for op in g.ops:
            self.op(op, depth + 1, names)
        state = _name_state(g, names)  # after the ops: it is bookkeeping, not what one reads first
        if state:
            self.lines.append(pad + "names " + self.dict_text(state, depth + 1, names))
        for name, kernel in g.shaders.items():
            self.lines.append(f"{pad}shader {sym('@', name)}{kernel_text(kernel)}")
        self.lines.append(_INDENT * depth + "}")

    def op(self, op: Op, depth: int, names: _Names) -> None:
        pad = _INDENT * depth
        outs = ", ".join(sym("%", v.name) for v in op.outputs)
        ins = ", ".join("_" if v is None else names.ref(v) for v in op.inputs)
        callee = (word(op.domain) + "::" if op.domain else "") + word(op.kind)
        line = f"{pad}{outs + ' = ' if outs else ''}{callee}({ins})"
        if op.attrs:
            line += " " + self.dict_text(op.attrs, depth, names)
        if op.outputs:
            line += " : " + ", ".join(type_text(v.type) + _stored(v) + _place(v) for v in op.outputs)
        if op.name:
            line += " " + sym("#", op.name)
        self.lines.append(line)
        for d in op.dispatches:
            binds = []
            for b in d.bindings:
                text = ("write " if b.write else "") + names.ref(b.value)
                if b.size is not None:
                    text += f"[{b.offset}:{b.offset + b.size}]"
                elif b.offset:
                    text += f"[{b.offset}:]"
                binds.append(text)
            grid = ", ".join(dim_text(n) for n in d.grid)
            line = f"{pad}{_INDENT}dispatch {sym('@', d.shader)}({', '.join(binds)}) grid({grid})"
            if d.inplace:
                line += " inplace(" + ", ".join(f"{r} -> {w}" for r, w in d.inplace) + ")"
            if d.flops != 0:
                line += f" flops({dim_text(d.flops)})"
            self.lines.append(line)


class _Names:
    """Printed names of one graph's values, falling back to the enclosing graph's."""

    def __init__(self, outer: _Names | None):
        self.outer = outer
        self.by_id: dict[int, str] = {}
        self.by_name: dict[str, int] = {}

    def define(self, v: Value) -> None:
        if id(v) in self.by_id:
            raise ValueError(f"%{v.name} is defined twice (as an input, constant or op output)")
        if v.name in self.by_name:
            raise ValueError(f"two different values are named %{v.name}; IR text needs unique names")
        self.by_id[id(v)] = v.name
        self.by_name[v.name] = id(v)

    def has(self, v: Value) -> bool:
        return id(v) in self.by_id or (self.outer is not None and self.outer.has(v))

    def ref(self, v: Value) -> str:
        scope: _Names | None = self
        while scope is not None:
            if id(v) in scope.by_id:
                return sym("%", v.name)
            if v.name in scope.by_name:
                break  # shadowed by another value of that name: the text could not say which
            scope = scope.outer
        raise ValueError(f"%{v.name} is used but not defined in this graph or an enclosing one")


def _place(v: Value) -> str:
    p = v.placement
    return "" if p is None else f" at {sym('@', p.buffer)}[{p.offset}:{p.offset + p.size}]"


def _stored(v: Value) -> str:
    """A value's storage type when not the dtype policy's: ``f32[4] stored f16``."""
    return "" if v.storage is None else f" stored {v.storage.value}"


def _hex(a: np.ndarray) -> str:
    return 'hex"' + np.ascontiguousarray(a).tobytes().hex() + '"'


def name_counter(g: Graph) -> int:
    """The next number Graph.fresh_name will use (read without advancing it)."""
    m = re.fullmatch(r"count\((\d+)\)", repr(g._counter))
    if m:
        return int(m[1])
    import itertools

    n = next(g._counter)
    g._counter = itertools.count(n)
    return n


def _name_state(g: Graph, names: _Names) -> dict:
    state: dict[str, Any] = {}
    n = name_counter(g)
    if n:
        state["next"] = n
    retired = sorted(g._names - set(names.by_name))
    if retired:
        state["retired"] = retired
    return state


# -- public API ----------------------------------------------------------------------------------
HEADER = "// onnx2wgsl IR"


def print_ir(
    g: Graph,
    *,
    stage: str | None = None,
    weights: WeightBlob | None = None,
    weights_file: str | None = None,
) -> str:
    """The text form of ``g``; ``parse_ir`` reads it back to an equal graph.

    ``stage`` records the compile stage the graph is after. With ``weights``, constants too
    big to print inline go to that blob as ``@weights[a:b]`` slices (save ``bytes(weights)``
    beside the text); without, they print as hex and the text is self-contained.
    ``weights_file`` names the blob's file in the header (default: FILE.weights.bin)."""
    p = _Printer(weights)
    p.lines.append(HEADER)
    if stage is not None:
        p.lines.append(f"stage {quote(stage)}")
    if weights_file is not None:
        p.lines.append(f"weights {quote(weights_file)}")
    if g.symbols:
        ranges = ", ".join(f"{s.name} = {s.lo}..{s.hi}" for s in g.symbols.values())
        p.lines.append(f"dims {{{ranges}}}")
    p.graph(g, 0, None)
    return "\n".join(p.lines) + "\n"


def save_ir(g: Graph, path: str | Path, *, stage: str | None = None) -> Path:
    """Write ``g`` as ``path`` (text) plus ``FILE.weights.bin`` when constants need a blob."""
    from .parser import weights_path

    path = Path(path)
    blob = WeightBlob()
    text = print_ir(g, stage=stage, weights=blob)
    path.write_text(text, encoding="utf-8")
    wpath = weights_path(path)
    if blob.size:
        wpath.write_bytes(bytes(blob))
    elif wpath.exists():
        wpath.unlink()  # a stale blob from an earlier save must not pair with this text
    return path

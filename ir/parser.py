"""Parse IR text (the grammar is ir/ir.lark) back into a Graph.

``parse_ir(print_ir(g, weights=blob), weights=blob)`` rebuilds ``g`` exactly: names, types,
attributes, constant bytes, kernel dispatches, shaders, placements and buffers. Every
problem in the text, from a stray character to a use of an undefined value, is a
``ParseError`` that names the line, the column, the offending text and what was expected.

Parsing runs in two steps: lark's LALR parser with an inline Transformer turns the text
into small records (types, tensors and literals are built right away, with the token's
position at hand for errors), then ``_Builder`` resolves value names in order, scope by
scope (nested graph attributes may refer to values of the graph around them).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from onnx2wgsl.errors import InternalError, Onnx2WgslError

from .graph import Binding, Dispatch, Graph, Op, Placement, Value
from .kernel import SLOTS, Buffer, Dim, Fold, Kernel, Ref, Slot
from .symbolic import Expr, Symbol, SymbolicError, parse_expr
from .types import DType, TensorType

GRAMMAR = Path(__file__).with_name("ir.lark")
# Splat constants up to this size become ordinary arrays; bigger ones are read-only
# broadcast views of one element, so a 400 MB weight fill costs no memory to parse.
_SPLAT_MATERIALIZE_BYTES = 1 << 16


class ParseError(Onnx2WgslError):
    """IR text that does not parse: where (line, column), what was found, what was expected."""

    def __init__(
        self,
        message: str,
        line: int = 0,
        column: int = 0,
        *,
        text: str = "",
        expected: list[str] | None = None,
        source: str = "<text>",
    ):
        self.message = message
        self.line = line
        self.column = column
        self.text = text
        self.expected = sorted(set(expected or []))
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}: " if self.line else f"{self.source}: "
        out = where + self.message
        if self.expected:
            out += f"; expected {_one_of(self.expected)}"
        return out


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)


@dataclass
class IRModule:
    """A parsed IR file: its graph, the compile stage it was dumped after, its weights file name."""

    graph: Graph
    stage: str | None = None
    weights_file: str | None = None


# -- tokens -------------------------------------------------------------------------------------
_ESCAPE = re.compile(r'\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(["\\/bfnrt]))|\\')
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class _Fail(Exception):
    """Raised inside the Transformer; turned into a ParseError with the source name."""

    def __init__(self, message: str, tok: Token | None, expected: list[str] | None = None):
        self.message, self.tok, self.expected = message, tok, expected
        super().__init__(message)


def _unquote(tok: Token, body: str | None = None) -> str:
    s = str(tok) if body is None else body
    inner = s[1:-1]
    if "\\" not in inner:
        return inner

    def repl(m: re.Match) -> str:
        if m[1] or m[2]:
            code = int(m[1] or m[2], 16)
            if code > 0x10FFFF:
                raise _Fail(f"bad escape \\U{m[2]} in a string (beyond U+10FFFF)", tok)
            return chr(code)
        if m[3]:
            return _SIMPLE[m[3]]
        raise _Fail(f"bad escape in string {s[:40]}", tok, [r"\" \\ \/ \b \f \n \r \t \uXXXX \UXXXXXXXX"])

    return _ESCAPE.sub(repl, inner)


def _sym(tok: Token) -> str:
    """The name of a %local, @global or #node token (quoted or bare)."""
    body = str(tok)[1:]
    return _unquote(tok, body) if body.startswith('"') else body


def _word(tok: Token) -> str:
    return _unquote(tok) if tok.type == "STRING" else str(tok)


def _int(tok: Token) -> int:
    return int(str(tok))


def _kernel_parts(body: str, tok: Token) -> tuple:
    """A kernel's parts from its printed text: ``${name}`` a buffer reference, ``${@slot}`` a slot."""
    pieces = body.split("${")
    parts: list = [pieces[0]]
    for piece in pieces[1:]:
        name, brace, rest = piece.partition("}")
        if not brace or not name:
            raise _Fail("a kernel's text has a ${ without a name and }", tok)
        if name[0] == "@":
            if name[1:] not in SLOTS:
                raise _Fail(f"a kernel's text names unknown slot ${{{name}}}; slots are {list(SLOTS)}", tok)
            parts.append(Slot(name[1:]))
        elif name[0] == "#":
            parts.append(Dim(name[1:]))
        else:
            parts.append(Ref(name))
        parts.append(rest)
    return tuple(p for p in parts if p != "")


def _float(tok: Token) -> float:
    s = str(tok)
    if s.startswith("nan("):
        bits = int(s[4:-1], 16)
        return struct.unpack("<d", struct.pack("<Q", bits))[0]
    return float(s)


_DTYPES = {d.value: d for d in DType}
_INT_LIKE = {DType.u4, DType.i4, DType.u2, DType.i2}


def _dtype(tok: Token) -> DType:
    dt = _DTYPES.get(str(tok))
    if dt is None:
        raise _Fail(f"unknown dtype {str(tok)!r}", tok, list(_DTYPES))
    return dt


# -- tensors ------------------------------------------------------------------------------------
def _count(t: TensorType, tok: Token) -> int:
    if not t.is_static:
        raise _Fail(f"tensor data needs a static shape, not {t}", tok)
    if any(d < 0 for d in t.shape):
        raise _Fail(f"tensor data needs dims >= 0, not {t}", tok)
    n = math.prod(t.shape)
    if n * max(t.dtype.itemsize, 1) > 1 << 62:
        raise _Fail(f"tensor {t} is too large", tok)
    return n


def _scalars(dt: DType, toks: list[Token], first: Token) -> np.ndarray:
    """Decimal / keyword / string scalars -> a 1-D array of dtype ``dt`` (exactly as printed)."""
    npdt = dt.numpy
    kinds = {t.type for t in toks}
    try:
        if dt == DType.string or npdt == np.dtype(object):
            _expect_kinds(toks, {"STRING"}, "strings")
            return np.array([_unquote(t) for t in toks] or [], dtype=object)
        if dt == DType.bool:
            _expect_kinds(toks, {"TRUE", "FALSE"}, "true or false")
            return np.array([t.type == "TRUE" for t in toks], dtype=np.bool_)
        if dt.is_int or dt in _INT_LIKE:
            _expect_kinds(toks, {"INT"}, "integers")
            ints = [_int(t) for t in toks]
            info_lo, info_hi = _int_range(dt)
            for t, v in zip(toks, ints):
                if not info_lo <= v <= info_hi:
                    raise _Fail(f"{v} is out of range for {dt}", t)
            return np.array(ints, dtype=np.uint64 if dt == DType.u64 else np.int64).astype(npdt)
        if "HEX" in kinds:
            raise _Fail("hex data only stands for a whole tensor or a splat", first)
        _expect_kinds(toks, {"INT", "FLOAT"}, "numbers")
        with np.errstate(all="ignore"):
            return np.array([_float(t) for t in toks], dtype=np.float64).astype(npdt)
    except _Fail:
        raise
    except (ValueError, OverflowError, TypeError) as e:
        raise _Fail(f"values do not fit {dt}: {e}", first) from None


def _expect_kinds(toks: list[Token], allowed: set[str], what: str) -> None:
    for t in toks:
        if t.type not in allowed:
            raise _Fail(f"unexpected {str(t)[:40]!r} in tensor data", t, [what])


def _int_range(dt: DType) -> tuple[int, int]:
    bits = {DType.u4: (0, 15), DType.i4: (-8, 7), DType.u2: (0, 3), DType.i2: (-2, 1)}
    if dt in bits:
        return bits[dt]
    info = np.iinfo(dt.numpy)
    return int(info.min), int(info.max)


def _hex_bytes(tok: Token) -> bytes:
    digits = str(tok)[4:-1]
    if len(digits) % 2:
        raise _Fail("hex data has an odd number of digits", tok)
    return bytes.fromhex(digits)


def _from_bytes(dt: DType, raw, count: int, tok: Token, what: str) -> np.ndarray:
    npdt = dt.numpy
    if npdt == np.dtype(object):
        raise _Fail(f"{dt} tensors cannot come from raw bytes; write their values", tok)
    need = count * npdt.itemsize
    if len(raw) != need:
        raise _Fail(f"{what} holds {len(raw)} bytes, but {count} x {dt} need {need}", tok)
    return np.frombuffer(raw, dtype=npdt, count=count)


# -- the Transformer: text -> records -----------------------------------------------------------
@dataclass
class _GraphRec:
    tok: Token
    name: str
    params: list
    results: list
    items: list


@dataclass
class _OpRec:
    tok: Token
    outs: list[Token]
    domain: str
    kind: str
    operands: list[Token | None]
    attrs: dict
    out_types: list
    node: str
    dispatches: list


@v_args(inline=True)
class _ToRecords(Transformer):
    """Builds types, tensors and literals; leaves value names for the _Builder to resolve."""

    def __init__(self, weights):
        super().__init__()
        self.source_weights = weights  # a blob, or a callable (file name) -> blob
        self.weights = None
        self.weights_name: str | None = None
        self.type_tok: Token | None = None
        self.symbols: dict[str, Symbol] = {}  # the header's dims, which types name
        self.dims_tok: Token | None = None

    def _blob(self, tok: Token):
        if self.weights is None:
            src = self.source_weights
            if src is None:
                raise _Fail("the text refers to a weights blob, but none was given", tok)
            if callable(src):
                try:
                    src = src(self.weights_name)
                except ParseError as e:
                    raise _Fail(e.message, tok) from None
            mv = memoryview(src)
            self.weights = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
        return self.weights

    # module
    def start(self, *items):
        header = {}
        for item in items[:-1]:
            key, tok, val = item
            if key in header:
                raise _Fail(f"{key!r} is given twice", tok)
            header[key] = val
        return header, items[-1]

    def stage(self, tok):
        return ("stage", tok, _unquote(tok))

    def dims_decl(self, *decls):
        # reduced before the graph's types, which name these dims
        self.symbols = {}
        for sym in decls:
            if sym.name in self.symbols:
                raise _Fail(f"dim {sym.name!r} is declared twice", self.dims_tok)
            self.symbols[sym.name] = sym
        return ("dims", self.dims_tok, dict(self.symbols))

    def symdecl(self, name, lo, hi):
        self.dims_tok = name
        try:
            return Symbol(str(name), _int(lo), _int(hi))
        except ValueError as e:
            raise _Fail(str(e), name) from None

    def weights_file(self, tok):
        self.weights_name = _unquote(tok)
        return ("weights", tok, self.weights_name)

    # graph
    def graph(self, name, params, results, items):
        return _GraphRec(name, _sym(name), params, results, items)

    def params(self, *ps):
        return list(ps)

    results = items = operands = out_types = dispatches = bindings = params

    def param(self, local, t, stored, placement):
        return local, (t, stored), placement

    def stored(self, tok):
        dt = _dtype(tok)
        if dt != DType.f16:
            raise _Fail(f"values are stored as f16 or by the dtype policy, not {dt}", tok, ["f16"])
        return dt

    def result(self, local, t):
        return local, t

    def const(self, outs, t, stored, data, placement):
        if len(outs) != 1:
            raise _Fail("a const defines exactly one value", outs[1])
        return ("const", outs[0], (t, stored), self._tensor(t, data), placement)

    def op(self, outs, callee, operands, attrs, out_types, node, dispatches):
        outs = outs or []
        out_types = out_types or []
        tok, domain, kind = callee
        if len(out_types) != len(outs):
            raise _Fail(f"{len(outs)} results but {len(out_types)} types", tok)
        return _OpRec(
            tok,
            outs,
            domain,
            kind,
            operands,
            dict(attrs or {}),
            out_types,
            _sym(node) if node else "",
            dispatches,
        )

    def outs(self, *toks):
        return list(toks)

    def callee(self, first, second):
        if second is None:
            return first, "", _word(first)
        return first, _word(first), _word(second)

    def out_type(self, t, stored, placement):
        return (t, stored), placement

    def placement(self, buf, start, end):
        a, b = _int(start), _int(end)
        if a < 0 or b < a:
            raise _Fail(f"placement range [{a}:{b}] is reversed or negative", start)
        return Placement(_sym(buf), a, b - a)

    def dispatch(self, shader, bindings, grid, inplace, flops):
        return shader, bindings, grid, inplace or (), flops if flops is not None else 0

    def flops(self, n):
        return self.dims(n)[0]

    def inplace(self, *pairs):
        return tuple(pairs)

    def pair(self, read, write):
        return _int(read), _int(write)

    def grid(self, *ns):
        return tuple(self.dims(*ns))

    def binding(self, write, local, start, end):
        offset = _int(start) if start is not None else 0
        size = None if end is None else _int(end) - offset
        if offset < 0 or (size is not None and size < 0):
            raise _Fail("a binding range must be non-negative", start)
        return write is not None, local, offset, size

    def opset(self, tok, d):
        return ("opset", tok, dict(d))

    def metadata(self, tok, d):
        return ("metadata", tok, dict(d))

    def names(self, tok, d):
        return ("names", tok, dict(d))

    def buffer(self, name, d):
        return ("buffer", name, dict(d))

    def shader(self, name, buffers, workgroup, fold, text):
        body = str(text)[4:-3] if text.type == "TEXT" else _unquote(text)
        parts = _kernel_parts(body, text)
        # a kernel that reads a dim reads them all from the dims uniform, in the header's order
        reads = tuple(self.symbols) if any(isinstance(p, Dim) for p in parts) else ()
        kernel = Kernel(tuple(buffers), _int(workgroup), parts, fold, reads)
        problem = kernel.check()
        if problem is not None:
            raise _Fail(f"shader @{_sym(name)} {problem}", name)
        return ("shader", name, kernel)

    def kbuffers(self, *buffers):
        return list(buffers)

    def kbuffer(self, name, elem, access):
        return Buffer(str(name), _unquote(elem) if elem.type == "STRING" else str(elem), str(access))

    def kfold(self, *numbers):
        return Fold(*(_int(n) for n in numbers))

    # types and data
    def type(self, dt, dims):
        # remembered for errors in the tensor data that follows (LALR reduces it right before)
        self.type_tok = dt
        for d in dims:
            if isinstance(d, int) and d < 0:
                raise _Fail(f"a type's dims must be >= 0, not {d}", dt)
        return TensorType(_dtype(dt), tuple(dims))

    def dims(self, *toks):
        out = []
        for t in toks:
            if t.type == "INT":
                out.append(_int(t))
            elif t.type == "DIMEXPR":
                try:
                    out.append(parse_expr(str(t), self.symbols))
                except SymbolicError as e:
                    raise _Fail(str(e), t) from None
            elif t.type == "WORD" and str(t) in self.symbols:
                out.append(Expr.symbol(self.symbols[str(t)]))
            else:
                out.append(_word(t))
        return out

    def dense(self, *toks):
        return ("dense", list(toks))

    def splat(self, tok):
        return ("splat", tok)

    def hexdata(self, tok):
        return ("hex", tok)

    def blob(self, start, end):
        return ("blob", start, end)

    def _tensor(self, t: TensorType, data) -> np.ndarray:
        kind = data[0]
        tok = (data[1][0] if data[1] else self.type_tok) if kind == "dense" else data[1]
        n = _count(t, tok)
        if kind == "dense":
            toks = data[1]
            if len(toks) == 1 and toks[0].type == "HEX":
                raise _Fail("write hex data without brackets", toks[0])
            if len(toks) != n:
                raise _Fail(f"{t} needs {n} values, got {len(toks)}", tok)
            return _scalars(t.dtype, toks, tok).reshape(t.shape)
        if kind == "splat":
            if tok.type == "HEX":
                one = _from_bytes(t.dtype, _hex_bytes(tok), 1, tok, "the splat")
            else:
                one = _scalars(t.dtype, [tok], tok)
            if n * one.dtype.itemsize <= _SPLAT_MATERIALIZE_BYTES:
                return np.full(t.shape, one[0], dtype=one.dtype)
            return np.broadcast_to(one.reshape(()), t.shape)
        if kind == "hex":
            return _from_bytes(t.dtype, _hex_bytes(tok), n, tok, "the hex data").reshape(t.shape)
        start, end = _int(data[1]), _int(data[2])
        blob = self._blob(data[1])
        if not 0 <= start <= end <= len(blob):
            raise _Fail(f"@weights[{start}:{end}] is outside the {len(blob)}-byte weights blob", data[1])
        raw = blob[start:end]
        return _from_bytes(t.dtype, raw, n, data[1], f"@weights[{start}:{end}]").reshape(t.shape)

    # literals
    def dict(self, *entries):
        out = _Dict()
        for key_tok, val in entries:
            key = _word(key_tok)
            if key in out:
                raise _Fail(f"key {key!r} is given twice", key_tok)
            out[key] = val
        return out

    def entry(self, key, val):
        return key, _plain(val)

    def int(self, tok):
        return _int(tok)

    def float(self, tok):
        return _float(tok)

    def string(self, tok):
        return _unquote(tok)

    def true(self, _tok):
        return True

    def false(self, _tok):
        return False

    def none(self):
        return None

    def dimvalue(self, tok):
        # an attribute over dims kept symbolic (a lowering's size): ir/symbolic's text form
        try:
            return parse_expr(_unquote(tok), self.symbols)
        except SymbolicError as e:
            raise _Fail(str(e), tok) from None

    def list(self, *vals):
        return [_plain(v) for v in vals]

    def tuple(self, *vals):
        return tuple(_plain(v) for v in vals)

    def tensor(self, t, data):
        return self._tensor(t, data)


class _Dict(dict):
    """A dict literal as parsed (a plain dict once it becomes a value)."""


def _plain(v):
    return dict(v) if isinstance(v, _Dict) else v


# -- the Builder: records -> Graph --------------------------------------------------------------
class _Scope:
    def __init__(self, outer: _Scope | None):
        self.outer = outer
        self.values: dict[str, Value] = {}

    def define(self, v: Value, tok: Token) -> None:
        if v.name in self.values:
            raise _Fail(f"%{v.name} is defined twice", tok)
        self.values[v.name] = v

    def lookup(self, tok: Token) -> Value:
        name = _sym(tok)
        scope: _Scope | None = self
        while scope is not None:
            v = scope.values.get(name)
            if v is not None:
                return v
            scope = scope.outer
        raise _Fail(f"%{name} is used before it is defined", tok)


_DIRECTIVES = ("opset", "metadata", "names")


class _Builder:
    """Resolves names in order and builds the Graph (nested graph attributes recursively)."""

    def graph(self, rec: _GraphRec, outer: _Scope | None) -> Graph:
        scope = _Scope(outer)
        g = Graph(name=rec.name)
        for local, (t, stored), placement in rec.params:
            v = Value(_sym(local), t)
            v.placement, v.storage = placement, stored
            scope.define(v, local)
            g.inputs.append(v)
        given: dict[str, Any] = {}
        dispatches: list[tuple[Token, Dispatch]] = []
        for item in rec.items:
            if isinstance(item, _OpRec):
                dispatches += self._op(g, item, scope)
                continue
            key = item[0]
            if key == "const":
                _, tok, (t, stored), data, placement = item
                v = Value(_sym(tok), t, data=data)
                v.placement, v.storage = placement, stored
                scope.define(v, tok)
            elif key in _DIRECTIVES:
                _, tok, val = item
                if key in given:
                    raise _Fail(f"{key!r} is given twice in graph @{g.name}", tok)
                given[key] = val
                self._directive(g, key, tok, val)
            elif key == "buffer":
                _, tok, val = item
                if _sym(tok) in g.buffers:
                    raise _Fail(f"buffer @{_sym(tok)} is given twice", tok)
                g.buffers[_sym(tok)] = _resolve_plain(val, tok)
            else:  # shader
                _, tok, text = item
                if _sym(tok) in g.shaders:
                    raise _Fail(f"shader @{_sym(tok)} is given twice", tok)
                g.shaders[_sym(tok)] = text
        for tok, d in dispatches:
            if d.shader not in g.shaders:
                raise _Fail(f"dispatch names shader @{d.shader}, which the graph does not define", tok)
        for local, t in rec.results:
            v = scope.lookup(local)
            if t is not None and t != v.type:
                raise _Fail(f"result %{v.name} is declared {t}, but its value is {v.type}", local)
            g.outputs.append(v)
        names = {v.name for v in scope.values.values()}
        g._names = names | set(given.get("names", {}).get("retired", []))
        return g

    def _directive(self, g: Graph, key: str, tok: Token, val: dict) -> None:
        if key == "opset":
            for domain, version in val.items():
                if type(version) is not int:
                    raise _Fail(f"opset {domain!r} must be an integer, not {version!r}", tok)
            g.opset = val
        elif key == "metadata":
            g.metadata = _resolve_plain(val, tok)
        else:
            unknown = set(val) - {"next", "retired"}
            if unknown:
                raise _Fail(f"names takes next and retired, not {sorted(unknown)}", tok, ["next", "retired"])
            nxt = val.get("next", 0)
            retired = val.get("retired", [])
            if type(nxt) is not int or nxt < 0:
                raise _Fail("names next must be an integer >= 0", tok)
            if not isinstance(retired, list) or not all(isinstance(n, str) for n in retired):
                raise _Fail("names retired must be a list of strings", tok)
            g._counter = itertools.count(nxt)

    def _op(self, g: Graph, rec: _OpRec, scope: _Scope) -> list[tuple[Token, Dispatch]]:
        inputs = [None if t.type == "NONE_OPERAND" else scope.lookup(t) for t in rec.operands]
        outputs = []
        for tok, ((t, stored), placement) in zip(rec.outs, rec.out_types):
            v = Value(_sym(tok), t)
            v.placement, v.storage = placement, stored
            outputs.append(v)
        attrs = {k: self._resolve(v, scope) for k, v in rec.attrs.items()}
        for tok, v in zip(rec.outs, outputs):
            scope.define(v, tok)
        made = []
        for shader_tok, bindings, grid, inplace, flops in rec.dispatches:
            bs = [Binding(scope.lookup(local), off, size, write) for write, local, off, size in bindings]
            made.append((shader_tok, Dispatch(_sym(shader_tok), grid, bs, inplace, flops)))
        op = Op(
            rec.kind,
            inputs,
            outputs,
            attrs,
            name=rec.node,
            domain=rec.domain,
            dispatches=[d for _, d in made],
        )
        g.ops.append(op)
        return made

    def _resolve(self, v, scope: _Scope):
        if isinstance(v, _GraphRec):
            return self.graph(v, scope)
        if isinstance(v, list):
            return [self._resolve(x, scope) for x in v]
        if isinstance(v, tuple):
            return tuple(self._resolve(x, scope) for x in v)
        if isinstance(v, dict):
            return {k: self._resolve(x, scope) for k, x in v.items()}
        return v


def _resolve_plain(v, tok: Token):
    if isinstance(v, _GraphRec):
        raise _Fail("graphs are only allowed as op attributes", tok)
    if isinstance(v, list):
        return [_resolve_plain(x, tok) for x in v]
    if isinstance(v, tuple):
        return tuple(_resolve_plain(x, tok) for x in v)
    if isinstance(v, dict):
        return {k: _resolve_plain(x, tok) for k, x in v.items()}
    return v


# -- public API ---------------------------------------------------------------------------------
_LOCK = threading.Lock()


@functools.cache
def _lark() -> tuple[Lark, _ToRecords]:
    records = _ToRecords(None)
    parser = Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        maybe_placeholders=True,
        transformer=records,
    )
    return parser, records


def parse_module(text: str, weights=None, *, source: str = "<text>") -> IRModule:
    """Parse IR text into an IRModule (graph, stage, weights file name).

    ``weights`` is the weights blob the text's ``@weights[a:b]`` slices refer to (bytes,
    bytearray, memoryview or mmap), or a callable taking the file name the text's
    ``weights "..."`` header gives (None if it gives none) and returning the blob; it is
    called only when the text refers to the blob. Raises ParseError on any problem."""
    parser, records = _lark()
    with _LOCK:
        records.source_weights = weights
        records.weights = None
        records.weights_name = None
        records.symbols = {}
        try:
            header, rec = parser.parse(text)
            g = _Builder().graph(rec, None)
            g.symbols = header.get("dims", {})
            return IRModule(g, header.get("stage"), header.get("weights"))
        except ParseError:
            raise
        except _Fail as e:
            raise _from_fail(e, source) from None
        except VisitError as e:
            if isinstance(e.orig_exc, _Fail):
                raise _from_fail(e.orig_exc, source) from None
            raise ParseError(f"cannot build the IR: {e.orig_exc}", source=source) from None
        except UnexpectedInput as e:
            raise _from_lark(e, text, source) from None
        except (ValueError, TypeError, OverflowError, MemoryError, RecursionError) as e:
            raise ParseError(f"cannot build the IR: {type(e).__name__}: {e}", source=source) from None
        except Exception as e:  # a bug: only onnx2wgsl's errors leave the parser
            raise InternalError("parse", e) from e
        finally:
            records.source_weights = records.weights = None


def parse_ir(text: str, weights=None, *, source: str = "<text>") -> Graph:
    """Parse IR text into a Graph (see ``parse_module``)."""
    return parse_module(text, weights, source=source).graph


def load_ir(path: str | Path) -> IRModule:
    """Read an IR file and the weights blob beside it (``FILE.weights.bin`` unless its header
    names another file in the same folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParseError("IR file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParseError(f"cannot read the IR file ({e})", source=str(path)) from None

    def weights(name: str | None) -> bytes:
        blob = path.parent / name if name else weights_path(path)
        if name and (Path(name).name != name or name in (".", "..")):
            raise ParseError(
                f"the weights file {name!r} must be a plain file name beside the IR file", source=str(path)
            )
        try:
            return blob.read_bytes()
        except OSError as e:
            raise ParseError(
                f"cannot read the weights file {str(blob)!r} ({e.strerror})", source=str(path)
            ) from None

    return parse_module(text, weights, source=str(path))


def weights_path(path: str | Path) -> Path:
    """Where the weights of ``FILE.ir`` live by default: ``FILE.weights.bin``."""
    path = Path(path)
    return path.with_name(path.stem + ".weights.bin")


# -- errors -------------------------------------------------------------------------------------
def _from_fail(e: _Fail, source: str) -> ParseError:
    tok = e.tok
    if tok is None:
        return ParseError(e.message, expected=e.expected, source=source)
    return ParseError(
        e.message, tok.line or 0, tok.column or 0, text=str(tok)[:60], expected=e.expected, source=source
    )


_FRIENDLY = {
    "LOCAL": "%name", "GLOBAL": "@name", "NODE": "#node-name", "STRING": "a string",
    "TEXT": 'a """ text block', "HEX": 'hex"..."', "WORD": "a name", "INT": "an integer",
    "FLOAT": "a float", "$END": "end of text",
}  # fmt: skip


def _pretty(names) -> list[str]:
    parser, _ = _lark()
    out = []
    for n in names:
        if n in _FRIENDLY:
            out.append(_FRIENDLY[n])
            continue
        try:
            pat = parser.get_terminal(n).pattern
        except KeyError:
            out.append(n)
            continue
        out.append(f"'{pat.value}'" if pat.type == "str" else n.lower())
    return out


def _from_lark(e: UnexpectedInput, text: str, source: str) -> ParseError:
    line, col = getattr(e, "line", 0) or 0, getattr(e, "column", 0) or 0
    if isinstance(e, UnexpectedCharacters):
        rest = text[e.pos_in_stream : e.pos_in_stream + 30].split("\n")[0]
        return ParseError(
            f"unexpected character {text[e.pos_in_stream]!r} (at {rest!r})",
            line,
            col,
            text=rest,
            expected=_pretty(e.allowed or []),
            source=source,
        )
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            line, col = _end_position(text)
            return ParseError(
                "unexpected end of text", line, col, expected=_pretty(e.expected), source=source
            )
        return ParseError(
            f"unexpected {str(tok)[:40]!r}",
            tok.line or line,
            tok.column or col,
            text=str(tok)[:60],
            expected=_pretty(e.expected),
            source=source,
        )
    if isinstance(e, UnexpectedEOF):
        line, col = _end_position(text)
        return ParseError("unexpected end of text", line, col, expected=_pretty(e.expected), source=source)
    return ParseError(str(e).splitlines()[0], line, col, source=source)


def _end_position(text: str) -> tuple[int, int]:
    line = text.count("\n") + 1
    return line, len(text) - (text.rfind("\n") + 1) + 1

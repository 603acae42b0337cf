"""A compute kernel as typed parts, rendered to WGSL text once, at the end.

A lowering builds a ``Kernel``: its storage ``buffers`` (name, element type, access), the
workgroup size, an optional grid fold, and the shader as ``parts``: text, references to
buffers (``Ref``) and the places the kernel fills in itself (``Slot``: the buffer
declarations, the entry point, the run-time float helper). Passes after lowering change
these parts (the in-place pass drops a buffer and points its references at another; grid
folding is an option of the entry point), never the text; ``render`` makes the WGSL.

Code that writes shader text (templates, Python string building) marks a reference or a
slot with ``ref(name)`` / ``slot(kind)``: a private marker that ``Kernel.from_marked``
splits the text at. The markers are ours, so the split reads no WGSL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property

from onnx2wgsl.runtime.manifest import SUBGROUPS_HEADER

MARK = "\x00"  # never in WGSL text: it delimits our own markers

DECLARATIONS, ENTRY, F32_BITS = "bindings", "entry", "f32_bits"
SLOTS = (DECLARATIONS, ENTRY, F32_BITS)
ACCESS = ("read", "read_write")

_F32_BITS_FN = """
// WGSL makes a constant expression that evaluates to inf or nan a shader-creation error
// (browsers' Tint enforces it); a call of a user function is never a constant expression.
fn f32_bits(b: u32) -> f32 {
  return bitcast<f32>(b);
}
"""


def ref(name: str) -> str:
    """A reference to buffer ``name``, to write into shader text."""
    return f"{MARK}${name}{MARK}"


def dim(name: str) -> str:
    """A symbol's run-time value (u32), read from the dims uniform, to write into shader text."""
    return f"{MARK}#{name}{MARK}"


def slot(kind: str) -> str:
    """A slot the kernel fills in when it renders (one of SLOTS), to write into shader text."""
    assert kind in SLOTS, kind
    return f"{MARK}@{kind}{MARK}"


@dataclass(frozen=True)
class Buffer:
    """A storage buffer: the name the shader uses, its WGSL element type and its access."""

    name: str
    elem: str
    access: str  # "read" (constants) or "read_write"

    def declaration(self, index: int) -> str:
        return f"@group(0) @binding({index}) var<storage, {self.access}> {self.name}: array<{self.elem}>;"


@dataclass(frozen=True)
class Ref:
    """A use of a buffer in the shader; renders as that buffer's name."""

    name: str


@dataclass(frozen=True)
class Dim:
    """A symbol's run-time value: renders as its element of the dims uniform."""

    name: str


DIMS = "dims"  # the uniform's name in a shader: array<vec4<u32>, N>, symbol k at [k / 4][k % 4]


@dataclass(frozen=True)
class Slot:
    """Text the kernel renders itself: ``bindings`` (the declarations, numbered in order),
    ``entry`` (the entry point's attribute and signature, with its grid unfolding) or
    ``f32_bits`` (a call of the run-time bit-cast helper, appended once to the shader)."""

    kind: str


@dataclass(frozen=True)
class Fold:
    """A grid refolded under the per-dimension limit: the dispatch runs (gx, gy, gz) groups and
    the entry point recomputes the original (x, y, z) workgroup id from the flat id, returning
    at once in groups past ``total`` (uniformly for their workgroup)."""

    gx: int
    gy: int
    total: int
    x: int
    y: int

    def unfold(self) -> str:
        return (
            f"\n  let wid_flat = (wid_folded.z * {self.gy}u + wid_folded.y) * {self.gx}u + wid_folded.x;"
            f"\n  if (wid_flat >= {self.total}u) {{\n    return;\n  }}"
            f"\n  let wid = vec3<u32>(wid_flat % {self.x}u, (wid_flat / {self.x}u) % {self.y}u, "
            f"wid_flat / {self.x * self.y}u);"
        )


Part = str | Ref | Dim | Slot


@dataclass(frozen=True)
class Kernel:
    """One compute shader: buffers in binding order, workgroup size, grid fold, parts."""

    buffers: tuple[Buffer, ...]
    workgroup: int
    parts: tuple[Part, ...]
    fold: Fold | None = None
    # the graph's symbols in dims-uniform order when the kernel reads one (a Dim part), else ()
    dims: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "parts", _joined(self.parts))  # one kernel, one spelling

    @staticmethod
    def from_marked(text: str, buffers: tuple[Buffer, ...], workgroup: int) -> Kernel:
        """A kernel from shader text with ``ref`` / ``slot`` markers in it."""
        pieces = text.split(MARK)
        assert len(pieces) % 2 == 1, "unbalanced kernel markers"
        parts: list[Part] = []
        for k, piece in enumerate(pieces):
            if k % 2 == 0:
                parts.append(piece)
            elif piece[0] == "$":
                parts.append(Ref(piece[1:]))
            elif piece[0] == "#":
                parts.append(Dim(piece[1:]))
            else:
                parts.append(Slot(piece[1:]))
        return Kernel(tuple(buffers), workgroup, tuple(parts))

    def check(self) -> str | None:
        """What is wrong with the kernel's structure, or None: every reference names a buffer,
        the slots are known and the declarations and entry point appear once each. (A buffer
        may go unused: the runtimes bind by the manifest's explicit layouts.)"""
        names = [b.name for b in self.buffers]
        if len(set(names)) != len(names):
            return f"buffers {names} repeat a name"
        if any(b.access not in ACCESS for b in self.buffers):
            return f"a buffer's access is not one of {ACCESS}"
        if DIMS in names:
            return f"a buffer is named {DIMS!r}, the dims uniform's name"
        read = {p.name for p in self.parts if isinstance(p, Dim)}
        if read - set(self.dims) or (self.dims and not read):
            return f"reads dims {sorted(read)} but declares {list(self.dims)}"
        used = {p.name for p in self.parts if isinstance(p, Ref)}
        if used - set(names):
            return f"references undeclared buffers {sorted(used - set(names))}"
        slots = [p.kind for p in self.parts if isinstance(p, Slot)]
        if set(slots) - set(SLOTS):
            return f"has unknown slots {sorted(set(slots) - set(SLOTS))}"
        for kind in (DECLARATIONS, ENTRY):
            if slots.count(kind) != 1:
                return f"has {slots.count(kind)} {kind} slots, not one"
        return None

    def merged(self, r: int, w: int) -> Kernel:
        """This kernel with buffer ``r`` dropped and its uses reading buffer ``w`` instead."""
        old, new = self.buffers[r].name, self.buffers[w].name
        parts = tuple(Ref(new) if isinstance(p, Ref) and p.name == old else p for p in self.parts)
        return replace(self, buffers=self.buffers[:r] + self.buffers[r + 1 :], parts=parts)

    def folded(self, fold: Fold) -> Kernel:
        return replace(self, fold=fold)

    @cached_property
    def text(self) -> str:
        """The WGSL."""
        out, bits = [], False
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            elif isinstance(p, Ref):
                out.append(p.name)
            elif isinstance(p, Dim):
                k = self.dims.index(p.name)
                out.append(f"{DIMS}[{k // 4}].{'xyzw'[k % 4]}")
            elif p.kind == DECLARATIONS:
                out.extend(b.declaration(i) + "\n" for i, b in enumerate(self.buffers))
                if self.dims:
                    out.append(self.dims_declaration() + "\n")
            elif p.kind == ENTRY:
                out.append(self._entry())
            else:
                out.append("f32_bits")
                bits = True
        text = "".join(out)
        if self.uses_subgroups:  # so are subgroup operations (runtime/session.py: naga's differ)
            text = SUBGROUPS_HEADER + "\n" + text
        if self.uses_f16:  # WGSL's f16 is an extension
            text = "enable f16;\n\n" + text
        return text.rstrip("\n") + "\n" + _F32_BITS_FN if bits else text

    @property
    def uses_f16(self) -> bool:
        """Some buffer holds f16s: the shader needs the device's shader-f16 feature."""
        return any("f16" in b.elem for b in self.buffers)

    @property
    def uses_subgroups(self) -> bool:
        """The shader reads its subgroup (``sg_id``, ``sg_size``, a subgroup operation such as
        subgroupBroadcast): it needs the device feature subgroups, and its entry point takes
        the two builtins."""
        return any(isinstance(p, str) and ("sg_size" in p or _SUBGROUP_OP.search(p)) for p in self.parts)

    @property
    def uses_dims(self) -> bool:
        return bool(self.dims)

    def dims_declaration(self) -> str:
        """The dims uniform, bound after the storage buffers."""
        n = -(-len(self.dims) // 4)
        return f"@group(0) @binding({len(self.buffers)}) var<uniform> {DIMS}: array<vec4<u32>, {n}>;"

    def _entry(self) -> str:
        wid = "wid_folded" if self.fold else "wid"
        return (
            f"@compute @workgroup_size({self.workgroup})\n"
            f"fn main(@builtin(workgroup_id) {wid}: vec3<u32>, @builtin(local_invocation_index) lid: u32"
            + (_SUBGROUP_BUILTINS if self.uses_subgroups else "")
            + ") {"
            + (self.fold.unfold() if self.fold else "")
        )


# a call of a WGSL subgroup built-in function (subgroupAdd, subgroupBroadcast, ...)
_SUBGROUP_OP = re.compile(r"\bsubgroup[A-Z]\w*\(")
# the entry point's builtins that a kernel using subgroups reads (Kernel.uses_subgroups)
_SUBGROUP_BUILTINS = ", @builtin(subgroup_invocation_id) sg_id: u32, @builtin(subgroup_size) sg_size: u32"


def _joined(parts) -> tuple[Part, ...]:
    """Parts with adjacent texts joined and empty ones dropped (one kernel, one spelling)."""
    out: list[Part] = []
    for p in parts:
        if isinstance(p, str):
            if not p:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += p
                continue
        out.append(p)
    return tuple(out)

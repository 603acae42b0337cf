"""In place: a kernel writes its output over an input that dies at that kernel."""

from __future__ import annotations

import math

from onnx2wgsl.errors import CompileError
from onnx2wgsl.ir import Dispatch, Graph, Op, Value

from ..memory import steps, storage_links
from . import Pass, PassResult


class InPlace(Pass):
    """Let a kernel's output share the storage of one of its inputs when that input's bytes
    are read by nothing after the kernel, so the two never need room at once.

    Runs after lowering and concat-in-place. A lowering declares which of its dispatches'
    (read, write) binding pairs may share storage (``Dispatch.inplace``: the shader reads each
    element of the input only where, and before, it writes the same element of the output).
    A pair is taken when the input is no graph input, its storage (with every view of it and
    every tensor it lives in) is touched by no later step and is no graph output, the output
    lives in storage of its own, and every dispatch of the kernel that binds either of them
    declares the pair. Each taken pair becomes one read-write binding (the kernel drops the
    input's buffer and reads it through the output's), and the kernel op records
    ``in_place = [[output, input], ...]`` for the memory planner (compiler/memory.py), which then places the output in the input's bytes."""

    name = "in-place"

    def run(self, g: Graph) -> PassResult:
        groups = _Groups(g)
        changed = False
        for step, op in steps(g):
            if op.kind != "kernel":
                continue
            for y_at, y in enumerate(op.outputs):
                if any(pair[0] == y_at for pair in op.attrs.get("in_place", [])):
                    continue
                x = self._partner(op, y, step, groups)
                if x is None:
                    continue
                op.dispatches = [_merge(g, d, x, y) for d in op.dispatches]
                x_at = next(i for i, v in enumerate(op.inputs) if v is x)
                op.attrs["in_place"] = [*op.attrs.get("in_place", []), [y_at, x_at]]
                groups.union(x, y)
                changed = True
        if changed:
            used = {d.shader for op in g.ops for d in op.dispatches}
            g.shaders = {name: kernel for name, kernel in g.shaders.items() if name in used}
        return PassResult(g, changed)

    def _partner(self, op: Op, y: Value, step: int, groups: _Groups) -> Value | None:
        """The input whose storage ``y`` can take at this step, if any."""
        if not groups.alone(y):
            return None
        for d in op.dispatches:
            for r, w in d.inplace:
                x = d.bindings[r].value
                if d.bindings[w].value is not y or not groups.dies_at(x, step):
                    continue
                if all(_pairs(e, x, y, groups) for e in op.dispatches):
                    return x
        return None


def _pairs(d: Dispatch, x: Value, y: Value, groups: _Groups) -> bool:
    """Whether a dispatch binds neither ``x`` nor ``y`` (nor anything sharing their storage), or
    binds each once, whole, as a declared pair."""
    gx, gy = groups.find(x), groups.find(y)
    mine = [i for i, b in enumerate(d.bindings) if groups.find(b.value) in (gx, gy)]
    if not mine:
        return True
    if len(mine) != 2:
        return False
    r, w = mine
    if d.bindings[r].write:
        r, w = w, r
    br, bw = d.bindings[r], d.bindings[w]
    whole = all(b.offset == 0 and b.nbytes == b.value.nbytes for b in (br, bw))
    return br.value is x and bw.value is y and whole and (r, w) in d.inplace


def _merge(g: Graph, d: Dispatch, x: Value, y: Value) -> Dispatch:
    """The dispatch with ``x``'s binding dropped and its kernel reading ``x`` through ``y``'s
    buffer: the kernel drops the buffer and points its references at the other (no text is
    edited; the declarations are numbered when the kernel renders)."""
    at = {id(b.value): i for i, b in enumerate(d.bindings)}
    if id(x) not in at:
        return d
    r, w = at[id(x)], at[id(y)]
    kernel = g.shaders[d.shader]
    br, bw = kernel.buffers[r], kernel.buffers[w]
    if br.elem != bw.elem or bw.access != "read_write":
        raise CompileError(
            f"internal error: shader {d.shader} declares no matching read_write bindings {r} and {w} "
            "for the in-place pair its lowering declared"
        )
    shift = lambda i: i - (i > r)  # noqa: E731
    pairs = tuple((shift(a), shift(b)) for a, b in d.inplace if r not in (a, b) and w not in (a, b))
    bindings = [b for i, b in enumerate(d.bindings) if i != r]
    stem = d.shader.split("_", 1)[1]
    name = g.add_shader(kernel.merged(r, w), stem if stem.endswith("_inplace") else stem + "_inplace")
    return Dispatch(name, d.grid, bindings, pairs, flops=d.flops)


class _Groups:
    """Values that share storage (views, concat slices, earlier in-place pairs), as a union-find
    that knows each group's last step and whether it holds a graph input or output."""

    def __init__(self, g: Graph):
        self.parent: dict[int, int] = {}
        self.last: dict[int, float] = {}
        self.pinned: set[int] = set()  # groups with a graph input or output
        self.hosted: set[int] = set()  # values living in another tensor's storage
        for v, host, _ in storage_links(g):
            self.union(host, v)
            self.hosted.add(id(v))
        for step, op in steps(g):
            for v in list(op.inputs) + list(op.outputs):
                if v is not None and not v.is_const:
                    r = self.find(v)
                    self.last[r] = max(self.last.get(r, 0), step)
        for v in list(g.inputs) + list(g.outputs):
            r = self.find(v)
            self.pinned.add(r)
            self.last[r] = math.inf

    def find(self, v: Value) -> int:
        k = id(v)
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: Value, b: Value) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        self.last[ra] = max(self.last.pop(ra, 0), self.last.pop(rb, 0))
        if rb in self.pinned:
            self.pinned.add(ra)

    def dies_at(self, x: Value, step: int) -> bool:
        """Nothing touches ``x``'s storage after ``step``, and it is no graph input or output."""
        r = self.find(x)
        return not x.is_const and r not in self.pinned and self.last.get(r, 0) <= step

    def alone(self, y: Value) -> bool:
        """``y`` lives in storage of its own (views of it aside): no Concat hosts it."""
        return id(y) not in self.hosted

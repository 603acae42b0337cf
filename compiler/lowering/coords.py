"""Coordinate kernels: map kernels whose body Python writes from the output coordinates.

``map_dispatch`` covers ops where every operand is an affine view of the iteration space.
Gathers, pads, resizes and scatters also read at addresses computed from *loaded* values
or clamped coordinates. ``CoordKernel`` keeps the same shape of kernel (one invocation per
point of a row-major space, the ``map.wgsl.j2`` template) and lets a lowering add WGSL lines
that use the coordinates ``c0, c1, ...`` (u32), affine addresses of views, and the bound
operands. Python decides every number and expression; the template only substitutes.

A point whose loop is too long for one invocation (target.LOOP_BUDGET) can take a workgroup
of its own instead (``group``): its invocations split the loop by ``lid`` and ``tree``
combines their accumulators before invocation 0 finishes the point.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, Value
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.symbolic import Expr, simplify

from ..elementwise_ops import f32
from . import WORKGROUP, LowerCtx, binding, ceil_div, decl, u32, wgsl_type
from .indexing import View, affine_expr, contiguous_strides

ZERO = {"f32": "0.0f", "i32": "0i", "u32": "0u"}


def literal(value, ty: str) -> str:
    """A WGSL literal of storage type ``ty`` (f32, i32, u32) for a Python or numpy scalar."""
    if ty == "f32":
        return f32(float(value))
    if ty == "i32":
        v = int(np.clip(int(value), -(2**31), 2**31 - 1))
        return f"{v}i" if v != -(2**31) else "i32(-2147483647i - 1i)"
    return f"{int(np.clip(int(value), 0, 2**32 - 1))}u"


class CoordKernel:
    """One dispatch of ``map.wgsl.j2`` over ``space``, its body built line by line.

    ``read(v)`` / ``write(v)`` bind operands and return their WGSL names; ``c(d)`` is the
    output coordinate of dim d; ``at(view)`` its affine address; ``add`` appends lines. The
    flat invocation index is ``i``; ``store(expr)`` writes ``expr`` to the first written
    operand at ``i`` (the output, contiguous over ``space``).

    With ``group`` (a workgroup size) each point gets a workgroup: ``i`` is the point, the
    body's lines run in all ``group`` invocations (``lid``), and the lines added after
    ``tree`` in invocation 0 alone."""

    def __init__(self, ctx: LowerCtx, space, group: int | None = None):
        self.ctx = ctx
        # ints, or Exprs of dims kept symbolic
        self.space = tuple(simplify(d) if isinstance(d, Expr) else int(d) for d in space)
        self.group = group
        self._tree: tuple[list[tuple[str, str]], list[str], int] | None = None
        self.lines: list[str] = []
        self.helpers: list[str] = []
        self._reads: list[Value] = []
        self._writes: list[Value] = []
        self._coords: set[int] = set()
        self._atomic: set[int] = set()

    # -- operands -------------------------------------------------------------------------
    def read(self, v: Value) -> str:
        for k, u in enumerate(self._reads):
            if u is v:
                return ref(f"in{k}")
        self._reads.append(v)
        return ref(f"in{len(self._reads) - 1}")

    def write(self, v: Value, atomic: bool = False) -> str:
        """Bind ``v`` for writing; ``atomic`` declares its (i32/u32) elements as atomics."""
        for k, u in enumerate(self._writes):
            if u is v:
                return ref(f"out{k}")
        self._writes.append(v)
        if atomic:
            self._atomic.add(len(self._writes) - 1)
        return ref(f"out{len(self._writes) - 1}")

    # -- coordinates and addresses --------------------------------------------------------
    def c(self, d: int) -> str:
        self._coords.add(d)
        return f"c{d}"

    def at(self, view: View) -> str:
        """The u32 address of ``view`` at the current point (``i`` itself if it is dense)."""
        if view.strides == contiguous_strides(self.space):
            return f"i + {u32(view.offset)}" if view.offset != 0 else "i"
        return affine_expr(view, self.c)

    # -- body -----------------------------------------------------------------------------
    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def helper(self, text: str) -> None:
        if text not in self.helpers:
            self.helpers.append(text)

    def tree(self, accs: list[tuple[str, str]], merge: list[str]) -> None:
        """Combine the workgroup's accumulators ``accs`` (name, WGSL type): each ``merge`` line
        folds red_<name>[lid + half] into red_<name>[lid]. Lines added later run in invocation 0
        only, with each accumulator holding the workgroup's result."""
        assert self.group and self._tree is None, "one tree, in a group kernel"
        self._tree = (accs, merge, len(self.lines))

    def store(self, expr: str, out: Value) -> None:
        self.add(f"{self.write(out)}[i] = {expr};")

    def dispatch(self, n=None) -> Dispatch | None:
        """The dispatch (None if the space is empty); ``n`` overrides the invocation count.
        Over dims kept symbolic the count is an expression (a run may still find it zero:
        the runtimes skip a grid that evaluates to none)."""
        n = simplify(math.prod(self.space) if n is None else n)
        if n == 0:
            return None
        shape = self.space
        coords = []
        for d in sorted(self._coords):
            inner = simplify(math.prod(shape[d + 1 :]))
            expr = "i" if inner == 1 else f"(i / {u32(inner)})"
            if d > 0:
                expr = f"{expr} % {u32(shape[d])}"
            coords.append(f"let c{d} = {expr};")
        decls = [decl(f"in{k}", v) for k, v in enumerate(self._reads)]
        decls += [
            decl(f"out{k}", v, write=True, elem=f"atomic<{wgsl_type(v)}>" if k in self._atomic else None)
            for k, v in enumerate(self._writes)
        ]
        body, tree = coords + self.lines, None
        if self.group:
            assert self._tree is not None, "a group kernel combines its invocations in a tree"
            accs, merge, at = self._tree
            body, tree = coords + self.lines[:at], {"accs": accs, "merge": merge, "tail": self.lines[at:]}
        grid, nx = self.ctx.grid(n if self.group else ceil_div(n, WORKGROUP))
        shader = self.ctx.shader(
            "map.wgsl.j2",
            decls=decls,
            helpers=self.helpers,
            body=body,
            n=u32(n),
            nx=nx,
            wg=self.group or WORKGROUP,
            tree=tree,
        )
        bindings = [binding(v) for v in self._reads] + [binding(v, write=True) for v in self._writes]
        return Dispatch(shader, grid, bindings)

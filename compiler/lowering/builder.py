"""The kernel builder: how lowerings make their simple kernels, built up and rendered once.

A kernel walks an iteration space: a row-major shape of ints, or of dims kept symbolic. A
lowering makes a ``KernelBuilder`` over the space, binds its operands, adds WGSL lines and
helpers, and ``dispatch()`` renders the kernel at the end and returns its ``Dispatch``
(None when the space is empty). Python decides every number and expression; the templates
only substitute.

The kernel's entry takes one of three shapes:

- a point kernel, one invocation per point (``map.wgsl.j2``): the lines run with the
  point's flat index ``i`` (u32) and its coordinates ``c(d)``;
- a point kernel with a workgroup per point (``group=`` its size, ``map.wgsl.j2``), for a
  point whose loop is too long for one invocation (target.LOOP_BUDGET): the lines run in
  every invocation of the workgroup (``lid``), which split the loop; ``tree`` combines their
  accumulators, and the lines added after it run in invocation 0 alone;
- a row kernel (``reduced=`` the dims a row sweeps, ``reduce.wgsl.j2``): one invocation
  or one workgroup per row of the kept dims (the builder chooses, or ``group`` says); each
  ``sweep`` is a pass over the row's reduced points (a workgroup's invocations stride them
  and combine in a tree), ``row_write`` stores a value per row and ``elem_write`` a value per
  point of the row after the sweeps; ``split`` reduces each row in chunks, one output row per
  chunk (the first stage of a two-stage reduction).

Operands. ``read(v)`` and ``write(v, atomic=...)`` bind ``v`` as a whole buffer and return
its WGSL name. ``load(v, view)`` and ``target(v, view)`` name ``v``'s element at the current
point through an affine ``View`` of the space, to read or to assign. Each value is bound
once however often it is named; the reads are declared and bound first, then the writes,
each in the order first named, so declarations and bindings come from the same lists.

Addresses. Elements of views are placeholders until the kernel renders. In the point
shapes, when the lines name no coordinate of their own (``c``, ``at``), adjacent dims that
every view walks contiguously merge first and size-1 dims drop; a view that walks the space
densely is addressed by ``i`` itself. In a row kernel each element read is loaded once per
point (``a0, a1, ...``, one per ``load``), in each loop over the row's points that uses it.

In place. A read and a write of the kernel may share storage (``Dispatch.inplace``) when the
read's value is no constant, is read only through views and each of them at the index where
the write stores, as the same scalar type and size, and before the first store: in a point
kernel no element of it is read in or after the first line that assigns a target; in a row
kernel the sweeps have read the whole row before the element loop begins (a barrier, or one
invocation per row), and the loop loads a point before it stores it. Each value pairs with
one write at most.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from onnx2wgsl.ir import Dispatch, Value
from onnx2wgsl.ir.kernel import MARK, ref
from onnx2wgsl.ir.symbolic import Expr, simplify
from onnx2wgsl.ir.types import dim_bound

from ..elementwise_ops import f32
from . import (
    SUBGROUP,
    WORKGROUP,
    LowerCtx,
    binding,
    ceil_div,
    decl,
    elem_type,
    loops_fit,
    narrow,
    rolled,
    subgroups,
    u32,
    wgsl_type,
    widen,
)
from .indexing import View, affine_expr, collapse, contiguous_strides, index_code

ZERO = {"f32": "0.0f", "i32": "0i", "u32": "0u"}


def literal(value, ty: str) -> str:
    """A WGSL literal of storage type ``ty`` (f32, i32, u32) for a Python or numpy scalar."""
    if ty == "f32":
        return f32(float(value))
    if ty == "i32":
        v = int(np.clip(int(value), -(2**31), 2**31 - 1))
        return f"{v}i" if v != -(2**31) else "i32(-2147483647i - 1i)"
    return f"{int(np.clip(int(value), 0, 2**32 - 1))}u"


# -- how a row is reduced --------------------------------------------------------------------
THREAD_MAX_R = 32  # at most this many reduced points: one invocation per row
THREAD_MANY_ROWS = (4096, 512)  # ... or at least 4096 rows of at most 512 points each
MAX_UNROLL = 16  # points per loop iteration when a row is too long for the loop budget
# a subgroup per row (--subgroups): rows of at most LANES_MAX_R points (a lane then sums at
# most 1024 serially at MIN_LANES, the narrowest subgroups, as on SwiftShader), at least
# LANES_ROWS of them (fewer leave most of a workgroup's subgroups idle: a tree then)
LANES_MAX_R = 4096
LANES_ROWS = 8
MIN_LANES = 4


def subgroup_rows(ctx: LowerCtx, rows, most: int) -> int:
    """The rows a workgroup takes when each row is one subgroup's (--subgroups): one per
    subgroup of SUBGROUP lanes, where there are at least LANES_ROWS rows (at their least, over
    dims kept symbolic) of at most ``most`` <= LANES_MAX_R points; else 0 (a workgroup tree)."""
    least = rows.bounds[0] if isinstance(rows, Expr) else rows
    fits = subgroups(ctx) > 0 and least >= LANES_ROWS and most <= LANES_MAX_R
    return WORKGROUP // SUBGROUP if fits else 0


def choose_mode(rows: int, R: int, exact: bool = False) -> tuple[bool, int]:
    """(group?, workgroup size) for ``rows`` rows of ``R`` reduced points each. ``exact``
    accumulations (integers, max/min) lose nothing when serial, so many rows of any length
    take one invocation each; float sums keep the tree's pairwise error beyond 512 points."""
    many_rows = rows >= THREAD_MANY_ROWS[0]
    if R <= THREAD_MAX_R or (many_rows and (exact or R <= THREAD_MANY_ROWS[1])):
        return False, 64
    return True, 64 if R <= 2048 else 256


def _unroll(passes: int, steps: int) -> int:
    """Points each loop iteration takes so that ``passes`` loops of ``steps`` points per
    invocation fit the loop budget: 1 (the plain loop) unless a row is very long; at most
    MAX_UNROLL, which covers any row the default binding limit allows."""
    unroll = 1
    while not loops_fit(passes * math.ceil(steps / unroll)) and unroll < MAX_UNROLL:
        unroll *= 2
    return unroll


@dataclass
class Sweep:
    """One pass over a row's reduced points.

    ``accs`` are the accumulators (name, WGSL type, initial value); ``update`` runs per point
    (the loaded elements and the reduced index ``r`` are in scope); ``merge`` combines
    ``red_<acc>[lid]`` with ``red_<acc>[lid + half]`` in the workgroup tree; ``after`` runs once
    the accumulators hold the row's result (lets that later sweeps and writes may use).
    ``lanes``, where the merge has a subgroup operation (sum, prod, max, min), folds each accumulator
    across a subgroup's active lanes in place: a row kernel whose sweeps all have it may take
    a subgroup per row (--subgroups) rather than a workgroup tree."""

    accs: list[tuple[str, str, str]]
    update: list[str]
    merge: list[str]
    after: list[str] = field(default_factory=list)
    lanes: list[str] | None = None


# An element of a view in the builder's lines: MARK-delimited, like ir.kernel's markers.
_ELEM = "%"


def _element(kind: str, j: int) -> str:
    return f"{MARK}{_ELEM}{kind}{j}{MARK}"


def _resolve(lines: Iterable[str], element) -> list[str]:
    """``lines`` with each element placeholder replaced by ``element(kind, j)``; the other
    markers (buffer references, dims) are kept for the kernel."""
    out = []
    for line in lines:
        pieces = line.split(MARK)
        for k in range(1, len(pieces), 2):
            p = pieces[k]
            pieces[k] = element(p[1], int(p[2:])) if p.startswith(_ELEM) else MARK + p + MARK
        out.append("".join(pieces))
    return out


def _project(v: View, dims: list[int], keep_offset: bool) -> View:
    return View(v.offset if keep_offset else 0, tuple(v.strides[d] for d in dims))


class KernelBuilder:
    """One kernel over ``space``, its operands and lines added by a lowering (see the module).

    ``group``: the invocations that share a unit of work (a point, or a row); None lets the
    builder decide (a point: one invocation; a row: by the row's length and the row count), 1
    is one invocation per unit, more is a workgroup of that size per unit. ``reduced`` makes
    a row kernel; ``split=(chunks, chunk)``, ``exact`` (the sweeps lose nothing to a serial
    order: integer sums, max, min, which lets many long rows take one invocation each) and
    ``comment`` (what the kernel computes, written into the shader) apply to row kernels."""

    def __init__(
        self,
        ctx: LowerCtx,
        space,
        *,
        group: int | None = None,
        reduced: Iterable[int] | None = None,
        split: tuple | None = None,
        exact: bool = False,
        comment: str = "",
    ):
        self.ctx = ctx
        # ints, or Exprs of dims kept symbolic
        self.space = tuple(simplify(d) if isinstance(d, Expr) else int(d) for d in space)
        self.group = group
        self.reduced = None if reduced is None else sorted(set(reduced))
        assert self.reduced is not None or (split is None and not comment), "split and comment: rows only"
        self.split, self.exact, self.comment = split, exact, comment
        self.lines: list[str] = []
        self.helpers: list[str] = []
        self._reads: list[Value] = []  # bound for reading, in the order first named
        self._writes: list[Value] = []
        self._whole: set[int] = set()  # ids of values bound as whole buffers (read or write)
        self._atomic: set[int] = set()  # write slots declared atomic
        self._loads: list[tuple[Value, View]] = []  # elements read through views
        self._targets: list[tuple[Value, View]] = []  # elements written through views
        self._coords: set[int] = set()
        self._tree: tuple[list[tuple[str, str]], list[str], int] | None = None
        self._sweeps: list[Sweep] = []
        self._row_writes: list[str] = []
        self._elem_writes: list[str] = []
        self._raw: list[Value] = []  # named by the lowering's own text: must be stored as 32 bits

    # -- operands -------------------------------------------------------------------------
    @staticmethod
    def _slot(bound: list[Value], v: Value) -> int:
        for k, u in enumerate(bound):
            if u is v:
                return k
        bound.append(v)
        return len(bound) - 1

    def read(self, v: Value) -> str:
        """Bind ``v`` for reading; its buffer's WGSL name (a value of 32-bit storage: the
        lowering's text reads it as it is stored)."""
        self._raw.append(v)
        self._whole.add(id(v))
        return ref(f"in{self._slot(self._reads, v)}")

    def write(self, v: Value, atomic: bool = False) -> str:
        """Bind ``v`` for writing; ``atomic`` declares its (i32/u32) elements as atomics (a
        value of 32-bit storage, see ``read``)."""
        self._raw.append(v)
        return self._write(v, atomic)

    def _write(self, v: Value, atomic: bool = False) -> str:
        self._whole.add(id(v))
        k = self._slot(self._writes, v)
        if atomic:
            self._atomic.add(k)
        return ref(f"out{k}")

    def element(self, v: Value, index: str) -> str:
        """``v``'s element at ``index`` (u32 shader text) of its whole buffer, bound for
        reading, as the 32-bit word it is computed in (an f16 element is widened to f32)."""
        self._whole.add(id(v))
        return widen(elem_type(v), f"{ref(f'in{self._slot(self._reads, v)}')}[{index}]")

    def reader(self, v: Value) -> Callable[[str], str]:
        """Bind ``v`` for reading now (its place among the kernel's inputs) for reads placed
        later: a function of a u32 index giving the element as ``element`` does."""
        self._slot(self._reads, v)
        return lambda index: self.element(v, index)

    def writer(self, v: Value) -> Callable[[str, str], str]:
        """Bind ``v`` for writing now (its place among the kernel's outputs) for stores placed
        later: a function of a u32 index and an expression giving the line as ``store_at``."""
        self._slot(self._writes, v)
        return lambda index, expr: self.store_at(v, index, expr)

    def output_element(self, v: Value, index: str) -> str:
        """``v``'s element at ``index`` of its whole buffer, bound for writing, read back as the
        32-bit word it is computed in (a kernel updating its output in place)."""
        return widen(elem_type(v), f"{self._write(v)}[{index}]")

    def store_at(self, v: Value, index: str, expr: str) -> str:
        """The line storing ``expr`` (the 32-bit word it is computed in) at ``index`` (u32
        shader text) of ``v``'s whole buffer, bound for writing, converted to its storage (at
        index ``i``: the line of ``store``, for a lowering to place itself, e.g. in a branch)."""
        return f"{self._write(v)}[{index}] = {narrow(elem_type(v), expr)};"

    def load(self, v: Value, view: View) -> str:
        """``v``'s element at the current point through ``view`` (each call a read of its own),
        as the 32-bit word it is computed in (an f16 element is widened to f32)."""
        self._slot(self._reads, v)
        self._loads.append((v, view))
        return _element("r", len(self._loads) - 1)

    def target(self, v: Value, view: View) -> str:
        """``v``'s element at the current point through ``view``, to assign (point kernels; a
        value of 32-bit storage: ``assign`` converts a store to any)."""
        self._raw.append(v)
        return self._target(v, view)

    def assign(self, v: Value, view: View, expr: str) -> str:
        """The line storing ``expr`` (the 32-bit word it is computed in) at ``v``'s element at
        the current point through ``view``, converted to ``v``'s storage."""
        return f"{self._target(v, view)} = {narrow(elem_type(v), expr)};"

    def _target(self, v: Value, view: View) -> str:
        self._slot(self._writes, v)
        self._targets.append((v, view))
        return _element("w", len(self._targets) - 1)

    # -- coordinates and addresses (point kernels) ----------------------------------------
    def c(self, d: int) -> str:
        """The coordinate of dim ``d`` at the current point (u32)."""
        assert self.reduced is None, "coordinates of a point kernel"
        self._coords.add(d)
        return f"c{d}"

    def at(self, view: View) -> str:
        """The u32 address of ``view`` at the current point (``i`` itself if it is dense)."""
        assert self.reduced is None, "addresses of a point kernel"
        if view.strides == contiguous_strides(self.space):
            return f"i + {u32(view.offset)}" if view.offset != 0 else "i"
        return affine_expr(view, self.c)

    # -- body -----------------------------------------------------------------------------
    def add(self, *lines: str) -> None:
        """Append WGSL lines to the point's body (point kernels)."""
        assert self.reduced is None, "a row kernel's lines are its sweeps and writes"
        self.lines.extend(lines)

    def helper(self, text: str) -> None:
        """A WGSL function the lines call (each text once; point kernels)."""
        assert self.reduced is None, "helpers of a point kernel"
        if text not in self.helpers:
            self.helpers.append(text)

    def store(self, expr: str, out: Value) -> None:
        """``out[i] = expr``: the point's element of an output contiguous over the space."""
        self.add(self.store_at(out, "i", expr))

    def tree(self, accs: list[tuple[str, str]], merge: list[str]) -> None:
        """Combine the workgroup's accumulators ``accs`` (name, WGSL type): each ``merge`` line
        folds red_<name>[lid + half] into red_<name>[lid]. Lines added later run in invocation 0
        only, with each accumulator holding the workgroup's result."""
        assert self.reduced is None and self._per_point and self._tree is None, "one tree, in a group kernel"
        self._tree = (accs, merge, len(self.lines))

    def sweep(self, *sweeps: Sweep) -> None:
        """Passes over each row's reduced points, in order (row kernels)."""
        assert self.reduced is not None, "sweeps of a row kernel"
        self._sweeps.extend(sweeps)

    def row_write(self, v: Value, expr: str) -> None:
        """Store ``expr`` once per row at index ``row`` of ``v`` (row-major over the kept dims,
        the output layout with or without keepdims), after the sweeps."""
        assert self.reduced is not None, "row writes of a row kernel"
        self._row_writes.append(f"{self._write(v)}[row] = {narrow(elem_type(v), expr)};")

    def elem_write(self, v: Value, view: View, expr: str) -> None:
        """Store ``expr`` at every point of the row through ``view``, after the sweeps."""
        assert self.reduced is not None, "element writes of a row kernel"
        self._elem_writes.append(self.assign(v, view, expr))

    # -- rendering ------------------------------------------------------------------------
    @property
    def _per_point(self) -> bool:
        """A point kernel with a workgroup per point."""
        return self.group is not None and self.group > 1

    def dispatch(self) -> Dispatch | None:
        """Render the kernel: its dispatch, or None if the space is empty. Over dims kept
        symbolic the invocation count is an expression (a run may still find it zero: the
        runtimes skip a grid that evaluates to none)."""
        narrow16 = [v.name for v in self._raw if elem_type(v) != wgsl_type(v)]
        assert not narrow16, f"a kernel names the f16 storage of {narrow16} in its own text"
        return self._points() if self.reduced is None else self._rows()

    def _render(self, template: str, units, per_unit: bool, wg: int, inplace, **params) -> Dispatch:
        """The dispatch of ``template`` over ``units`` (points or rows): a workgroup of ``wg``
        per unit (``per_unit``), or ``wg`` units per workgroup. The buffers are declared and bound
        from the same lists: the reads, then the writes."""
        decls = [decl(f"in{k}", v) for k, v in enumerate(self._reads)]
        decls += [
            decl(f"out{k}", v, write=True, elem=f"atomic<{wgsl_type(v)}>" if k in self._atomic else None)
            for k, v in enumerate(self._writes)
        ]
        bindings = [binding(v) for v in self._reads] + [binding(v, write=True) for v in self._writes]
        grid, nx = self.ctx.grid(units if per_unit else ceil_div(units, wg))
        shader = self.ctx.shader(template, decls=decls, nx=nx, wg=wg, **params)
        return Dispatch(shader, grid, bindings, inplace)

    def _elements(self, idx: list[str], read_as: Callable[[int], str]) -> Callable[[str, int], str]:
        """The placeholder resolver: a read as ``read_as(j)``, a target as its buffer at idx."""
        n = len(self._loads)

        def element(kind: str, j: int) -> str:
            if kind == "r":
                return read_as(j)
            y = self._targets[j][0]
            return f"{ref(f'out{self._slot(self._writes, y)}')}[{idx[n + j]}]"

        return element

    def _inplace(self, addresses: list, late: str) -> tuple[tuple[int, int], ...]:
        """The (read, write) binding pairs that may share storage (see the module); ``late``
        is the text of the lines whose element reads would come after a store."""
        n = len(self._loads)
        pairs = []
        for k, v in enumerate(self._reads):
            mine = [j for j, (u, _) in enumerate(self._loads) if u is v]
            if v.is_const or id(v) in self._whole or any(_element("r", j) in late for j in mine):
                continue
            for w, (y, _) in enumerate(self._targets):
                same = v.nbytes == y.nbytes and elem_type(v) == elem_type(y) and id(y) not in self._whole
                if same and all(addresses[j] == addresses[n + w] for j in mine):
                    pairs.append((k, len(self._reads) + self._slot(self._writes, y)))
                    break
        return tuple(pairs)

    def _points(self) -> Dispatch | None:
        n = simplify(math.prod(self.space))
        if n == 0:
            return None
        views = [view for _, view in self._loads + self._targets]
        shape = self.space
        if not self._coords:  # no line names a coordinate: the views' dims may merge
            shape, views = collapse(shape, views)
        coords, idx = index_code(shape, views, coords=self._coords)
        slots = [self._slot(self._reads, v) for v, _ in self._loads]
        elems = [elem_type(v) for v, _ in self._loads]
        lines = _resolve(
            self.lines, self._elements(idx, lambda j: widen(elems[j], f"{ref(f'in{slots[j]}')}[{idx[j]}]"))
        )
        body, tree = coords + lines, None
        if self._per_point:
            assert self._tree is not None, "a group kernel combines its invocations in a tree"
            accs, merge, at = self._tree
            body, tree = coords + lines[:at], {"accs": accs, "merge": merge, "tail": lines[at:]}
        stores = [
            m
            for m, line in enumerate(self.lines)
            if any(_element("w", w) in line for w in range(len(self._targets)))
        ]
        late = "\n".join(self.lines[min(stores, default=len(self.lines)) :])
        wg = self.group if self._per_point else WORKGROUP
        return self._render(
            "map.wgsl.j2", n, self._per_point, wg, self._inplace(idx, late),
            helpers=self.helpers, body=body, n=u32(n), tree=tree,
        )  # fmt: skip

    def _rows(self) -> Dispatch | None:
        ctx, space = self.ctx, self.space
        kept = [d for d in range(len(space)) if d not in set(self.reduced)]
        red = self.reduced
        views = [view for _, view in self._loads + self._targets]
        kshape, kviews = collapse([space[d] for d in kept], [_project(v, kept, True) for v in views])
        rshape, rviews = collapse([space[d] for d in red], [_project(v, red, False) for v in views])
        rows, R = simplify(math.prod(kshape)), simplify(math.prod(rshape))
        if rows == 0:
            return None
        if R == 0:
            raise ctx.error("reduction over an empty axis reached the GPU")  # folded by legalize
        chunks, chunk = self.split or (1, R)
        out_rows = simplify(rows * chunks)
        # Over dims kept symbolic, the choices hold at the bounds: a row of any length in the
        # range stays within the loop budget (its loops run to the length read at run time), and
        # rows take one invocation each only when they are many at every size in the range.
        most = dim_bound(chunk)
        least_rows = out_rows.bounds[0] if isinstance(out_rows, Expr) else out_rows
        if self.group is None:
            group, wg = choose_mode(least_rows, most, self.exact)
        else:
            group, wg = self.group > 1, self.group if self.group > 1 else WORKGROUP
        passes = len(self._sweeps) + bool(self._elem_writes)  # loops over the row's points
        if not group and not loops_fit(passes * most):
            group, wg = True, 256  # rows too long for one invocation each
        # a subgroup per row (--subgroups) where a workgroup tree was chosen and every sweep
        # folds by a subgroup operation: no barriers, and the tree's workgroup memory is gone
        folds = bool(self._sweeps) and all(s.lanes for s in self._sweeps)
        per_group = subgroup_rows(ctx, out_rows, most) if group and folds else 0
        lanes = per_group > 0
        if lanes:
            group, wg = False, WORKGROUP
        unroll = _unroll(passes, math.ceil(most / (MIN_LANES if lanes else wg if group else 1)))

        klines, kexprs = index_code(kshape, kviews, flat="krow", prefix="k")
        rlines, rexprs = index_code(rshape, rviews, flat="r", prefix="q")
        first = "lane" if lanes else "lid" if group else ""
        if self.split:
            row_lines = [
                f"let krow = row / {u32(chunks)};",
                f"let r0 = (row % {u32(chunks)}) * {u32(chunk)};",
            ]
            r_first, r_end = (f"r0 + {first}" if first else "r0"), f"min(r0 + {u32(chunk)}, {u32(R)})"
        else:
            row_lines, r_first, r_end = ["let krow = row;"], (first or "0u"), u32(R)
            if not group and not lanes and unroll == 1:
                r_end = rolled(r_end, ref("out0"))
        row_lines += klines + [f"let kb{j} = {e};" for j, e in enumerate(kexprs)]
        loads = [
            f"let a{j} = {widen(elem_type(v), ref(f'in{self._slot(self._reads, v)}') + f'[kb{j} + {rexprs[j]}]')};"
            for j, (v, _) in enumerate(self._loads)
        ]
        idx = [f"kb{j} + {e}" for j, e in enumerate(rexprs)]

        def resolve(lines: list[str]) -> tuple[list[str], list[str]]:
            """The lines resolved, and the coordinates and loads of a loop that runs them."""
            used: set[int] = set()
            element = self._elements(idx, lambda j: used.add(j) or f"a{j}")
            out = _resolve(lines, element)
            return out, list(rlines) + [line for j, line in enumerate(loads) if j in used]

        sweeps = []
        for s in self._sweeps:
            body, body_loads = resolve(s.update)
            sweeps.append({
                "accs": [{"name": acc[0], "init": acc[2]} for acc in s.accs], "loads": body_loads, "body": body,
                "merge": s.merge, "lanes": s.lanes, "after": resolve(s.after)[0],
            })  # fmt: skip
        ewrites, elem_loads = resolve(self._elem_writes)
        shared = [{"name": acc[0], "type": acc[1]} for s in self._sweeps for acc in s.accs]
        # the sweeps read the whole row before the element loop, which loads each point
        # before it stores there: no element read comes late
        inplace = self._inplace(list(zip(kexprs, rexprs)), "") if not self.split else ()
        step = "lanes" if lanes else f"{wg if group else 1}u"
        return self._render(
            "reduce.wgsl.j2", ceil_div(out_rows, per_group) if lanes else out_rows, group or lanes, wg, inplace,
            group=group, lanes=lanes, per_group=per_group, rows=u32(out_rows), text_rows=out_rows,
            text_R=R, comment=self.comment, shared=shared, row_lines=row_lines, sweeps=sweeps,
            r_first=r_first, r_end=r_end, r_step=step, row_writes=resolve(self._row_writes)[0],
            elem_writes=ewrites, elem_loads=elem_loads, unroll=unroll,
            r_stride=f"lanes * {unroll}u" if lanes else f"{(wg if group else 1) * unroll}u",
        )  # fmt: skip

"""Reductions over any subset of axes (Reduce*, ArgMax/ArgMin, Einsum, CumSum/CumProd, TopK,
Det), and the sweeps that the row kernels of reductions and normalizations run.

An op that reduces is a row kernel (lowering/builder.py): an iteration *space* (a shape)
whose dims are either kept (they index the output rows) or reduced (they are swept per row).
Every operand is read through an affine ``View`` over that whole space, so reducing axes 0
and 2 of a 4-D tensor, an Einsum diagonal or a MatMulInteger are all one template: the kept
dims and the reduced dims are each collapsed where every operand walks them contiguously,
and the template computes a row's base offsets once and the reduced offsets per point.

A row is reduced by one invocation (few reduced points, or so many rows that each invocation
already has enough work) or by one workgroup whose invocations stride the reduced points and
then combine in a tree (a pairwise sum: error grows with log n, not n); the builder chooses
(builder.choose_mode). Rows of 32768 points or more are split in two stages (each chunk of
4096 points gives a partial, a second pass folds the partials): more workgroups to run in
parallel when rows are few, and at most a few hundred points summed serially by any
invocation. Normalizations sweep a whole row in one workgroup; a row so long that its
invocations would loop past target.LOOP_BUDGET takes several points per loop iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnx2wgsl.ir import Dispatch, DType, Op, TensorType, Value
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.symbolic import simplify
from onnx2wgsl.ir.types import dim_bound

from ..elementwise_ops import NAN, f32, i32
from . import LowerCtx, binding, ceil_div, decl, is_symbolic, loops_fit, lowers, u32, wgsl_type
from . import i32 as size_i32
from .builder import KernelBuilder, Sweep
from .indexing import View, broadcast, contiguous, contiguous_strides

SPLIT_MIN_R = 32768  # a reduction this long runs in two stages
SPLIT_CHUNK = 4096


# -- sweeps: one pass over a row's reduced points --------------------------------------------
COMBINE: dict[str, Callable[[str, str], str]] = {
    "sum": lambda a, b: f"{a} + {b}",
    "prod": lambda a, b: f"{a} * {b}",
    "max": lambda a, b: f"max({a}, {b})",
    "min": lambda a, b: f"min({a}, {b})",
}
_INF = math.inf
IDENTITY: dict[str, dict[str, str]] = {
    "sum": {"f32": "0.0f", "i32": "0i", "u32": "0u"},
    "prod": {"f32": "1.0f", "i32": "1i", "u32": "1u"},
    "max": {"f32": f32(-_INF), "i32": i32(-(2**31)), "u32": "0u"},
    "min": {"f32": f32(_INF), "i32": i32(2**31 - 1), "u32": "0xffffffffu"},
}


def _nan(x: str) -> str:
    return f"((bitcast<u32>({x}) & 0x7fffffffu) > 0x7f800000u)"


def combiner(combine: str, ty: str) -> Callable[[str, str], str]:
    """COMBINE for a WGSL type: a float max or min propagates a NaN operand, as numpy and
    onnxruntime do (WGSL's max and min may return either operand)."""
    c = COMBINE[combine]
    if ty == "f32" and combine in ("max", "min"):
        return lambda a, b: f"select({c(a, b)}, {a} + {b}, {_nan(a)} || {_nan(b)})"
    return c


# the subgroup operation of each combine
SUBGROUP_OPS = {"sum": "subgroupAdd", "prod": "subgroupMul", "max": "subgroupMax", "min": "subgroupMin"}


def lanes_fold(name: str, ty: str, combine: str) -> list[str]:
    """The line folding accumulator ``name`` across a subgroup's active lanes (every lane then
    holds the result); a float max or min is NaN when any lane's is (see ``combiner``)."""
    op = SUBGROUP_OPS[combine]
    if ty == "f32" and combine in ("max", "min"):
        return [f"{name} = select({op}({name}), {NAN}, subgroupAny({_nan(name)}));"]
    return [f"{name} = {op}({name});"]


def fold_sweep(name: str, ty: str, combine: str, expr: str, after: list[str] | None = None) -> Sweep:
    """acc = combine(acc, expr) over the row (sum, prod, max or min)."""
    c = combiner(combine, ty)
    return Sweep(
        accs=[(name, ty, IDENTITY[combine][ty])],
        update=[f"{name} = {c(name, expr)};"],
        merge=[f"red_{name}[lid] = {c(f'red_{name}[lid]', f'red_{name}[lid + half]')};"],
        after=list(after or []),
        lanes=lanes_fold(name, ty, combine),
    )


NO_INDEX = "0xffffffffu"


def arg_sweep(value: str, index: str, ty: str, expr: str, largest: bool, last: bool) -> Sweep:
    """The best value over the row and its reduced index; ties go to the first (or last) index.

    Each invocation visits its points in increasing ``r``, so a strict comparison keeps the
    first of equal values and a non-strict one the last; the tree then breaks ties by index."""
    better = ">" if largest else "<"
    keep = better + ("=" if last else "")
    tie = ">" if last else "<"
    return Sweep(
        accs=[(value, ty, IDENTITY["max" if largest else "min"][ty]), (index, "u32", NO_INDEX)],
        update=[f"if ({index} == {NO_INDEX} || {expr} {keep} {value}) {{ {value} = {expr}; {index} = r; }}"],
        merge=[
            f"let bv = red_{value}[lid + half];",
            f"let bi = red_{index}[lid + half];",
            f"let av = red_{value}[lid];",
            f"let ai = red_{index}[lid];",
            f"if (bi != {NO_INDEX} && (ai == {NO_INDEX} || bv {better} av || (bv == av && bi {tie} ai))) {{",
            f"  red_{value}[lid] = bv;",
            f"  red_{index}[lid] = bi;",
            "}",
        ],
    )


def reduced_rows(space, reduced) -> tuple:
    """(rows, reduced points per row) of a space (ints, or expressions of dims kept symbolic)."""
    R = simplify(math.prod(space[d] for d in reduced))
    if is_symbolic(space):
        return simplify(math.prod(n for d, n in enumerate(space) if d not in set(reduced))), R
    return math.prod(space) // max(R, 1), R


def size_f32(n) -> str:
    """A count as an f32 in shader text: a literal, or over dims kept symbolic the conversion
    of its run-time value."""
    n = simplify(n)
    return f32(n) if isinstance(n, int) else f"f32({u32(n)})"


# -- Reduce* ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReduceKind:
    """A reduction as pre-map, combine and post-map; ``float_only`` kinds refuse integers."""

    combine: str
    pre: Callable[[str, str], str] = lambda a, ty: a
    post: Callable[[str, int, str], str] = lambda acc, R, ty: acc
    float_only: bool = False


def _mean(acc: str, R, ty: str) -> str:
    if ty == "f32":
        return f"{acc} / {size_f32(R)}"
    return f"{acc} / {size_i32(R) if ty == 'i32' else u32(R)}"


def _l2(acc: str, R: int, ty: str) -> str:
    return f"sqrt({acc})" if ty == "f32" else f"{ty}(sqrt(f32({acc})))"


REDUCE: dict[str, ReduceKind] = {
    "ReduceSum": ReduceKind("sum"),
    "ReduceMean": ReduceKind("sum", post=_mean),
    "ReduceSumSquare": ReduceKind("sum", pre=lambda a, ty: f"{a} * {a}"),
    "ReduceL1": ReduceKind("sum", pre=lambda a, ty: a if ty == "u32" else f"abs({a})"),
    "ReduceL2": ReduceKind("sum", pre=lambda a, ty: f"{a} * {a}", post=_l2),
    "ReduceLogSum": ReduceKind("sum", post=lambda acc, R, ty: f"log({acc})", float_only=True),
    "ReduceProd": ReduceKind("prod"),
    "ReduceMax": ReduceKind("max"),
    "ReduceMin": ReduceKind("min"),
    "ReduceLogSumExp": ReduceKind("sum", float_only=True),  # two sweeps: see _logsumexp
}


@lowers(*REDUCE)
def lower_reduce(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    kind = REDUCE[op.kind]
    ty = wgsl_type(x)
    if kind.float_only and ty != "f32":
        raise ctx.error(
            f"{op.kind} is defined for float inputs only, not {x.dtype.name}", hint="Cast the input to float"
        )
    space, axes = tuple(x.shape), op.attrs["axes"]
    rows, R = reduced_rows(space, axes)
    if rows != y.type.numel:
        raise ctx.error(f"output {y.type} does not match reducing {x.type} over axes {axes}")
    label = f"{op.kind} of {x.type} over axes {list(axes)}"
    if op.kind == "ReduceLogSumExp":
        k = KernelBuilder(ctx, space, reduced=axes, comment=label)
        k.sweep(*_logsumexp(k.load(x, contiguous(space))))
        k.row_write(y, "log(s) + sh")
        d = k.dispatch()
        ctx.kernel([x], [y], [d] if d else [])
        return
    if dim_bound(R) >= SPLIT_MIN_R:
        _two_stage(ctx, op, kind, ty, space, axes, label)
        return
    exact = ty != "f32" or kind.combine in ("max", "min")
    k = KernelBuilder(ctx, space, reduced=axes, exact=exact, comment=label)
    k.sweep(fold_sweep("acc", ty, kind.combine, kind.pre(k.load(x, contiguous(space)), ty)))
    k.row_write(y, kind.post("acc", R, ty))
    d = k.dispatch()
    ctx.kernel([x], [y], [d] if d else [])


def _logsumexp(a: str) -> list[Sweep]:
    """max first (only to shift exp into range; an infinite max shifts by 0), then sum exp."""
    return [
        fold_sweep("m", "f32", "max", a, after=["let sh = select(0.0f, m, abs(m) < 3.0e38f);"]),
        fold_sweep("s", "f32", "sum", f"exp({a} - sh)"),
    ]


def _two_stage(ctx: LowerCtx, op: Op, kind: ReduceKind, ty: str, space, axes, label: str) -> None:
    """Chunks of the row reduce in parallel workgroups into partials; a second pass folds them."""
    x, y = op.inputs[0], op.outputs[0]
    rows, R = reduced_rows(space, axes)
    if isinstance(R, int):
        chunks = min(256, math.ceil(R / SPLIT_CHUNK))
        chunk = math.ceil(R / chunks)
    else:  # chunks of a fixed length, at most 256 of them at the longest row
        chunk = max(SPLIT_CHUNK, math.ceil(dim_bound(R) / 256))
        chunks = ceil_div(R, chunk)
    part = ctx.temp(TensorType(DType(ty), (rows, chunks)), f"{y.name}.partial")
    first = KernelBuilder(
        ctx,
        space,
        reduced=axes,
        split=(chunks, chunk),
        group=256,
        comment=f"{label}: partials of {chunks} chunks",
    )
    first.sweep(fold_sweep("acc", ty, kind.combine, kind.pre(first.load(x, contiguous(space)), ty)))
    first.row_write(part, "acc")
    d1 = first.dispatch()
    second = KernelBuilder(ctx, (rows, chunks), reduced=[1], comment=f"{label}: the partials")
    second.sweep(fold_sweep("acc", ty, kind.combine, second.load(part, contiguous((rows, chunks)))))
    second.row_write(y, kind.post("acc", R, ty))
    d2 = second.dispatch()
    ctx.kernel([x], [part], [d1])
    ctx.kernel([part], [y], [d2])


# -- ArgMax / ArgMin -------------------------------------------------------------------------
@lowers("ArgMax", "ArgMin")
def lower_arg(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    axis = op.attrs["axis"]
    space = tuple(x.shape)
    ty = wgsl_type(x)
    k = KernelBuilder(ctx, space, reduced=[axis], comment=f"{op.kind} of {x.type} along axis {axis}")
    a = k.load(x, contiguous(space))
    k.sweep(arg_sweep("v", "i", ty, a, op.kind == "ArgMax", bool(op.attrs["select_last_index"])))
    k.row_write(y, f"{wgsl_type(y)}(i)")
    d = k.dispatch()
    ctx.kernel([x], [y], [d] if d else [])


# -- Einsum ----------------------------------------------------------------------------------
@lowers("Einsum")
def lower_einsum(ctx: LowerCtx, op: Op) -> None:
    """A generic contraction: the space is the output labels then the summed labels; each
    operand reads through strides per label (a repeated label sums its strides: a diagonal)."""
    ins, y = op.inputs, op.outputs[0]
    lhs, _, out = op.attrs["equation"].partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for v, term in zip(ins, terms):
        for label, n in zip(term, v.shape):
            if sizes.get(label, 1) == 1:
                sizes[label] = n
            elif n not in (1, sizes[label]):
                raise ctx.error(f"label {label!r} has sizes {sizes[label]} and {n}")
    summed = [c for term in terms for c in term if c not in out]
    labels = list(out) + list(dict.fromkeys(summed))
    space = tuple(sizes[c] for c in labels)
    reads = []
    for v, term in zip(ins, terms):
        st = contiguous_strides(v.shape)
        strides = [0] * len(labels)
        for label, n, s in zip(term, v.shape, st):
            if n != 1:
                strides[labels.index(label)] += s
        reads.append((v, View(0, tuple(strides))))
    ty = wgsl_type(y)
    if any(wgsl_type(v) != ty for v in ins):
        raise ctx.error("operands of different dtypes")
    reduced = list(range(len(out), len(labels)))
    if math.prod(space[d] for d in reduced) == 0:  # an empty sum: zeros, x is never read
        d = _fill(ctx, y, IDENTITY["sum"][ty])
        ctx.kernel(list(ins), [y], [d] if d else [])
        return
    k = KernelBuilder(
        ctx, space, reduced=reduced, exact=ty != "f32", comment=f"Einsum {op.attrs['equation']}"
    )
    product = " * ".join(k.load(v, view) for v, view in reads) or IDENTITY["prod"][ty]
    k.sweep(fold_sweep("acc", ty, "sum", product))
    k.row_write(y, "acc")
    d = k.dispatch()
    ctx.kernel(list(ins), [y], [d] if d else [])


# -- CumSum, CumProd --------------------------------------------------------------------------
SCAN_CHUNK = 64  # points one invocation scans serially
SCAN_COMBINE = {"CumSum": "sum", "CumProd": "prod"}


@lowers(*SCAN_COMBINE)
def lower_cumulative(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    axis = op.attrs["axis"]
    shape = tuple(x.shape)
    L = shape[axis]
    inner = simplify(math.prod(shape[axis + 1 :]))
    outer = simplify(math.prod(shape[:axis]))
    if outer == 0 or inner == 0 or L == 0:
        ctx.kernel([x], [y], [])
        return
    exclusive, reverse = bool(op.attrs["exclusive"]), bool(op.attrs["reverse"])
    _cumulative(ctx, SCAN_COMBINE[op.kind], x, y, outer, L, inner, exclusive, reverse)


def _cumulative(ctx, combine, x, y, outer, L, inner, exclusive, reverse) -> None:
    """Each invocation scans a chunk of at most 64 points serially from its chunk's offset.
    The offsets are the exclusive scan (in the scan direction) of the chunk totals, done the
    same way one level down: log64(L) levels, no barriers, sums pairwise across levels.
    ``combine`` is "sum" (CumSum) or "prod" (CumProd); both are associative, so chunking only
    changes the float rounding order. Over dims kept symbolic, the chunk count is an
    expression of the length."""
    rows = simplify(outer * inner)
    ty = wgsl_type(x)
    if dim_bound(L) <= SCAN_CHUNK:  # every length in the range: one invocation per row
        ctx.kernel([x], [y], [_scan(ctx, combine, x, y, rows, L, inner, exclusive, reverse, 1, None)])
        return
    chunks = ceil_div(L, SCAN_CHUNK)
    space = (outer, L, inner)
    totals = ctx.temp(TensorType(DType(ty), (rows, chunks)), f"{y.name}.chunk_totals")
    offsets = ctx.temp(TensorType(DType(ty), (rows, chunks)), f"{y.name}.chunk_offsets")
    k = KernelBuilder(
        ctx, space, reduced=[1], split=(chunks, SCAN_CHUNK), group=1,
        comment=f"{ctx.current.kind}: the totals of {chunks} chunks per row",
    )  # fmt: skip
    k.sweep(fold_sweep("acc", ty, combine, k.load(x, contiguous(space))))
    k.row_write(totals, "acc")
    ctx.kernel([x], [totals], [k.dispatch()])
    _cumulative(ctx, combine, totals, offsets, rows, chunks, 1, True, reverse)
    d = _scan(ctx, combine, x, y, rows, L, inner, exclusive, reverse, chunks, offsets)
    ctx.kernel([x, offsets], [y], [d])


def _scan(ctx, combine, x, y, rows, L, inner, exclusive, reverse, chunks, offsets) -> Dispatch:
    chunk = SCAN_CHUNK if chunks != 1 else L  # chunks is 1, or an expression of a longer L
    units = simplify(rows * chunks)
    grid, nx = ctx.grid(ceil_div(units, 64))
    ty = wgsl_type(x)
    decls = (
        [decl("X", x)] + ([decl("Off", offsets)] if offsets is not None else []) + [decl("Y", y, write=True)]
    )
    shader = ctx.shader(
        "scan.wgsl.j2", decls=decls, wg=64, nx=nx, units=u32(units), L=u32(L), inner=u32(inner),
        L_inner=u32(L * inner), text_L=L, text_inner=inner, zero=IDENTITY[combine][ty],
        what={"sum": "sum", "prod": "product"}[combine], combine=COMBINE[combine]("carry", "v"),
        exclusive=exclusive, reverse=reverse, chunks=u32(chunks), chunked=chunks != 1,
        chunk=u32(chunk), text_chunk=chunk, offsets=offsets is not None,
    )  # fmt: skip
    bindings = [binding(x)] + ([binding(offsets)] if offsets is not None else []) + [binding(y, write=True)]
    return Dispatch(shader, grid, bindings)


# -- TopK ------------------------------------------------------------------------------------
TOPK_RANK_RATIO = 16  # k >= L / 16: rank every point (L^2 comparisons, no barriers) ...
TOPK_RANK_MAX_L = 16384  # ... for rows up to this long
TOPK_MAX_CHUNKS = 4096


@lowers("TopK")
def lower_topk(ctx: LowerCtx, op: Op) -> None:
    """k rounds per row, each a workgroup-wide arg-max over the points that come after the
    previous pick in the order (value, then lower index first): exact ties, no sorting
    buffer, any row length. When k is a large part of the row, each point's rank in that
    order is counted instead and is its output position. When k rounds over the whole row
    would loop past target.LOOP_BUDGET, the row's chunks first pick their own top k (with
    their indices), a workgroup each, and the rounds then run over those candidates."""
    x = op.inputs[0]
    axis, k = op.attrs["axis"], op.attrs["k"]
    outs = dict(zip(op.attrs["outputs"], op.outputs))
    shape = tuple(x.shape)
    L = shape[axis]
    inner = simplify(math.prod(shape[axis + 1 :]))
    if is_symbolic(shape):
        rows = simplify(math.prod(shape[:axis]) * inner)
    else:
        rows = math.prod(shape) // max(L, 1)
    most = dim_bound(L)  # over dims kept symbolic the plan holds for the longest row
    template = outs.get(0, outs.get(1))
    if rows == 0 or k == 0:
        ctx.kernel([x], list(op.outputs), [])
        return
    values = outs.get(0) or ctx.temp(TensorType(x.dtype, template.shape), f"{x.name}.topk_values")
    indices = outs.get(1) or ctx.temp(TensorType(DType.i64, template.shape), f"{x.name}.topk_indices")
    ty = wgsl_type(x)
    largest = bool(op.attrs["largest"])
    decls = [decl("X", x), decl("V", values, write=True), decl("I", indices, write=True)]
    better = ">" if largest else "<"
    if most <= TOPK_RANK_RATIO * k and most <= TOPK_RANK_MAX_L:
        # many picks: ranking every point at once beats k rounds of workgroup-wide arg-max
        total = simplify(rows * L)
        grid, nx = ctx.grid(ceil_div(total, 64))
        shader = ctx.shader(
            "topk_rank.wgsl.j2", decls=decls, wg=64, nx=nx, total=u32(total), L=u32(L), inner=u32(inner),
            L_inner=u32(L * inner), k_inner=u32(k * inner), k=k, better=better,
            text={"L": L, "inner": inner, "L_last": simplify(L - 1)},
        )  # fmt: skip
        d = Dispatch(shader, grid, [binding(x), binding(values, write=True), binding(indices, write=True)])
        ctx.kernel([x], [values, indices], [d])
        return
    wg = 256 if most > 1024 else 64
    rounds = dict(
        k=k, ty=ty, wg=wg, worst=IDENTITY["max" if largest else "min"][ty], better=better,
        worse="<" if largest else ">",
    )  # fmt: skip
    row_lines = [
        "let row = unit;",
        f"let base = (row / {u32(inner)}) * {u32(L * inner)} + row % {u32(inner)};",
        f"let obase = (row / {u32(inner)}) * {u32(k * inner)} + row % {u32(inner)};",
        f"let n = {u32(L)};",
    ]
    chunks = None if _topk_fits(k, most, wg) else _topk_chunks(k, most, wg)
    if chunks is not None and not isinstance(L, int):  # chunks of at least k points need a static L
        raise ctx.error(
            f"TopK of {k} over an axis of {L} points, which may be too long to pick from in one "
            "workgroup: chunking a symbolic axis is not supported yet",
            hint="narrow the axis' dim range (--dim NAME=LO..HI), or bind it",
        )
    if chunks is None:
        # one workgroup per row; when no chunking fits the budget either (k too large a part of
        # a long row), this still loops past it on a driver that cuts loops short
        grid, nx = ctx.grid(rows)
        shader = ctx.shader(
            "topk.wgsl.j2", decls=decls, nx=nx, units=u32(rows), unit_lines=row_lines, inner=u32(inner),
            out_stride=u32(inner), index="i32(pi)", what=f"{L} points (stride {inner}) per row", **rounds,
        )  # fmt: skip
        d = Dispatch(shader, grid, [binding(x), binding(values, write=True), binding(indices, write=True)])
        ctx.kernel([x], [values, indices], [d])
        return
    # candidates: each chunk's top k in order, with their indices in the row
    cand = k * chunks
    cv = ctx.temp(TensorType(x.dtype, (rows, cand)), f"{x.name}.topk_candidates")
    ci = ctx.temp(TensorType(DType.i32, (rows, cand)), f"{x.name}.topk_candidate_indices")
    chunk_lines = [
        f"let row = unit / {chunks}u;",
        f"let j0 = (unit % {chunks}u) * {L}u / {chunks}u;  // chunks of floor or ceil L / chunks >= k points",
        f"let n = ((unit % {chunks}u) + 1u) * {L}u / {chunks}u - j0;",
        f"let base = (row / {u32(inner)}) * {u32(L * inner)} + row % {u32(inner)} + j0 * {u32(inner)};",
        f"let obase = unit * {k}u;",
    ]
    grid, nx = ctx.grid(simplify(rows * chunks))
    first = ctx.shader(
        "topk.wgsl.j2", decls=[decl("X", x), decl("V", cv, write=True), decl("I", ci, write=True)], nx=nx,
        units=u32(rows * chunks), unit_lines=chunk_lines, inner=u32(inner), out_stride="1u",
        index="i32(j0 + pi)",
        what=f"each of {chunks} chunks of {L} points (stride {inner})", **rounds,
    )  # fmt: skip
    d = Dispatch(first, grid, [binding(x), binding(cv, write=True), binding(ci, write=True)])
    ctx.kernel([x], [cv, ci], [d])
    # a row's candidates in chunk order, each chunk's in (value, index) order: among equal
    # values, a lower slot is a lower index, so the rounds' ties still go to the lower index
    cand_lines = [
        "let row = unit;",
        f"let base = row * {cand}u;",
        f"let obase = (row / {u32(inner)}) * {u32(k * inner)} + row % {u32(inner)};",
        f"let n = {cand}u;",
    ]
    grid, nx = ctx.grid(rows)
    decls = [decl("X", cv), decl("CI", ci), decl("V", values, write=True), decl("I", indices, write=True)]
    second = ctx.shader(
        "topk.wgsl.j2", decls=decls, nx=nx, units=u32(rows), unit_lines=cand_lines, inner="1u",
        out_stride=u32(inner),
        index=f"{ref('CI')}[base + pi]", what=f"the {cand} candidates of a row's {chunks} chunks", **rounds,
    )  # fmt: skip
    bindings = [binding(cv), binding(ci), binding(values, write=True), binding(indices, write=True)]
    ctx.kernel([cv, ci], [values, indices], [Dispatch(second, grid, bindings)])


def _topk_fits(k: int, n: int, wg: int) -> bool:
    """Whether k rounds of a workgroup's arg-max over n points fit the loop budget."""
    return loops_fit(k * (1 + math.ceil(n / wg) + int(math.log2(wg))))


def _topk_chunks(k: int, L: int, wg: int) -> int | None:
    """The number of chunks (each at least k points) whose candidate rounds fit the loop
    budget and loop least, or None."""
    best = None
    for chunks in range(2, min(L // k, TOPK_MAX_CHUNKS) + 1):
        if chunks * L >= 2**32:  # a chunk's start, c * L / chunks, is computed in u32
            break
        if _topk_fits(k, math.ceil(L / chunks), wg) and _topk_fits(k, chunks * k, wg):
            cost = max(math.ceil(L / chunks), chunks * k)
            if best is None or cost < best[0]:
                best = (cost, chunks)
    return best and best[1]


# -- Det -------------------------------------------------------------------------------------
DET_MAX_N = 16  # a private n x n copy per invocation; bigger matrices would spill badly


@lowers("Det")
def lower_det(ctx: LowerCtx, op: Op) -> None:
    """Gaussian elimination with partial pivoting, one matrix per invocation, in f32."""
    x, y = op.inputs[0], op.outputs[0]
    n = x.shape[-1]
    if x.shape[-2] != n:
        raise ctx.error(f"Det needs square matrices, got {x.type}")
    if not isinstance(simplify(n), int):  # each invocation holds a private n x n array
        raise ctx.error(
            f"Det of {n}x{n} matrices: the matrix size cannot be a dim kept symbolic",
            hint="bind that dim with --dim NAME=N",
        )
    if n > DET_MAX_N:
        raise ctx.error(f"Det of {n}x{n} matrices is not supported", hint=f"at most {DET_MAX_N}x{DET_MAX_N}")
    count = simplify(math.prod(x.shape[:-2]))
    if count == 0:
        ctx.kernel([x], [y], [])
        return
    if n == 0:
        d = _fill(ctx, y, "1.0f")
        ctx.kernel([x], [y], [d])
        return
    grid, nx = ctx.grid(ceil_div(count, 64))
    shader = ctx.shader(
        "det.wgsl.j2", decls=[decl("X", x), decl("Y", y, write=True)], wg=64, nx=nx, count=u32(count),
        text_count=count, n=n,
    )  # fmt: skip
    ctx.kernel([x], [y], [Dispatch(shader, grid, [binding(x), binding(y, write=True)])])


def _fill(ctx: LowerCtx, y: Value, literal: str) -> Dispatch | None:
    from .elementwise import map_dispatch

    return map_dispatch(ctx, tuple(y.shape), [], (y, contiguous(y.shape)), lambda a: literal)


def empty_reduction_value(kind: str, dtype: DType) -> np.ndarray | None:
    """What a reduction over no points gives (the combine's identity, per the reference), or
    None where the GPU cannot hold it (int64 extremes)."""
    np_dt = dtype.numpy
    if kind in ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2"):
        return np.zeros((), np_dt)
    if kind == "ReduceProd":
        return np.ones((), np_dt)
    if kind in ("ReduceLogSum", "ReduceLogSumExp"):
        return np.array(-np.inf, np_dt)
    if kind == "ReduceMean":
        return np.array(np.nan, np_dt) if dtype.is_float else None
    if kind in ("ReduceMax", "ReduceMin"):
        lo = kind == "ReduceMax"
        if dtype == DType.bool:
            return np.array(not lo)
        if dtype.is_float:
            return np.array(-np.inf if lo else np.inf, np_dt)
        if dtype in (DType.i64, DType.u64):
            return None
        info = np.iinfo(np_dt)
        return np.array(info.min if lo else info.max, np_dt)
    return None


__all__ = ["arg_sweep", "broadcast", "fold_sweep"]

"""Indexed loads and stores: Gather, GatherElements, GatherND, OneHot, ScatterElements, ScatterND,
TensorScatter.

A gather is a point kernel (builder.py) whose data address is an affine view of the output
point plus loaded indices times strides. Indices (int32 or int64, both stored as i32) may be
negative (they count from the end); an index outside its axis reads 0 and a scatter drops
it, where ONNX leaves the result undefined.

Scatters copy data to the output first, then apply the updates, deterministically and
exactly whatever the duplicates among the indices. Without a reduction the last update to an
element wins: an integer atomicMax claims each element for its highest update index, then the
winners write. With a reduction (whose float rounding depends on order) the invocation of the
first update to an element applies all of that element's updates in index order, and later
ones return at once, so no atomics are needed.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import DType, Op, TensorType, Value
from onnx2wgsl.ir.symbolic import simplify, smax

from . import LowerCtx, i32, lowers, u32, wgsl_type
from .builder import ZERO, KernelBuilder
from .elementwise import map_dispatch
from .indexing import View, contiguous, contiguous_strides


def _index(k: KernelBuilder, name: str, load: str, n) -> None:
    """Lines binding ``name`` (i32, normalized from a negative count), ``name_ok`` (in range)
    and ``name_u`` (u32, clamped into range so that no read leaves the tensor). ``n`` may be
    a dim kept symbolic (its value is read at run time)."""
    k.add(
        f"let {name}_raw = {load};",
        f"let {name} = select({name}_raw, {name}_raw + {i32(n)}, {name}_raw < 0i);",
        f"let {name}_ok = {name} >= 0i && {name} < {i32(n)};",
        f"let {name}_u = u32(clamp({name}, 0i, {i32(smax(n - 1, 0))}));",
    )


def _emit(ctx: LowerCtx, inputs: list[Value], y: Value, dispatches) -> None:
    ctx.kernel(inputs, [y], [d for d in dispatches if d is not None])


@lowers("Gather")
def lower_gather(ctx: LowerCtx, op: Op) -> None:
    x, idx = op.inputs[:2]
    y = op.outputs[0]
    a, q, r = op.attrs["axis"], idx.type.rank, x.type.rank
    js = contiguous_strides(idx.shape)
    idx_view = View(0, (0,) * a + js + (0,) * (r - a - 1))
    _gather_along(ctx, x, idx, y, a, idx_view, lambda xs: View(0, xs[:a] + (0,) * q + xs[a + 1 :]))


@lowers("GatherElements")
def lower_gather_elements(ctx: LowerCtx, op: Op) -> None:
    x, idx = op.inputs[:2]
    y = op.outputs[0]
    a = op.attrs["axis"]
    _gather_along(
        ctx,
        x,
        idx,
        y,
        a,
        contiguous(y.shape),
        lambda xs: View(0, tuple(0 if d == a else s for d, s in enumerate(xs))),
    )


def _gather_along(ctx: LowerCtx, x: Value, idx: Value, y: Value, a: int, idx_view: View, data_view) -> None:
    """y = x at ``data_view(x's strides)`` of the output point plus the index read at
    ``idx_view`` times axis ``a``'s stride; an index out of range reads 0.

    A constant table over the binding limit (a 50k-token vocabulary's embeddings) is cut along
    axis ``a`` into constants that each fit one binding, with one dispatch per part: each writes
    the points whose index falls in its part, and the first also those whose index is out of
    range, so every point is written once."""
    n = x.shape[a]
    parts = _table_parts(ctx, x, a)
    dispatches = []
    for table, lo, hi in parts:
        k = KernelBuilder(ctx, y.shape)
        _index(k, "j", f"{k.read(idx)}[{k.at(idx_view)}]", n)
        strides = contiguous_strides(table.shape)
        if len(parts) > 1:  # the first part also writes the zeros of indices out of range
            theirs = f"j_ok && j >= {hi}i" if lo == 0 else f"!(j_ok && j >= {lo}i && j < {hi}i)"
            k.add(f"if ({theirs}) {{", "  return;", "}")
        row = f"(j_u - {lo}u)" if lo else "j_u"
        addr = f"{k.at(data_view(strides))} + {row} * {u32(strides[a])}"
        k.store(f"select({ZERO[wgsl_type(y)]}, {k.element(table, addr)}, j_ok)", y)
        dispatches.append(k.dispatch())
    _emit(ctx, [*(t for t, _, _ in parts), idx], y, dispatches)


def _table_parts(ctx: LowerCtx, x: Value, a: int) -> list[tuple[Value, int, int]]:
    """``x`` as (part, first index, end index) along axis ``a``: itself when it fits one
    binding, else a constant's slices that each do."""
    limit = ctx.target.max_binding_size
    if x.nbytes <= limit or not x.is_const:
        return [(x, 0, x.shape[a])]  # a computed table over the limit fails the binding check
    per_index = x.nbytes // x.shape[a]
    step = limit // per_index
    if step == 0:
        raise ctx.error(
            f"one index of %{x.name} along axis {a} spans {per_index:,} bytes, over the target's "
            f"maxStorageBufferBindingSize of {limit:,}",
            hint="compile for a target with larger limits (--limits FILE.json)",
        )
    parts = []
    for lo in range(0, x.shape[a], step):
        hi = min(x.shape[a], lo + step)
        data = np.ascontiguousarray(x.data[(slice(None),) * a + (slice(lo, hi),)])
        parts.append((ctx.const(data, f"{x.name}.rows{lo}", dtype=x.dtype, like=x), lo, hi))
    return parts


@lowers("GatherND")
def lower_gather_nd(ctx: LowerCtx, op: Op) -> None:
    """out[b.., i.., t..] = x[b.., idx[b.., i.., 0], ..., idx[b.., i.., m-1], t..]."""
    x, idx = op.inputs[:2]
    y = op.outputs[0]
    b = op.attrs["batch_dims"]
    q, m = idx.type.rank, idx.shape[-1]
    xs, js = contiguous_strides(x.shape), contiguous_strides(idx.shape)
    tail = x.type.rank - b - m  # trailing data dims copied whole
    k = KernelBuilder(ctx, y.shape)
    base = k.at(View(0, js[:-1] + (0,) * tail))
    k.add(f"let base = {base};")
    ind = k.read(idx)
    terms, oks = [k.at(View(0, xs[:b] + (0,) * (q - 1 - b) + xs[b + m :]))], []
    for j in range(m):
        _index(k, f"j{j}", f"{ind}[base + {j}u]", x.shape[b + j])
        terms.append(f"j{j}_u * {u32(xs[b + j])}")
        oks.append(f"j{j}_ok")
    ok = " && ".join(oks) if oks else "true"
    k.store(f"select({ZERO[wgsl_type(y)]}, {k.element(x, ' + '.join(terms))}, {ok})", y)
    _emit(ctx, [x, idx], y, [k.dispatch()])


@lowers("OneHot")
def lower_one_hot(ctx: LowerCtx, op: Op) -> None:
    """out[.., j, ..] = values[1] where j == idx[..] (negative idx counts from depth), else values[0]."""
    idx, values = op.inputs[:2]
    y = op.outputs[0]
    a, depth = op.attrs["axis"], op.attrs["depth"]
    js = contiguous_strides(idx.shape)
    k = KernelBuilder(ctx, y.shape)
    load = f"{k.read(idx)}[{k.at(View(0, js[:a] + (0,) + js[a:]))}]"
    # float indices are truncated toward zero, like a cast to int64
    k.add(f"let j_raw = i32({load});", f"let j = select(j_raw, j_raw + {depth}i, j_raw < 0i);")
    V = k.read(values)
    k.store(f"select({V}[0], {V}[1], j == i32({k.c(a)}))", y)
    _emit(ctx, [idx, values], y, [k.dispatch()])


# -- scatters ---------------------------------------------------------------------------------
# How a reduction folds an update b into the value a, per storage type (bool is u32 0/1, where
# ONNX's add and mul on bool are or and and).
_COMBINE = {
    "add": lambda a, b, t: f"({a} | {b})" if t == "bool" else f"({a} + {b})",
    "mul": lambda a, b, t: f"({a} & {b})" if t == "bool" else f"({a} * {b})",
    "max": lambda a, b, t: f"max({a}, {b})",
    "min": lambda a, b, t: f"min({a}, {b})",
}


def _copy(ctx: LowerCtx, x: Value, y: Value):
    return map_dispatch(ctx, y.shape, [(x, contiguous(x.shape))], (y, contiguous(y.shape)), lambda a: a[0])


def _slot_helper(ind: str, lines: list[str]) -> str:
    """``fn scatter_slot(t: u32) -> i32``: the slot update t writes, or -1 if an index is out of
    range. ``lines`` name the indices binding ``{ind}``."""
    body = [ln.replace("{ind}", ind) for ln in lines]
    return "\n".join(["fn scatter_slot(t: u32) -> i32 {", *body, "}"])


def _last_wins(
    ctx: LowerCtx, op: Op, y: Value, count: int, slots: int, inner: int, slot_lines: list[str]
) -> None:
    """reduction=none: the last update to a slot wins. A claim pass takes the highest update
    index per slot with atomicMax (integer, so exact and independent of order); an apply pass
    writes each slot's winner. Linear in the number of updates, whatever their duplicates."""
    x, idx, upd = op.inputs[:3]
    win = ctx.temp(TensorType(DType.i32, (slots,)), f"{y.name}.winner")
    fill = KernelBuilder(ctx, (slots,))
    fill.store("-1i", win)
    claim = KernelBuilder(ctx, (count,))
    claim.helper(_slot_helper(claim.read(idx), slot_lines))
    W = claim.write(win, atomic=True)
    claim.add("let s = scatter_slot(i);", f"if (s >= 0i) {{ atomicMax(&{W}[u32(s)], i32(i)); }}")
    apply = KernelBuilder(ctx, (count, inner))
    apply.helper(_slot_helper(apply.read(idx), slot_lines))
    apply.add(
        f"let s = scatter_slot({apply.c(0)});",
        f"if (s < 0i || {apply.read(win)}[u32(s)] != i32({apply.c(0)})) {{ return; }}",
        apply.store_at(y, f"u32(s) * {u32(inner)} + {apply.c(1)}", apply.element(upd, "i")),
    )
    dispatches = [_copy(ctx, x, y), fill.dispatch(), claim.dispatch(), apply.dispatch()]
    ctx.kernel([x, idx, upd], [y, win], [d for d in dispatches if d is not None])


def _reduce_in_order(
    ctx: LowerCtx, op: Op, y: Value, count: int, slots: int, inner: int, slot_lines: list[str]
) -> None:
    """Reductions, whose float rounding depends on order: every slot folds its updates in index
    order, so results are deterministic (and equal the sequential definition's). The updates are
    bucketed by slot with integer atomics (exact): a count per slot, a region per slot claimed
    from a running total (regions land anywhere; only their contents matter), then each update
    sorts itself into its region by counting the members with a smaller index. Linear work
    plus the sum of squared bucket sizes, spread over the updates."""
    x, idx, upd = op.inputs[:3]
    fold = _COMBINE[op.attrs["reduction"]]
    kind = "bool" if y.dtype.name == "bool" else wgsl_type(y)

    def temp(n: int, what: str) -> Value:
        return ctx.temp(TensorType(DType.i32, (n,)), f"{y.name}.{what}")

    sizes, start = temp(slots + 1, "bucket_sizes"), temp(slots, "bucket_start")  # sizes[slots]: total
    slot_of, arrival = temp(count, "slot"), temp(count, "arrival")
    bucket, ordered = temp(count, "bucket"), temp(count, "ordered")
    zero = KernelBuilder(ctx, (slots + 1,))
    zero.store("0i", sizes)
    tally = KernelBuilder(ctx, (count,))
    tally.helper(_slot_helper(tally.read(idx), slot_lines))
    S = tally.write(sizes, atomic=True)
    tally.add(
        "let s = scatter_slot(i);",
        f"{tally.write(slot_of)}[i] = s;",
        f"if (s >= 0i) {{ {tally.write(arrival)}[i] = atomicAdd(&{S}[u32(s)], 1i); }}",
    )
    claim = KernelBuilder(ctx, (slots,))
    S = claim.write(sizes, atomic=True)
    claim.add(
        f"let n = atomicLoad(&{S}[i]);",
        f"if (n > 0i) {{ {claim.write(start)}[i] = atomicAdd(&{S}[{u32(slots)}], n); }}",
    )
    place = KernelBuilder(ctx, (count,))
    place.add(
        f"let s = {place.read(slot_of)}[i];",
        "if (s < 0i) { return; }",
        f"{place.write(bucket)}[u32({place.read(start)}[u32(s)] + {place.read(arrival)}[i])] = i32(i);",
    )
    sort = KernelBuilder(ctx, (count,))
    B = sort.read(bucket)
    sort.add(
        f"let s = {sort.read(slot_of)}[i];",
        "if (s < 0i) { return; }",
        f"let first = u32({sort.read(start)}[u32(s)]);",
        f"let n = u32({sort.read(sizes)}[u32(s)]);",
        "var rank = 0u;",
        f"for (var q = 0u; q < n; q++) {{ rank += u32({B}[first + q] < i32(i)); }}",
        f"{sort.write(ordered)}[first + rank] = i32(i);",
    )
    apply = KernelBuilder(ctx, (slots, inner))
    acc, U, order = apply.output_element(y, "i"), apply.reader(upd), apply.read(ordered)
    apply.add(
        f"let n = u32({apply.read(sizes)}[{apply.c(0)}]);",
        "if (n == 0u) { return; }",
        f"let first = u32({apply.read(start)}[{apply.c(0)}]);",
        f"var acc = {acc};",
        "for (var q = 0u; q < n; q++) {",
        f"  acc = {fold('acc', U(f'u32({order}[first + q]) * {u32(inner)} + {apply.c(1)}'), kind)};",
        "}",
        apply.store_at(y, "i", "acc"),
    )
    dispatches = [_copy(ctx, x, y)] + [k.dispatch() for k in (zero, tally, claim, place, sort, apply)]
    temps = [sizes, start, slot_of, arrival, bucket, ordered]
    ctx.kernel([x, idx, upd], [y, *temps], [d for d in dispatches if d is not None])


def _norm(v: str, n) -> str:
    return f"select({v}, {v} + {i32(n)}, {v} < 0i)"


@lowers("ScatterElements", "Scatter")
def lower_scatter_elements(ctx: LowerCtx, op: Op) -> None:
    """out = data; out[.., idx[u], ..] (axis position replaced) op= updates[u] for each u.
    Each output element is a slot of its own."""
    x, idx, upd = op.inputs[:3]
    y = op.outputs[0]
    a = op.attrs["axis"]
    n = x.shape[a]
    ys, js = contiguous_strides(y.shape), contiguous_strides(idx.shape)
    # slot of update t: the flat output element at t's coordinates with the axis one replaced
    lines = [f"  let u{d} = (t / {u32(js[d])}) % {u32(m)};" for d, m in enumerate(idx.shape)]
    terms = [f"u{d} * {u32(ys[d])}" for d in range(len(ys)) if d != a] + [f"u32(v) * {u32(ys[a])}"]
    lines += [
        "  let v_raw = {ind}[t];",
        f"  let v = {_norm('v_raw', n)};",
        f"  if (v < 0i || v >= {i32(n)}) {{ return -1i; }}",
        f"  return i32({' + '.join(terms)});",
    ]
    reduce = _last_wins if op.attrs["reduction"] == "none" else _reduce_in_order
    reduce(ctx, op, y, simplify(math.prod(idx.shape)), simplify(math.prod(y.shape)), 1, lines)


@lowers("ScatterND")
def lower_scatter_nd(ctx: LowerCtx, op: Op) -> None:
    """out = data; out[idx[u]] (a slice of the trailing dims) op= updates[u] for each u.
    A slot is one slice; its ``inner`` elements are updated in parallel."""
    x, idx, upd = op.inputs[:3]
    y = op.outputs[0]
    m = idx.shape[-1]
    count = simplify(math.prod(idx.shape[:-1]))
    inner = simplify(math.prod(x.shape[m:]))
    ps = contiguous_strides(x.shape[:m])
    lines = ["  var at = 0i;"]
    for j in range(m):
        n = x.shape[j]
        lines += [
            f"  let v{j}_raw = {{ind}}[t * {u32(m)} + {j}u];",
            f"  let v{j} = {_norm(f'v{j}_raw', n)};",
            f"  if (v{j} < 0i || v{j} >= {i32(n)}) {{ return -1i; }}",
            f"  at += v{j} * {i32(ps[j])};",
        ]
    lines.append("  return at;")
    reduce = _last_wins if op.attrs["reduction"] == "none" else _reduce_in_order
    reduce(ctx, op, y, count, simplify(math.prod(x.shape[:m])), inner, lines)


@lowers("TensorScatter")
def lower_tensor_scatter(ctx: LowerCtx, op: Op) -> None:
    """present = past with update written along ``axis`` from each batch entry's write index
    (0 without write_indices; modulo the cache length in circular mode). Each output element
    finds the update position that lands on it, if any: one pass, no copy first."""
    past, update = op.inputs[:2]
    where = op.inputs[2] if op.attrs["has_write_indices"] else None
    y = op.outputs[0]
    a = op.attrs["axis"]
    M, L = past.shape[a], update.shape[a]
    ins = [v for v in (past, update, where) if v is not None]
    if simplify(L) == 0:  # nothing to write: a copy
        _emit(ctx, ins, y, [_copy(ctx, past, y)])
        return
    us = contiguous_strides(update.shape)
    k = KernelBuilder(ctx, y.shape)
    P, U = k.read(past), k.read(update)
    k.add(f"let w = {k.read(where)}[{k.c(0)}];" if where is not None else "let w = 0i;")
    if op.attrs["mode"] == "circular":
        k.add(f"let j = ((i32({k.c(a)}) - w) % {i32(M)} + {i32(M)}) % {i32(M)};")
    else:
        k.add(f"let j = i32({k.c(a)}) - w;")
    row = k.at(View(0, tuple(0 if d == a else s for d, s in enumerate(us))))
    addr = f"{row} + u32(clamp(j, 0i, {i32(L - 1)})) * {u32(us[a])}"
    k.store(f"select({P}[i], {U}[{addr}], j >= 0i && j < {i32(L)})", y)
    _emit(ctx, ins, y, [k.dispatch()])

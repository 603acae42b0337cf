"""Indexed loads and stores: Gather, GatherElements, GatherND, OneHot, ScatterElements, ScatterND.

A gather is a coordinate kernel whose data address is an affine view of the output point plus
loaded indices times strides. Indices (int32 or int64, both stored as i32) may be negative
(they count from the end); an index outside its axis reads 0 and a scatter drops it, where
ONNX leaves the result undefined.

Scatters are one copy dispatch (out = data) and one update dispatch with an invocation per
update. Updates that hit the same output element are serialized without atomics, so every
reduction is exact and the result deterministic: the invocation of the first update to an
element applies all of that element's updates in index order (later ones return at once).
"""

from __future__ import annotations

import math

from onnx2wgsl.ir import Op, Value

from . import LowerCtx, lowers, wgsl_type
from .coords import ZERO, CoordKernel
from .elementwise import map_dispatch
from .indexing import View, contiguous, contiguous_strides


def _index(k: CoordKernel, name: str, load: str, n: int) -> None:
    """Lines binding ``name`` (i32, normalized from a negative count), ``name_ok`` (in range)
    and ``name_u`` (u32, clamped into range so that no read leaves the tensor)."""
    k.add(
        f"let {name}_raw = {load};",
        f"let {name} = select({name}_raw, {name}_raw + {n}i, {name}_raw < 0i);",
        f"let {name}_ok = {name} >= 0i && {name} < {n}i;",
        f"let {name}_u = u32(clamp({name}, 0i, {max(n - 1, 0)}i));",
    )


def _emit(ctx: LowerCtx, inputs: list[Value], y: Value, dispatches) -> None:
    ctx.kernel(inputs, [y], [d for d in dispatches if d is not None])


@lowers("Gather")
def lower_gather(ctx: LowerCtx, op: Op) -> None:
    x, idx = op.inputs[:2]
    y = op.outputs[0]
    a, q, r = op.attrs["axis"], idx.type.rank, x.type.rank
    xs, js = contiguous_strides(x.shape), contiguous_strides(idx.shape)
    k = CoordKernel(ctx, y.shape)
    idx_view = View(0, (0,) * a + js + (0,) * (r - a - 1))
    data_view = View(0, xs[:a] + (0,) * q + xs[a + 1 :])
    _index(k, "j", f"{k.read(idx)}[{k.at(idx_view)}]", x.shape[a])
    addr = f"{k.at(data_view)} + j_u * {xs[a]}u"
    k.store(f"select({ZERO[wgsl_type(y)]}, {k.read(x)}[{addr}], j_ok)", y)
    _emit(ctx, [x, idx], y, [k.dispatch()])


@lowers("GatherElements")
def lower_gather_elements(ctx: LowerCtx, op: Op) -> None:
    x, idx = op.inputs[:2]
    y = op.outputs[0]
    a = op.attrs["axis"]
    xs = contiguous_strides(x.shape)
    k = CoordKernel(ctx, y.shape)
    _index(k, "j", f"{k.read(idx)}[i]", x.shape[a])
    addr = f"{k.at(View(0, tuple(0 if d == a else s for d, s in enumerate(xs))))} + j_u * {xs[a]}u"
    k.store(f"select({ZERO[wgsl_type(y)]}, {k.read(x)}[{addr}], j_ok)", y)
    _emit(ctx, [x, idx], y, [k.dispatch()])


@lowers("GatherND")
def lower_gather_nd(ctx: LowerCtx, op: Op) -> None:
    """out[b.., i.., t..] = x[b.., idx[b.., i.., 0], ..., idx[b.., i.., m-1], t..]."""
    x, idx = op.inputs[:2]
    y = op.outputs[0]
    b = op.attrs["batch_dims"]
    q, m = idx.type.rank, idx.shape[-1]
    xs, js = contiguous_strides(x.shape), contiguous_strides(idx.shape)
    tail = x.type.rank - b - m  # trailing data dims copied whole
    k = CoordKernel(ctx, y.shape)
    base = k.at(View(0, js[:-1] + (0,) * tail))
    k.add(f"let base = {base};")
    ind = k.read(idx)
    terms, oks = [k.at(View(0, xs[:b] + (0,) * (q - 1 - b) + xs[b + m :]))], []
    for j in range(m):
        _index(k, f"j{j}", f"{ind}[base + {j}u]", x.shape[b + j])
        terms.append(f"j{j}_u * {xs[b + j]}u")
        oks.append(f"j{j}_ok")
    ok = " && ".join(oks) if oks else "true"
    k.store(f"select({ZERO[wgsl_type(y)]}, {k.read(x)}[{' + '.join(terms)}], {ok})", y)
    _emit(ctx, [x, idx], y, [k.dispatch()])


@lowers("OneHot")
def lower_one_hot(ctx: LowerCtx, op: Op) -> None:
    """out[.., j, ..] = values[1] where j == idx[..] (negative idx counts from depth), else values[0]."""
    idx, values = op.inputs[:2]
    y = op.outputs[0]
    a, depth = op.attrs["axis"], op.attrs["depth"]
    js = contiguous_strides(idx.shape)
    k = CoordKernel(ctx, y.shape)
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
    "none": lambda a, b, t: b,
    "add": lambda a, b, t: f"({a} | {b})" if t == "bool" else f"({a} + {b})",
    "mul": lambda a, b, t: f"({a} & {b})" if t == "bool" else f"({a} * {b})",
    "max": lambda a, b, t: f"max({a}, {b})",
    "min": lambda a, b, t: f"min({a}, {b})",
}


def _copy(ctx: LowerCtx, x: Value, y: Value):
    return map_dispatch(ctx, y.shape, [(x, contiguous(x.shape))], (y, contiguous(y.shape)), lambda a: a[0])


def _serialize(k: CoordKernel, y: Value, reduction: str, same: str, update: str, count: str, mine: str,
               target: str) -> None:  # fmt: skip
    """The update loop shared by both scatters. ``same`` (with ``t``) tests whether update t hits
    this invocation's element, ``update`` (with ``t``) loads it; ``mine`` is this invocation's
    position among the candidates and ``target`` the element's address."""
    kind = "bool" if y.dtype.name == "bool" else wgsl_type(y)
    Y = k.write(y)
    k.add(
        f"for (var t = 0u; t < {mine}; t++) {{",
        f"  if ({same}) {{ return; }}  // an earlier update owns this element",
        "}",
    )
    if reduction == "none":  # the last update wins
        k.add(f"var acc = {update.replace('{t}', mine)};", f"for (var t = {mine} + 1u; t < {count}; t++) {{")
    else:
        k.add(f"var acc = {Y}[{target}];", f"for (var t = {mine}; t < {count}; t++) {{")
    k.add(
        f"  if ({same}) {{ acc = {_COMBINE[reduction]('acc', update.replace('{t}', 't'), kind)}; }}",
        "}",
        f"{Y}[{target}] = acc;",
    )


@lowers("ScatterElements", "Scatter")
def lower_scatter_elements(ctx: LowerCtx, op: Op) -> None:
    """out = data; out[.., idx[u], ..] (axis position replaced) op= updates[u] for each u."""
    x, idx, upd = op.inputs[:3]
    y = op.outputs[0]
    a = op.attrs["axis"]
    n = x.shape[a]
    ys, js = contiguous_strides(y.shape), contiguous_strides(idx.shape)
    k = CoordKernel(ctx, idx.shape)
    ind, U = k.read(idx), k.read(upd)
    _index(k, "j", f"{ind}[i]", n)
    k.add("if (!j_ok) { return; }")
    # the candidates are the updates along the axis through this one (same other coords)
    k.add(f"let row = i - {k.c(a)} * {js[a]}u;")
    target = f"{k.at(View(0, tuple(0 if d == a else s for d, s in enumerate(ys))))} + j_u * {ys[a]}u"
    k.add(f"let dst = {target};")

    def norm(v):
        return f"select({v}, {v} + {n}i, {v} < 0i)"

    same = f"{norm(f'{ind}[row + t * {js[a]}u]')} == j"
    _serialize(k, y, op.attrs["reduction"], same, f"{U}[row + {{t}} * {js[a]}u]", f"{idx.shape[a]}u",
               k.c(a), "dst")  # fmt: skip
    _emit(ctx, [x, idx, upd], y, [_copy(ctx, x, y), k.dispatch()])


@lowers("ScatterND")
def lower_scatter_nd(ctx: LowerCtx, op: Op) -> None:
    """out = data; out[idx[u]] (a slice of the trailing dims) op= updates[u] for each u."""
    x, idx, upd = op.inputs[:3]
    y = op.outputs[0]
    m = idx.shape[-1]
    count = math.prod(idx.shape[:-1])
    inner = math.prod(x.shape[m:])
    xs = contiguous_strides(x.shape)
    k = CoordKernel(ctx, (count, inner))
    ind, U = k.read(idx), k.read(upd)
    # scatter_slot(t): the flat offset of update t's slice, or -1 if an index is out of range
    lines = ["fn scatter_slot(t: u32) -> i32 {", "  var at = 0i;"]
    for j in range(m):
        n = x.shape[j]
        lines += [
            f"  let v{j}_raw = {ind}[t * {m}u + {j}u];",
            f"  let v{j} = select(v{j}_raw, v{j}_raw + {n}i, v{j}_raw < 0i);",
            f"  if (v{j} < 0i || v{j} >= {n}i) {{ return -1i; }}",
            f"  at += v{j} * {xs[j]}i;",
        ]
    k.helper("\n".join(lines + ["  return at;", "}"]))
    k.add(f"let me = scatter_slot({k.c(0)});", "if (me < 0i) { return; }")
    _serialize(k, y, op.attrs["reduction"], "scatter_slot(t) == me", f"{U}[{{t}} * {inner}u + {k.c(1)}]",
               f"{count}u", k.c(0), f"u32(me) + {k.c(1)}")  # fmt: skip
    _emit(ctx, [x, idx, upd], y, [_copy(ctx, x, y), k.dispatch()])

"""Strided data movement: Slice, Split, Tile, Expand, DepthToSpace/SpaceToDepth as affine
views (zero-copy where the result is one aligned contiguous run of the input), and the
coordinate-wise ops Pad, Trilu, EyeLike, ReverseSequence. Every kernel here moves values
of any storage type (f32, i32, u32) unchanged."""

from __future__ import annotations

import math

from onnx2wgsl.ir import DType, Op, Value
from onnx2wgsl.ir.symbolic import Expr, simplify, smax
from onnx2wgsl.ir.types import dim_bound

from ..symbolic_fold import slice_start
from . import LowerCtx, i32, lowers, u32, wgsl_type
from .builder import ZERO, KernelBuilder, literal
from .elementwise import emit_map, map_dispatch
from .indexing import View, broadcast, contiguous, contiguous_strides, is_dense, permuted, sliced


def copy_or_alias(ctx: LowerCtx, x: Value, y: Value, view: View):
    """``y = x[view]``: a zero-copy view when it is one aligned contiguous run of a computed
    tensor, else a copy dispatch (returned, or None when aliased or empty). An offset over
    dims kept symbolic is a copy: a view's offset is a fixed number of bytes."""
    offset, size = simplify(view.offset), 2 if x.stored == DType.f16 else 4
    aligned = isinstance(offset, int) and (offset * size) % ctx.target.alignment == 0
    if ctx.can_view(x, y) and simplify(math.prod(y.shape)) != 0 and aligned and is_dense(y.shape, view):
        ctx.view(x, y, offset * size)
        return None
    return map_dispatch(ctx, y.shape, [(x, view)], (y, contiguous(y.shape)), lambda a: a[0])


@lowers("Slice")
def lower_slice(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    # on an axis kept symbolic an int start is ONNX's (negative counts from the end), clamped
    # here; a start that depends on the dims is the first index already (legalize/data.py)
    starts = [
        slice_start(n, s) if isinstance(n, Expr) and not isinstance(s, Expr) else s
        for n, s in zip(x.shape, op.attrs["starts"])
    ]
    d = copy_or_alias(ctx, x, y, sliced(x.shape, starts, op.attrs["steps"]))
    if d is not None:
        emit_map(ctx, [x], y, [d])


@lowers("Split")
def lower_split(ctx: LowerCtx, op: Op) -> None:
    """Each output is a slice along the axis: aliased where it can be, else one copy dispatch."""
    x = op.inputs[0]
    axis = op.attrs["axis"]
    rank = x.type.rank
    at = 0
    copies, outs = [], []
    for y, size in zip(op.outputs, op.attrs["split"]):
        starts = [at if d == axis else 0 for d in range(rank)]
        d = copy_or_alias(ctx, x, y, sliced(x.shape, starts, [1] * rank))
        if d is not None:
            copies.append(d)
            outs.append(y)
        elif y.producer is None:
            outs.append(y)  # an empty output: produced by the kernel, with no work
        at += size
    if outs:
        ctx.kernel([x], outs, copies)


@lowers("Tile")
def lower_tile(ctx: LowerCtx, op: Op) -> None:
    """Tile is a broadcast over interleaved (repeat, dim) axes: out[r, j] = x[j]."""
    x, y = op.inputs[0], op.outputs[0]
    space, strides = [], []
    for n, r, s in zip(x.shape, op.attrs["repeats"], contiguous_strides(x.shape)):
        space += [r, n]
        strides += [0, s]
    d = map_dispatch(
        ctx, tuple(space), [(x, View(0, tuple(strides)))], (y, contiguous(space)), lambda a: a[0]
    )
    emit_map(ctx, [x], y, [d])


@lowers("Expand")
def lower_expand(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    if tuple(x.shape) == tuple(y.shape) and ctx.can_view(x, y):
        ctx.view(x, y)
        return
    d = map_dispatch(
        ctx, y.shape, [(x, broadcast(x.shape, y.shape))], (y, contiguous(y.shape)), lambda a: a[0]
    )
    emit_map(ctx, [x], y, [d])


@lowers("DepthToSpace", "SpaceToDepth")
def lower_depth_space(ctx: LowerCtx, op: Op) -> None:
    """Both are a reshape to 6-D, a transpose and a reshape back: one permuted copy."""
    x, y = op.inputs[0], op.outputs[0]
    b = op.attrs["blocksize"]
    N, C, H, W = x.shape
    if op.kind == "SpaceToDepth":
        x6 = (N, C, H // b, b, W // b, b)
        perm = (0, 3, 5, 1, 2, 4) if op.attrs["mode"] == "DCR" else (0, 1, 3, 5, 2, 4)
    elif op.attrs["mode"] == "DCR":
        x6, perm = (N, b, b, C // (b * b), H, W), (0, 3, 4, 1, 5, 2)
    else:
        x6, perm = (N, C // (b * b), b, b, H, W), (0, 1, 4, 2, 5, 3)
    space = tuple(x6[p] for p in perm)
    d = map_dispatch(ctx, space, [(x, permuted(x6, perm))], (y, contiguous(space)), lambda a: a[0])
    emit_map(ctx, [x], y, [d])


# -- coordinate-wise ops ----------------------------------------------------------------------
def _shifted(coord: str, by: int) -> str:
    """``i32(coord) - by`` as WGSL text."""
    return f"i32({coord})" if by == 0 else f"i32({coord}) {'-' if by > 0 else '+'} {abs(by)}i"


# Per pad mode: WGSL for the source coordinate of dim of size n from s = out coord - pad.
# (n may be a dim kept symbolic: reflect then takes the helper that also serves n == 1.)
_PAD_SOURCE = {
    "edge": lambda s, n: f"clamp({s}, 0i, {i32(n - 1)})",
    "wrap": lambda s, n: f"(({s}) % {i32(n)} + {i32(n)}) % {i32(n)}",
    # reflect without repeating the edge: period 2(n-1), folded back over the upper half
    "reflect": lambda s, n: (
        "0i" if n == 1 else f"reflect_index{'_any' if isinstance(n, Expr) else ''}({s}, {i32(n)})"
    ),
}


def _reflect_helper(any_extent: bool) -> str:
    """The reflect index function; over a symbolic extent (``reflect_index_any``) it also
    serves n <= 1, where a static compile folds reflect to index 0 instead."""
    guard = "  if (n <= 1i) {\n    return 0i;\n  }\n" if any_extent else ""
    return (
        f"fn reflect_index{'_any' if any_extent else ''}(s: i32, n: i32) -> i32 {{\n{guard}"
        "  let m = 2i * (n - 1i);\n  let r = (s % m + m) % m;\n  return select(r, m - r, r >= n);\n}"
    )


@lowers("Pad", "CenterCropPad")
def lower_pad(ctx: LowerCtx, op: Op) -> None:
    """out[c] = x[lo + src(c - pad_begin)] per dim. Negative pads crop first, and the modes
    then pad the cropped extent [lo, lo + m) (as onnxruntime does); the constant mode masks
    reads outside it. CenterCropPad legalizes into this constant Pad."""
    x, y = op.inputs[0], op.outputs[0]
    mode, pads = op.attrs["mode"], op.attrs["pads"]
    rank = x.type.rank
    ty = wgsl_type(y)
    k = KernelBuilder(ctx, y.shape)
    if simplify(math.prod(x.shape)) == 0:  # nothing to read (and no empty binding): all padding
        k.store(_pad_value(k, op, ty), y)
        ctx.kernel([v for v in op.inputs if v is not None], [y], [d for d in [k.dispatch()] if d])
        return
    xs = contiguous_strides(x.shape)
    terms, inside = [], []
    for d, n in enumerate(x.shape):
        pb, pe = pads[d], pads[d + rank]
        if pb == 0 and pe == 0:
            terms.append(k.c(d) if xs[d] == 1 else f"{k.c(d)} * {u32(xs[d])}")
            continue
        lo = max(0, -pb)
        m = simplify(n - lo - max(0, -pe))  # the cropped extent
        s = _shifted(k.c(d), max(pb, 0))
        if mode == "constant" or m <= 0:
            k.add(f"let s{d} = {s};")
            if pb > 0 or pe > 0:
                inside.append(f"s{d} >= 0i && s{d} < {i32(m)}")
            src = f"clamp(s{d}, 0i, {i32(smax(m - 1, 0))})"
        else:
            if mode == "reflect":
                k.helper(_reflect_helper(isinstance(m, Expr)))
            src = _PAD_SOURCE[mode](s, m)
        k.add(f"let p{d} = u32({src}) + {lo}u;" if lo else f"let p{d} = u32({src});")
        terms.append(f"p{d}" if xs[d] == 1 else f"p{d} * {u32(xs[d])}")
    addr = " + ".join(terms) if terms else "0u"
    at = k.element(x, addr)
    if inside:
        value = _pad_value(k, op, ty)
        k.add(
            f"if (!({' && '.join(f'({c})' for c in inside)})) {{",
            f"  {k.store_at(y, 'i', value)}",
            "  return;",
            "}",
        )
    k.store(at, y)
    ctx.kernel([v for v in op.inputs if v is not None], [y], [d for d in [k.dispatch()] if d])


def _pad_value(k: KernelBuilder, op: Op, ty: str) -> str:
    """The constant pad value: a literal, or the run-time scalar operand."""
    if len(op.inputs) > 1:
        return k.element(op.inputs[1], "0")
    return literal(op.attrs.get("value", 0), ty)


@lowers("Trilu")
def lower_trilu(ctx: LowerCtx, op: Op) -> None:
    """Keep x where col - row >= k (upper) or <= k (lower), zero elsewhere."""
    x, y = op.inputs[0], op.outputs[0]
    r = x.type.rank
    if r < 2:
        raise ctx.error("Trilu needs a tensor of rank 2 or more")
    k = KernelBuilder(ctx, y.shape)
    diff = f"i32({k.c(r - 1)}) - i32({k.c(r - 2)})"
    cmp = ">=" if op.attrs["upper"] else "<="
    # a run-time k is an int64 scalar stored as i32; |k| beyond the i32 range is refused on input
    # any |k| beyond this keeps or drops the whole matrix (over dims kept symbolic, at any size)
    reach = dim_bound(simplify(x.shape[-1] + x.shape[-2]))
    kk = f"{k.read(op.inputs[1])}[0]" if len(op.inputs) > 1 else f"{max(-reach, min(reach, op.attrs['k']))}i"
    k.store(f"select({ZERO[wgsl_type(y)]}, {k.element(x, 'i')}, {diff} {cmp} {kk})", y)
    ctx.kernel(list(op.inputs), [y], [d for d in [k.dispatch()] if d])


@lowers("EyeLike")
def lower_eye_like(ctx: LowerCtx, op: Op) -> None:
    """Ones on the k-th diagonal; the input gives only the (static) shape, so it is not read."""
    y = op.outputs[0]
    ty = wgsl_type(y)
    k = KernelBuilder(ctx, y.shape)
    diff = f"i32({k.c(1)}) - i32({k.c(0)})"
    k.store(f"select({ZERO[ty]}, {literal(1, ty)}, {diff} == {op.attrs['k']}i)", y)
    ctx.kernel([], [y], [d for d in [k.dispatch()] if d])


@lowers("ReverseSequence")
def lower_reverse_sequence(ctx: LowerCtx, op: Op) -> None:
    """out[t, b] = x[len[b] - 1 - t, b] for t < len[b], else x[t, b]."""
    x, lens = op.inputs[0], op.inputs[1]
    y = op.outputs[0]
    ta, ba = op.attrs["time_axis"], op.attrs["batch_axis"]
    T = x.shape[ta]
    k = KernelBuilder(ctx, y.shape)
    xs = contiguous_strides(x.shape)
    k.add(
        f"let n = clamp({k.read(lens)}[{k.c(ba)}], 0i, {i32(T)});",
        f"let t = i32({k.c(ta)});",
        "let src = u32(select(t, n - 1i - t, t < n));",
    )
    rest = View(0, tuple(0 if d == ta else s for d, s in enumerate(xs)))
    k.store(f"{k.read(x)}[{k.at(rest)} + src * {u32(xs[ta])}]", y)
    ctx.kernel([x, lens], [y], [d for d in [k.dispatch()] if d])

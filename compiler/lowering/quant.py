"""Quantization: QuantizeLinear / DequantizeLinear (per tensor, per axis, blocked),
DynamicQuantizeLinear, MatMulInteger and QLinearMatMul.

Scales and zero points may be constants or run-time tensors: each is read through a view
(stride 0 where it is shared), so nothing is specialized on their values. Rounding is
WGSL's ``round``, which rounds halves to even like the reference's ``rint``.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, DType, Op, TensorType, Value
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.symbolic import simplify, smax
from onnx2wgsl.ir.types import dim_bound, storage_dtype

from ..elementwise_ops import cast, f32
from . import LowerCtx, binding, ceil_div, decl, is_symbolic, lowers, split_workgroup, u32, wgsl_type
from .builder import KernelBuilder, Sweep
from .elementwise import emit_map, map_dispatch
from .indexing import View, broadcast, contiguous, contiguous_strides, index_code
from .reduce import fold_sweep

QRANGE = {
    DType.u8: (0, 255), DType.i8: (-128, 127), DType.u16: (0, 65535), DType.i16: (-32768, 32767),
    DType.i32: (-(2**31), 2**31 - 1), DType.u32: (0, 2**32 - 1),
    DType.i4: (-8, 7), DType.u4: (0, 15), DType.i2: (-2, 1), DType.u2: (0, 3),
}  # fmt: skip


def _saturate(expr: str, dt: DType) -> str:
    """The integer of storage type for float ``expr`` clamped to ``dt``'s range (the f32 -> int
    conversion itself saturates, which covers the 32-bit types' edges)."""
    lo, hi = QRANGE[dt]
    ty = storage_dtype(dt).value  # i32 for int8/int16/int4/int2, u32 for the unsigned ones
    if dt in (DType.i32, DType.u32):
        return f"{ty}({expr})"
    return f"{ty}(clamp({expr}, {f32(lo)}, {f32(hi)}))"


def _pieces(shape: tuple[int, ...], pshape: tuple[int, ...], attrs: dict) -> list[tuple[tuple, View, View]]:
    """(space, view of x, view of the scale / zero point) pieces covering x.

    Per tensor and per axis are one piece. Blocked quantization splits the axis into
    (blocks, block_size) so the parameter index is affine; a last partial block is its own piece."""
    xs = contiguous_strides(shape)
    mode, axis = attrs["mode"], attrs["axis"]
    if mode == "tensor":
        return [(shape, View(0, xs), View(0, (0,) * len(shape)))]
    if mode == "axis":
        return [(shape, View(0, xs), View(0, tuple(1 if d == axis else 0 for d in range(len(shape)))))]
    B = attrs["block_size"]
    ps = contiguous_strides(pshape)
    A = shape[axis]
    full, rem = A // B, A % B
    pre, post = slice(0, axis), slice(axis + 1, None)
    out = [(
        shape[pre] + (full, B) + shape[post],
        View(0, xs[pre] + (xs[axis] * B, xs[axis]) + xs[post]),
        View(0, ps[pre] + (ps[axis], 0) + ps[post]),
    )]  # fmt: skip
    if rem:
        out.append((
            shape[pre] + (rem,) + shape[post],
            View(full * B * xs[axis], xs),
            View(full * ps[axis], ps[pre] + (0,) + ps[post]),
        ))  # fmt: skip
    return out


@lowers("QuantizeLinear", "DequantizeLinear")
def lower_quantize(ctx: LowerCtx, op: Op) -> None:
    x, scale = op.inputs[:2]
    zp = op.input(2)
    y = op.outputs[0]
    ins = [x, scale] + ([zp] if zp is not None else [])
    dispatches = []
    helpers: tuple[str, ...] = ()
    for space, xv, pv in _pieces(tuple(x.shape), tuple(scale.shape), op.attrs):
        reads = [(x, xv), (scale, pv)] + ([(zp, pv)] if zp is not None else [])
        if op.kind == "QuantizeLinear" and y.dtype not in QRANGE:
            # float8 / float4: x / scale + zero point, rounded to nearest even and saturated
            # (or not: the saturate attribute) like Cast to the type
            expr, helpers = cast(f"(a0 / a1{' + a2' if zp is not None else ''})", DType.f32, y.dtype,
                                 saturate=bool(op.attrs.get("saturate", 1)))  # fmt: skip
        elif op.kind == "QuantizeLinear":
            shift = " + f32(a2)" if zp is not None else ""
            expr = _saturate(f"round(a0 / a1){shift}", y.dtype)
        else:
            shift = " - f32(a2)" if zp is not None else ""
            expr = f"(f32(a0){shift}) * a1"
        if op.kind == "QuantizeLinear" and wgsl_type(x) != "f32":
            raise ctx.error(f"input of type {x.dtype.name}; QuantizeLinear takes floats")
        dispatches.append(map_dispatch(ctx, space, reads, (y, xv), lambda a, e=expr: e, helpers))
    emit_map(ctx, ins, y, dispatches)


@lowers("DynamicQuantizeLinear")
def lower_dynamic_quantize(ctx: LowerCtx, op: Op) -> None:
    """The range of x (widened to include 0) -> uint8 scale and zero point, then quantize."""
    x = op.inputs[0]
    y, scale, zp = op.outputs
    if wgsl_type(x) != "f32":
        raise ctx.error(f"input of type {x.dtype.name}; DynamicQuantizeLinear takes floats")
    n = x.type.numel  # (an expression over dims kept symbolic)
    if dim_bound(n) == 0 or is_symbolic(n) and n.bounds[0] == 0:
        raise ctx.error(
            "the range of an empty tensor is undefined",
            hint="over dims kept symbolic, narrow their ranges to exclude 0" if is_symbolic(n) else None,
        )
    space = (n,)
    k = KernelBuilder(
        ctx, space, reduced=[0], comment="DynamicQuantizeLinear: the range of x, its scale and zero point"
    )
    a = k.load(x, contiguous(space))
    k.sweep(
        Sweep(
            accs=[("lo", "f32", f32(math.inf)), ("hi", "f32", f32(-math.inf))],
            update=[f"lo = min(lo, {a});", f"hi = max(hi, {a});"],
            merge=[
                "red_lo[lid] = min(red_lo[lid], red_lo[lid + half]);",
                "red_hi[lid] = max(red_hi[lid], red_hi[lid + half]);",
            ],  # fmt: skip
            after=[
                "let mx = max(0.0f, hi);",
                "let mn = min(0.0f, lo);",
                "let sc = select(mx - mn, 1.0f, mx == mn) / 255.0f;",
                "let zp = round(clamp(0.0f - mn / sc, 0.0f, 255.0f));",
            ],
        )
    )
    k.row_write(scale, "sc")
    k.row_write(zp, "u32(zp)")
    ctx.kernel([x], [scale, zp], [k.dispatch()])
    zero = View(0, (0,))
    q = map_dispatch(
        ctx, space, [(x, contiguous(space)), (scale, zero), (zp, zero)], (y, contiguous(space)),
        lambda a: _saturate(f"round({a[0]} / {a[1]}) + f32({a[2]})", DType.u8),
    )  # fmt: skip
    emit_map(ctx, [x, scale, zp], y, [q])


# -- integer matrix products -----------------------------------------------------------------
def _operand_shape(v: Value, side: str) -> tuple[int, ...]:
    """A's shape as [..., M, K] and B's as [..., K, N] (a vector gains the missing dim)."""
    s = tuple(v.shape)
    if len(s) == 1:
        return (1,) + s if side == "a" else s + (1,)
    return s


def _param_view(v: Value, side: str, batch: tuple, M: int, N: int) -> View:
    """A per-tensor, per-row (A side) or per-column (B side) parameter over [*batch, M, N, K]."""
    nd = len(batch) + 3
    if v.type.numel == 1:
        return View(0, (0,) * nd)
    s = tuple(v.shape)
    if len(s) == 1:
        s = (s[0], 1) if side == "a" else (1, s[0])
    st = broadcast(s, batch + (M, N)).strides
    return View(0, tuple(st) + (0,))


def _integer_matmul(ctx: LowerCtx, a, b, azp, bzp, out: Value) -> None:
    """out[*batch, M, N] = sum_k (a - azp) * (b - bzp), in i32."""
    ash, bsh = _operand_shape(a, "a"), _operand_shape(b, "b")
    M, K = ash[-2:]
    N = bsh[-1]
    if bsh[-2] != K:
        raise ctx.error(f"inner dims differ: {a.type} x {b.type}")
    batch = _batch_shape(ash[:-2], bsh[:-2])
    if simplify(math.prod(batch) * M * N) != out.type.numel:
        raise ctx.error(f"output {out.type} does not match {a.type} x {b.type}")
    ab = broadcast(ash[:-2], batch).strides if batch else ()
    bb = broadcast(bsh[:-2], batch).strides if batch else ()
    space = batch + (M, N, K)
    if (is_symbolic(K) or K) and _tiled_integer_matmul(ctx, a, b, azp, bzp, out, batch, M, N, K, ash, bsh):
        return
    if K == 0:  # an empty sum: zeros
        d = map_dispatch(ctx, space[:-1], [], (out, contiguous(space[:-1])), lambda r: "0i")
        ctx.kernel([v for v in (a, b, azp, bzp) if v is not None], [out], [d] if d else [])
        return
    k = KernelBuilder(
        ctx, space, reduced=[len(space) - 1], exact=True, comment=f"integer matmul {a.type} x {b.type}"
    )
    ta = f"i32({k.load(a, View(0, tuple(s * M * K for s in ab) + (K, 0, 1)))})"
    tb = f"i32({k.load(b, View(0, tuple(s * K * N for s in bb) + (0, 1, N)))})"
    if azp is not None:
        ta = f"({ta} - i32({k.load(azp, _param_view(azp, 'a', batch, M, N))}))"
    if bzp is not None:
        tb = f"({tb} - i32({k.load(bzp, _param_view(bzp, 'b', batch, M, N))}))"
    k.sweep(fold_sweep("acc", "i32", "sum", f"{ta} * {tb}"))
    k.row_write(out, "acc")
    d = k.dispatch()
    ctx.kernel([v for v in (a, b, azp, bzp) if v is not None], [out], [d] if d else [])


TILE_M, TILE_N = 4, 4


def _tiled_integer_matmul(ctx, a, b, azp, bzp, out, batch, M, N, K, ash, bsh) -> bool:
    """The register-tiled integer matmul, for per-tensor or plain per-row / per-column zero
    points; False where it does not apply (the row kernel then does the product)."""
    for zp in (azp, bzp):
        if zp is not None and dim_bound(zp.type.numel) > 1 and zp.type.rank != 1:
            return False
    Z = simplify(math.prod(batch))
    # a K too long for one invocation: a workgroup per tile (over a symbolic K, at its bound)
    split = split_workgroup(dim_bound(K))
    wg = split or 64
    tiles_n = ceil_div(N, TILE_N)
    groups = (
        tiles_n if split else ceil_div(tiles_n, wg),
        ceil_div(M, TILE_M),
        Z,
    )  # ctx.kernel refolds big grids (static ones)

    def batch_view(shape, mat):  # offsets of each matrix of an operand from the batch index
        return View(0, tuple(s * mat for s in broadcast(shape[:-2], batch).strides)) if batch else View(0, ())

    views = [
        batch_view(ash, M * K),
        batch_view(bsh, K * N),
        View(0, tuple(s * M * N for s in contiguous_strides(batch))),
    ]
    lines, (ab, bb, yb) = index_code(batch, views, flat="z", prefix="bz") if batch else ([], ["0u"] * 3)
    batch_lines = lines + [f"let ab = {ab};", f"let bb = {bb};", f"let yb = {yb};"]
    decls = [decl("A", a), decl("B", b)]
    bindings = [binding(a), binding(b)]

    def zero_point(zp, name, base, last, count):  # per tensor, or one per row (column) of the tile
        if zp is None:
            return ["0i"] * count
        decls.append(decl(name, zp))
        bindings.append(binding(zp))
        if zp.type.numel == 1:
            return [f"i32({ref(name)}[0])"] * count
        return [f"i32({ref(name)}[min({base} + {i}u, {last})])" for i in range(count)]

    za = zero_point(azp, "ZA", "m0", _last(M), TILE_M)
    zb = zero_point(bzp, "ZB", "n0", _last(N), TILE_N)
    decls.append(decl("Y", out, write=True))
    bindings.append(binding(out, write=True))
    accs = [(f"acc{t}_{c}", "i32") for t in range(TILE_M) for c in range(TILE_N)]
    shader = ctx.shader(
        "matmul_int.wgsl.j2", decls=decls, wg=wg, tm=TILE_M, tn=TILE_N, M=u32(M), N=u32(N), K=u32(K),
        M_last=_last(M), N_last=_last(N),
        batch_lines=batch_lines, za=za, zb=zb, split=split is not None, accs=accs,
        merge=[f"red_{n}[lid] += red_{n}[lid + half];" for n, _ in accs],
    )  # fmt: skip
    ctx.kernel([v for v in (a, b, azp, bzp) if v is not None], [out], [Dispatch(shader, groups, bindings)])
    return True


def _batch_shape(a: tuple, b: tuple) -> tuple:
    """The broadcast batch dims of two operands (which may be kept symbolic)."""
    if is_symbolic(a, b):
        from ..symbolic_fold import broadcast as symbolic_broadcast

        return tuple(symbolic_broadcast(a, b))
    return tuple(np.broadcast_shapes(a, b))


def _last(n) -> str:
    """The last index below a size as u32 text (as the templates wrote it for ints; a symbolic
    size that may be 0 clamps at 0, and then its kernel has no workgroups)."""
    return f"{n - 1}u" if isinstance(n, int) else u32(smax(n, 1) - 1)


def _unpack(op: Op) -> list[Value | None]:
    it = iter(op.inputs)
    return [next(it) if has else None for has in [1, 1] + op.attrs["has"]]


@lowers("MatMulInteger")
def lower_matmul_integer(ctx: LowerCtx, op: Op) -> None:
    a, b, azp, bzp = _unpack(op)[:4]
    _integer_matmul(ctx, a, b, azp, bzp, op.outputs[0])


@lowers("QLinearMatMul")
def lower_qlinear_matmul(ctx: LowerCtx, op: Op) -> None:
    """The i32 product, then requantized: round(acc * (sa * sb / sy) + zy), saturated."""
    a, b, azp, bzp, sa, sb, sy, zy = _unpack(op)
    y = op.outputs[0]
    acc = ctx.temp(TensorType(DType.i32, y.shape), f"{y.name}.acc")
    _integer_matmul(ctx, a, b, azp, bzp, acc)
    ash, bsh = _operand_shape(a, "a"), _operand_shape(b, "b")
    batch = _batch_shape(ash[:-2], bsh[:-2])
    M, N = ash[-2], bsh[-1]
    space = batch + (M, N)  # y's elements in the same order (a vector operand's dim is 1 here)

    def over(v, side):
        return View(0, _param_view(v, side, batch, M, N).strides[:-1])

    reads = [(acc, contiguous(space)), (sa, over(sa, "a")), (sb, over(sb, "b")), (sy, over(sy, "a"))]
    shift = ""
    if zy is not None:
        reads.append((zy, over(zy, "a")))
        shift = " + f32(a4)"
    d = map_dispatch(
        ctx, space, reads, (y, contiguous(space)),
        lambda r: _saturate(f"round(f32(a0) * (a1 * a2 / a3){shift})", y.dtype),
    )  # fmt: skip
    emit_map(ctx, [acc, sa, sb, sy] + ([zy] if zy is not None else []), y, [d])


# -- integer convolutions --------------------------------------------------------------------
def _padded(ctx: LowerCtx, x: Value, xzp: Value | None, pads: list[int]) -> Value:
    """x with its spatial pads filled by the zero point (so they contribute nothing)."""
    nd = len(pads) // 2
    if not any(pads):
        return x
    shape = tuple(x.shape)
    pshape = shape[:2] + tuple(n + pads[i] + pads[i + nd] for i, n in enumerate(shape[2:]))
    xp = ctx.temp(TensorType(x.dtype, pshape), f"{x.name}.padded")
    full = contiguous(pshape)
    if xzp is not None:
        fill = map_dispatch(ctx, pshape, [(xzp, View(0, (0,) * len(pshape)))], (xp, full), lambda a: a[0])
    else:
        fill = map_dispatch(ctx, pshape, [], (xp, full), lambda a: f"{wgsl_type(x)}(0)")
    ps = contiguous_strides(pshape)
    at = sum(pads[i] * ps[2 + i] for i in range(nd))
    copy = map_dispatch(ctx, shape, [(x, contiguous(shape))], (xp, View(at, ps)), lambda a: a[0])
    ctx.kernel([x] + ([xzp] if xzp is not None else []), [xp], [d for d in (fill, copy) if d is not None])
    return xp


def _integer_conv(ctx: LowerCtx, op: Op, x, w, xzp, wzp, out: Value) -> None:
    """out[n, oc, o...] = sum over (ic, k...) of (x - xzp) * (w[oc] - wzp[oc]), in i32.

    Over the zero-point-padded input every index is affine, so the convolution is one row
    kernel over [N, G, OC/G, O..., IC/G, K...] (groups, strides and dilations included)."""
    a = op.attrs
    nd = len(a["kernel_shape"])
    G = a["group"]
    N, C = x.shape[:2]
    OC, ICG = w.shape[:2]
    if C % G or OC % G or ICG != C // G:
        raise ctx.error(f"weights {w.type} do not match {C} input channels in {G} groups")
    OCG = OC // G
    xp = _padded(ctx, x, xzp, a["pads"])
    xs, ws = contiguous_strides(xp.shape), contiguous_strides(w.shape)
    osp = tuple(out.shape[2:])
    ks = tuple(a["kernel_shape"])
    space = (N, G, OCG) + osp + (ICG,) + ks
    zeros_o = (0,) * nd
    xv = View(0, (xs[0], ICG * xs[1], 0) + tuple(s * xs[2 + i] for i, s in enumerate(a["strides"]))
              + (xs[1],) + tuple(d * xs[2 + i] for i, d in enumerate(a["dilations"])))  # fmt: skip
    wv = View(0, (0, OCG * ws[0], ws[0]) + zeros_o + (ws[1],) + tuple(ws[2:]))
    k = KernelBuilder(
        ctx,
        space,
        reduced=range(3 + nd, len(space)),
        exact=True,
        comment=f"integer convolution {x.type} * {w.type}",
    )
    tx, tw = f"i32({k.load(xp, xv)})", f"i32({k.load(w, wv)})"
    if xzp is not None:
        tx = f"({tx} - i32({k.load(xzp, View(0, (0,) * len(space)))}))"
    if wzp is not None:
        per_oc = wzp.type.numel > 1
        tw = f"({tw} - i32({k.load(wzp, View(0, ((0, OCG, 1) if per_oc else (0, 0, 0)) + (0,) * (2 * nd + 1)))}))"
    k.sweep(fold_sweep("acc", "i32", "sum", f"{tx} * {tw}"))
    k.row_write(out, "acc")
    d = k.dispatch()
    ctx.kernel([v for v in (xp, w, xzp, wzp) if v is not None], [out], [d] if d else [])


def _unpack_conv(op: Op) -> list[Value | None]:
    it = iter(op.inputs)
    return [next(it) if has else None for has in [1, 1] + op.attrs["has"]]


@lowers("ConvInteger")
def lower_conv_integer(ctx: LowerCtx, op: Op) -> None:
    x, w, xzp, wzp = _unpack_conv(op)[:4]
    _integer_conv(ctx, op, x, w, xzp, wzp, op.outputs[0])


@lowers("QLinearConv")
def lower_qlinear_conv(ctx: LowerCtx, op: Op) -> None:
    """The i32 convolution (plus the i32 bias), requantized per output channel."""
    x, w, xzp, wzp, sx, sw, sy, zy, bias = _unpack_conv(op)
    y = op.outputs[0]
    acc = ctx.temp(TensorType(DType.i32, y.shape), f"{y.name}.acc")
    _integer_conv(ctx, op, x, w, xzp, wzp, acc)
    shape = tuple(y.shape)
    S = math.prod(shape[2:])
    space = (shape[0], shape[1], S)
    scalar, per_oc = View(0, (0, 0, 0)), View(0, (0, 1, 0))
    reads = [
        (acc, contiguous(space)),
        (sx, scalar),
        (sw, per_oc if sw.type.numel > 1 else scalar),
        (sy, scalar),
    ]
    total = "f32(a0)"
    if bias is not None:
        reads.append((bias, per_oc if bias.type.numel > 1 else scalar))
        total = f"f32(a0 + a{len(reads) - 1})"
    shift = ""
    if zy is not None:
        reads.append((zy, scalar))
        shift = f" + f32(a{len(reads) - 1})"
    out_dt = y.dtype
    d = map_dispatch(
        ctx, space, reads, (y, contiguous(space)),
        lambda r: _saturate(f"round({total} * (a1 * a2 / a3){shift})", out_dt),
    )  # fmt: skip
    emit_map(ctx, [v for v, _ in reads], y, [d])

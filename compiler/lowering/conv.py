"""Convolutions: Conv (implicit GEMM or direct), ConvTranspose (gather form), ConvInteger,
QLinearConv and DeformConv.

Every kernel is written for three spatial dims; 1-D and 2-D convolutions are viewed as 3-D
ones with leading spatial dims of size 1 (their loops then run once, which shader compilers
remove). Weights and biases may be constants or computed at run time: the implicit-GEMM
kernel reads constant weights re-laid out at compile time as vec4s of output channels, and
run-time weights in their ONNX layout, four channels per vec4 gathered by the kernel.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, DType, Op, TensorType, Value

from ..elementwise_ops import i32
from . import WORKGROUP, LowerCtx, binding, decl, lowers, wgsl_type
from .elementwise import emit_map, map_dispatch
from .indexing import View

SPATIAL = 3  # kernels address (D, H, W); fewer spatial dims are padded with leading 1s


def _as3(values, fill) -> list[int]:
    values = [int(v) for v in values]
    return [fill] * (SPATIAL - len(values)) + values


def spatial_geometry(ctx: LowerCtx, op: Op, x: Value, y: Value) -> dict:
    """Window geometry of a conv or pool over (D, H, W): sizes, kernel, strides, dilations, pads."""
    nd = len(op.attrs["kernel_shape"])
    if not 1 <= nd <= SPATIAL:
        raise ctx.error(f"{nd}-D windows are not supported", hint="1-D, 2-D and 3-D are")
    pads = op.attrs["pads"]
    D, H, W = _as3(x.shape[2:], 1)
    OD, OH, OW = _as3(y.shape[2:], 1)
    KD, KH, KW = _as3(op.attrs["kernel_shape"], 1)
    SD, SH, SW = _as3(op.attrs["strides"], 1)
    DD, DH, DW = _as3(op.attrs["dilations"], 1)
    PD, PH, PW = _as3(pads[:nd], 0)
    PDE, PHE, PWE = _as3(pads[nd:], 0)
    return dict(
        D=D, H=H, W=W, S=D * H * W, OD=OD, OH=OH, OW=OW, OS=OD * OH * OW, KD=KD, KH=KH, KW=KW,
        KS=KD * KH * KW, SD=SD, SH=SH, SW=SW, DD=DD, DH=DH, DW=DW, PD=PD, PH=PH, PW=PW,
        PDE=PDE, PHE=PHE, PWE=PWE,
    )  # fmt: skip


def conv_geometry(ctx: LowerCtx, op: Op) -> dict:
    """Conv shape parameters: batch, channels, groups and the 3-D window geometry."""
    x, w = op.inputs[0], op.inputs[1]
    p = spatial_geometry(ctx, op, x, op.outputs[0])
    G = op.attrs["group"]
    N, C = x.shape[:2]
    OC = w.shape[0]
    if C % G or OC % G or w.shape[1] != C // G:
        raise ctx.error(f"weights {w.type} do not match {C} input channels in {G} groups")
    p.update(N=N, C=C, OC=OC, G=G, ICG=C // G, OCG=OC // G, K=(C // G) * p["KS"], P=N * p["OS"])
    return p


@lowers("Conv")
def lower_conv(ctx: LowerCtx, op: Op) -> None:
    p = conv_geometry(ctx, op)
    if p["OCG"] >= 4:
        _gemm(ctx, op, p)
    else:
        _direct(ctx, op, p, float_conv(), bias=op.input(2))


def _gemm(ctx: LowerCtx, op: Op, p: dict) -> None:
    x, w, b, y = op.inputs[0], op.inputs[1], op.input(2), op.outputs[0]
    G, OCG, K = p["G"], p["OCG"], p["K"]
    ocg4 = math.ceil(OCG / 4)
    if w.is_const:
        # [OC, ICG, KD, KH, KW] -> [G, K, OCG padded to 4]: one vec4 of weights feeds 4 channels
        wt = w.data.reshape(G, OCG, K).transpose(0, 2, 1)
        wt = np.pad(wt, ((0, 0), (0, 0), (0, ocg4 * 4 - OCG)))
        wv = ctx.const(wt.reshape(G * K * ocg4, 4), f"{w.name}.gemm", dtype=w.dtype)
        w_decl = decl("Wt", wv, elem="vec4<f32>")
        w_setup = [f"let wb = g * {K * ocg4}u + oc4;"]
        w_load = f"Wt[wb + kk * {ocg4}u]"
    else:
        # run-time weights in ONNX layout: lane c reads channel oc4 * 4 + c (clamped; unused lanes
        # past OCG are never stored)
        wv = w
        w_decl = decl("Wt", w)
        w_setup = [f"let wb{c} = (g * {OCG}u + min(oc4 * 4u + {c}u, {OCG - 1}u)) * {K}u;" for c in range(4)]
        w_load = "vec4<f32>(" + ", ".join(f"Wt[wb{c} + kk]" for c in range(4)) + ")"
    inputs = [x, wv] + ([b] if b is not None else [])
    tm = 4 if p["P"] >= 4096 else 2 if p["P"] >= 512 else 1
    pointwise = (
        p["KS"] == 1
        and (p["SD"], p["SH"], p["SW"]) == (1, 1, 1)
        and (
            (p["PD"], p["PH"], p["PW"]) == (0, 0, 0)
            and (p["D"], p["H"], p["W"]) == (p["OD"], p["OH"], p["OW"])
        )
    )
    decls = [decl("X", x), w_decl] + ([decl("Bv", b)] if b is not None else []) + [decl("Y", y, write=True)]
    shader = ctx.shader(
        "conv_gemm.wgsl.j2", decls=decls, wg=WORKGROUP, tm=tm, ocg4=ocg4, bias=b is not None,
        pointwise=pointwise, w_setup=w_setup, w_load=w_load, out_expr=op.attrs.get("epilogue", "v"), **p,
    )  # fmt: skip
    grid = (math.ceil(p["P"] / (WORKGROUP * tm)), G * ocg4, 1)
    bindings = [binding(v) for v in inputs] + [binding(y, write=True)]
    ctx.kernel(inputs, [y], [Dispatch(shader, grid, bindings)])


def float_conv() -> dict:
    """How the direct kernel accumulates a float convolution."""
    return {"acc_type": "f32", "zero": "0.0f", "x_val": "X[xi]", "w_val": "Wt[wi]", "extra": []}


def _direct(ctx: LowerCtx, op: Op, p: dict, arith: dict, bias: Value | None) -> None:
    """One output element per invocation: depthwise, narrow groups, and integer convolutions."""
    x, w, b, y = op.inputs[0], op.inputs[1], bias, op.outputs[0]
    extra = arith["extra"]  # zero points read at run time
    inputs = [x, w] + ([b] if b is not None else []) + [v for _, v in extra]
    total = p["N"] * p["OC"] * p["OS"]
    decls = (
        [decl("X", x), decl("Wt", w)]
        + ([decl("Bv", b)] if b is not None else [])
        + [decl(name, v) for name, v in extra]
        + [decl("Y", y, write=True)]
    )
    grid, nx = ctx.grid(math.ceil(total / WORKGROUP))
    shader = ctx.shader(
        "conv_direct.wgsl.j2", decls=decls, wg=WORKGROUP, nx=nx, total=total, bias=b is not None,
        acc_type=arith["acc_type"], zero=arith["zero"], x_val=arith["x_val"], w_val=arith["w_val"],
        out_expr=arith.get("out", op.attrs.get("epilogue", "v")), **p,
    )  # fmt: skip
    bindings = [binding(v) for v in inputs] + [binding(y, write=True)]
    ctx.kernel(inputs, [y], [Dispatch(shader, grid, bindings)])


@lowers("ConvInteger")
def lower_conv_integer(ctx: LowerCtx, op: Op) -> None:
    """(x - x_zero_point) conv (w - w_zero_point) in i32; padding contributes nothing."""
    x, w = op.inputs[0], op.inputs[1]
    xz, wz = op.input(2), op.input(3)
    p = conv_geometry(ctx, op)
    extra: list[tuple[str, Value]] = []

    def zero_point(v: Value | None, name: str, per_channel_ok: bool) -> str:
        if v is None:
            return "0i"
        n = math.prod(v.shape)
        if n != 1 and not (per_channel_ok and n == p["OC"]):
            what = "one value (or one per output channel)" if per_channel_ok else "one value"
            raise ctx.error(f"its {name} zero point has shape {v.shape}; {what} is supported")
        if v.is_const and n == 1:
            return i32(int(np.asarray(v.data).reshape(-1)[0]))
        extra.append((name, v))
        return f"i32({name}[{'oc' if n > 1 else '0u'}])"

    xz_expr = zero_point(xz, "XZ", False)
    wz_expr = zero_point(wz, "WZ", True)
    arith = {
        "acc_type": "i32",
        "zero": "0i",
        "x_val": f"(i32(X[xi]) - {xz_expr})",
        "w_val": f"(i32(Wt[wi]) - {wz_expr})",
        "extra": extra,
    }
    for v in (x, w):
        if wgsl_type(v) not in ("i32", "u32"):
            raise ctx.error(f"{v.name!r} has dtype {v.dtype.name}; ConvInteger takes 8-bit integers")
    _direct(ctx, op, p, arith, bias=None)


@lowers("ConvTranspose")
def lower_conv_transpose(ctx: LowerCtx, op: Op) -> None:
    """Gather form: each output element sums the input positions whose window covers it."""
    x, w, b, y = op.inputs[0], op.inputs[1], op.input(2), op.outputs[0]
    p = spatial_geometry(ctx, op, x, y)
    G = op.attrs["group"]
    N, C = x.shape[:2]
    OC = y.shape[1]
    if C % G or w.shape[0] != C or w.shape[1] * G != OC:
        raise ctx.error(f"weights {w.type} do not match {C} input channels, {OC} outputs in {G} groups")
    total = math.prod(y.shape)
    p.update(N=N, C=C, OC=OC, G=G, ICG=C // G, OCG=OC // G)
    inputs = [x, w] + ([b] if b is not None else [])
    decls = (
        [decl("X", x), decl("Wt", w)]
        + ([decl("Bv", b)] if b is not None else [])
        + [decl("Y", y, write=True)]
    )
    grid, nx = ctx.grid(math.ceil(total / WORKGROUP))
    shader = ctx.shader(
        "conv_transpose.wgsl.j2", decls=decls, wg=WORKGROUP, nx=nx, total=total, bias=b is not None,
        out_expr=op.attrs.get("epilogue", "v"), **p,
    )  # fmt: skip
    bindings = [binding(v) for v in inputs] + [binding(y, write=True)]
    ctx.kernel(inputs, [y], [Dispatch(shader, grid, bindings)])


@lowers("QLinearConv")
def lower_qlinear_conv(ctx: LowerCtx, op: Op) -> None:
    """Integer convolution of zero-point-shifted operands (i32), then requantized:
    round(acc * x_scale * w_scale / y_scale) + y_zero_point, saturated to the output type.
    The scales and zero points travel in one small f32 buffer (inputs: x, w, B, x_scale,
    x_zero_point, w_scale, w_zero_point, y_scale, y_zero_point)."""
    x, w, b, xs, xz, ws, wz, ys, yz = (op.input(i) for i in range(9))
    y = op.outputs[0]
    p = conv_geometry(ctx, op)
    parts = {"xs": xs, "xz": xz, "ws": ws, "wz": wz, "ys": ys, "yz": yz}
    for name, v in parts.items():
        n = 0 if v is None else math.prod(v.shape)
        if n not in (0, 1) and not (name in ("ws", "wz") and n == p["OC"]):
            raise ctx.error(
                f"its {name} input has shape {v.shape}; one value (or one per output channel) is allowed"
            )
    q, at = _pack_scalars(ctx, op, parts)

    def read(name: str, default: str) -> str:
        v = parts[name]
        if v is None:
            return default
        return f"Q[{at[name]}u + oc]" if math.prod(v.shape) > 1 else f"Q[{at[name]}u]"

    lo, hi, cast = (-128, 127, "i32") if wgsl_type(y) == "i32" else (0, 255, "u32")
    scale = f"{read('xs', '1.0f')} * {read('ws', '1.0f')} / {read('ys', '1.0f')}"
    arith = {
        "acc_type": "i32",
        "zero": "0i",
        "x_val": f"(i32(X[xi]) - i32({read('xz', '0.0f')}))",
        "w_val": f"(i32(Wt[wi]) - i32({read('wz', '0.0f')}))",
        "extra": [("Q", q)],
        "out": f"{cast}(clamp(round(f32(v) * ({scale}) + {read('yz', '0.0f')}), {lo}.0f, {hi}.0f))",
    }
    _direct(ctx, op, p, arith, bias=b)


def _pack_scalars(ctx: LowerCtx, op: Op, parts: dict[str, Value | None]) -> tuple[Value, dict[str, int]]:
    """Small parameters of any dtype as one f32 buffer (on the host when all are constants)."""
    at, n = {}, 0
    for name, v in parts.items():
        if v is not None:
            at[name] = n
            n += math.prod(v.shape)
    present = [v for v in parts.values() if v is not None]
    if all(v.is_const for v in present):
        data = np.concatenate([np.asarray(v.data, np.float32).reshape(-1) for v in present] or [np.zeros(1)])
        return ctx.const(data.astype(np.float32), f"{op.outputs[0].name}.qparams"), at
    packed = ctx.temp(TensorType(DType.f32, (n,)), f"{op.outputs[0].name}.qparams")
    dispatches = [
        map_dispatch(
            ctx,
            (math.prod(v.shape),),
            [(v, View(0, (1,)))],
            (packed, View(at[k], (1,))),
            lambda a: f"f32({a[0]})",
        )
        for k, v in parts.items()
        if v is not None
    ]
    emit_map(ctx, present, packed, dispatches)
    return packed, at


@lowers("DeformConv")
def lower_deform_conv(ctx: LowerCtx, op: Op) -> None:
    """2-D deformable convolution: each kernel tap samples the input bilinearly (zero outside)
    at its grid position plus a learned offset, scaled by an optional mask."""
    x, w, off, b, mask = (op.input(i) for i in range(5))
    y = op.outputs[0]
    if x.type.rank != 4:
        raise ctx.error(f"{x.type.rank - 2}-D deformable convolution is not supported", hint="2-D is")
    p = conv_geometry(ctx, op)
    OG = op.attrs["offset_group"]
    if p["C"] % OG:
        raise ctx.error(f"{p['C']} input channels do not split into {OG} offset groups")
    reads = [("X", x), ("Wt", w), ("Off", off)] + ([("Bv", b)] if b is not None else [])
    reads += [("Mk", mask)] if mask is not None else []
    total = math.prod(y.shape)
    grid, nx = ctx.grid(math.ceil(total / WORKGROUP))
    shader = ctx.shader(
        "deform_conv.wgsl.j2", decls=[decl(n, v) for n, v in reads] + [decl("Y", y, write=True)],
        wg=WORKGROUP, nx=nx, total=total, bias=b is not None, masked=mask is not None, OG=OG,
        ICOG=p["C"] // OG, out_expr=op.attrs.get("epilogue", "v"), **p,
    )  # fmt: skip
    bindings = [binding(v) for _, v in reads] + [binding(y, write=True)]
    ctx.kernel([v for _, v in reads], [y], [Dispatch(shader, grid, bindings)])

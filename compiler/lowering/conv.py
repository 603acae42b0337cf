"""Convolution: implicit GEMM with vec4 output channels, or direct for depthwise/narrow groups."""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, Op

from . import WORKGROUP, LowerCtx, binding, decl, lowers


def conv_geometry(ctx: LowerCtx, op: Op) -> dict:
    """Conv shape parameters with 1-D convolutions viewed as 2-D of height 1."""
    x, w = op.inputs[0], op.inputs[1]
    y = op.outputs[0]
    nd = len(op.attrs["kernel_shape"])
    if nd not in (1, 2):
        raise ctx.error(f"{nd}-D convolution is not supported yet", hint="1-D and 2-D are")

    def two(v, fill):
        return [fill] * (2 - nd) + list(v)

    ks = two(op.attrs["kernel_shape"], 1)
    st = two(op.attrs["strides"], 1)
    dl = two(op.attrs["dilations"], 1)
    pads = op.attrs["pads"]
    pb = two(pads[:nd], 0)
    H, W = two(x.shape[2:], 1)
    OH, OW = two(y.shape[2:], 1)
    G = op.attrs["group"]
    N, C = x.shape[:2]
    OC = w.shape[0]
    if C % G or OC % G or w.shape[1] != C // G:
        raise ctx.error(f"weights {w.type} do not match {C} input channels in {G} groups")
    return dict(
        N=N, C=C, H=H, W=W, HW=H * W, OC=OC, OH=OH, OW=OW, OHW=OH * OW, KH=ks[0], KW=ks[1],
        KHKW=ks[0] * ks[1], SH=st[0], SW=st[1], DH=dl[0], DW=dl[1], PH=pb[0], PW=pb[1],
        G=G, ICG=C // G, OCG=OC // G, K=(C // G) * ks[0] * ks[1], P=N * OH * OW,
    )  # fmt: skip


@lowers("Conv")
def lower_conv(ctx: LowerCtx, op: Op) -> None:
    w, b = op.inputs[1], op.input(2)
    p = conv_geometry(ctx, op)
    if not w.is_const:
        raise ctx.error("weights computed at run time are not supported", hint="make W an initializer")
    if b is not None and not b.is_const:
        raise ctx.error("a bias computed at run time is not supported", hint="make B an initializer")
    if p["OCG"] >= 4:
        _gemm(ctx, op, p)
    else:
        _direct(ctx, op, p)


def _gemm(ctx: LowerCtx, op: Op, p: dict) -> None:
    x, w, b, y = op.inputs[0], op.inputs[1], op.input(2), op.outputs[0]
    G, OCG, K = p["G"], p["OCG"], p["K"]
    ocg4 = math.ceil(OCG / 4)
    # [OC, ICG, KH, KW] -> [G, K, OCG padded to 4]: one vec4 of weights per k feeds 4 channels
    wt = w.data.reshape(G, OCG, K).transpose(0, 2, 1)
    wt = np.pad(wt, ((0, 0), (0, 0), (0, ocg4 * 4 - OCG)))
    inputs = [x, ctx.const(wt.reshape(G * K * ocg4, 4), f"{w.name}.gemm", dtype=w.dtype)]
    if b is not None:
        bt = np.pad(b.data.reshape(G, OCG), ((0, 0), (0, ocg4 * 4 - OCG)))
        inputs.append(ctx.const(bt.reshape(G * ocg4, 4), f"{b.name}.gemm", dtype=b.dtype))
    tm = 4 if p["P"] >= 4096 else 2 if p["P"] >= 512 else 1
    pointwise = (
        p["KHKW"] == 1
        and (p["SH"], p["SW"], p["PH"], p["PW"]) == (1, 1, 0, 0)
        and (p["H"], p["W"]) == (p["OH"], p["OW"])
    )
    decls = [decl("X", x), decl("Wt", inputs[1], elem="vec4<f32>")]
    if b is not None:
        decls.append(decl("Bv", inputs[2], elem="vec4<f32>"))
    decls.append(decl("Y", y, write=True))
    shader = ctx.shader(
        "conv_gemm.wgsl.j2", decls=decls, wg=WORKGROUP, tm=tm, ocg4=ocg4, bias=b is not None,
        pointwise=pointwise, out_expr=op.attrs.get("epilogue", "v"), **p,
    )  # fmt: skip
    grid = (math.ceil(p["P"] / (WORKGROUP * tm)), G * ocg4, 1)
    bindings = [binding(v) for v in inputs] + [binding(y, write=True)]
    ctx.kernel(inputs, [y], [Dispatch(shader, grid, bindings)])


def _direct(ctx: LowerCtx, op: Op, p: dict) -> None:
    x, w, b, y = op.inputs[0], op.inputs[1], op.input(2), op.outputs[0]
    inputs = [x, w] + ([b] if b is not None else [])
    total = p["N"] * p["OC"] * p["OHW"]
    decls = (
        [decl("X", x), decl("Wt", w)]
        + ([decl("Bv", b)] if b is not None else [])
        + [decl("Y", y, write=True)]
    )
    grid, nx = ctx.grid(math.ceil(total / WORKGROUP))
    shader = ctx.shader(
        "conv_direct.wgsl.j2", decls=decls, wg=WORKGROUP, nx=nx, total=total, bias=b is not None,
        out_expr=op.attrs.get("epilogue", "v"), **p,
    )  # fmt: skip
    bindings = [binding(v) for v in inputs] + [binding(y, write=True)]
    ctx.kernel(inputs, [y], [Dispatch(shader, grid, bindings)])

"""Pooling: windowed max / average / Lp, and the global pools as one window over all space."""

from __future__ import annotations

import math

from onnx2wgsl.ir import Dispatch, Op

from ..elementwise_ops import f32
from . import WORKGROUP, LowerCtx, binding, decl, lowers


@lowers("MaxPool", "AveragePool", "LpPool")
def lower_pool(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    if len(op.outputs) > 1:
        raise ctx.error("MaxPool's Indices output is not supported yet")
    nd = len(op.attrs["kernel_shape"])
    if nd not in (1, 2):
        raise ctx.error(f"{nd}-D pooling is not supported yet", hint="1-D and 2-D are")

    def two(v, fill):
        return [fill] * (2 - nd) + list(v)

    ks, st, dl = two(op.attrs["kernel_shape"], 1), two(op.attrs["strides"], 1), two(op.attrs["dilations"], 1)
    pads = op.attrs["pads"]
    pb, pe = two(pads[:nd], 0), two(pads[nd:], 0)
    H, W = two(x.shape[2:], 1)
    OH, OW = two(y.shape[2:], 1)
    geo = dict(KH=ks[0], KW=ks[1], SH=st[0], SW=st[1], DH=dl[0], DW=dl[1], PH=pb[0], PW=pb[1],
               PHE=pe[0], PWE=pe[1], H=H, W=W, OH=OH, OW=OW)  # fmt: skip
    _emit(ctx, op, geo, op.kind, op.attrs)


@lowers("GlobalAveragePool", "GlobalMaxPool")
def lower_global_pool(ctx: LowerCtx, op: Op) -> None:
    x = op.inputs[0]
    S = math.prod(x.shape[2:])
    geo = dict(KH=1, KW=S, SH=1, SW=1, DH=1, DW=1, PH=0, PW=0, PHE=0, PWE=0, H=1, W=S, OH=1, OW=1)
    kind = "AveragePool" if op.kind == "GlobalAveragePool" else "MaxPool"
    _emit(ctx, op, geo, kind, {"count_include_pad": 0})


def _emit(ctx: LowerCtx, op: Op, geo: dict, kind: str, attrs: dict) -> None:
    x, y = op.inputs[0], op.outputs[0]
    if kind == "MaxPool":
        init, acc, finish = "bitcast<f32>(0xff800000u)", "acc = max(acc, v);", "acc"
    elif kind == "AveragePool":
        div = "padded" if attrs.get("count_include_pad") else "valid"
        init, acc, finish = "0.0f", "acc += v;", f"acc / f32(max({div}, 1u))"
    else:
        p = attrs["p"]
        init, acc = "0.0f", f"acc += pow(abs(v), {f32(p)});"
        finish = f"pow(acc, {f32(1.0 / p)})"
    total = math.prod(y.shape)
    grid, nx = ctx.grid(math.ceil(total / WORKGROUP))
    shader = ctx.shader(
        "pool.wgsl.j2", decls=[decl("X", x), decl("Y", y, write=True)], wg=WORKGROUP, nx=nx,
        total=total, HW=geo["H"] * geo["W"], OHW=geo["OH"] * geo["OW"], kind=kind, init=init,
        accumulate=acc, finish=finish, **geo,
    )  # fmt: skip
    ctx.kernel([x], [y], [Dispatch(shader, grid, [binding(x), binding(y, write=True)])])

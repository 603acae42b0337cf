"""Row reductions and normalizations: Softmax family, LRN, BatchNormalization."""

from __future__ import annotations

import math

from onnx2wgsl.ir import Dispatch, Op

from ..elementwise_ops import f32
from . import WORKGROUP, LowerCtx, binding, decl, lowers
from .elementwise import emit_map, map_dispatch
from .indexing import broadcast, contiguous


@lowers("Softmax", "LogSoftmax", "Hardmax")
def lower_softmax(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    axis = op.attrs["axis"]
    L = x.shape[axis]
    inner = math.prod(x.shape[axis + 1 :])
    rows = math.prod(x.shape) // max(L, 1)
    grid, nx = ctx.grid(rows)
    shader = ctx.shader(
        "softmax.wgsl.j2", decls=[decl("X", x), decl("Y", y, write=True)], wg=WORKGROUP, nx=nx,
        rows=rows, L=L, inner=inner, kind=op.kind,
    )  # fmt: skip
    ctx.kernel([x], [y], [Dispatch(shader, grid, [binding(x), binding(y, write=True)])])


@lowers("LRN")
def lower_lrn(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    size = op.attrs["size"]
    total = math.prod(x.shape)
    grid, nx = ctx.grid(math.ceil(total / WORKGROUP))
    shader = ctx.shader(
        "lrn.wgsl.j2", decls=[decl("X", x), decl("Y", y, write=True)], wg=WORKGROUP, nx=nx,
        total=total, C=x.shape[1], HW=math.prod(x.shape[2:]), size=size,
        before=(size - 1) // 2, after=size - 1 - (size - 1) // 2, bias=f32(op.attrs["bias"]),
        alpha_over_size=f32(op.attrs["alpha"] / size), beta=f32(op.attrs["beta"]),
    )  # fmt: skip
    ctx.kernel([x], [y], [Dispatch(shader, grid, [binding(x), binding(y, write=True)])])


@lowers("BatchNormalization")
def lower_batchnorm(ctx: LowerCtx, op: Op) -> None:
    """Statistics computed at run time (constant ones were canonicalized to Mul + Add)."""
    x, y = op.inputs[0], op.outputs[0]
    params = op.inputs[1:5]
    pshape = params[0].shape + (1,) * (x.type.rank - 1 - params[0].type.rank)
    eps = f32(op.attrs["epsilon"])
    reads = [(x, contiguous(x.shape))] + [(v, broadcast(pshape, x.shape)) for v in params]
    d = map_dispatch(
        ctx, y.shape, reads, (y, contiguous(y.shape)),
        lambda a: f"(({a[0]} - {a[3]}) * {a[1]} / sqrt({a[4]} + {eps}) + {a[2]})",
    )  # fmt: skip
    emit_map(ctx, [x, *params], y, [d])

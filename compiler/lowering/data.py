"""Data movement: zero-copy views (Reshape, Identity) and strided copies (Transpose, Concat)."""

from __future__ import annotations

from onnx2wgsl.ir import Op

from . import LowerCtx, lowers
from .elementwise import emit_map, map_dispatch
from .indexing import View, contiguous, contiguous_strides, permuted


@lowers("Reshape", "Identity")
def lower_view(ctx: LowerCtx, op: Op) -> None:
    ctx.view(op.inputs[0], op.outputs[0])


@lowers("Transpose")
def lower_transpose(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    d = map_dispatch(
        ctx, y.shape, [(x, permuted(x.shape, op.attrs["perm"]))], (y, contiguous(y.shape)), lambda a: a[0]
    )
    emit_map(ctx, [x], y, [d])


@lowers("Concat")
def lower_concat(ctx: LowerCtx, op: Op) -> None:
    """One copy per input into its slice of the output."""
    y = op.outputs[0]
    axis = op.attrs["axis"]
    ys = contiguous_strides(y.shape)
    at = 0
    dispatches = []
    ins = [v for v in op.inputs if v is not None]
    for x in ins:
        d = map_dispatch(
            ctx, x.shape, [(x, contiguous(x.shape))], (y, View(at * ys[axis], ys)), lambda a: a[0]
        )
        dispatches.append(d)
        at += x.shape[axis]
    emit_map(ctx, ins, y, dispatches)

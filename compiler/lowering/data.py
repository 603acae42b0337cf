"""Data movement: zero-copy views (Reshape, Identity) and strided copies (Transpose, Concat)."""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, Op

from . import WORKGROUP, LowerCtx, binding, ceil_div, decl, elem_type, lowers
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
    """One copy per input into its slice of the output: when the slices are contiguous (every
    dim before the axis is 1) and sizes fixed, by one shader for every size (copy.wgsl.j2, its
    sizes in a table); otherwise a strided copy each."""
    y = op.outputs[0]
    axis = op.attrs["axis"]
    ys = contiguous_strides(y.shape)
    at = 0
    dispatches = []
    ins = [v for v in op.inputs if v is not None]
    if (
        not y.type.is_symbolic
        and math.prod(y.shape[:axis]) == 1
        and all(elem_type(x) == elem_type(y) for x in ins)
    ):
        tables = []
        for x in ins:
            n = x.type.numel
            if n:
                grid, nx = ctx.grid(ceil_div(n, WORKGROUP))
                table = ctx.const(np.array([n, at * ys[axis], nx], np.uint32), f"{y.name}.part{len(tables)}")
                shader = ctx.shader(
                    "copy.wgsl.j2",
                    decls=[decl("X", x), decl("Sz", table), decl("Y", y, write=True)],
                    wg=WORKGROUP,
                )
                dispatches.append(
                    Dispatch(shader, grid, [binding(x), binding(table), binding(y, write=True)])
                )
                tables.append(table)
            at += x.shape[axis]
        ctx.kernel(ins + tables, [y], dispatches, parts=len(ins))  # (the tables follow the parts)
        return
    for x in ins:
        d = map_dispatch(
            ctx, x.shape, [(x, contiguous(x.shape))], (y, View(at * ys[axis], ys)), lambda a: a[0]
        )
        dispatches.append(d)
        at += x.shape[axis]
    emit_map(ctx, ins, y, dispatches)

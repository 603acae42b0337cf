"""Tensors computed from the run's dims: symbolic values read as data, and Range.

A dim kept symbolic (``--dim seq=1..128``) folds at compile time wherever it is shape
arithmetic. Where a model reads such a value as tensor data (``Range(0, seq)`` as position
ids, a length compared with indices in a mask, a shape cast to float), the frontend keeps
the expression and a ``DimValue`` op writes it on the GPU from the dims uniform; ``Range``
then fills a tensor of a run-time length.
"""

from __future__ import annotations

from onnx2wgsl.ir import Op
from onnx2wgsl.ir.symbolic import parse_expr

from ..elementwise_ops import compute_type, convert, store
from . import LowerCtx, i32, lowers, wgsl_type
from .builder import KernelBuilder
from .elementwise import emit_map
from .indexing import View, contiguous


@lowers("DimValue")
def lower_dim_value(ctx: LowerCtx, op: Op) -> None:
    """Write each element's expression (attribute ``values``, in ir/symbolic's text form)."""
    y = op.outputs[0]
    exprs = [i32(parse_expr(t, ctx.g.symbols)) for t in op.attrs["values"]]
    ty = compute_type(y.dtype)

    value = exprs[0]
    for j, e in enumerate(exprs[1:], 1):
        value = f"select({value}, {e}, i == {j}u)"
    k = KernelBuilder(ctx, (len(exprs),))
    k.add(f"{k.target(y, contiguous((len(exprs),)))} = {store(convert(value, 'i32', ty), y.dtype)};")
    emit_map(ctx, [], y, [k.dispatch()])


@lowers("Range")
def lower_range(ctx: LowerCtx, op: Op) -> None:
    """``y[i] = start + i * delta`` over a length the frontend worked out (a dim expression)."""
    start, _, delta = op.inputs
    y = op.outputs[0]
    ty = wgsl_type(y)
    if ty == "u32":
        raise ctx.error(
            f"Range of {y.dtype.name} is not supported", hint="ONNX Range takes float and signed ints"
        )
    scalar = View(0, (0,))
    n = y.shape[0]

    k = KernelBuilder(ctx, (n,))
    first, step = k.load(start, scalar), k.load(delta, scalar)
    index = "f32(i)" if ty == "f32" else "i32(i)"
    k.add(f"{k.target(y, contiguous((n,)))} = {first} + {index} * {step};")
    emit_map(ctx, [start, delta], y, [k.dispatch()])

"""Map kernels: elementwise ops, and any op that moves data through affine views."""

from __future__ import annotations

import math
from collections.abc import Callable

from onnx2wgsl.ir import Dispatch, Op, Value

from ..elementwise_ops import HELPERS, TABLE
from . import WORKGROUP, LowerCtx, binding, decl, lowers, wgsl_type
from .indexing import View, broadcast, collapse, contiguous, index_code


def map_dispatch(
    ctx: LowerCtx,
    space: tuple[int, ...],
    reads: list[tuple[Value, View]],
    write: tuple[Value, View],
    expr: Callable[[list[str]], str],
    helpers: tuple[str, ...] = (),
) -> Dispatch | None:
    """One invocation per point of ``space``: out[view] = expr(in_k[view_k]...). None if empty."""
    n = math.prod(space)
    if n == 0:
        return None
    shape, views = collapse(space, [v for _, v in reads] + [write[1]])
    coords, idx = index_code(shape, views)
    values: list[Value] = []
    for v, _ in reads:
        if all(v is not u for u in values):
            values.append(v)
    slot = {id(v): k for k, v in enumerate(values)}
    decls = [decl(f"in{k}", v) for k, v in enumerate(values)]
    decls.append(decl("out0", write[0], write=True))
    body = list(coords)
    args = []
    for j, (v, _) in enumerate(reads):
        body.append(f"let a{j} = in{slot[id(v)]}[{idx[j]}];")
        args.append(f"a{j}")
    body.append(f"out0[{idx[-1]}] = {expr(args)};")
    grid, nx = ctx.grid(math.ceil(n / WORKGROUP))
    shader = ctx.shader(
        "map.wgsl.j2",
        decls=decls,
        helpers=[HELPERS[h] for h in helpers],
        body=body,
        n=n,
        nx=nx,
        wg=WORKGROUP,
    )
    bindings = [binding(v) for v in values] + [binding(write[0], write=True)]
    return Dispatch(shader, grid, bindings)


def emit_map(
    ctx: LowerCtx, op_inputs: list[Value], y: Value, dispatches: list[Dispatch | None], **attrs
) -> Op:
    return ctx.kernel(op_inputs, [y], [d for d in dispatches if d is not None], **attrs)


@lowers(*TABLE)
def lower_elementwise(ctx: LowerCtx, op: Op) -> None:
    entry = TABLE[op.kind]
    ins = [v for v in op.inputs if v is not None]
    y = op.outputs[0]
    ty = wgsl_type(y)
    if ty not in entry.types or any(wgsl_type(v) != ty for v in ins):
        raise ctx.error(
            f"dtype {y.dtype.name} is not supported for {op.kind}",
            hint=f"supported storage types: {', '.join(entry.types)}",
        )
    room = ctx.target.max_bindings - 1
    if len({id(v) for v in ins}) > room and op.kind in ("Sum", "Max", "Min", "Mean"):
        _lower_variadic_chain(ctx, op, ins, y, room)
        return
    d = map_dispatch(
        ctx,
        y.shape,
        [(v, broadcast(v.shape, y.shape)) for v in ins],
        (y, contiguous(y.shape)),
        lambda args: entry.wgsl(args, op.attrs, ty),
        entry.helpers,
    )
    emit_map(ctx, ins, y, [d])


def _lower_variadic_chain(ctx: LowerCtx, op: Op, ins: list[Value], y: Value, room: int) -> None:
    """More operands than bindings: reduce them in chunks through temporaries."""
    kind = "Sum" if op.kind == "Mean" else op.kind
    entry = TABLE[kind]
    ty = wgsl_type(y)
    acc: Value | None = None
    rest = list(ins)
    while rest:
        take = room - (acc is not None)
        chunk, rest = rest[:take], rest[take:]
        operands = ([acc] if acc is not None else []) + chunk
        last = not rest
        out = y if last and op.kind != "Mean" else ctx.temp(y.type, f"{y.name}.partial")
        d = map_dispatch(
            ctx,
            y.shape,
            [(v, broadcast(v.shape, y.shape)) for v in operands],
            (out, contiguous(y.shape)),
            lambda args: entry.wgsl(args, {}, ty),
        )
        emit_map(ctx, operands, out, [d])
        acc = out
    if op.kind == "Mean":
        scale = 1.0 / len(ins)
        from ..elementwise_ops import f32

        d = map_dispatch(
            ctx,
            y.shape,
            [(acc, contiguous(y.shape))],
            (y, contiguous(y.shape)),
            lambda a: f"({a[0]} * {f32(scale)})",
        )
        emit_map(ctx, [acc], y, [d])

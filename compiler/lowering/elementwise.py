"""Elementwise ops, Cast and BitCast, and ``map_dispatch``: the point kernel that computes one
expression of affine views of its operands, which any op moving data through views uses."""

from __future__ import annotations

from collections.abc import Callable

from onnx2wgsl.ir import Dispatch, Op, Value

from ..elementwise_ops import (
    TABLE,
    bitcast,
    bitcast_is_copy,
    cast,
    cast_is_copy,
    compute_type,
    convert,
    convert_helpers,
    f32,
    helper_code,
    load,
    store,
)
from . import LowerCtx, lowers
from .builder import KernelBuilder
from .indexing import View, broadcast, contiguous

Conv = Callable[[str], str]


def map_dispatch(
    ctx: LowerCtx,
    space: tuple[int, ...],
    reads: list[tuple[Value, View]],
    write: tuple[Value, View],
    expr: Callable[[list[str]], str],
    helpers: tuple[str, ...] = (),
    *,
    loads: list[Conv | None] | None = None,
    store: Conv | None = None,
) -> Dispatch | None:
    """One invocation per point of ``space``: out[view] = store(expr(load_k(in_k[view_k])...)).

    ``loads`` (one per read, None = as stored) and ``store`` convert between the stored
    32-bit scalars and the values ``expr`` computes with (see elementwise_ops.load/store).
    Returns None for an empty space: no work, no dispatch."""
    k = KernelBuilder(ctx, space)
    for h in helper_code(*helpers):
        k.helper(h)
    raws = [k.load(v, view) for v, view in reads]
    for j, raw in enumerate(raws):
        conv = loads[j] if loads is not None else None
        k.add(f"let a{j} = {conv(raw) if conv else raw};")
    result = expr([f"a{j}" for j in range(len(raws))])
    k.add(k.assign(*write, store(result) if store else result))
    return k.dispatch()


def emit_map(
    ctx: LowerCtx, op_inputs: list[Value], y: Value, dispatches: list[Dispatch | None], **attrs
) -> Op:
    return ctx.kernel(op_inputs, [y], [d for d in dispatches if d is not None], **attrs)


def typed_expr(ctx: LowerCtx, op: Op):
    """The typing of an elementwise op: per-operand load conversions, the expression builder
    (over the present operands; omitted optional inputs are None in the entry's argument
    list), the result's store and the helpers. Raises the clear error for dtypes it lacks."""
    entry = TABLE[op.kind]
    y = op.outputs[0]
    dts = [None if v is None else v.dtype for v in op.inputs]
    try:
        arg_types, t, result = entry.signature(dts, y.dtype, op.attrs)
    except (TypeError, ValueError) as e:
        raise ctx.error(f"{e}; it takes one dtype for all of them") from None
    if t not in entry.types:
        names = ", ".join(sorted({v.dtype.name for v in op.inputs if v is not None}))
        raise ctx.error(
            f"dtype {names} is not supported for {op.kind}",
            hint=f"it computes in {'/'.join(entry.types)} (float dtypes compute in f32, signed ints "
            "in i32, unsigned ints in u32, bool in bool)",
        )
    out_t = compute_type(y.dtype)
    helpers = list(entry.helpers_of(t)) + list(convert_helpers(result, out_t))
    loads: list[Conv | None] = []
    for v, at in zip(op.inputs, arg_types):
        if v is None:
            continue
        src = compute_type(v.dtype)
        helpers += convert_helpers(src, at)
        loads.append(lambda raw, dt=v.dtype, src=src, at=at: convert(load(raw, dt), src, at))
    present = [v is not None for v in op.inputs]

    def expr(args: list[str]) -> str:
        it = iter(args)
        full = [next(it) if p else None for p in present]
        while full and full[-1] is None:
            full.pop()
        return entry.wgsl(full, op.attrs, t)

    return loads, expr, (lambda e: store(convert(e, result, out_t), y.dtype)), tuple(helpers)


@lowers(*(k for k in TABLE if k != "Identity"))
def lower_elementwise(ctx: LowerCtx, op: Op) -> None:
    ins = [v for v in op.inputs if v is not None]
    y = op.outputs[0]
    loads, expr, store_y, helpers = typed_expr(ctx, op)
    room = ctx.target.max_bindings - 1
    if len({id(v) for v in ins}) > room and op.kind in ("Sum", "Max", "Min", "Mean"):
        _lower_variadic_chain(ctx, op, ins, y, room)
        return
    d = map_dispatch(
        ctx,
        y.shape,
        [(v, broadcast(v.shape, y.shape)) for v in ins],
        (y, contiguous(y.shape)),
        expr,
        helpers,
        loads=loads,
        store=store_y,
    )
    emit_map(ctx, ins, y, [d])


def _lower_variadic_chain(ctx: LowerCtx, op: Op, ins: list[Value], y: Value, room: int) -> None:
    """More operands than bindings: reduce them in chunks through temporaries."""
    kind = "Sum" if op.kind == "Mean" else op.kind
    entry = TABLE[kind]
    t = compute_type(y.dtype)
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
            lambda args: entry.wgsl(args, {}, t),
            entry.helpers_of(t),
            store=lambda e, out=out: store(e, out.dtype),
        )
        emit_map(ctx, operands, out, [d])
        acc = out
    if op.kind == "Mean":
        scale = 1.0 / len(ins)
        d = map_dispatch(
            ctx,
            y.shape,
            [(acc, contiguous(y.shape))],
            (y, contiguous(y.shape)),
            lambda a: f"({a[0]} * {f32(scale)})",
        )
        emit_map(ctx, [acc], y, [d])


def cast_options(op: Op) -> dict:
    """Cast's attributes as ``cast`` takes them."""
    return {"saturate": bool(op.attrs.get("saturate", 1)), "round_mode": op.attrs.get("round_mode", "up")}


@lowers("Cast")
def lower_cast(ctx: LowerCtx, op: Op) -> None:
    """A copy that converts each value (ONNX Cast rules); a zero-copy view where the stored
    words do not change (float16/float64 <-> float32, int32 <-> int64, widening ints...)."""
    x, y = op.inputs[0], op.outputs[0]
    if cast_is_copy(x.dtype, y.dtype) and ctx.can_view(x, y):  # (a view of a weight could not be bound)
        ctx.view(x, y)
        return
    options = cast_options(op)
    _, helpers = cast("x", x.dtype, y.dtype, **options)
    d = map_dispatch(
        ctx,
        y.shape,
        [(x, contiguous(x.shape))],
        (y, contiguous(y.shape)),
        lambda a: cast(a[0], x.dtype, y.dtype, **options)[0],
        helpers,
    )
    emit_map(ctx, [x], y, [d])


@lowers("BitCast")
def lower_bitcast(ctx: LowerCtx, op: Op) -> None:
    """Reinterpret bit patterns: a view between 32-bit types, else a copy that moves the
    pattern from the source's stored word to the target's (sign-extending narrow ints)."""
    x, y = op.inputs[0], op.outputs[0]
    if bitcast_is_copy(x.dtype, y.dtype) and ctx.can_view(x, y):
        ctx.view(x, y)
        return
    try:
        _, helpers = bitcast("x", x.dtype, y.dtype)
    except ValueError as e:
        raise ctx.error(str(e)) from None
    d = map_dispatch(
        ctx,
        y.shape,
        [(x, contiguous(x.shape))],
        (y, contiguous(y.shape)),
        lambda a: bitcast(a[0], x.dtype, y.dtype)[0],
        helpers,
    )
    emit_map(ctx, [x], y, [d])

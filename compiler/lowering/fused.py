"""Fused elementwise code: ``Fused`` ops (one map kernel for a DAG of elementwise ops) and the
epilogues that Conv, ConvTranspose, Gemm and MatMul apply to each result before storing it.

Both run a body graph of elementwise ops once per output element. Each body value is kept as
the 32-bit word its tensor would be stored as, and each op reads its operands through the
same load conversions as its own kernel would, so fusing never changes a result: it only
skips the round trips through memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from onnx2wgsl.ir import Binding, Dispatch, Graph, Op, Value

from ..elementwise_ops import cast, helper_code
from . import WORKGROUP, LowerCtx, binding, decl, lowers
from .elementwise import cast_options, typed_expr
from .indexing import broadcast, collapse, contiguous, index_code


def body_code(
    ctx: LowerCtx, body: Graph, raw: list[str], prefix: str
) -> tuple[list[str], list[str], list[str]]:
    """WGSL lines computing ``body`` from its inputs' stored words ``raw``.

    Returns the lines, the expression of each body output (a stored word) and the helper
    names the lines call."""
    names = {id(v): r for v, r in zip(body.inputs, raw)}
    lines: list[str] = []
    helpers: list[str] = []
    for k, op in enumerate(body.ops):
        t = f"{prefix}{k}"
        if op.kind == "Cast":  # stored word to stored word, as its own kernel does it
            code, hs = cast(
                names[id(op.inputs[0])], op.inputs[0].dtype, op.outputs[0].dtype, **cast_options(op)
            )
            lines.append(f"let {t} = {code};")
        else:
            loads, expr, store_y, hs = typed_expr(ctx, op)
            present = [v for v in op.inputs if v is not None]
            args = [ld(names[id(v)]) if ld else names[id(v)] for ld, v in zip(loads, present)]
            lines.append(f"let {t} = {store_y(expr(args))};")
        names[id(op.outputs[0])] = t
        helpers += hs
    return lines, [names[id(v)] for v in body.outputs], helpers


@lowers("Fused")
def lower_fused(ctx: LowerCtx, op: Op) -> None:
    """One invocation per element of the common shape: every external input is read once,
    the body runs in registers, and each exposed result is written."""
    body: Graph = op.attrs["body"]
    outs = list(op.outputs)
    space = outs[0].shape
    values: list[Value] = []
    for v in op.inputs:
        if all(v is not u for u in values):
            values.append(v)
    views = [broadcast(v.shape, space) for v in values] + [contiguous(space)]
    shape, views = collapse(space, views)
    coords, idx = index_code(shape, views)
    lines = list(coords)
    slot = {id(v): k for k, v in enumerate(values)}
    lines += [f"let r{k} = in{k}[{idx[k]}];" for k in range(len(values))]
    raw = [f"r{slot[id(v)]}" for v in op.inputs]
    code, results, helpers = body_code(ctx, body, raw, "t")
    lines += code
    for k, r in enumerate(results):
        lines.append(f"out{k}[{idx[-1]}] = {r};")
    n = math.prod(space)
    grid, nx = ctx.grid(math.ceil(n / WORKGROUP))
    decls = [decl(f"in{k}", v) for k, v in enumerate(values)]
    decls += [decl(f"out{k}", y, write=True) for k, y in enumerate(outs)]
    shader = ctx.shader(
        "map.wgsl.j2", decls=decls, helpers=helper_code(*helpers), body=lines, n=n, nx=nx, wg=WORKGROUP
    )
    bindings = [binding(v) for v in values] + [binding(y, write=True) for y in outs]
    ctx.kernel(list(op.inputs), outs, [Dispatch(shader, grid, bindings)])


# -- epilogues ----------------------------------------------------------------------------------
@dataclass
class Epilogue:
    """What a kernel template needs to apply an op's epilogue at its store.

    The template computes its result as ``v`` (f32) and the flat output index as ``oi``, then
    emits ``lines`` and stores ``expr``; ``decls`` and ``bindings`` (after the template's own,
    before its output) read the epilogue's other operands."""

    inputs: list[Value] = field(default_factory=list)
    decls: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    expr: str = "v"
    helpers: list[str] = field(default_factory=list)

    @property
    def bindings(self) -> list[Binding]:
        return [binding(v) for v in self.inputs]


def own_inputs(op: Op) -> list[Value | None]:
    """The op's operands without those its epilogue reads."""
    n = op.attrs.get("epilogue_at")
    return list(op.inputs if n is None else op.inputs[:n])


def epilogue(ctx: LowerCtx, op: Op) -> Epilogue:
    """The op's epilogue (attribute ``epilogue``: a body graph whose input 0 is the op's own
    result and whose other inputs are the op's operands past ``epilogue_at``), or none."""
    body: Graph | None = op.attrs.get("epilogue")
    if body is None:
        return Epilogue()
    y = op.outputs[0]
    extra = list(op.inputs[op.attrs["epilogue_at"] :])
    values: list[Value] = []
    for v in extra:
        if all(v is not u for u in values):
            values.append(v)
    views = [broadcast(v.shape, y.shape) for v in values]
    lines: list[str] = []
    if values:
        shape, cviews = collapse(y.shape, views + [contiguous(y.shape)])
        coords, idx = index_code(shape, cviews, flat="oi", prefix="ec")
        lines += coords
        lines += [f"let er{k} = E{k}[{idx[k]}];" for k in range(len(values))]
    slot = {id(v): k for k, v in enumerate(values)}
    code, (result,), helpers = body_code(ctx, body, ["v"] + [f"er{slot[id(v)]}" for v in extra], "et")
    return Epilogue(
        inputs=values,
        decls=[decl(f"E{k}", v) for k, v in enumerate(values)],
        lines=lines + code,
        expr=result,
        helpers=helper_code(*helpers),
    )

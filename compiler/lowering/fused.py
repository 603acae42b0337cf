"""Fused elementwise code: ``Fused`` ops (one map kernel for a DAG of elementwise ops) and the
epilogues that Conv, ConvTranspose, Gemm and MatMul apply to each result before storing it.

Both run a body graph of elementwise ops once per output element. Each body value is kept as
the 32-bit word its tensor would be stored as, and each op reads its operands through the
same load conversions as its own kernel would, so fusing never changes a result: it only
skips the round trips through memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnx2wgsl.ir import Binding, Graph, Op, Value, distinct

from ..elementwise_ops import cast, helper_code
from . import LowerCtx, binding, decl, lowers, wgsl_type
from .elementwise import cast_options, map_kernel, typed_expr
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
    values = distinct(op.inputs)
    slot = {id(v): k for k, v in enumerate(values)}
    code, results, helpers = body_code(ctx, body, [f"r{slot[id(v)]}" for v in op.inputs], "t")

    def lines(raws: list[str], targets: list[str]) -> list[str]:
        loads = [f"let r{k} = {raw};" for k, raw in enumerate(raws)]
        return loads + code + [f"{t} = {r};" for t, r in zip(targets, results)]

    reads = [(v, broadcast(v.shape, space)) for v in values]
    d = map_kernel(ctx, space, reads, [(y, contiguous(space)) for y in outs], lines, tuple(helpers))
    ctx.kernel(list(op.inputs), outs, [d])


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
    at_store: list[int] = field(default_factory=list)  # inputs read only at ``oi``

    @property
    def bindings(self) -> list[Binding]:
        return [binding(v) for v in self.inputs]

    def inplace(self, first: int, out: int, y: Value, others: list[Value]) -> tuple[tuple[int, int], ...]:
        """(read, write) pairs for a dispatch that binds these inputs from binding ``first``
        and the output ``y`` at binding ``out``: an operand read only at the store index, stored
        like ``y`` and bound nowhere else (``others``: the dispatch's other bound values) may
        share ``y``'s storage. The first such operand is paired."""
        for k in self.at_store:
            v = self.inputs[k]
            if v.nbytes == y.nbytes and wgsl_type(v) == wgsl_type(y) and all(u is not v for u in others):
                return ((first + k, out),)
        return ()


def operands(op: Op) -> tuple[list[Value], list[Value | None], list[Value]]:
    """An op's operands split into those its prologue reads (attribute ``prologue_n`` of them,
    first), its own (``epilogue_at`` of them when it has an epilogue; its input 0 is None when
    the prologue computes it) and those its epilogue reads (the rest)."""
    k = op.attrs.get("prologue_n", 0)
    n = op.attrs.get("epilogue_at", len(op.inputs) - k)
    return list(op.inputs[:k]), list(op.inputs[k : k + n]), list(op.inputs[k + n :])


def epilogue(ctx: LowerCtx, op: Op) -> Epilogue:
    """The op's epilogue (attribute ``epilogue``: a body graph whose input 0 is the op's own
    result and whose other inputs are the op's epilogue operands), or none."""
    body: Graph | None = op.attrs.get("epilogue")
    if body is None:
        return Epilogue()
    y = op.outputs[0]
    extra = operands(op)[2]
    values = distinct(extra)
    views = [broadcast(v.shape, y.shape) for v in values]
    lines: list[str] = []
    at_store: list[int] = []
    if values:
        shape, cviews = collapse(y.shape, views + [contiguous(y.shape)])
        coords, idx = index_code(shape, cviews, flat="oi", prefix="ec")
        lines += coords
        lines += [f"let er{k} = E{k}[{idx[k]}];" for k in range(len(values))]
        at_store = [k for k in range(len(values)) if idx[k] == "oi" and not values[k].is_const]
    slot = {id(v): k for k, v in enumerate(values)}
    code, (result,), helpers = body_code(ctx, body, ["v"] + [f"er{slot[id(v)]}" for v in extra], "et")
    return Epilogue(
        inputs=values,
        decls=[decl(f"E{k}", v) for k, v in enumerate(values)],
        lines=lines + code,
        expr=result,
        helpers=helper_code(*helpers),
        at_store=at_store,
    )


# -- prologues ----------------------------------------------------------------------------------
@dataclass
class Prologue:
    """How a kernel template reads its input 0: through ``fn load_x(i: u32) -> f32`` (``code``),
    which reads the flat element ``i`` of the tensor, either stored (binding ``X``) or computed
    by the op's prologue from the bindings ``P0``, ``P1``... in ``decls``."""

    x: Value
    inputs: list[Value]
    decls: list[dict]
    code: str
    helpers: list[str] = field(default_factory=list)

    @property
    def bindings(self) -> list[Binding]:
        return [binding(v) for v in self.inputs]


def prologue(ctx: LowerCtx, op: Op) -> Prologue:
    """Input 0 of ``op`` as its kernel reads it: stored, or computed by its ``prologue`` (a body
    graph over the op's prologue operands whose one output is the tensor input 0 would be)."""
    pro, own, _ = operands(op)
    body: Graph | None = op.attrs.get("prologue")
    if body is None:
        x = own[0]
        return Prologue(x, [x], [decl("X", x)], "fn load_x(i: u32) -> f32 {\n  return X[i];\n}")
    x = body.outputs[0]
    values = distinct(pro)
    shape, views = collapse(x.shape, [broadcast(v.shape, x.shape) for v in values] + [contiguous(x.shape)])
    coords, idx = index_code(shape, views, flat="i", prefix="pc")
    slot = {id(v): k for k, v in enumerate(values)}
    lines = coords + [f"let pr{k} = P{k}[{idx[k]}];" for k in range(len(values))]
    code, (result,), helpers = body_code(ctx, body, [f"pr{slot[id(v)]}" for v in pro], "pt")
    text = "fn load_x(i: u32) -> f32 {\n" + "".join(f"  {line}\n" for line in lines + code)
    text += f"  return {result};\n}}"
    return Prologue(x, values, [decl(f"P{k}", v) for k, v in enumerate(values)], text, helper_code(*helpers))

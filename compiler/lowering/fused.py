"""Fused elementwise code: ``Fused`` ops (one point kernel for a DAG of elementwise ops) and the
epilogues that Conv, ConvTranspose, Gemm and MatMul apply to each result before storing it.

Both run a body graph of elementwise ops once per output element. Each body value is kept as
the 32-bit word its tensor would be stored as, and each op reads its operands through the
same load conversions as its own kernel would, so fusing never changes a result: it only
skips the round trips through memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnx2wgsl.ir import Binding, Dispatch, Graph, Op, Value, distinct
from onnx2wgsl.ir.kernel import Buffer, ref

from ..elementwise_ops import cast, helper_code
from . import LowerCtx, binding, decl, elem_type, lowers, u32, widen
from .builder import KernelBuilder
from .elementwise import cast_options, typed_expr
from .indexing import (
    View,
    broadcast,
    broadcast_view,
    collapse,
    contiguous,
    contiguous_strides,
    index_code,
    permuted,
)


def body_code(
    ctx: LowerCtx, body: Graph, raw: list[str | None], prefix: str, given: dict[int, str] | None = None
) -> tuple[list[str], list[str], list[str]]:
    """WGSL lines computing ``body`` from its inputs' stored words ``raw`` (None for an input
    only ``given`` values are read from); ``given`` maps body values that the caller reads
    itself (transposed reads) to their stored words, and the ops making them are skipped.

    Returns the lines, the expression of each body output (a stored word) and the helper
    names the lines call."""
    names = {id(v): r for v, r in zip(body.inputs, raw) if r is not None}
    names.update(given or {})
    lines: list[str] = []
    helpers: list[str] = []
    for k, op in enumerate(body.ops):
        t = f"{prefix}{k}"
        if id(op.outputs[0]) in (given or {}):
            continue
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


def operand_reads(
    ctx: LowerCtx, body: Graph, operands: dict[int, Value], space
) -> tuple[list[tuple[Value, View]], dict[int, int]]:
    """How a kernel running ``body`` once per point of ``space`` reads the body's operands
    (``operands``: body input id -> the tensor it stands for): each operand an elementwise op
    uses is read broadcast into ``space``, and each Transpose of an operand is a read through
    permuted strides (fuse-elementwise lets a group transpose only what it reads from outside).

    Returns the reads and, for each body value read (operands and Transposes), its read's index."""
    reads: list[tuple[Value, View]] = []
    at: dict[int, int] = {}
    for o in body.ops:
        if o.kind == "Transpose":
            continue
        for b in o.inputs:
            if b is not None and id(b) in operands and id(b) not in at:
                v = operands[id(b)]
                at[id(b)] = len(reads)
                reads.append((v, broadcast(v.shape, space)))
    for o in body.ops:
        if o.kind != "Transpose":
            continue
        x = operands.get(id(o.inputs[0]))
        if x is None:
            raise ctx.error(f"a fused Transpose reads %{o.inputs[0].name}, which the group computes")
        at[id(o.outputs[0])] = len(reads)
        reads.append((x, broadcast_view(permuted(x.shape, o.attrs["perm"]), o.outputs[0].shape, space)))
    return reads, at


@lowers("Fused")
def lower_fused(ctx: LowerCtx, op: Op) -> None:
    """One invocation per element of the common shape: every external input is read once
    (twice at most when it is also read transposed), the body runs in registers, and each
    exposed result is written."""
    body: Graph = op.attrs["body"]
    outs = list(op.outputs)
    space = outs[0].shape
    reads, at = operand_reads(ctx, body, {id(b): v for b, v in zip(body.inputs, op.inputs)}, space)
    given = {k: f"r{j}" for k, j in at.items()}
    code, results, helpers = body_code(ctx, body, [None] * len(body.inputs), "t", given)

    k = KernelBuilder(ctx, space)
    for h in helper_code(*helpers):
        k.helper(h)
    k.add(*[f"let r{j} = {k.load(v, view)};" for j, (v, view) in enumerate(reads)], *code)
    k.add(*[k.assign(y, contiguous(space), r) for y, r in zip(outs, results)])
    ctx.kernel(list(op.inputs), outs, [k.dispatch()])


# -- epilogues ----------------------------------------------------------------------------------
@dataclass
class Epilogue:
    """What a kernel template needs to apply an op's epilogue at its store.

    The template computes its result as ``v`` (f32) and the flat output index as ``oi``, then
    emits ``lines`` and stores ``expr``; ``decls`` and ``bindings`` (after the template's own,
    before its output) read the epilogue's other operands."""

    inputs: list[Value] = field(default_factory=list)
    decls: list[Buffer] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    expr: str = "v"
    helpers: list[str] = field(default_factory=list)
    at_store: list[int] = field(default_factory=list)  # inputs read only at ``oi``

    @property
    def bindings(self) -> list[Binding]:
        return [binding(v) for v in self.inputs]

    def decls_with(self, own: list[Buffer], y: Value) -> list[Buffer]:
        """A template's binding declarations: its own, the epilogue's, then the output ``Y``."""
        return own + self.decls + [decl("Y", y, write=True)]

    def dispatch(self, shader: str, grid, own: list[Value], y: Value) -> Dispatch:
        """The dispatch binding the template's own operands, the epilogue's and the output, in
        that order (``decls_with``'s). An epilogue operand read only at the store index, stored
        like ``y`` and bound nowhere else may share ``y``'s storage: the first such one is
        declared as an in-place pair."""
        bindings = [binding(v) for v in own] + self.bindings + [binding(y, write=True)]
        pairs: tuple[tuple[int, int], ...] = ()
        for k in self.at_store:
            v = self.inputs[k]
            if v.nbytes == y.nbytes and elem_type(v) == elem_type(y) and all(u is not v for u in own):
                pairs = ((len(own) + k, len(bindings) - 1),)
                break
        return Dispatch(shader, grid, bindings, pairs)


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
    reads, at = operand_reads(ctx, body, {id(b): v for b, v in zip(body.inputs[1:], extra)}, y.shape)
    values = distinct(v for v, _ in reads)
    slot = {id(v): k for k, v in enumerate(values)}
    lines: list[str] = []
    at_store: list[int] = []
    if reads:
        shape, cviews = collapse(y.shape, [view for _, view in reads] + [contiguous(y.shape)])
        coords, idx = index_code(shape, cviews, flat="oi", prefix="ec")
        lines += coords
        lines += [
            f"let er{j} = {widen(elem_type(v), ref(f'E{slot[id(v)]}') + f'[{idx[j]}]')};"
            for j, (v, _) in enumerate(reads)
        ]
        at_store = [
            k
            for k, v in enumerate(values)
            if not v.is_const and all(idx[j] == "oi" for j, (u, _) in enumerate(reads) if u is v)
        ]
    given = {k: f"er{j}" for k, j in at.items()}
    code, (result,), helpers = body_code(ctx, body, ["v"] + [None] * len(extra), "et", given)
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
    decls: list[Buffer]
    code: str
    helpers: list[str] = field(default_factory=list)
    # the same as ``fn load_x(i: u32, n: u32, c: u32) -> f32`` for a kernel that knows each
    # element's batch index n and channel c, where the prologue's operands allow it (None
    # elsewhere): see ``prologue``
    plane_code: str | None = None

    @property
    def bindings(self) -> list[Binding]:
        return [binding(v) for v in self.inputs]


def prologue(ctx: LowerCtx, op: Op) -> Prologue:
    """Input 0 of ``op`` as its kernel reads it: stored, or computed by its ``prologue`` (a body
    graph over the op's prologue operands whose one output is the tensor input 0 would be).

    Where every operand is read element by element or per channel (a BatchNorm's scale and
    shift) of an input [N, C, spatial...], ``plane_code`` is the prologue indexing them by i and
    by the batch index n and channel c its kernel passes, with no size of the input in its
    text: convs of other sizes then share the shader."""
    pro, own, _ = operands(op)
    body: Graph | None = op.attrs.get("prologue")
    if body is None:
        x = own[0]
        return Prologue(
            x,
            [x],
            [decl("X", x)],
            "fn load_x(i: u32) -> f32 {\n  return " + widen(elem_type(x), ref("X") + "[i]") + ";\n}",
        )
    x = body.outputs[0]
    reads, at = operand_reads(ctx, body, {id(b): v for b, v in zip(body.inputs, pro)}, x.shape)
    values = distinct(v for v, _ in reads)
    slot = {id(v): k for k, v in enumerate(values)}
    given = {k: f"pr{j}" for k, j in at.items()}
    code, (result,), helpers = body_code(ctx, body, [None] * len(pro), "pt", given)

    def function(signature: str, coords: list[str], idx: list[str]) -> str:
        lines = coords + [
            f"let pr{j} = {widen(elem_type(v), ref(f'P{slot[id(v)]}') + f'[{idx[j]}]')};"
            for j, (v, _) in enumerate(reads)
        ]
        body_text = "".join(f"  {line}\n" for line in lines + code)
        return f"fn load_x({signature}) -> f32 {{\n{body_text}  return {result};\n}}"

    shape, views = collapse(x.shape, [view for _, view in reads] + [contiguous(x.shape)])
    text = function("i: u32", *index_code(shape, views, flat="i", prefix="pc"))
    by_plane = _plane_indices(x.shape, [view for _, view in reads])
    plane_text = None if by_plane is None else function("i: u32, n: u32, c: u32", [], by_plane)
    decls = [decl(f"P{k}", v) for k, v in enumerate(values)]
    return Prologue(x, values, decls, text, helper_code(*helpers), plane_text)


def _plane_indices(shape, views: list[View]) -> list[str] | None:
    """Each view's index by i (the element's flat index in ``shape``, [N, C, spatial...]), n and
    c: a view read element by element is i, one constant over the spatial dims is its offset +
    n and c times its strides; None when some view is neither (or a size is kept symbolic)."""
    shape = tuple(shape)
    if len(shape) < 3 or not all(isinstance(d, int) for d in shape):
        return None
    dense = contiguous_strides(shape)
    live = [d for d, n in enumerate(shape) if n != 1]  # (a dim of 1 reads coordinate 0 at any stride)
    out = []
    for v in views:
        if not all(isinstance(s, int) for s in (v.offset, *v.strides)):
            return None
        if all(v.strides[d] == dense[d] for d in live):
            out.append(f"i + {u32(v.offset)}" if v.offset else "i")
        elif all(v.strides[d] == 0 for d in live if d >= 2):
            terms = [u32(v.offset)] if v.offset else []
            terms += [f"{coord} * {u32(v.strides[d])}" if v.strides[d] != 1 else coord
                      for d, coord in ((0, "n"), (1, "c")) if d in live and v.strides[d]]  # fmt: skip
            out.append(" + ".join(terms) or "0u")
        else:
            return None
    return out

"""ONNX function bodies: the definition an op's schema gives, ready to import node by node.

Many ONNX ops (Elu, Gelu, LayerNormalization, CastLike, Attention, ...) are defined by a
function body made of simpler ops, either a fixed one or one built per node from its
attributes and input types (a context-dependent function). A default-domain op with no
legalize rule and no lowering of its own is expanded from that body; the frontend then
imports each body node like any other (constants fold, shapes infer, nested functions
expand in turn). Scoping does the renaming: a body's names live in their own scope, bound
to the calling node's values, so they can never clash with the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from onnx2wgsl.errors import UnsupportedError

# Expanding a function whose body uses the function itself would never end.
MAX_DEPTH = 32


@dataclass
class Body:
    """One function body, attribute references already replaced by the node's values."""

    nodes: list[onnx.NodeProto]
    inputs: list[str]  # formal names, in the op's input order
    outputs: list[str]
    opset: dict[str, int]  # the body's own opset imports


def lowered(kind: str) -> bool:
    """Whether ops of this kind compile by themselves: a lowering, an alias of one, or host-only."""
    from .lowering import _LOWERINGS, ALIASES, HOST_ONLY
    from .lowering import _load_all as load_lowerings

    load_lowerings()
    return kind in _LOWERINGS or kind in ALIASES or kind in HOST_ONLY


def _pick(versions, opset: int) -> int | None:
    """The body version to use at ``opset``: the newest not newer than it, else the oldest."""
    versions = sorted(int(v) for v in versions)
    if not versions:
        return None
    older = [v for v in versions if v <= opset]
    return older[-1] if older else versions[0]


def function_body(node: onnx.NodeProto, schema, opset: int, input_types: list[onnx.TypeProto | None]):
    """The schema's function body for ``node`` (attribute references substituted), or None."""
    if schema is None:
        return None
    raw = b""
    if schema.has_function:
        v = _pick(schema.function_opset_versions, opset)
        raw = schema.get_function_with_opset_version(v) if v is not None else schema.function_body
    elif schema.has_context_dependent_function:
        v = _pick(schema.context_dependent_function_opset_versions, opset)
        types = [b"" if t is None else t.SerializeToString() for t in input_types]
        try:
            raw = schema.get_context_dependent_function_with_opset_version(v, node.SerializeToString(), types)
        except Exception as e:  # the body builder rejects this node: its attributes or types
            raise UnsupportedError(
                f"its ONNX function body cannot be built for these inputs ({str(e).strip()[:200]})",
                node=node.name,
                op=node.op_type,
                opset=opset,
            ) from e
    if isinstance(raw, onnx.FunctionProto):
        fn = raw
    else:
        fn = onnx.FunctionProto()
        fn.ParseFromString(raw)
    if not fn.node:
        return None
    defaults = {
        name: a.default_value
        for name, a in schema.attributes.items()
        if a.default_value is not None and a.default_value.name
    }
    actual = {a.name: a for a in node.attribute}
    nodes = [substitute_attributes(n, actual, defaults) for n in fn.node]
    body_opset = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in fn.opset_import}
    body_opset.setdefault("", opset)
    return Body(nodes, list(fn.input), list(fn.output), body_opset)


def substitute_attributes(
    node: onnx.NodeProto,
    actual: dict[str, onnx.AttributeProto],
    defaults: dict[str, onnx.AttributeProto],
) -> onnx.NodeProto:
    """A copy of a body node whose attribute references (``ref_attr_name``) are replaced by
    the calling node's attribute, else the op's default, else dropped; subgraphs included."""
    out = onnx.NodeProto()
    out.CopyFrom(node)
    del out.attribute[:]
    for a in node.attribute:
        if a.ref_attr_name:
            src = actual.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
            if src is None:
                continue  # an optional attribute the caller did not set: absent in the body too
            b = onnx.AttributeProto()
            b.CopyFrom(src)
            b.name = a.name
            out.attribute.append(b)
            continue
        b = onnx.AttributeProto()
        b.CopyFrom(a)
        if b.HasField("g"):
            _substitute_graph(b.g, actual, defaults)
        for g in b.graphs:
            _substitute_graph(g, actual, defaults)
        out.attribute.append(b)
    return out


def _substitute_graph(g: onnx.GraphProto, actual, defaults) -> None:
    nodes = [substitute_attributes(n, actual, defaults) for n in g.node]
    del g.node[:]
    g.node.extend(nodes)


def input_type(v) -> onnx.TypeProto | None:
    """The ONNX type of an IR value, for context-dependent function builders."""
    if v is None:
        return None
    return helper.make_tensor_type_proto(v.dtype.onnx, [int(d) for d in v.shape])

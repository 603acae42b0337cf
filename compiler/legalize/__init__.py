"""Rewrite each ONNX node, at any opset, into its opset-independent IR form.

The IR form of an op has the newest ONNX semantics, every attribute filled in (schema
defaults included), and compile-time secondary inputs (axes, pads, shapes, clip bounds)
moved into attributes. Shape-only ops (Reshape, Flatten, Squeeze, Unsqueeze) all become
``Reshape``, whose output type carries the new shape; Dropout in inference becomes Identity.
Ops without a rule here keep their kind and attributes.

Rules are keyed by (domain, op type). Ops of other domains that have a rule (onnxruntime's
``com.microsoft`` contrib ops, ``contrib.py``) legalize into default-domain IR ops.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnx2wgsl.errors import UnsupportedError
from onnx2wgsl.ir import Graph, Value
from onnx2wgsl.ir.symbolic import SymbolicError

Rule = Callable[[Graph, "NodeInfo"], list]  # noqa: F821
_RULES: dict[tuple[str, str], Rule] = {}
# Rules live in one module per op family below; each registers itself with @rule.


def rule(*op_types: str, domain: str = ""):
    """Register a rule for ``op_types`` of ``domain`` (the default domain unless named)."""

    def register(fn: Rule) -> Rule:
        for t in op_types:
            _RULES[domain, t] = fn
        return fn

    return register


def has_rule(op_type: str, domain: str = "") -> bool:
    """Whether an op has its own legalize rule (ops without one keep their ONNX form)."""
    _load_all()
    return (domain, op_type) in _RULES


def legalize(g: Graph, info) -> list[Value | None]:
    """Emit the IR op(s) for one ONNX node into ``g``; return values for its outputs."""
    _load_all()
    fn = _RULES.get((info.domain, info.op_type))
    if fn is None:
        return emit(g, info, info.op_type, info.inputs, info.attrs)
    try:
        return fn(g, info)
    except SymbolicError as e:  # a check of dims kept symbolic that their ranges do not decide
        raise info.error(
            f"{info.op_type} over dims kept symbolic: {e}",
            hint="bind the dims with --dim NAME=N, or narrow their ranges",
            cls=UnsupportedError,
        ) from None


def emit(
    g: Graph, info, kind: str, inputs, attrs, out_types=None, out_names=None, domain: str | None = None
) -> list[Value]:
    """Append one IR op for ``info``'s node; ``domain`` defaults to the node's own."""
    types = list(out_types if out_types is not None else info.out_types)
    names = list(out_names if out_names is not None else info.out_names)
    live = [i for i, (t, n) in enumerate(zip(types, names)) if t is not None]
    op = g.make_op(
        kind,
        inputs,
        [types[i] for i in live],
        attrs,
        name=info.name,
        out_names=[names[i] for i in live],
        domain=info.domain if domain is None else domain,
    )
    g.append(op)
    outs: list = [None] * len(types)
    for i, v in zip(live, op.outputs):
        outs[i] = v
    return outs


def _axis(info, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise info.error(f"axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


def _ints(a) -> list[int]:
    return [int(x) for x in np.asarray(a).reshape(-1)]


def _load_all() -> None:
    from . import contrib, data, elementwise, nn, reduce, signal, tensor  # noqa: F401

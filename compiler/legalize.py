"""Rewrite each ONNX node, at any opset, into its opset-independent IR form.

The IR form of an op has the newest ONNX semantics, every attribute filled in (schema
defaults included), and compile-time secondary inputs (axes, pads, shapes, clip bounds)
moved into attributes. Shape-only ops (Reshape, Flatten, Squeeze, Unsqueeze) all become
``Reshape``, whose output type carries the new shape; Dropout in inference becomes Identity.
Ops without a rule here keep their kind and attributes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from onnx2wgsl.errors import UnsupportedError
from onnx2wgsl.ir import Graph, TensorType, Value

Rule = Callable[[Graph, "NodeInfo"], list]  # noqa: F821
_RULES: dict[str, Rule] = {}


def rule(*op_types: str):
    def register(fn: Rule) -> Rule:
        for t in op_types:
            _RULES[t] = fn
        return fn

    return register


def legalize(g: Graph, info) -> list[Value | None]:
    """Emit the IR op(s) for one ONNX node into ``g``; return values for its outputs."""
    fn = _RULES.get(info.op_type) if info.domain == "" else None
    if fn is None:
        return emit(g, info, info.op_type, info.inputs, info.attrs)
    return fn(g, info)


def emit(g: Graph, info, kind: str, inputs, attrs, out_types=None, out_names=None) -> list[Value]:
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
        domain=info.domain,
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


# -- views ----------------------------------------------------------------------------------
@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(g, info):
    if info.op_type == "Reshape" and info.opset >= 5:
        info.const_input(1, "shape")  # the output type already holds it; it must be known
    return emit(g, info, "Reshape", info.inputs[:1], {})


@rule("Identity")
def _identity(g, info):
    return emit(g, info, "Identity", info.inputs[:1], {})


@rule("Dropout")
def _dropout(g, info):
    if info.opset >= 12 and len(info.inputs) > 2 and info.inputs[2] is not None:
        training = info.const_input(2, "training_mode")
        if bool(np.asarray(training).reshape(-1)[0]):
            raise info.error("training mode is not supported", cls=UnsupportedError)
    y = emit(g, info, "Identity", info.inputs[:1], {}, info.out_types[:1], info.out_names[:1])
    outs = list(y)
    if len(info.out_types) > 1 and info.out_types[1] is not None:
        t = info.out_types[1]
        outs.append(g.const(np.ones(t.shape, dtype=t.dtype.numpy), info.out_names[1]))
    return outs


# -- normalization of attributes ------------------------------------------------------------
def _spatial(info, x: Value, kernel_shape: list[int]) -> dict:
    """strides, dilations and explicit pads (auto_pad resolved) of a conv or pool."""
    nd = len(kernel_shape)
    a = info.attrs
    strides = _ints(a.get("strides") or [1] * nd)
    dilations = _ints(a.get("dilations") or [1] * nd)
    pads = _ints(a.get("pads") or [0] * (2 * nd))
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i in range(nd):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel_shape[i] - 1) * dilations[i] + 1 - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    elif auto != "NOTSET":
        raise info.error(f"unknown auto_pad {auto!r}")
    if len(strides) != nd or len(dilations) != nd or len(pads) != 2 * nd:
        raise info.error("strides, dilations or pads do not match the kernel's rank")
    return {"kernel_shape": list(kernel_shape), "strides": strides, "dilations": dilations, "pads": pads}


@rule("Conv")
def _conv(g, info):
    x, w = info.inputs[0], info.inputs[1]
    ks = _ints(info.attrs.get("kernel_shape") or w.shape[2:])
    attrs = _spatial(info, x, ks)
    attrs["group"] = int(info.attrs.get("group", 1))
    return emit(g, info, "Conv", info.inputs[:3], attrs)


@rule("MaxPool", "AveragePool", "LpPool")
def _pool(g, info):
    x = info.inputs[0]
    ks = _ints(info.attrs["kernel_shape"])
    attrs = _spatial(info, x, ks)
    attrs["ceil_mode"] = int(info.attrs.get("ceil_mode", 0))
    if info.op_type == "AveragePool":
        attrs["count_include_pad"] = int(info.attrs.get("count_include_pad", 0))
    if info.op_type == "LpPool":
        attrs["p"] = int(info.attrs.get("p", 2))
    if info.op_type == "MaxPool":
        attrs["storage_order"] = int(info.attrs.get("storage_order", 0))
    return emit(g, info, info.op_type, info.inputs[:1], attrs)


@rule("Gemm")
def _gemm(g, info):
    a = info.attrs
    attrs = {
        "alpha": float(a.get("alpha", 1.0)),
        "beta": float(a.get("beta", 1.0)),
        "transA": int(a.get("transA", 0)),
        "transB": int(a.get("transB", 0)),
    }
    return emit(g, info, "Gemm", info.inputs[:3], attrs)


@rule("Concat")
def _concat(g, info):
    rank = info.out_types[0].rank
    return emit(g, info, "Concat", info.inputs, {"axis": _axis(info, int(info.attrs["axis"]), rank)})


@rule("Transpose")
def _transpose(g, info):
    rank = info.inputs[0].type.rank
    perm = _ints(info.attrs.get("perm") or list(reversed(range(rank))))
    return emit(g, info, "Transpose", info.inputs[:1], {"perm": perm})


@rule("Softmax", "LogSoftmax", "Hardmax")
def _softmax(g, info):
    x = info.inputs[0]
    rank = x.type.rank
    default = -1 if info.opset >= 13 else 1
    axis = _axis(info, int(info.attrs.get("axis", default)), rank)
    if info.opset >= 13 or axis == rank - 1:
        return emit(g, info, info.op_type, [x], {"axis": axis})
    # Before opset 13 the input is coerced to 2-D at axis: a free view around a 2-D softmax.
    rows = math.prod(x.shape[:axis])
    flat = TensorType(x.dtype, (rows, math.prod(x.shape[axis:])))
    (x2,) = emit(g, info, "Reshape", [x], {}, [flat], [info.out_names[0] + ".2d"])
    (y2,) = emit(g, info, info.op_type, [x2], {"axis": 1}, [flat], [info.out_names[0] + ".2d"])
    return emit(g, info, "Reshape", [y2], {})


@rule("BatchNormalization")
def _batchnorm(g, info):
    if int(info.attrs.get("training_mode", 0)):
        raise info.error("training_mode=1 is not supported (inference only)", cls=UnsupportedError)
    if info.opset < 9 and not int(info.attrs.get("spatial", 1)):
        # spatial=0: statistics per (C, H, W) element, not per channel
        attrs = {"epsilon": float(info.attrs.get("epsilon", 1e-5)), "per_activation": 1}
    else:
        attrs = {"epsilon": float(info.attrs.get("epsilon", 1e-5))}
    live = [info.out_types[0]] + [None] * (len(info.out_types) - 1)
    if any(t is not None for t in info.out_types[1:]):
        raise info.error("running-statistics outputs are training-only", cls=UnsupportedError)
    return emit(g, info, "BatchNormalization", info.inputs[:5], attrs, out_types=live)


@rule("LRN")
def _lrn(g, info):
    a = info.attrs
    attrs = {
        "size": int(a["size"]),
        "alpha": float(a.get("alpha", 1e-4)),
        "beta": float(a.get("beta", 0.75)),
        "bias": float(a.get("bias", 1.0)),
    }
    return emit(g, info, "LRN", info.inputs[:1], attrs)


@rule("Clip")
def _clip(g, info):
    x = info.inputs[0]
    if info.opset < 11:
        lo = float(info.attrs.get("min", -np.inf))
        hi = float(info.attrs.get("max", np.inf))
        return emit(g, info, "Clip", [x], {"min": lo, "max": hi})
    bounds = info.inputs[1:3] + [None] * (3 - len(info.inputs))
    if all(b is None or b.is_const for b in bounds[:2]):
        lo, hi = (None if b is None else b.data.reshape(-1)[0].item() for b in bounds[:2])
        attrs = {"min": -math.inf if lo is None else lo, "max": math.inf if hi is None else hi}
        return emit(g, info, "Clip", [x], attrs)
    return emit(g, info, "Clip", [x] + bounds[:2], {})


@rule("Sum", "Max", "Min", "Mean")
def _variadic(g, info):
    ins = [v for v in info.inputs if v is not None]
    if len(ins) == 1 and ins[0].type == info.out_types[0]:
        return emit(g, info, "Identity", ins, {})
    return emit(g, info, info.op_type, ins, {})


@rule("LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "HardSigmoid")
def _float_attrs(g, info):
    return emit(g, info, info.op_type, info.inputs, {k: float(v) for k, v in info.attrs.items()})


@rule("ConstantOfShape")
def _constant_of_shape(g, info):
    info.const_input(0, "shape")  # a constant shape would have been folded already
    raise AssertionError("unreachable")

"""Legalize rules: elementwise ops with attributes or compile-time operands, Cast/CastLike."""

from __future__ import annotations

import math

import numpy as np

from . import emit, rule


@rule("Clip")
def _clip(g, info):
    """Constant bounds become the ``min``/``max`` attributes (+-inf where absent); bounds
    computed at run time stay inputs at their positions (None where constant or omitted)."""
    x = info.inputs[0]
    if info.opset < 11:
        lo = float(info.attrs.get("min", -np.inf))
        hi = float(info.attrs.get("max", np.inf))
        return emit(g, info, "Clip", [x], {"min": lo, "max": hi})
    attrs = {"min": -math.inf, "max": math.inf}
    inputs = [x, None, None]
    for i, key in ((1, "min"), (2, "max")):
        b = info.inputs[i] if i < len(info.inputs) else None
        if b is None:
            continue
        if b.is_const:
            if b.data.size != 1:
                raise info.error(f"its {key} bound must be a scalar, got shape {list(b.shape)}")
            attrs[key] = b.data.reshape(-1)[0].item()
        else:
            inputs[i] = b
    while inputs[-1] is None:
        inputs.pop()
    return emit(g, info, "Clip", inputs, attrs)


@rule("Sum", "Max", "Min", "Mean")
def _variadic(g, info):
    ins = [v for v in info.inputs if v is not None]
    if len(ins) == 1 and ins[0].type == info.out_types[0]:
        return emit(g, info, "Identity", ins, {})
    return emit(g, info, info.op_type, ins, {})


@rule("LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "HardSigmoid", "Shrink", "Swish")
def _float_attrs(g, info):
    return emit(g, info, info.op_type, info.inputs, {k: float(v) for k, v in info.attrs.items()})


@rule("Cast", "CastLike")
def _cast(g, info):
    """Both become ``Cast`` to the output's dtype (the output type already holds it)."""
    round_mode = info.attrs.get("round_mode", "up")
    if round_mode not in ("up", "down", "nearest"):
        raise info.error(f"round_mode must be 'up', 'down' or 'nearest', got {round_mode!r}")
    attrs = {
        "to": info.out_types[0].dtype.value,
        "saturate": int(info.attrs.get("saturate", 1)),
        "round_mode": round_mode,
    }
    x = info.inputs[0]
    if x.is_const:  # CastLike(constant, run-time value): fold (a view of a constant cannot be bound)
        from onnx.reference.ops.op_cast import cast_to

        out = info.out_types[0].dtype
        data = cast_to(x.data, out.onnx, bool(attrs["saturate"]), round_mode)
        return [g.const(np.asarray(data).astype(out.numpy), info.out_names[0], dtype=out)]
    return emit(g, info, "Cast", [x], attrs)


@rule("Mod")
def _mod(g, info):
    return emit(g, info, "Mod", info.inputs, {"fmod": int(info.attrs.get("fmod", 0))})


@rule("BitShift")
def _bitshift(g, info):
    direction = info.attrs.get("direction", "")
    if direction not in ("LEFT", "RIGHT"):
        raise info.error(f"direction must be LEFT or RIGHT, got {direction!r}")
    return emit(g, info, "BitShift", info.inputs, {"direction": direction})


@rule("IsInf")
def _isinf(g, info):
    a = info.attrs
    attrs = {
        "detect_negative": int(a.get("detect_negative", 1)),
        "detect_positive": int(a.get("detect_positive", 1)),
    }
    return emit(g, info, "IsInf", info.inputs, attrs)


@rule("Gelu")
def _gelu(g, info):
    approximate = info.attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise info.error(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return emit(g, info, "Gelu", info.inputs, {"approximate": approximate})


@rule("PRelu")
def _prelu(g, info):
    """The slope broadcasts to X (numpy rules, one direction). A 1-D slope of X's channel count
    that does not broadcast is the per-channel slope of opset <= 6 models (onnx's version
    converter passes it through unchanged): it is laid along axis 1."""
    x, slope = info.inputs[0], info.inputs[1]
    xs, ss = tuple(x.shape), tuple(slope.shape)
    if _broadcasts_to(ss, xs):
        return emit(g, info, "PRelu", [x, slope], {})
    if len(ss) == 1 and len(xs) >= 2 and ss[0] == xs[1]:
        shape = (ss[0],) + (1,) * (len(xs) - 2)
        if slope.is_const:
            slope2 = g.const(slope.data.reshape(shape), slope.name + ".channels")
        else:
            (slope2,) = emit(
                g, info, "Reshape", [slope], {}, [slope.type.with_shape(shape)], [slope.name + ".channels"]
            )
        return emit(g, info, "PRelu", [x, slope2], {})
    raise info.error(f"slope of shape {list(ss)} does not broadcast to the input's shape {list(xs)}")


def _broadcasts_to(small: tuple, big: tuple) -> bool:
    if len(small) > len(big):
        return False
    return all(s in (1, b) for s, b in zip(reversed(small), reversed(big)))


@rule("BitCast")
def _bitcast(g, info):
    return emit(g, info, "BitCast", info.inputs[:1], {"to": info.out_types[0].dtype.value})

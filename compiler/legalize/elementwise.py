"""Legalize rules: elementwise ops with attributes or compile-time operands."""

from __future__ import annotations

import math

import numpy as np

from . import emit, rule


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

"""Legalize rules: views, Dropout, Concat, Transpose, and host-only ops."""

from __future__ import annotations

import numpy as np

from onnx2wgsl.errors import UnsupportedError

from . import _axis, _ints, emit, rule


# -- views ----------------------------------------------------------------------------------
@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(g, info):
    if info.op_type == "Reshape" and info.opset >= 5:
        info.const_input(1, "shape")  # the output type already holds it; it must be known
    elif info.op_type in ("Squeeze", "Unsqueeze") and info.opset >= 13:
        info.const_input(1, "axes")
    x, out = info.inputs[0].type, info.out_types[0]
    if out is not None and _numel(x) != _numel(out):
        # onnx's inference takes the requested shape as it is; onnxruntime refuses it at run time
        raise info.error(
            f"cannot reshape {list(x.shape)} ({_numel(x)} elements) to {list(out.shape)} ({_numel(out)} elements)",
            hint="a reshape keeps the number of elements; fix the target shape",
        )
    return emit(g, info, "Reshape", info.inputs[:1], {})


def _numel(t):
    from ..symbolic_fold import numel

    return numel(t.shape) if t.is_symbolic else t.numel


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


@rule("Concat")
def _concat(g, info):
    rank = info.out_types[0].rank
    return emit(g, info, "Concat", info.inputs, {"axis": _axis(info, int(info.attrs["axis"]), rank)})


@rule("Transpose")
def _transpose(g, info):
    rank = info.inputs[0].type.rank
    perm = _ints(info.attrs.get("perm") or list(reversed(range(rank))))
    if sorted(perm) != list(range(rank)):
        raise info.error(f"perm {perm} is not a permutation of the input's {rank} axes", hint="fix the model")
    return emit(g, info, "Transpose", info.inputs[:1], {"perm": perm})


@rule("ConstantOfShape")
def _constant_of_shape(g, info):
    info.const_input(0, "shape")  # a constant shape would have been folded already
    raise AssertionError("unreachable")

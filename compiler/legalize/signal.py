"""Legalize rules: signal processing (DFT, STFT, MelWeightMatrix).

DFT takes its axis as an attribute (opsets 17-19) or an input (opset 20); both become the
``axis`` attribute, and the transform length (``dft_length``, or its per-mode default) the
``length`` attribute, with the mode spelled out: ``forward``, ``inverse`` or ``irfft`` (an
inverse of a one-sided spectrum, which gives a real signal). STFT's frame step and frame
length become attributes; its window may be a run-time tensor. MelWeightMatrix's output
shape is decided by its input values, so it can only fold on the host.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnx2wgsl.ir import TensorType

from .. import host_eval
from . import emit, rule


def _scalar_input(info, i: int, what: str) -> int | None:
    data = info.const_input(i, what)
    if data is None or np.asarray(data).size == 0:
        return None
    data = np.asarray(data).reshape(-1)
    if data.size != 1:
        raise info.error(f"{what} must be a scalar, got {data.size} values")
    return int(data[0])


def _complex_input(info, x) -> int:
    if x.type.rank < 2 or x.shape[-1] not in (1, 2):
        raise info.error(
            f"input {x.type} does not end in a dim of 1 (real) or 2 (real, imaginary)",
            hint="append a trailing dim of size 1 to a real signal",
        )
    return x.shape[-1]


@rule("DFT")
def _dft(g, info):
    x = info.inputs[0]
    _complex_input(info, x)
    rank = x.type.rank
    length = _scalar_input(info, 1, "dft_length")
    if info.opset >= 20:
        axis = _scalar_input(info, 2, "axis")
        axis = -2 if axis is None else axis
    else:
        axis = int(info.attrs.get("axis", 1))
    if not (-rank <= axis <= -2 or 0 <= axis <= rank - 2):
        raise info.error(
            f"axis {axis} is out of range for rank {rank} (the last dim holds real and imaginary)"
        )
    axis %= rank
    inverse, onesided = int(info.attrs.get("inverse", 0)), int(info.attrs.get("onesided", 0))
    mode = ("irfft" if onesided else "inverse") if inverse else "forward"
    if mode == "irfft" and x.shape[-1] != 2:
        raise info.error("an inverse one-sided DFT takes a complex input (last dim 2)")
    if mode == "forward" and onesided and x.shape[-1] != 1:
        raise info.error("a one-sided DFT takes a real input (last dim 1)")
    n = x.shape[axis]
    if length is None:
        length = 2 * (n - 1) if mode == "irfft" else n
    if length < 1:
        raise info.error(f"dft_length {length} is not positive")
    bins = length // 2 + 1 if onesided and mode == "forward" else length
    shape = list(x.shape)
    shape[axis], shape[-1] = bins, 1 if mode == "irfft" else 2
    out = TensorType(x.dtype, tuple(shape))
    attrs = {"axis": axis, "length": length, "mode": mode}
    return emit(g, info, "DFT", [x], attrs, [out])


@rule("STFT")
def _stft(g, info):
    x = info.inputs[0]
    window = info.inputs[2] if len(info.inputs) > 2 else None
    if x.type.rank != 3:
        raise info.error(f"signal must be [batch, length, 1 or 2], got {x.type}")
    _complex_input(info, x)
    step = _scalar_input(info, 1, "frame_step")
    length = _scalar_input(info, 3, "frame_length")
    if window is not None:
        if window.type.rank != 1:
            raise info.error(f"window must be 1-D, got {window.type}")
        if length is not None and length != window.shape[0]:
            raise info.error(
                f"window of length {window.shape[0]} for frame_length {length}; they must be equal"
            )
        length = window.shape[0]
    length = x.shape[1] if length is None else length
    if step is None or step < 1 or not 1 <= length <= x.shape[1]:
        raise info.error(
            f"frame_step {step} and frame_length {length} do not frame a signal of {x.shape[1]} samples",
            hint="frame_step must be positive and frame_length between 1 and the signal length",
        )
    onesided = int(info.attrs.get("onesided", 1))
    frames = (x.shape[1] - length) // step + 1
    out = TensorType(x.dtype, (x.shape[0], frames, length // 2 + 1 if onesided else length, 2))
    attrs = {"frame_step": step, "frame_length": length, "has_window": int(window is not None)}
    return emit(g, info, "STFT", [x] + ([window] if window is not None else []), attrs, [out])


@rule("MelWeightMatrix")
def _mel_weight_matrix(g, info):
    # All its inputs must be known: they decide the output's shape. The frontend folds the
    # node itself when they are; this rule is reached (and raises) when one is not.
    names = ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz")
    values = [np.asarray(info.const_input(i, name)) for i, name in enumerate(names)]
    node = helper.make_node(info.op_type, list(names), ["y"], name=info.name, **info.attrs)
    (y,) = host_eval.evaluate(node, info.attrs, values, {"": info.opset})
    return [g.const(y, info.out_names[0])]

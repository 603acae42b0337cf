"""Signal processing on the GPU (DFT, STFT) against onnx.reference and numpy's float64 FFT;
MelWeightMatrix folds on the host."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, assert_ir_round_trips, gpu_run, node_model, rand, reference_run

from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import CompileError, ConstantRequiredError

pytestmark = pytest.mark.gpu

I64 = np.int64


def _check(model, feeds, device, atol=1e-4):
    assert_close(gpu_run(model, feeds, device), reference_run(model, feeds), rtol=1e-4, atol=atol)


def _dft_model(x, opset, axis, length=None, **attrs):
    if opset >= 20:
        inits = {"axis": np.array(axis, I64)}
        if length is not None:
            inits["len"] = np.array(length, I64)
        order = ["x", "len" if length is not None else "", "axis"]
    else:
        attrs["axis"] = axis
        inits = {"len": np.array(length, I64)} if length is not None else {}
        order = ["x"] + (["len"] if length is not None else [])
    return node_model("DFT", {"x": x}, attrs, opset=opset, initializers=inits, input_order=order)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize(
    "shape,axis,onesided",
    [
        ((2, 12, 1), 1, 0),
        ((2, 12, 1), 1, 1),
        ((2, 5, 6, 1), -2, 1),
        ((2, 5, 6, 2), 1, 0),
        ((3, 4, 7, 2), -2, 0),
    ],
    ids=str,
)  # one-sided spectra are of real signals only
@pytest.mark.parametrize("length", [None, 5, 16])  # its own length, truncated, zero-padded
def test_dft_forward(opset, shape, axis, length, onesided, device):
    x = rand(*shape, low=-2, high=2)
    _check(_dft_model(x, opset, axis, length, onesided=onesided), {"x": x}, device)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("length", [None, 7, 13])
def test_dft_inverse(opset, length, device):
    x = rand(2, 9, 3, 2, low=-2, high=2)
    _check(_dft_model(x, opset, 1, length, inverse=1), {"x": x}, device)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize(
    "shape,length", [((2, 6, 3, 2), None), ((1, 6, 2), 9), ((1, 5, 2), 12), ((2, 7, 2), 4)], ids=str
)
def test_dft_irfft(opset, shape, length, device):
    # a one-sided spectrum back to a real signal: even and odd lengths, padded and truncated
    x = rand(*shape, low=-2, high=2)
    _check(_dft_model(x, opset, 1, length, inverse=1, onesided=1), {"x": x}, device)


def test_dft_long_signal_is_accurate(device):
    # twiddles from a host table indexed by k*n mod N: only the f32 sums round
    n = 1000
    x = rand(1, n, 2, seed=3)
    got = gpu_run(_dft_model(x, 20, 1), {"x": x}, device)[0]
    want = np.fft.fft(x[..., 0].astype(np.float64) + 1j * x[..., 1], axis=1)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got[..., 0], want.real, atol=2e-6 * scale)
    np.testing.assert_allclose(got[..., 1], want.imag, atol=2e-6 * scale)


def test_dft_of_an_empty_signal_padded_is_zeros(device):
    x = np.zeros((2, 0, 1), np.float32)
    _check(_dft_model(x, 20, 1, 4), {"x": x}, device)


def test_dft_runtime_length_is_a_constant_error():
    x = rand(1, 8, 1)
    feeds = {"x": x, "len": np.array(8, I64)}
    model = node_model("DFT", feeds, {}, opset=20, input_order=["x", "len"])
    with pytest.raises(ConstantRequiredError, match="dft_length"):
        compile_model(model, None)


def test_dft_on_the_complex_axis_is_a_clear_error():
    x = rand(2, 8, 2)
    # onnx's shape inference (or the rule, where it lets one through) names the bad axis
    with pytest.raises(CompileError, match=r"DFT node \(opset 20\): .*axis .*-1 is (out of range|invalid)"):
        compile_model(_dft_model(x, 20, -1), None)


def test_dft_ir_round_trips():
    assert_ir_round_trips(_dft_model(rand(1, 6, 2), 20, 1, 4, inverse=1, onesided=1))


# -- STFT -------------------------------------------------------------------------------------
def _stft_model(signal, step, window=None, length=None, onesided=None, runtime_window=False):
    feeds = {"signal": signal}
    inits = {"step": np.array(step, I64)}
    order = ["signal", "step"]
    if window is not None:
        (feeds if runtime_window else inits)["window"] = window
    order.append("window" if window is not None else "")
    if length is not None:
        inits["length"] = np.array(length, I64)
        order.append("length")
    attrs = {} if onesided is None else {"onesided": onesided}
    return node_model("STFT", feeds, attrs, opset=17, initializers=inits, input_order=order), feeds


@pytest.mark.parametrize(
    "shape,step,length,window,onesided",
    [
        ((1, 64, 1), 8, 16, None, None),
        ((2, 50, 1), 5, None, "hann", 1),
        ((2, 40, 2), 7, 10, "hann", 0),  # complex signal, window and frame_length together
        ((1, 33, 1), 33, 33, None, 0),  # one frame, the whole signal
    ],
    ids=str,
)
def test_stft(shape, step, length, window, onesided, device):
    signal = rand(*shape, seed=4)
    w = None
    if window:
        n = length or 12
        w = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
    model, feeds = _stft_model(signal, step, w, length, onesided)
    _check(model, feeds, device)


def test_stft_runtime_window(device):
    signal, w = rand(2, 48, 1, seed=5), rand(12, seed=6, low=0, high=1)
    model, feeds = _stft_model(signal, 6, w, runtime_window=True)
    _check(model, feeds, device)


def test_stft_window_length_mismatch_is_a_clear_error():
    model, _ = _stft_model(rand(1, 32, 1), 4, np.ones(8, np.float32), length=10)
    with pytest.raises(CompileError, match=r"STFT node \(opset 17\): .*window.*frame_length"):
        compile_model(model, None)


def test_stft_ir_round_trips():
    assert_ir_round_trips(_stft_model(rand(1, 20, 1), 4, rand(8), runtime_window=True)[0])


# -- MelWeightMatrix --------------------------------------------------------------------------
MEL_INPUTS = {
    "bins": np.array(8, I64), "dft": np.array(64, I64), "rate": np.array(8000, I64),
    "lo": np.array(20.0, np.float32), "hi": np.array(3000.0, np.float32),
}  # fmt: skip


def test_mel_weight_matrix_folds(device):
    model = node_model("MelWeightMatrix", {}, {}, opset=17, initializers=MEL_INPUTS)
    result = compile_model(model, None, verify_ir=True)
    assert not result.graph.shaders  # a constant: nothing runs on the GPU
    assert_close(gpu_run(model, {}, device), reference_run(model, {}))


def test_mel_weight_matrix_runtime_input_is_a_constant_error():
    feeds = {"bins": MEL_INPUTS["bins"]}
    inits = {k: v for k, v in MEL_INPUTS.items() if k != "bins"}
    model = node_model(
        "MelWeightMatrix", feeds, {}, opset=17, initializers=inits, input_order=list(MEL_INPUTS)
    )
    with pytest.raises(ConstantRequiredError, match="num_mel_bins") as e:
        compile_model(model, None)
    assert e.value.inputs == ("bins",)

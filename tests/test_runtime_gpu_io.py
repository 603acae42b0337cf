"""IO binding in the Python runtime: GPU buffers in, outputs left on the GPU, sessions chained
on one device without a round trip through the host, and clear errors for buffers that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import wgpu
from helpers import assert_close, graph_model, node_model, ort_run, rand, two_layer_model, with_dim_params
from onnx import helper
from test_runtime import count_gpu_creations

import onnx2wgsl
from onnx2wgsl import GpuTensor
from onnx2wgsl.errors import InputError

pytestmark = pytest.mark.gpu

USAGE = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST


def _second_model():
    """y[2,4] -> Softmax(y * 3): the stage after two_layer_model's first output."""
    nodes = [helper.make_node("Mul", ["y", "k"], ["s"]), helper.make_node("Softmax", ["s"], ["p"])]
    return graph_model(nodes, {"y": rand(2, 4)}, ["p"], {"k": np.array(3.0, np.float32)}, name="second")


@pytest.fixture
def sessions(tmp_path, device):
    onnx2wgsl.compile(two_layer_model(), tmp_path / "a")
    onnx2wgsl.compile(_second_model(), tmp_path / "b")
    with (
        onnx2wgsl.load(tmp_path / "a", device=device) as a,
        onnx2wgsl.load(tmp_path / "b", device=device) as b,
    ):
        yield a, b


def test_outputs_stay_on_the_gpu_and_feed_the_next_session(sessions):
    a, b = sessions
    x = rand(2, 8, seed=1)
    y, z = a.run(None, {"x": x}, output_location="gpu")
    assert isinstance(y, GpuTensor) and y.shape == (2, 4) and y.dtype == "float32" and y.owned
    want_y, want_z = a.run(None, {"x": x})
    np.testing.assert_array_equal(y.numpy(), want_y)
    np.testing.assert_array_equal(z.numpy(), want_z)
    (p,) = b.run(None, {"y": y})  # chained on the GPU, read back at the end
    assert_close([p], b.run(None, {"y": want_y}), rtol=0, atol=0)
    y.release()
    z.release()
    assert y.buffer is None
    with pytest.raises(InputError, match="released"):
        b.run(None, {"y": y})


def test_your_buffers_in_and_out_create_nothing(sessions, device, monkeypatch):
    a, b = sessions
    x = rand(2, 8, seed=2)
    xin = device.create_buffer_with_data(data=x, usage=USAGE)
    ybuf = device.create_buffer(size=2 * 4 * 4 + 16, usage=USAGE)
    pbuf = device.create_buffer(size=2 * 4 * 4, usage=USAGE)
    a.run(["y"], {"x": xin}, output_buffers={"y": ybuf})  # a first run builds nothing either
    calls = count_gpu_creations(device, monkeypatch)
    for _ in range(3):
        (y,) = a.run(
            ["y"], {"x": xin}, output_buffers={"y": GpuTensor(ybuf, (2, 4), "float32", "f32", device, 16)}
        )
        (p,) = b.run(None, {"y": y}, output_buffers={"p": pbuf})
    assert sum(calls.values()) == 0, calls
    assert y.buffer is ybuf and y.offset == 16 and not y.owned and p.buffer is pbuf
    want = ort_run(_second_model(), {"y": ort_run(two_layer_model(), {"x": x})[0]})
    assert_close([p.numpy()], want, rtol=1e-5, atol=1e-6)


def test_mixed_outputs_and_int_storage(tmp_path, device):
    model = node_model(
        "Add", {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.ones((2, 3), np.int64)}
    )
    onnx2wgsl.compile(model, tmp_path / "m")
    with onnx2wgsl.load(tmp_path / "m", device=device) as s:
        a = np.arange(6, dtype=np.int64).reshape(2, 3)
        b = np.full((2, 3), 7, np.int64)
        (y,) = s.run(None, {"a": a, "b": b}, output_location="gpu")
        assert y.storage == "i32" and y.dtype == "int64"
        np.testing.assert_array_equal(y.numpy(), a + b)
        (again,) = s.run(None, {"a": y, "b": b})  # an int64 input fed from the GPU, in its i32 form
        np.testing.assert_array_equal(again, a + 2 * b)


def test_a_symbolic_input_takes_its_shape_from_the_gpu_tensor(tmp_path, device):
    model = with_dim_params(node_model("Relu", {"x": rand(1, 4)}), {"x": ["n", 4], "y0": ["n", 4]})
    onnx2wgsl.compile(model, tmp_path / "s", dims={"n": (1, 8)})
    with onnx2wgsl.load(tmp_path / "s", device=device) as s:
        x = rand(8, 4, seed=3) - 0.5
        buf = device.create_buffer_with_data(data=x, usage=USAGE)
        for n in (1, 5, 8):
            (y,) = s.run(None, {"x": GpuTensor(buf, (n, 4), "float32", "f32", device)})
            np.testing.assert_array_equal(y, np.maximum(x[:n], 0))
        with pytest.raises(InputError, match="GpuTensor"):
            s.run(None, {"x": buf})  # a plain buffer has no shape to bind n from
        big = device.create_buffer(size=4 * 9 * 4, usage=USAGE)
        with pytest.raises(InputError, match="outside n's range"):
            s.run(None, {"x": GpuTensor(big, (9, 4), "float32", "f32", device)})


def test_buffers_that_do_not_fit_are_clear_errors(sessions, device):
    a, _ = sessions
    small = device.create_buffer(size=16, usage=USAGE)
    no_src = device.create_buffer(size=64, usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST)
    cases = [
        ({"x": small}, {}, "must hold 64 bytes"),
        ({"x": no_src}, {}, "COPY_SRC"),
        ({"x": GpuTensor(small, (2, 8), "int32", "i32", device)}, {}, "must be float32"),
        ({"x": GpuTensor(small, (2, 7), "float32", "f32", device)}, {}, "must have shape"),
        ({"x": rand(2, 8)}, {"y": small}, "must hold 32 bytes from offset 0"),
        ({"x": rand(2, 8)}, {"nope": small}, "output_buffers names"),
    ]
    for feed, into, message in cases:
        with pytest.raises(InputError, match=message):
            a.run(None, feed, output_buffers=into)
    with pytest.raises(InputError, match="output_location"):
        a.run(None, {"x": rand(2, 8)}, output_location="gpu-buffer")

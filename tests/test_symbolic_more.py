"""Pooling, resizing, transposed and deformable convolutions, recurrences, quantized ops and
signal ops compiled once with dims kept symbolic and run at many sizes in one session, each
run compared with onnxruntime."""

from __future__ import annotations

import pytest
from helpers import check_symbolic, graph_model, rand, with_dim_params
from onnx import helper

from onnx2wgsl.errors import CompileError

B = {"batch": (1, 4)}


def _pool_model(op: str, c: int, hw: tuple, out_hw: tuple, **attrs):
    nodes = [helper.make_node(op, ["x"], ["y"], **attrs)]
    m = graph_model(nodes, {"x": rand(2, c, 12, 12)}, ["y"])
    return with_dim_params(m, {"x": ["batch", c, *hw], "y": ["batch", c, *out_hw]})


POOLS = [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], count_include_pad=1, pads=[0, 0, 1, 1])),
    ("LpPool", dict(kernel_shape=[2, 2], strides=[1, 1], p=2)),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
]


@pytest.mark.parametrize("op,attrs", POOLS, ids=[f"{o}{i}" for i, (o, _) in enumerate(POOLS)])
def test_pools_over_a_symbolic_batch(device, op, attrs):
    m = _pool_model(op, 3, (12, 12), ("oh", "ow"), **attrs)
    m = with_dim_params(m, {"x": ["batch", 3, 12, 12]})
    feeds = [{"x": rand(b, 3, 12, 12, seed=b)} for b in (1, 2, 4)]
    check_symbolic(m, B, feeds, device)


@pytest.mark.parametrize("op,attrs", POOLS, ids=[f"{o}{i}" for i, (o, _) in enumerate(POOLS)])
def test_pools_over_symbolic_batch_and_spatial_dims(device, op, attrs):
    m = _pool_model(op, 4, ("h", "w"), ("oh", "ow"), **attrs)
    dims = {"batch": (1, 3), "h": (8, 40), "w": (5, 33)}
    sizes = [(1, 8, 5), (2, 17, 16), (3, 40, 33)]
    feeds = [{"x": rand(b, 4, h, w, seed=h)} for b, h, w in sizes]
    check_symbolic(m, dims, feeds, device)


def test_maxpool_indices_over_symbolic_dims(device):
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])]
    m = graph_model(nodes, {"x": rand(2, 3, 12, 12)}, ["y", "i"])
    m = with_dim_params(m, {"x": ["batch", 3, "h", 12]})
    feeds = [{"x": rand(b, 3, h, 12, seed=h)} for b, h in [(1, 2), (2, 9), (4, 32)]]
    check_symbolic(m, {"batch": (1, 4), "h": (2, 32)}, feeds, device)


@pytest.mark.parametrize("level", [0, 2])
def test_conv_relu_maxpool_1d_over_symbolic_time(device, level):
    """An audio front end: Conv1d, Relu, MaxPool1d over a symbolic batch and time length."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3], strides=[2]),
    ]
    m = graph_model(nodes, {"x": rand(2, 4, 16)}, ["y"], {"w": rand(8, 4, 3, seed=1)})
    m = with_dim_params(m, {"x": ["batch", 4, "t"]})
    feeds = [{"x": rand(b, 4, t, seed=t)} for b, t in [(1, 3), (2, 50), (4, 100)]]
    check_symbolic(m, {"batch": (1, 4), "t": (3, 100)}, feeds, device, opt_level=level)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
def test_global_pools_over_symbolic_dims(device, op):
    nodes = [helper.make_node(op, ["x"], ["y"])]
    m = graph_model(nodes, {"x": rand(2, 5, 12, 12)}, ["y"])
    m = with_dim_params(m, {"x": ["batch", 5, "h", "w"]})
    sizes = [(1, 1, 1), (2, 7, 9), (3, 96, 96)]  # 96 x 96: a window one invocation cannot loop over
    feeds = [{"x": rand(b, 5, h, w, seed=h)} for b, h, w in sizes]
    check_symbolic(m, {"batch": (1, 3), "h": (1, 96), "w": (1, 96)}, feeds, device)


def test_pool_window_longer_than_the_range_is_a_clear_error(device):
    m = _pool_model("MaxPool", 3, ("h", "w"), ("oh", "ow"), kernel_shape=[5, 5])
    with pytest.raises(CompileError, match="longer than the padded input"):
        check_symbolic(m, {"batch": (1, 4), "h": (2, 16), "w": (8, 16)}, [], device)


def test_pool_ceil_mode_past_the_input_is_a_clear_error(device):
    m = _pool_model("MaxPool", 3, ("h", "w"), ("oh", "ow"), kernel_shape=[2, 2], strides=[3, 3], ceil_mode=1)
    with pytest.raises(CompileError, match="ceil_mode"):
        check_symbolic(m, {"batch": (1, 4), "h": (4, 16), "w": (8, 16)}, [], device)

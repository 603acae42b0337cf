"""Neural-network ops on the GPU against onnxruntime (CPU) or onnx.reference: N-d and run-time
weight convolutions, ConvTranspose, ConvInteger, N-d pooling, MaxPool indices, MaxUnpool,
recurrent layers, Attention and RotaryEmbedding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import assert_close, check_against_ort, gpu_run, node_model, ort_run, rand, reference_run
from onnx import helper, numpy_helper

pytestmark = pytest.mark.gpu


def model_of(op, inputs, attrs=None, *, opset=17, initializers=None, input_order=None, n_outputs=1):
    """A one-node model like helpers.node_model, for any numpy dtype ("" = omitted input)."""
    initializers = initializers or {}
    order = list(input_order) if input_order is not None else list(inputs) + list(initializers)
    outs = [f"y{i}" for i in range(n_outputs)]
    graph = helper.make_graph(
        [helper.make_node(op, order, outs, **(attrs or {}))],
        op.lower(),
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs.items()
        ],
        [helper.make_value_info(o, onnx.TypeProto()) for o in outs],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 21 else 10
    return onnx.shape_inference.infer_shapes(m)


# -- Conv: 1-D / 2-D / 3-D, weights and bias constant or computed at run time -------------------
CONVS_ND = [
    # (x shape, w shape, attrs)
    ((1, 2, 5, 6, 7), (4, 2, 3, 3, 3), {}),
    ((2, 3, 6, 5, 4), (8, 3, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1], "strides": [2, 1, 2]}),
    ((1, 4, 7, 7, 7), (6, 2, 3, 3, 3), {"group": 2, "dilations": [2, 1, 2], "pads": [2, 1, 2, 2, 1, 2]}),
    ((1, 3, 6, 6, 6), (3, 1, 3, 3, 3), {"group": 3, "auto_pad": "SAME_UPPER", "strides": [2, 2, 2]}),
    ((1, 5, 4, 4, 4), (7, 5, 1, 1, 1), {}),
    ((2, 3, 9, 8), (9, 3, 3, 3), {"pads": [1, 2, 1, 0]}),
    ((2, 6, 17), (6, 3, 4), {"group": 2, "strides": [2], "dilations": [2], "pads": [3, 1]}),
]


@pytest.mark.parametrize("xs,ws,attrs", CONVS_ND, ids=[f"conv{i}" for i in range(len(CONVS_ND))])
@pytest.mark.parametrize("weights", ["const", "runtime"])
def test_conv_nd(xs, ws, attrs, weights, device):
    x, w, b = rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2)
    if weights == "const":
        model = node_model("Conv", {"x": x}, attrs, initializers={"w": w, "b": b})
        feeds = {"x": x}
    else:
        feeds = {"x": x, "w": w, "b": b}
        model = node_model("Conv", feeds, attrs)
    check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ocg", [2, 4, 6, 9])
def test_conv_runtime_weights_without_bias(ocg, device):
    # ocg >= 4 takes the implicit-GEMM path with weights gathered from the ONNX layout
    x, w = rand(2, 4, 7, 6), rand(2 * ocg, 2, 3, 3, seed=1)
    feeds = {"x": x, "w": w}
    check_against_ort(node_model("Conv", feeds, {"group": 2, "pads": [1, 1, 1, 1]}), feeds, device, atol=1e-4)


# -- ConvTranspose ------------------------------------------------------------------------------
CONV_TRANSPOSES = [
    ((1, 2, 3, 3), (2, 3, 3, 3), {}),
    ((2, 3, 4, 5), (3, 2, 3, 2), {"strides": [2, 3], "pads": [1, 0, 0, 1]}),
    ((1, 4, 4, 4), (4, 3, 3, 3), {"group": 2, "strides": [2, 2], "output_padding": [1, 0]}),
    ((1, 2, 5, 4), (2, 2, 3, 3), {"dilations": [2, 1], "strides": [1, 2]}),
    ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ((1, 2, 6, 5), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [10, 9]}),
    ((1, 3, 7), (3, 2, 4), {"strides": [3], "pads": [2, 1]}),
    ((1, 2, 3, 4, 3), (2, 2, 3, 2, 3), {"strides": [2, 1, 2], "pads": [1, 0, 1, 1, 0, 0]}),
    ((2, 4, 3, 3, 2), (4, 1, 2, 2, 2), {"group": 4, "strides": [1, 2, 2], "dilations": [2, 1, 1]}),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 5, 5), (2, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_TRANSPOSES, ids=[f"ct{i}" for i in range(len(CONV_TRANSPOSES))])
@pytest.mark.parametrize("weights", ["const", "runtime"])
def test_conv_transpose(xs, ws, attrs, weights, device):
    x, w = rand(*xs), rand(*ws, seed=1)
    b = rand(ws[1] * attrs.get("group", 1), seed=2)
    if weights == "const":
        model = node_model("ConvTranspose", {"x": x}, attrs, initializers={"w": w, "b": b})
        feeds = {"x": x}
    else:
        feeds = {"x": x, "w": w, "b": b}
        model = node_model("ConvTranspose", feeds, attrs)
    check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-4)


# -- ConvInteger --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("zero_points", ["none", "const", "runtime"])
@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 1, 1, 1], "strides": [2, 1]}], ids=["plain", "padded"])
def test_conv_integer(dtype, zero_points, attrs, device):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (1, 3, 6, 5)).astype(dtype)
    w = rng.integers(info.min, info.max, (4, 3, 3, 2)).astype(dtype)
    feeds = {"x": x}
    inits = {"w": w}
    order = ["x", "w"]
    if zero_points != "none":
        xz, wz = np.array(3, dtype), np.array(-2 if dtype == np.int8 else 5, dtype)
        (feeds if zero_points == "runtime" else inits).update({"xz": xz, "wz": wz})
        order += ["xz", "wz"]
    model = model_of("ConvInteger", feeds, attrs, opset=10, initializers=inits, input_order=order)
    got = gpu_run(model, feeds, device)
    np.testing.assert_array_equal(got[0], ort_run(model, feeds)[0])


def test_conv_integer_per_channel_weight_zero_point(device):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (1, 1, 3, 3)).astype(np.uint8)
    w = rng.integers(0, 255, (2, 1, 2, 2)).astype(np.uint8)
    feeds = {"x": x, "w": w, "xz": np.array(1, np.uint8), "wz": np.array([1, 2], np.uint8)}
    model = model_of("ConvInteger", feeds, {"pads": [1, 1, 1, 1]}, opset=10)
    np.testing.assert_array_equal(gpu_run(model, feeds, device)[0], reference_run(model, feeds)[0])


_ = (assert_close,)

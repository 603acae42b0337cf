"""Neural-network ops on the GPU against onnxruntime (CPU) or onnx.reference: N-d and run-time
weight convolutions, ConvTranspose, ConvInteger, N-d pooling, MaxPool indices, MaxUnpool,
recurrent layers, Attention and RotaryEmbedding."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import assert_close, check_against_ort, gpu_run, node_model, ort_run, rand, reference_run
from onnx import helper, numpy_helper

import onnx2wgsl

pytestmark = pytest.mark.gpu


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


def _with_weights(op_type: str, x, params: dict, attrs: dict, weights: str):
    """A one-node model of x and ``params``: constants, or inputs fed at run time."""
    if weights == "const":
        return node_model(op_type, {"x": x}, attrs, initializers=params), {"x": x}
    feeds = {"x": x, **params}
    return node_model(op_type, feeds, attrs), feeds


@pytest.mark.parametrize("xs,ws,attrs", CONVS_ND, ids=[f"conv{i}" for i in range(len(CONVS_ND))])
@pytest.mark.parametrize("weights", ["const", "runtime"])
def test_conv_nd(xs, ws, attrs, weights, device):
    params = {"w": rand(*ws, seed=1), "b": rand(ws[0], seed=2)}
    model, feeds = _with_weights("Conv", rand(*xs), params, attrs, weights)
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
    params = {"w": rand(*ws, seed=1), "b": rand(ws[1] * attrs.get("group", 1), seed=2)}
    model, feeds = _with_weights("ConvTranspose", rand(*xs), params, attrs, weights)
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
    model = node_model("ConvInteger", feeds, attrs, opset=10, initializers=inits, input_order=order)
    got = gpu_run(model, feeds, device)
    np.testing.assert_array_equal(got[0], ort_run(model, feeds)[0])


def test_conv_integer_per_channel_weight_zero_point(device):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (1, 1, 3, 3)).astype(np.uint8)
    w = rng.integers(0, 255, (2, 1, 2, 2)).astype(np.uint8)
    feeds = {"x": x, "w": w, "xz": np.array(1, np.uint8), "wz": np.array([1, 2], np.uint8)}
    model = node_model("ConvInteger", feeds, {"pads": [1, 1, 1, 1]}, opset=10)
    np.testing.assert_array_equal(gpu_run(model, feeds, device)[0], reference_run(model, feeds)[0])


_ = (assert_close,)


def _lp_pool_numpy(x, out_shape, attrs, p=2):
    """LpPool by its definition: the p-norm of the window's elements inside the input."""
    nd = x.ndim - 2
    ks, st = attrs["kernel_shape"], attrs.get("strides", [1] * nd)
    dl, pads = attrs.get("dilations", [1] * nd), attrs.get("pads", [0] * (2 * nd))
    y = np.zeros(out_shape, np.float64)
    for o in np.ndindex(*out_shape[2:]):
        acc = np.zeros(x.shape[:2])
        for k in np.ndindex(*ks):
            pos = [o[d] * st[d] - pads[d] + k[d] * dl[d] for d in range(nd)]
            if all(0 <= q < x.shape[2 + d] for d, q in enumerate(pos)):
                acc += np.abs(x[(slice(None), slice(None), *pos)].astype(np.float64)) ** p
        y[(slice(None), slice(None), *o)] = acc ** (1 / p)
    return y.astype(np.float32)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("params", ["const", "runtime"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(dtype, params, per_channel, device):
    rng = np.random.default_rng(2)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (1, 4, 6, 5)).astype(dtype)
    w = rng.integers(info.min, info.max, (6, 2, 3, 3)).astype(dtype)
    oc = (6,) if per_channel else ()
    q = {
        "xs": np.array(0.02, np.float32), "xz": np.array(3, dtype),
        "ws": rng.uniform(0.005, 0.02, oc).astype(np.float32), "wz": np.zeros(oc, dtype),
        "ys": np.array(0.5, np.float32), "yz": np.array(-5 if dtype == np.int8 else 100, dtype),
        "b": rng.integers(-500, 500, (6,)).astype(np.int32),
    }  # fmt: skip
    feeds, inits = {"x": x}, {"w": w}
    (feeds if params == "runtime" else inits).update(q)
    order = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    attrs = {"group": 2, "pads": [1, 1, 1, 1], "strides": [1, 2]}
    model = node_model("QLinearConv", feeds, attrs, opset=10, initializers=inits, input_order=order)
    np.testing.assert_array_equal(gpu_run(model, feeds, device)[0], ort_run(model, feeds)[0])


@pytest.mark.parametrize(
    "xs,ws,attrs,mask",
    [
        ((1, 2, 5, 5), (3, 2, 3, 3), {"pads": [1, 1, 1, 1]}, False),
        ((2, 4, 6, 5), (4, 2, 2, 3), {"group": 2, "offset_group": 2, "strides": [2, 1]}, True),
        ((1, 3, 7, 7), (2, 3, 3, 3), {"dilations": [2, 2], "pads": [2, 1, 2, 1]}, True),
    ],
    ids=["pads", "groups", "dilations"],
)
def test_deform_conv(xs, ws, attrs, mask, device):
    rng = np.random.default_rng(4)
    x, w = rand(*xs), rand(*ws, seed=1)
    og = attrs.get("offset_group", 1)
    K = ws[2] * ws[3]
    oh = xs[2] + sum(attrs.get("pads", [0] * 4)[::2]) - attrs.get("dilations", [1, 1])[0] * (ws[2] - 1) - 1
    oh = oh // attrs.get("strides", [1, 1])[0] + 1
    ow = xs[3] + sum(attrs.get("pads", [0] * 4)[1::2]) - attrs.get("dilations", [1, 1])[1] * (ws[3] - 1) - 1
    ow = ow // attrs.get("strides", [1, 1])[1] + 1
    feeds = {"x": x, "w": w, "off": rng.uniform(-1.5, 1.5, (xs[0], og * 2 * K, oh, ow)).astype(np.float32)}
    feeds["b"] = rand(ws[0], seed=2)
    if mask:
        feeds["m"] = rng.uniform(0, 1, (xs[0], og * K, oh, ow)).astype(np.float32)
    model = node_model("DeformConv", feeds, {"kernel_shape": list(ws[2:]), **attrs}, opset=19)
    check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-5)


# -- pooling: 1-D / 2-D / 3-D, ceil_mode, dilations, pads, auto_pad, count_include_pad -----------
POOLS_ND = [
    ((1, 2, 6, 7, 5), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
    ((2, 2, 5, 5, 5), {"kernel_shape": [3, 3, 3], "pads": [1, 1, 1, 1, 1, 1], "strides": [2, 1, 2]}),
    ((1, 2, 7, 6, 8), {"kernel_shape": [3, 2, 3], "strides": [2, 2, 3], "ceil_mode": 1}),
    ((1, 1, 8, 8, 8), {"kernel_shape": [2, 2, 2], "dilations": [2, 2, 1], "strides": [1, 2, 2]}),
    ((1, 2, 6, 6, 6), {"kernel_shape": [3, 3, 3], "auto_pad": "SAME_LOWER", "strides": [2, 2, 2]}),
    ((1, 3, 9, 8), {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 2, 2, 1], "ceil_mode": 1}),
    ((2, 3, 15), {"kernel_shape": [4], "strides": [3], "dilations": [2], "pads": [2, 1]}),
]


@pytest.mark.parametrize("xs,attrs", POOLS_ND, ids=[f"pool{i}" for i in range(len(POOLS_ND))])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pool_nd(op, xs, attrs, device):
    x = rand(*xs)
    attrs = dict(attrs)
    if op == "AveragePool":
        attrs["count_include_pad"] = int(sum(attrs.get("pads", [])) > 0)
    model = node_model(op, {"x": x}, attrs, opset=19 if op != "MaxPool" else 12)
    if op == "LpPool" and (attrs.get("ceil_mode") or attrs.get("dilations")):
        # onnxruntime's LpPool has neither, and onnx's reference rescales partial windows
        (got,) = gpu_run(model, {"x": x}, device)
        assert_close([got], [_lp_pool_numpy(x, got.shape, attrs)], rtol=1e-4, atol=1e-5)
        return
    check_against_ort(model, {"x": x}, device)


@pytest.mark.parametrize(
    "xs,attrs",
    [
        (
            (1, 1, 5, 5, 5),
            {"kernel_shape": [3, 3, 3], "dilations": [2, 2, 2], "ceil_mode": 1, "strides": [2, 2, 2]},
        ),
        ((1, 2, 7, 7), {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 1, 2, 2], "ceil_mode": 1}),
    ],
    ids=["3d", "2d"],
)
@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_dilated_ceil_vs_reference(xs, attrs, include, device):
    # dilated average pools: onnx's reference (the conformance data) is the spec here
    x = rand(*xs)
    model = node_model("AveragePool", {"x": x}, {**attrs, "count_include_pad": include}, opset=19)
    assert_close(gpu_run(model, {"x": x}, device), reference_run(model, {"x": x}), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "xs,attrs",
    [
        ((2, 3, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
        ((1, 2, 6, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1]}),
        ((2, 2, 4, 5, 6), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "dilations": [1, 2, 1]}),
        ((1, 1, 5, 5), {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}),
    ],
    ids=["1d", "2d", "3d", "big_pads"],
)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices(xs, attrs, storage_order, device):
    x = rand(*xs)
    model = node_model("MaxPool", {"x": x}, {**attrs, "storage_order": storage_order}, opset=12, n_outputs=2)
    got = gpu_run(model, {"x": x}, device)
    want = ort_run(model, {"x": x})
    assert_close(got[:1], want[:1])
    assert got[1].dtype == np.int64
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_max_pool_integers(dtype, device):
    rng = np.random.default_rng(0)
    lo, hi = (-100, 100) if dtype != np.uint8 else (0, 255)
    x = rng.integers(lo, hi, (1, 2, 6, 6)).astype(dtype)
    model = node_model(
        "MaxPool", {"x": x}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, opset=12
    )
    np.testing.assert_array_equal(gpu_run(model, {"x": x}, device)[0], ort_run(model, {"x": x})[0])


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 4, 6, 7), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_global_lp_pool(shape, p, device):
    x = rand(*shape)
    check_against_ort(node_model("GlobalLpPool", {"x": x}, {"p": p}), {"x": x}, device)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool_3d(op, device):
    x = rand(2, 3, 4, 5, 6)
    check_against_ort(node_model(op, {"x": x}), {"x": x}, device)


def test_pools_of_one_window_share_a_shader(tmp_path, device):
    """Pools that differ only in sizes (input, strides, pads, ceil_mode) read them from a table
    and share one shader: 3x3 max pools over two shapes and a 3-D one over depth."""
    x = rand(1, 4, 17, 23)
    pool = lambda i, o, **a: helper.make_node("MaxPool", [i], [o], kernel_shape=[3, 3], **a)  # noqa: E731
    nodes = [
        pool("x", "a", strides=[2, 2], pads=[1, 1, 1, 1]),
        pool("a", "b", strides=[1, 2], ceil_mode=1),
        helper.make_node("Reshape", ["b", "shape"], ["c"]),  # (1, 4, 7, 6) as (1, 2, 2, 7, 6)
        helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 3, 3], pads=[0, 1, 1, 1, 1, 1]),
    ]
    info = lambda n, s: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s)  # noqa: E731
    graph = helper.make_graph(
        nodes, "pools", [info("x", x.shape)], [info("y", None)],
        [numpy_helper.from_array(np.array([1, 2, 2, 7, 6], np.int64), "shape")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    check_against_ort(model, {"x": x}, device)
    onnx2wgsl.compile(model, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    pools = [
        d["shader"] for d in manifest["dispatches"] if "pool" in manifest["shaders"][d["shader"]]["name"]
    ]
    assert len(pools) == 3 and pools[0] == pools[1] != pools[2]  # (the 3-D pool reads depth's sizes too)


def test_pool_past_the_table_writes_its_sizes_in(tmp_path, device):
    """Past TABLE_MAX_OUTPUTS outputs (where the quotients by the table's sizes would not be
    exact) a pool's shader has its sizes written in."""
    from onnx2wgsl.compiler.lowering import TABLE_MAX_OUTPUTS

    x = rand(1, 9, 512, 512)
    assert x.size > TABLE_MAX_OUTPUTS
    model = node_model("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, opset=12)
    check_against_ort(model, {"x": x}, device)
    onnx2wgsl.compile(model, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "Sz" not in (tmp_path / manifest["shaders"][0]["file"]).read_text()


def test_pool_table_quotients_are_exact():
    """A tabled pool divides by sizes read at run time as u32((f32(i) + 0.5) * f32(1 / d)):
    exact for every i below TABLE_MAX_OUTPUTS, checked at each quotient's edges for divisors
    1-600 and some large ones (f32 arithmetic as WGSL's, each operation rounded)."""
    from onnx2wgsl.compiler.lowering import TABLE_MAX_OUTPUTS

    for d in list(range(1, 600)) + [4093, 7 * 7 * 1024, 112 * 112, 1 << 20, (1 << 21) - 1]:
        k = np.arange(TABLE_MAX_OUTPUTS // d + 2, dtype=np.int64)
        i = np.concatenate([k * d - 1, k * d, k * d + d // 2])
        i = i[(i >= 0) & (i < TABLE_MAX_OUTPUTS)]
        q = (i.astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / d)
        np.testing.assert_array_equal(q.astype(np.int64), i // d, err_msg=f"divisor {d}")


@pytest.mark.parametrize(
    "xs,attrs",
    [
        ((1, 2, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
        ((2, 1, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ((1, 2, 9), {"kernel_shape": [3], "strides": [3]}),
        ((1, 1, 4, 6, 4), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
    ],
    ids=["2d", "2d_pads", "1d", "3d"],
)
def test_max_unpool_inverts_max_pool(xs, attrs, device):
    # MaxPool -> (values, indices) -> MaxUnpool, in one model, against onnxruntime
    x = rand(*xs)
    g = helper.make_graph(
        [
            helper.make_node("MaxPool", ["x"], ["v", "i"], **attrs),
            helper.make_node("MaxUnpool", ["v", "i"], ["y"], **{k: v for k, v in attrs.items()}),
        ],
        "unpool",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, xs)],
        [helper.make_value_info("y", onnx.TypeProto())],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)
    check_against_ort(m, {"x": x}, device)


def test_max_unpool_with_larger_output_shape(device):
    # onnx's reference (and the conformance case): the unpooled block fills the leading corner
    x = np.array([[[[5, 6], [7, 8]]]], np.float32)
    ind = np.array([[[[5, 7], [13, 15]]]], np.int64)
    model = node_model(
        "MaxUnpool", {"x": x, "i": ind}, {"kernel_shape": [2, 2], "strides": [2, 2]},
        initializers={"s": np.array([1, 1, 5, 5], np.int64)}, opset=11,
    )  # fmt: skip
    feeds = {"x": x, "i": ind}
    assert_close(gpu_run(model, feeds, device), reference_run(model, feeds))


# -- recurrent layers -----------------------------------------------------------------------------
GATE_COUNT = {"RNN": 1, "GRU": 3, "LSTM": 4}
RECURRENT = [
    # (op, attrs, options): options pick the optional inputs (b=bias, h=initial_h, c=initial_c,
    # p=peepholes, s=const sequence_lens, S=run-time sequence_lens, w=run-time weights)
    ("RNN", {}, ""),
    ("RNN", {"direction": "bidirectional"}, "bhs"),
    ("RNN", {"direction": "reverse", "activations": ["Relu"]}, "bS"),
    ("GRU", {}, "b"),
    ("GRU", {"linear_before_reset": 1, "direction": "reverse"}, "bh"),
    ("GRU", {"direction": "bidirectional"}, "bhsw"),
    ("GRU", {"layout": 1, "linear_before_reset": 1}, "bhS"),
    ("LSTM", {}, ""),
    ("LSTM", {"direction": "bidirectional"}, "bhcp"),
    ("LSTM", {"direction": "reverse", "clip": 0.5}, "bhcsw"),
    ("LSTM", {"layout": 1, "direction": "bidirectional"}, "bhcpS"),
    ("LSTM", {"input_forget": 1}, "bp"),
    (
        "LSTM",
        {
            "activations": ["HardSigmoid", "Softsign", "LeakyRelu"],
            "activation_alpha": [0.3, 0.05],
            "activation_beta": [0.4],
        },
        "b",
    ),
    (
        "GRU",
        {
            "activations": ["ScaledTanh", "Affine"],
            "activation_alpha": [0.8, 0.5],
            "activation_beta": [1.2, 0.1],
        },
        "bh",
    ),
    (
        "RNN",
        {
            "activations": ["Elu", "ThresholdedRelu"],
            "activation_alpha": [0.7, 0.1],
            "direction": "bidirectional",
        },
        "",
    ),
]


def _recurrent_case(op, attrs, options, T=5, batch=3, In=4, H=6):
    rng = np.random.default_rng(7)
    # recurrent weights of a gain near 1: larger ones make a long sequence chaotic, where float
    # rounding alone (any engine's) grows into differences of order 1 within tens of steps
    r_scale = min(0.5, 1.5 / H**0.5)
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    G = GATE_COUNT[op]
    layout = attrs.get("layout", 0)
    x = rng.uniform(-1, 1, (T, batch, In) if layout == 0 else (batch, T, In)).astype(np.float32)
    params = {
        "w": rng.uniform(-0.5, 0.5, (dirs, G * H, In)).astype(np.float32),
        "r": rng.uniform(-r_scale, r_scale, (dirs, G * H, H)).astype(np.float32),
    }
    state = (dirs, batch, H) if layout == 0 else (batch, dirs, H)
    extra = {
        "b": ("b", rng.uniform(-0.3, 0.3, (dirs, 2 * G * H)).astype(np.float32)),
        "h": ("h0", rng.uniform(-1, 1, state).astype(np.float32)),
        "c": ("c0", rng.uniform(-1, 1, state).astype(np.float32)),
        "p": ("p", rng.uniform(-0.5, 0.5, (dirs, 3 * H)).astype(np.float32)),
    }
    feeds, inits = {"x": x}, {}
    (feeds if "w" in options else inits).update(params)
    order = ["x", "w", "r"]
    slots = ["b", "seq", "h", "c", "p"] if op == "LSTM" else ["b", "seq", "h"]
    for slot in slots:
        if slot == "seq":
            if "s" in options or "S" in options:
                lens = np.array([T, 2, 4][:batch], np.int32)
                (inits if "s" in options else feeds)["seq"] = lens
                order.append("seq")
            else:
                order.append("")
        elif slot in options:
            name, value = extra[slot]
            inits[name] = value
            order.append(name)
        else:
            order.append("")
    while order and order[-1] == "":
        order.pop()
    full = {**attrs, "hidden_size": H}
    n_out = 3 if op == "LSTM" else 2
    model = node_model(op, feeds, full, opset=14, initializers=inits, input_order=order, n_outputs=n_out)
    return model, feeds


@pytest.mark.parametrize(
    "op,attrs,options", RECURRENT, ids=[f"{o}-{i}" for i, (o, _, _) in enumerate(RECURRENT)]
)
def test_recurrent(op, attrs, options, device):
    model, feeds = _recurrent_case(op, attrs, options)
    if attrs.get("layout") != 1:
        check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-5)
        return
    # onnxruntime runs only layout 0: run the same layer batch-second and transpose around it
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    node = ref.graph.node[0]
    kept = [at for at in node.attribute if at.name != "layout"]
    del node.attribute[:]
    node.attribute.extend(kept)
    swap = {"x": (1, 0, 2), "h0": (1, 0, 2), "c0": (1, 0, 2)}
    for t in ref.graph.initializer:
        if t.name in swap:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).transpose(swap[t.name]), t.name))
    ref_feeds = {k: np.ascontiguousarray(v.transpose(swap[k])) if k in swap else v for k, v in feeds.items()}
    for vi in ref.graph.input:
        if vi.name in ref_feeds:
            vi.CopyFrom(
                helper.make_tensor_value_info(
                    vi.name, vi.type.tensor_type.elem_type, ref_feeds[vi.name].shape
                )
            )
    del ref.graph.value_info[:]
    for o in ref.graph.output:
        o.type.tensor_type.ClearField("shape")
    want = ort_run(ref, ref_feeds)
    want = [want[0].transpose(2, 0, 1, 3)] + [w.transpose(1, 0, 2) for w in want[1:]]
    assert_close(gpu_run(model, feeds, device), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("keep", ["Y", "Y_h"])
def test_recurrent_with_outputs_omitted(keep, device):
    model, feeds = _recurrent_case("LSTM", {"direction": "bidirectional"}, "bhc")
    node = model.graph.node[0]
    node.output[:] = ["y0", ""] if keep == "Y" else ["", "y1"]
    keep_outputs = [o for o in model.graph.output if o.name in node.output]
    del model.graph.output[:]
    model.graph.output.extend(keep_outputs)
    check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-5)


def test_recurrent_hidden_size_over_a_workgroup(device):
    # 300 hidden units: each invocation of the 256-wide workgroup owns one or two
    model, feeds = _recurrent_case("GRU", {}, "bh", T=3, batch=2, In=5, H=300)
    check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-4)


def test_lstm_hidden_512_over_32_steps(device):
    """The CRNN text recogniser's layer that Mesa 22's lavapipe got wrong: its loops outran the
    driver's per-invocation loop budget (compiler.target.LOOP_BUDGET) and ended early."""
    rng = np.random.default_rng(0)
    H, T, In = 512, 32, 64
    w = {k: (rng.standard_normal(s) * 0.1).astype(np.float32)
         for k, s in (("w", (1, 4 * H, In)), ("r", (1, 4 * H, H)), ("b", (1, 8 * H)))}  # fmt: skip
    x = rng.standard_normal((T, 1, In)).astype(np.float32)
    model = node_model("LSTM", {"x": x}, {"hidden_size": H}, opset=12, initializers=w, n_outputs=3)
    check_against_ort(model, {"x": x}, device, rtol=1e-4, atol=1e-4)


LONG_RECURRENT = [
    # (op, hidden, steps, attrs, options): past one dispatch's loop budget the layer runs in
    # chunks of steps, its state carried over from one dispatch to the next
    ("LSTM", 512, 100, {"direction": "bidirectional"}, "bhc"),
    ("LSTM", 1024, 32, {}, "bhcp"),
    ("LSTM", 1024, 100, {"direction": "bidirectional"}, "bS"),
    ("GRU", 512, 100, {"direction": "bidirectional"}, "bh"),
    ("GRU", 1024, 100, {"direction": "reverse", "linear_before_reset": 1}, "bh"),
    ("GRU", 1024, 32, {}, "bs"),
    ("RNN", 1024, 100, {"direction": "bidirectional"}, "bhs"),
]


@pytest.mark.parametrize(
    "op,H,T,attrs,options",
    LONG_RECURRENT,
    ids=[f"{o}-{h}x{t}-{i}" for i, (o, h, t, _, _) in enumerate(LONG_RECURRENT)],
)
def test_recurrent_long_and_wide(op, H, T, attrs, options, device):
    model, feeds = _recurrent_case(op, attrs, options, T=T, batch=2, In=64, H=H)
    check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-4)


def test_recurrent_long_layer_runs_in_chunks_of_one_resumable_shader(tmp_path):
    """Past the loop budget a layer splits its steps over dispatches: the first from the initial
    state, the rest resuming (one shader for all of them), so pipelines do not grow with T."""
    model, _ = _recurrent_case("LSTM", {"direction": "bidirectional"}, "bhc", T=100, batch=1, In=64, H=1024)
    onnx2wgsl.compile(model, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["shaders"]) == 2
    order = [d["shader"] for d in manifest["dispatches"]]
    assert len(order) >= 6 and order == [0] + [1] * (len(order) - 1)


# -- Attention ------------------------------------------------------------------------------------
def _attention_case(
    *, rank=4, B=2, Hq=4, Hkv=4, Sq=3, Skv=5, D=8, Dv=8, past=0, mask=None, opset=23, nonpad=None,
    n_outputs=1, **attrs,
):  # fmt: skip
    rng = np.random.default_rng(3)
    if rank == 4:
        shapes = {"q": (B, Hq, Sq, D), "k": (B, Hkv, Skv, D), "v": (B, Hkv, Skv, Dv)}
    else:
        shapes = {"q": (B, Sq, Hq * D), "k": (B, Skv, Hkv * D), "v": (B, Skv, Hkv * Dv)}
        attrs = {"q_num_heads": Hq, "kv_num_heads": Hkv, **attrs}
    feeds = {n: rng.uniform(-1, 1, s).astype(np.float32) for n, s in shapes.items()}
    order = ["q", "k", "v"]
    L = past + Skv
    if mask is not None:
        kind, shape = mask
        shape = tuple(L if d == "L" else d for d in shape)
        if kind == "bool":
            m = rng.uniform(0, 1, shape) > 0.3
            m[..., 0] = True  # keep every row attending something
        else:
            m = rng.uniform(-2, 1, shape).astype(np.float32)
            m[..., 1] = -np.inf
        feeds["mask"] = m
    order.append("mask" if mask is not None else "")
    if past:
        feeds["pk"] = rng.uniform(-1, 1, (B, Hkv, past, D)).astype(np.float32)
        feeds["pv"] = rng.uniform(-1, 1, (B, Hkv, past, Dv)).astype(np.float32)
        order += ["pk", "pv"]
    else:
        order += ["", ""]
    if nonpad is not None:
        feeds["nonpad"] = np.array(nonpad, np.int64)
        order.append("nonpad")
    while order[-1] == "":
        order.pop()
    model = node_model("Attention", feeds, attrs, opset=opset, input_order=order, n_outputs=n_outputs)
    return model, feeds


ATTENTION = [
    {},
    {"rank": 3},
    {"Hkv": 2},  # grouped-query heads
    {"rank": 3, "Hkv": 1, "Dv": 6},
    {"is_causal": 1},
    {"is_causal": 1, "Sq": 5, "Skv": 5, "Hkv": 2},
    {"mask": ("float", (3, "L"))},
    {"mask": ("bool", (2, 1, 3, "L"))},
    {"mask": ("float", (4, 3, "L")), "is_causal": 1},
    {"scale": 0.3},
    {"softcap": 1.5},
    {"past": 4, "n_outputs": 3},
    {"rank": 3, "past": 2, "Hkv": 2, "is_causal": 1, "n_outputs": 3},
    {"past": 3, "mask": ("bool", (3, "L")), "n_outputs": 3},
    {"n_outputs": 3},  # present key/value without a past cache
    {"rank": 3, "Hkv": 2, "n_outputs": 3},
]


@pytest.mark.parametrize("case", ATTENTION, ids=[str(i) for i in range(len(ATTENTION))])
def test_attention(case, device):
    model, feeds = _attention_case(**case)
    check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_attention_qk_matmul_output(mode, softcap, device):
    attrs = {"qk_matmul_output_mode": mode, "mask": ("float", (3, "L")), "past": 2, "n_outputs": 4}
    if softcap:
        attrs["softcap"] = softcap
    model, feeds = _attention_case(**attrs)
    got = gpu_run(model, feeds, device)
    want = ort_run(model, feeds)
    assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_attention_short_mask_pads_and_fully_masked_rows(device):
    # a mask shorter than the keys masks the rest; an all-False row gives zeros
    model, feeds = _attention_case(mask=("bool", (3, 4)), Skv=6)
    feeds["mask"][1, :] = False
    (got,) = gpu_run(model, feeds, device)
    assert np.all(got[:, :, 1, :] == 0)
    assert_close([got], reference_run(model, feeds), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "case",
    [
        {"opset": 24, "nonpad": [3, 5], "is_causal": 1, "Sq": 2},
        {"opset": 24, "nonpad": [1, 4], "Hkv": 2},
        {"opset": 25, "left_window_size": 1, "is_causal": 1, "Sq": 5, "Skv": 5},
        {"opset": 25, "left_window_size": 2, "right_window_size": 1, "Sq": 5, "Skv": 5},
        {"opset": 25, "left_window_size": 1, "past": 3, "is_causal": 1, "n_outputs": 3},
        {"past": 3, "mask": ("bool", ("L",)), "n_outputs": 3},
    ],
    ids=["nonpad_causal", "nonpad_gqa", "window_causal", "window_both", "window_past", "rank1_mask"],
)
def test_attention_vs_reference(case, device):
    # cases onnxruntime does not implement: nonpad_kv_seqlen, sliding windows, rank-1 masks
    model, feeds = _attention_case(**case)
    assert_close(gpu_run(model, feeds, device), reference_run(model, feeds), rtol=1e-4, atol=1e-5)


# -- RotaryEmbedding --------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 4])
@pytest.mark.parametrize("positions", [True, False])
def test_rotary_embedding(rank, interleaved, rotary_dim, positions, device):
    rng = np.random.default_rng(5)
    B, S, N, Dh = 2, 3, 2, 8
    x = rng.uniform(-1, 1, (B, N, S, Dh) if rank == 4 else (B, S, N * Dh)).astype(np.float32)
    half = (rotary_dim or Dh) // 2
    rows = (7,) if positions else (B, S)
    cos = rng.uniform(-1, 1, (*rows, half)).astype(np.float32)
    sin = rng.uniform(-1, 1, (*rows, half)).astype(np.float32)
    feeds = {"x": x, "cos": cos, "sin": sin}
    if positions:
        feeds["pos"] = rng.integers(0, 7, (B, S)).astype(np.int64)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rotary_dim}
    if rank == 3:
        attrs["num_heads"] = N
    model = node_model("RotaryEmbedding", feeds, attrs, opset=23)
    check_against_ort(model, feeds, device)


# -- every new op's IR prints and parses back exactly, at every stage ---------------------------------
def _ir_cases():
    x = rand(1, 2, 4, 4, 4)
    yield node_model("Conv", {"x": x, "w": rand(4, 2, 3, 3, 3, seed=1)}, {"pads": [1] * 6})
    yield node_model(
        "ConvTranspose", {"x": rand(1, 2, 3, 3)}, {"strides": [2, 2]}, initializers={"w": rand(2, 3, 3, 3)}
    )
    yield node_model(
        "MaxPool", {"x": x}, {"kernel_shape": [2, 2, 2], "storage_order": 1}, opset=12, n_outputs=2
    )
    yield node_model("GlobalLpPool", {"x": x}, {"p": 3})
    yield _recurrent_case("LSTM", {"direction": "bidirectional", "clip": 0.5}, "bhcpS")[0]
    yield _recurrent_case(
        "GRU", {"activations": ["ScaledTanh", "Affine"], "activation_alpha": [0.8, 0.5]}, "b"
    )[0]
    yield _attention_case(rank=3, past=2, Hkv=2, is_causal=1, mask=("bool", (3, "L")), n_outputs=4)[0]
    yield _attention_case(opset=25, left_window_size=1, nonpad=[3, 5])[0]
    u8 = np.array(2, np.uint8)
    yield node_model(
        "QLinearConv", {"x": np.zeros((1, 1, 4, 4), np.uint8)}, {"pads": [1, 1, 1, 1]},
        initializers={"xs": np.array(0.1, np.float32), "xz": u8, "w": np.ones((2, 1, 3, 3), np.uint8),
                      "ws": np.array(0.2, np.float32), "wz": u8, "ys": np.array(0.3, np.float32), "yz": u8},
        input_order=["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], opset=10,
    )  # fmt: skip
    yield node_model(
        "DeformConv", {"x": rand(1, 2, 4, 4), "w": rand(2, 2, 2, 2), "off": rand(1, 8, 3, 3)}, {}, opset=19
    )
    pos = {"pos": np.zeros((1, 2), np.int64)}
    yield node_model(
        "RotaryEmbedding", {"x": rand(1, 2, 8), "cos": rand(4, 2), "sin": rand(4, 2), **pos},
        {"num_heads": 2, "rotary_embedding_dim": 4, "interleaved": 1}, opset=23,
    )  # fmt: skip


@pytest.mark.parametrize("model", list(_ir_cases()), ids=lambda m: m.graph.node[0].op_type)
def test_new_ops_round_trip_as_ir_text(model):
    from onnx2wgsl.compiler import compile_model
    from onnx2wgsl.ir import WeightBlob, graph_diff, parse_ir, print_ir

    def check(stage, g):
        blob = WeightBlob()
        text = print_ir(g, stage=stage, weights=blob)
        back = parse_ir(text, bytes(blob))
        assert graph_diff(g, back) is None, stage

    compile_model(model, on_stage=check)

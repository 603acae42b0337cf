"""Every kernel family at a few large shapes, against onnxruntime (or onnx.reference).

The shapes are picked so that a kernel that did all of one output's work in one invocation
would loop more than 65,535 times there (a long reduction, a big window, many keys), and so
that grids need more workgroups than one dimension holds. Some drivers cut such loops short
without an error (see compiler/target.py: LOOP_BUDGET), which only a run at these sizes shows.
Each case stays small in bytes so that the file runs in well under a minute on lavapipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from helpers import assert_close, gpu_run, graph_model, node_model, ort_run, rand, reference_run
from onnx import helper, numpy_helper

pytestmark = pytest.mark.gpu

LONG = 70_000  # a reduction length over the per-invocation loop budget


@dataclass
class Case:
    """A model and its feeds, built on demand (some arrays are large), and how to check it."""

    build: Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]
    ref: Callable = ort_run
    rtol: float = 1e-4
    atol: float = 1e-5
    marker: str = ""  # (small cases) text of the split kernel's shader


def uniform(*shape, seed=0, low=0.0, high=1.0, dtype=np.float32):
    # positive values: a sum cut short is visibly smaller, not lost in the noise of signs
    return rand(*shape, seed=seed, low=low, high=high, dtype=dtype)


def needle(*shape, seed=0, at=-1, value=4.0):
    """Random values in [0, 1) with one larger value at flat index ``at`` (an early exit misses it)."""
    x = uniform(*shape, seed=seed)
    x.reshape(-1)[at] = value
    return x


def one(op, inputs: Callable[[], dict], attrs=None, *, opset=17, inits=None, **kw):
    """A one-node case builder; ``inputs()`` makes its feeds when the case runs (not when the
    tests are collected: some are large)."""

    def build():
        feeds = inputs()
        return node_model(op, feeds, attrs or {}, opset=opset, initializers=inits, **kw), feeds

    return build


# -- elementwise and fused map kernels: more workgroups than one grid dimension holds ----------
def _fused():
    n = (1 << 22) + 3
    x, y = rand(n), rand(n, seed=1)
    nodes = [
        helper.make_node("Mul", ["x", "y"], ["p"]),
        helper.make_node("Add", ["p", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["z"]),
    ]
    return graph_model(nodes, {"x": x, "y": y}, ["z"]), {"x": x, "y": y}


def _add():
    x, y = rand((1 << 22) + 3), rand(1, seed=1)
    return node_model("Add", {"x": x, "y": y}), {"x": x, "y": y}


# -- matrix products ---------------------------------------------------------------------------
def _matmul(a_shape, b_shape, const_b=False, epilogue=False):
    def build():
        a, b = uniform(*a_shape), uniform(*b_shape, seed=1)
        feeds = {"a": a} if const_b else {"a": a, "b": b}
        inits = {"b": b} if const_b else {}
        if not epilogue:
            return node_model("MatMul", feeds, initializers=inits), feeds
        # -O2 applies the Relu and the residual Add at the matmul's store
        r = rand(*a_shape[:-1], b_shape[-1], seed=2)
        feeds["r"] = r
        nodes = [
            helper.make_node("MatMul", ["a", "b"], ["h"]),
            helper.make_node("Relu", ["h"], ["g"]),
            helper.make_node("Add", ["g", "r"], ["y"]),
        ]
        return graph_model(nodes, feeds, ["y"], inits), feeds

    return build


def _gemm(M, N, K, const_b):
    def build():
        a, b, c = uniform(M, K), uniform(N, K, seed=1), rand(N, seed=2)
        feeds = {"a": a} if const_b else {"a": a, "b": b, "c": c}
        inits = {"b": b, "c": c} if const_b else {}
        attrs = {"transB": 1, "alpha": 0.5, "beta": 2.0}
        return node_model("Gemm", feeds, attrs, initializers=inits, input_order=["a", "b", "c"]), feeds

    return build


def _matmul_integer():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 8, (3, LONG), dtype=np.uint8)
    b = rng.integers(0, 8, (LONG, 5), dtype=np.uint8)
    zps = {"za": np.array(2, np.uint8), "zb": np.array(3, np.uint8)}
    model = node_model("MatMulInteger", {"a": a, "b": b}, opset=10, initializers=zps)
    return model, {"a": a, "b": b}


# -- convolutions --------------------------------------------------------------------------------
def _conv(xs, ws, attrs, const_w=True):
    def build():
        x, w, b = uniform(*xs), rand(*ws, seed=1, low=0.0), rand(ws[0], seed=2)
        feeds = {"x": x} if const_w else {"x": x, "w": w, "b": b}
        inits = {"w": w, "b": b} if const_w else {}
        return node_model("Conv", feeds, attrs, initializers=inits, input_order=["x", "w", "b"]), feeds

    return build


def _conv_fused():
    # -O2 computes the Relu in the conv's loads and applies the residual Add and Sigmoid at its store
    x, r = rand(1, LONG, 2, 2), rand(1, 4, 2, 2, seed=3)
    nodes = [
        helper.make_node("Relu", ["x"], ["xr"]),
        helper.make_node("Conv", ["xr", "w", "b"], ["c"]),
        helper.make_node("Add", ["c", "r"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["y"]),
    ]
    inits = {"w": rand(4, LONG, 1, 1, seed=1), "b": rand(4, seed=2)}
    return graph_model(nodes, {"x": x, "r": r}, ["y"], inits), {"x": x, "r": r}


def _conv_transpose():
    x, w = uniform(1, 8192, 3, 3), uniform(8192, 1, 3, 3, seed=1)
    return node_model("ConvTranspose", {"x": x}, {}, initializers={"w": w}), {"x": x}


def _deform_conv(C, k):
    def build():
        rng = np.random.default_rng(4)
        x, w = uniform(1, C, k, k), uniform(2, C, k, k, seed=1)
        feeds = {"x": x, "w": w, "off": rng.uniform(-0.5, 0.5, (1, 2 * k * k, 1, 1)).astype(np.float32)}
        return node_model("DeformConv", feeds, {"kernel_shape": [k, k]}, opset=19), feeds

    return build


def _conv_integer():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, (1, 8192, 3, 3), dtype=np.uint8)
    w = rng.integers(0, 8, (2, 8192, 3, 3), dtype=np.uint8)
    model = node_model("ConvInteger", {"x": x, "w": w}, opset=10)
    return model, {"x": x, "w": w}


# -- attention -------------------------------------------------------------------------------------
def _attention(B, H, Sq, L, D, Hkv=None, mask=None, qk_mode=None, past=0, **attrs):
    """``mask``: "float" (some keys -inf) or "bool"; ``past`` keys come in a KV cache."""

    def build():
        rng = np.random.default_rng(3)
        Skv = L - past
        feeds = {
            "q": rng.uniform(-1, 1, (B, H, Sq, D)).astype(np.float32),
            "k": rng.uniform(-1, 1, (B, Hkv or H, Skv, D)).astype(np.float32),
            "v": rng.uniform(-1, 1, (B, Hkv or H, Skv, D)).astype(np.float32),
        }
        order, n_outputs = ["q", "k", "v", ""], 1
        if mask == "float":
            feeds["mask"] = rng.uniform(-2, 1, (Sq, L)).astype(np.float32)
            feeds["mask"][:, ::7] = -np.inf
        elif mask == "bool":
            feeds["mask"] = rng.uniform(0, 1, (Sq, L)) > 0.3
        if mask:
            order[3] = "mask"
        if past:
            feeds["pk"] = rng.uniform(-1, 1, (B, Hkv or H, past, D)).astype(np.float32)
            feeds["pv"] = rng.uniform(-1, 1, (B, Hkv or H, past, D)).astype(np.float32)
            order += ["pk", "pv"]
            n_outputs = 3
        if qk_mode is not None:
            attrs["qk_matmul_output_mode"], n_outputs = qk_mode, 4
        while order[-1] == "":
            order.pop()
        model = node_model("Attention", feeds, attrs, opset=23, input_order=order, n_outputs=n_outputs)
        return model, feeds

    return build


def _rotary():
    rng = np.random.default_rng(5)
    B, N, S, Dh = 1, 8, 4096, 64
    feeds = {
        "x": rng.uniform(-1, 1, (B, N, S, Dh)).astype(np.float32),
        "cos": rng.uniform(-1, 1, (S, Dh // 2)).astype(np.float32),
        "sin": rng.uniform(-1, 1, (S, Dh // 2)).astype(np.float32),
        "pos": np.arange(S, dtype=np.int64)[None],
    }
    return node_model("RotaryEmbedding", feeds, {}, opset=23, input_order=["x", "cos", "sin", "pos"]), feeds


# -- data movement -----------------------------------------------------------------------------------
def _gather():
    rng = np.random.default_rng(0)
    x, i = rand(100_000, 16), rng.integers(-100_000, 100_000, (LONG,), dtype=np.int64)
    return node_model("Gather", {"x": x, "i": i}, {"axis": 0}), {"x": x, "i": i}


def _gather_elements():
    rng = np.random.default_rng(0)
    x, i = rand(4, LONG), rng.integers(0, LONG, (4, LONG), dtype=np.int64)
    return node_model("GatherElements", {"x": x, "i": i}, {"axis": 1}), {"x": x, "i": i}


def _scatter_nd():
    rng = np.random.default_rng(0)
    x = rand(LONG * 2, 4)
    i = rng.permutation(LONG * 2)[:LONG].astype(np.int64)[:, None]
    u = rand(LONG, 4, seed=1)
    return node_model("ScatterND", {"x": x, "i": i, "u": u}, opset=16), {"x": x, "i": i, "u": u}


def _resize(shape, sizes, attrs, roi=None):
    def build():
        x = uniform(*shape)
        inits = {"sizes": np.array(sizes, np.int64)}
        if roi is not None:
            inits["roi"] = np.array(roi, np.float32)
        order = ["x", "roi" if roi is not None else "", "", "sizes"]
        model = node_model("Resize", {"x": x}, attrs, opset=19, initializers=inits, input_order=order)
        return model, {"x": x}

    return build


def _roi_align(mode):
    def build():
        x = uniform(1, 1, 600, 600)
        rois = np.array([[0, 0, 599, 599], [10, 20, 500, 580]], np.float32)
        attrs = {"output_height": 2, "output_width": 2, "sampling_ratio": 0, "mode": mode}
        feeds = {"x": x, "rois": rois, "batch": np.zeros(2, np.int64)}
        return node_model("RoiAlign", feeds, attrs, opset=16), feeds

    return build


def _max_pool_indices():
    x = uniform(1, 2, 300, 300)
    # a tie past the 65,535th point of the window: the first of the two wins
    x[:, :, 250, 250] = x[:, :, 290, 291] = 4.0
    attrs = {"kernel_shape": [300, 300]}
    return node_model("MaxPool", {"x": x}, attrs, opset=12, n_outputs=2), {"x": x}


def _max_unpool():
    x = rand(1, 4, 512, 512)
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["p", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    return graph_model([pool, unpool], {"x": x}, ["y"], opset=12), {"x": x}


# -- signal --------------------------------------------------------------------------------------------
def _dft(n):
    def build():
        x = rand(1, n, 1)
        model = node_model("DFT", {"x": x}, {}, opset=20, initializers={"axis": np.array(1, np.int64)},
                           input_order=["x", "", "axis"])  # fmt: skip
        return model, {"x": x}

    return build


def _stft():
    x = rand(1, 64_000, 1)
    inits = {"step": np.array(160, np.int64), "window": np.hanning(512).astype(np.float32)}
    model = node_model("STFT", {"x": x}, {"onesided": 1}, opset=17, initializers=inits,
                       input_order=["x", "step", "window"])  # fmt: skip
    return model, {"x": x}


def _reduce(op, shape, axes, x=None, keepdims=0):
    def build():
        xx = uniform(*shape) if x is None else x()
        inits = {"axes": np.array(axes, np.int64)} if axes is not None else None
        return node_model(op, {"x": xx}, {"keepdims": keepdims}, opset=18, initializers=inits), {"x": xx}

    return build


def _arg(op, shape, axis):
    return one(op, lambda: {"x": needle(*shape, at=-2)}, {"axis": axis, "keepdims": 0})


def _norm(op, shape, attrs, params, opset=18):
    def build():
        x = rand(*shape, low=-2.0, high=3.0)
        inits = {n: rand(*s, seed=k + 1, low=0.5, high=1.5) for k, (n, s) in enumerate(params.items())}
        return node_model(op, {"x": x}, attrs, opset=opset, initializers=inits), {"x": x}

    return build


def _group_norm_f64(model, feeds):
    """GroupNormalization in float64: onnxruntime's drifts by 3e-4 over groups of millions."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    (G,) = (a.i for a in model.graph.node[0].attribute if a.name == "num_groups")
    x = feeds["x"].astype(np.float64)
    groups = x.reshape(x.shape[0], G, -1)
    y = (groups - groups.mean(-1, keepdims=True)) / np.sqrt(groups.var(-1, keepdims=True) + 1e-5)
    y = y.reshape(x.shape[0], x.shape[1], -1) * inits["s"][:, None] + inits["b"][:, None]
    return [y.reshape(x.shape).astype(np.float32)]


def _softmax_columns(op):
    def build():
        x = rand(40_000, 3, low=-5, high=5)
        x[:5000, 0] = -np.inf  # a whole chunk of -inf adds nothing to its column's sum
        return node_model(op, {"x": x}, {"axis": 0}, opset=13), {"x": x}

    return build


def _topk(L, k, largest=1, axis=-1, ties=False):
    def build():
        x = rand(2, L) if axis == -1 else rand(L, 3)
        if ties:  # few distinct values: ties across chunks go to the lower index
            x = np.round(x * 20) / 20
        return node_model("TopK", {"x": x}, {"axis": axis, "largest": largest}, opset=11,
                          initializers={"k": np.array([k], np.int64)}, n_outputs=2), {"x": x}  # fmt: skip

    return build


def _einsum():
    a, b = uniform(2, LONG), uniform(LONG, 3, seed=1)
    return node_model("Einsum", {"a": a, "b": b}, {"equation": "ij,jk->ik"}, opset=12), {"a": a, "b": b}


def _det():
    x = rand(100_000, 3, 3)
    return node_model("Det", {"x": x}, opset=11), {"x": x}


def _lrn():
    x = uniform(1, 1024, 8, 8)
    return node_model("LRN", {"x": x}, {"size": 999, "alpha": 1e-3, "beta": 0.75, "bias": 1.0}), {"x": x}


def _dynamic_quantize():
    x = rand(1 << 22, low=-3.0, high=5.0)
    return node_model("DynamicQuantizeLinear", {"x": x}, opset=11, n_outputs=3), {"x": x}


CASES: dict[str, Case] = {
    # elementwise
    "add-4M-broadcast": Case(_add),
    "fused-mul-add-relu-4M": Case(_fused),
    # matmul / gemm
    "matmul-1xKx4-const": Case(_matmul((1, LONG), (LONG, 4), const_b=True), rtol=1e-4, atol=1e-2),
    "matmul-1xKx4-runtime": Case(_matmul((1, LONG), (LONG, 4)), atol=1e-2),
    "matmul-2xKx3-runtime": Case(_matmul((2, LONG), (LONG, 3)), atol=1e-2),
    "matmul-batched-2x3xKx4": Case(_matmul((2, 3, LONG), (2, LONG, 4)), atol=1e-2),
    "matmul-epilogue-3xKx8": Case(_matmul((3, LONG), (LONG, 8), const_b=True, epilogue=True), atol=1e-2),
    "matmul-512x64x640": Case(_matmul((512, 64), (64, 640)), atol=1e-4),
    "gemm-transB-const": Case(_gemm(3, 4, LONG, True), atol=1e-2),
    "gemm-transB-runtime": Case(_gemm(3, 5, LONG, False), atol=1e-2),
    "matmul_integer-3xKx5": Case(_matmul_integer),
    "einsum-ij,jk-K": Case(_einsum, atol=1e-2),
    # convolutions: reductions of 1024 channels x 9x9 taps, 70,000 channels, or 8192 x 3x3
    "conv_gemm-1024x9x9": Case(_conv((1, 1024, 5, 5), (4, 1024, 9, 9), {"pads": [3, 3, 3, 3]}), atol=1e-2),
    "conv_gemm-runtime-w": Case(
        _conv((1, 1024, 5, 5), (4, 1024, 9, 9), {"pads": [3, 3, 3, 3]}, const_w=False), atol=1e-2
    ),
    "conv_gemm-pointwise-70000": Case(_conv((1, LONG, 2, 2), (4, LONG, 1, 1), {}), atol=1e-2),
    "conv_gemm-prologue-epilogue-70000": Case(_conv_fused, atol=1e-4),
    "conv_gemm-1d-kernel-20000": Case(_conv((1, 4, 20_100), (8, 4, 20_000), {}), atol=1e-2),
    "conv_direct-1024x9x9": Case(_conv((1, 1024, 5, 5), (2, 1024, 9, 9), {"pads": [3, 3, 3, 3]}), atol=1e-2),
    "conv_direct-depthwise-300x300": Case(_conv((1, 2, 300, 300), (2, 1, 300, 300), {"group": 2}), atol=1e-2),
    "conv_transpose-8192x3x3": Case(_conv_transpose, atol=1e-2),
    "deform_conv-8192x3x3": Case(_deform_conv(8192, 3), atol=1e-2),
    "deform_conv-70000x1x1": Case(_deform_conv(LONG, 1), atol=1e-2),
    "conv_integer-8192x3x3": Case(_conv_integer),
    # pooling over 300x300 = 90,000 points
    "global_average_pool-300x300": Case(one("GlobalAveragePool", lambda: {"x": uniform(1, 2, 300, 300)})),
    "global_max_pool-300x300": Case(one("GlobalMaxPool", lambda: {"x": needle(1, 2, 300, 300)})),
    "global_lp_pool-300x300": Case(
        one("GlobalLpPool", lambda: {"x": uniform(1, 2, 300, 300)}, {"p": 2}), rtol=2e-4
    ),
    "max_pool-300x300-window": Case(
        one("MaxPool", lambda: {"x": needle(1, 1, 300, 300)}, {"kernel_shape": [300, 300]})
    ),
    "max_pool-indices-300x300-window": Case(_max_pool_indices),
    "average_pool-3d-window": Case(
        one("AveragePool", lambda: {"x": uniform(1, 1, 50, 45, 40)}, {"kernel_shape": [50, 45, 40]})
    ),
    "max_unpool-4x512x512": Case(_max_unpool),
    # reductions over an axis of 100,000 and over all of a big tensor
    **{
        f"{op.lower()}-axis-100000": Case(_reduce(op, (3, 100_000), [1]), rtol=2e-4, atol=1e-4)
        for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceLogSumExp", "ReduceL2")
    },
    "reducesum-all-600000": Case(_reduce("ReduceSum", (300, 400, 5), None), rtol=2e-4),
    "reducemax-all-600000": Case(
        _reduce("ReduceMax", (300, 400, 5), None, x=lambda: needle(300, 400, 5, at=-3))
    ),
    "reducesum-axis0-100000x3": Case(_reduce("ReduceSum", (100_000, 3), [0]), rtol=2e-4),
    "argmax-axis-100000": Case(_arg("ArgMax", (3, 100_000), 1)),
    "argmax-axis0-100000x3": Case(_arg("ArgMax", (100_000, 3), 0)),
    # softmax over a vocabulary, and over one very long row
    "softmax-vocab-100000": Case(
        one("Softmax", lambda: {"x": rand(4, 100_000, low=-5, high=5)}, {"axis": -1}), atol=1e-7
    ),
    "logsoftmax-vocab-100000": Case(
        one("LogSoftmax", lambda: {"x": rand(4, 100_000, low=-5, high=5)}, {"axis": -1})
    ),
    "softmax-columns-40000-inf-chunk": Case(_softmax_columns("Softmax"), atol=1e-7),
    "logsoftmax-columns-40000-inf-chunk": Case(_softmax_columns("LogSoftmax")),
    "softmax-row-6M": Case(one("Softmax", lambda: {"x": rand(1, 6_000_000)}, {"axis": -1}), atol=1e-9),
    "hardmax-row-6M": Case(one("Hardmax", lambda: {"x": needle(1, 6_000_000, at=-5)}, {"axis": -1})),
    # normalizations over long rows
    "layer_norm-row-6M": Case(
        _norm("LayerNormalization", (1, 6_000_000), {"axis": -1}, {"s": (6_000_000,)}), rtol=1e-3, atol=1e-4
    ),
    "rms_norm-row-9M": Case(
        _norm("RMSNormalization", (1, 9_000_000), {"axis": -1}, {"s": (9_000_000,)}, opset=23),
        rtol=1e-3,
        atol=1e-4,
    ),
    "instance_norm-1x2x2500x2500": Case(
        _norm("InstanceNormalization", (1, 2, 2500, 2500), {}, {"s": (2,), "b": (2,)}), rtol=1e-3, atol=1e-4
    ),
    "group_norm-8x1200x1200": Case(
        _norm("GroupNormalization", (1, 8, 1200, 1200), {"num_groups": 2}, {"s": (8,), "b": (8,)}, opset=21),
        ref=_group_norm_f64,
        rtol=1e-3,
        atol=1e-4,
    ),
    "lrn-1024-channels": Case(_lrn),
    # scans and selection along long axes
    "cumsum-axis-1000000": Case(
        one("CumSum", lambda: {"x": uniform(2, 500_000)}, inits={"axis": np.array(1, np.int64)}),
        rtol=1e-4,
        atol=1e-2,
    ),
    "topk-100000-k300": Case(_topk(100_000, 300)),
    "topk-axis0-60000x3-k200-ties-smallest": Case(_topk(60_000, 200, largest=0, axis=0, ties=True)),
    "topk-100000-k4000": Case(_topk(100_000, 4000)),
    "topk-8000-k4000-smallest": Case(_topk(8000, 4000, largest=0)),
    # attention over long keys
    "attention-keys-1024-d64": Case(_attention(1, 2, 4, 1024, 64)),
    "attention-keys-8192-d16": Case(_attention(1, 1, 4, 8192, 16)),
    "attention-decode-4096-gqa-mask-probs": Case(
        _attention(1, 4, 1, 4096, 64, Hkv=2, mask="float", qk_mode=3)
    ),
    "attention-keys-2048-scores": Case(_attention(1, 2, 3, 2048, 32, qk_mode=0), atol=1e-5),
    "rotary-8x4096x64": Case(_rotary),
    # gathers and scatters with large tensors
    "gather-100000x16": Case(_gather),
    "gather_elements-4x70000": Case(_gather_elements),
    "scatter_nd-70000-updates": Case(_scatter_nd),
    # resampling with wide filters
    "resize-antialias-512-to-2": Case(
        _resize((1, 1, 512, 512), [1, 1, 2, 2], {"mode": "linear", "antialias": 1}),
        ref=reference_run,
        atol=1e-5,
    ),
    "resize-antialias-crop-extrapolated": Case(
        _resize(
            (1, 1, 512, 512),
            [1, 1, 3, 3],
            {
                "mode": "cubic",
                "antialias": 1,
                "coordinate_transformation_mode": "tf_crop_and_resize",
                "extrapolation_value": 7.0,
            },
            roi=[0, 0, -0.5, 0.2, 1, 1, 0.9, 1.4],
        ),
        ref=reference_run,
        atol=1e-5,
    ),  # fmt: skip
    "resize-cubic-512x512": Case(_resize((1, 2, 256, 256), [1, 2, 512, 512], {"mode": "cubic"}), atol=1e-5),
    "roi_align-600x600-adaptive-avg": Case(_roi_align("avg"), atol=1e-5),
    "roi_align-600x600-adaptive-max": Case(_roi_align("max"), atol=1e-5),
    # signal and small linear algebra
    "dft-8192": Case(_dft(8192), ref=reference_run, atol=5e-3),
    "stft-64000": Case(_stft, ref=reference_run, atol=2e-3),
    "det-100000x3x3": Case(_det),
    "dynamic_quantize-4M": Case(_dynamic_quantize),
}


# Cases that still fail on a driver that cuts long loops short, and why.
FAILS: dict[str, str] = {
    "topk-100000-k4000": "k is too large a part of a long row for the candidate split: needs a sort",
}


@pytest.fixture(scope="session")
def loops_cut_short(device) -> bool:
    """Whether the adapter ends a long loop early (lavapipe before Mesa 23): a 70,000-iteration
    loop, counted."""
    from wgpu.utils.compute import compute_with_buffers

    src = """@group(0) @binding(0) var<storage, read_write> n: array<u32>;
@compute @workgroup_size(1)
fn main() {
  var c = 0u;
  for (var i = 0u; i < 70000u; i++) { c += 1u; }
  n[0] = c;
}"""
    (count,) = compute_with_buffers({}, {0: (1, "I")}, src, n=1)[0]
    return count != 70_000


@pytest.mark.parametrize("name", list(CASES))
def test_large_shape(name, device, loops_cut_short, request):
    if name in FAILS and loops_cut_short:
        request.applymarker(pytest.mark.xfail(strict=True, reason=FAILS[name]))
    case = CASES[name]
    model, feeds = case.build()
    assert_close(gpu_run(model, feeds, device), case.ref(model, feeds), case.rtol, case.atol)


def test_long_exact_rows_take_a_workgroup_each(tmp_path):
    # An exact reduction (integers, max) over many rows takes one invocation per row, unless
    # the rows are too long for one invocation's loop budget: 6272 outputs of 8192 x 3x3
    # products here. Compiled only (running it is 460M products).
    from onnx2wgsl.compiler import compile_model

    feeds = {"x": np.zeros((1, 8192, 9, 9), np.uint8), "w": np.zeros((128, 8192, 3, 3), np.uint8)}
    compile_model(node_model("ConvInteger", feeds, opset=10), tmp_path)
    (shader,) = (tmp_path / "shaders").iterdir()
    assert "one workgroup per row" in shader.read_text()


# -- every split path, at small shapes under a small budget -------------------------------------
# With the budget cut to 64 iterations, small models take the paths that long loops take at full
# size, on the features the large cases leave out (strides, groups, dilations, masks, caches,
# indices, inverse transforms...). Each case names text that its split kernel's shader has.
SMALL_BUDGET = 64
TREE = "sum in a tree"


def _ints(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 8, shape).astype(np.uint8)


def _ties(*shape, seed=0):
    return np.round(rand(*shape, seed=seed) * 4) / 4  # few distinct values


def _dft_small(**attrs):
    def build():
        x = rand(2, 100, 2 if not attrs.get("onesided") else 1, low=-2, high=2)
        if attrs.get("inverse") and attrs.get("onesided"):
            x = rand(2, 100, 2, low=-2, high=2)
        inits = {
            "axis": np.array(1, np.int64),
            "len": np.array(150 if attrs.get("onesided") else 90, np.int64),
        }
        model = node_model(
            "DFT", {"x": x}, attrs, opset=20, initializers=inits, input_order=["x", "len", "axis"]
        )
        return model, {"x": x}

    return build


def _col2im():
    image, block = [10, 11], [9, 8]
    attrs = {"pads": [1, 0, 2, 1], "strides": [1, 2], "dilations": [1, 1]}
    L = ((10 + 3 - 9) // 1 + 1) * ((11 + 1 - 8) // 2 + 1)
    x = rand(2, 2 * 72, L)
    inits = {"image": np.array(image, np.int64), "block": np.array(block, np.int64)}
    return node_model("Col2Im", {"x": x}, attrs, initializers=inits, opset=18), {"x": x}


def _roi_small(mode):
    def build():
        x = uniform(1, 2, 20, 20)
        rois = np.array([[0, 0, 19, 19], [2, 3, 15, 18], [5, 5, 5, 5]], np.float32)  # the last is empty
        attrs = {"output_height": 2, "output_width": 2, "sampling_ratio": 0, "mode": mode}
        feeds = {"x": x, "rois": rois, "batch": np.zeros(3, np.int64)}
        return node_model("RoiAlign", feeds, attrs, opset=16), feeds

    return build


SMALL: dict[str, Case] = {
    # (a K that is a multiple of 4 loops K / 4 times: A is read as vec4 along k)
    "matmul-batched-broadcast": Case(_matmul((2, 3, 5, 300), (3, 300, 7)), marker=TREE),
    "matmul-const-epilogue": Case(_matmul((5, 400), (400, 8), const_b=True, epilogue=True), marker=TREE),
    "gemm-runtime-transB": Case(_gemm(5, 6, 150, False), marker=TREE),
    "matmul_integer": Case(
        one(
            "MatMulInteger",
            lambda: {"a": _ints((4, 100)), "b": _ints((100, 6), 1)},
            opset=10,
            inits={"za": np.array(3, np.uint8), "zb": np.array(2, np.uint8)},
        ),
        marker=TREE,
    ),  # fmt: skip
    "conv-groups-strides-runtime-w": Case(
        _conv(
            (1, 32, 9, 9), (8, 16, 3, 3), {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}, const_w=False
        ),
        marker="one workgroup per output pixel",
    ),
    "conv-3d-dilated": Case(
        _conv(
            (1, 8, 5, 6, 7), (4, 8, 3, 3, 3), {"dilations": [2, 1, 1], "pads": [1] * 6, "strides": [1, 2, 1]}
        ),
        atol=1e-4,
        marker="one workgroup per output pixel",
    ),  # fmt: skip
    "conv-depthwise-9x9": Case(
        _conv((1, 3, 12, 12), (3, 1, 9, 9), {"group": 3, "strides": [2, 2], "pads": [3, 3, 3, 3]}),
        marker="one workgroup per output pixel",
    ),
    "conv_transpose-groups-strides": Case(
        one(
            "ConvTranspose",
            lambda: {"x": rand(1, 32, 4, 5), "w": rand(32, 6, 3, 3, seed=1), "b": rand(12, seed=2)},
            {
                "group": 2,
                "strides": [2, 2],
                "dilations": [1, 2],
                "pads": [1, 1, 0, 1],
                "output_padding": [1, 0],
            },
        ),
        atol=1e-4,
        marker="One workgroup per output element",
    ),  # fmt: skip
    "deform_conv-mask-groups": Case(
        one(
            "DeformConv",
            lambda: {
                "x": rand(1, 8, 6, 5),
                "w": rand(4, 4, 2, 3, seed=1),
                "off": rand(1, 24, 3, 5, seed=2) * 2,
                "b": rand(4, seed=3),
                "m": uniform(1, 12, 3, 5, seed=4),
            },
            {"kernel_shape": [2, 3], "group": 2, "offset_group": 2, "strides": [2, 1], "pads": [1, 1, 0, 1]},
            opset=19,
        ),
        atol=1e-4,
        marker="One workgroup per output element",
    ),  # fmt: skip
    "max_pool-indices-column-major": Case(
        one(
            "MaxPool",
            lambda: {"x": _ties(1, 2, 20, 20)},
            {
                "kernel_shape": [9, 9],
                "strides": [3, 3],
                "pads": [2, 2, 2, 2],
                "ceil_mode": 1,
                "storage_order": 1,
            },
            opset=12,
            n_outputs=2,
        ),
        marker="combine in a tree",
    ),  # fmt: skip
    "average_pool-3d-include-pad": Case(
        one(
            "AveragePool",
            lambda: {"x": rand(1, 2, 8, 9, 10)},
            {"kernel_shape": [4, 4, 5], "strides": [2, 2, 2], "pads": [1] * 6, "count_include_pad": 1},
            opset=19,
        ),
        marker="combine in a tree",
    ),  # fmt: skip
    "lp_pool": Case(
        one(
            "LpPool", lambda: {"x": rand(1, 2, 12, 12)}, {"kernel_shape": [9, 9], "strides": [3, 3]}, opset=18
        ),
        marker="combine in a tree",
    ),
    "global_average_pool": Case(
        one("GlobalAveragePool", lambda: {"x": rand(1, 3, 10, 10)}), marker="combine in a tree"
    ),
    "attention-causal-gqa-past-softcap": Case(
        _attention(2, 4, 3, 30, 8, Hkv=2, past=10, is_causal=1, softcap=2.0), marker="first of two passes"
    ),
    "attention-bool-mask-scores": Case(
        _attention(1, 2, 3, 30, 8, mask="bool", qk_mode=1), marker="first of two passes"
    ),
    "attention-float-mask-probs": Case(
        _attention(1, 2, 3, 30, 8, mask="float", qk_mode=3), marker="first of two passes"
    ),
    "topk-ties-axis0-smallest": Case(_topk(2000, 5, largest=0, axis=0, ties=True), marker="candidates"),
    "layer_norm-bias-unrolled": Case(
        _norm("LayerNormalization", (2, 20_000), {"axis": -1}, {"s": (20_000,), "b": (20_000,)}),
        rtol=1e-3,
        atol=1e-4,
        marker="points per iteration",
    ),  # fmt: skip
    "argmax-last-ties-unrolled": Case(
        one(
            "ArgMax",
            lambda: {"x": _ties(2, 20_000)},
            {"axis": 1, "keepdims": 0, "select_last_index": 1},
            opset=13,
        ),
        marker="points per iteration",
    ),
    "reduce_max-int-rows": Case(
        _reduce("ReduceMax", (5000, 100), [1], x=lambda: _ints((5000, 100)).astype(np.int32)),
        marker="one workgroup per row",
    ),
    "resize-antialias": Case(
        _resize((1, 2, 40, 40), [1, 2, 3, 3], {"mode": "linear", "antialias": 1}),
        ref=reference_run,
        marker="One workgroup per point",
    ),  # fmt: skip
    "resize-cubic-crop-extrapolated": Case(
        _resize(
            (1, 1, 40, 40),
            [1, 1, 3, 4],
            {
                "mode": "cubic",
                "antialias": 1,
                "extrapolation_value": -3.0,
                "coordinate_transformation_mode": "tf_crop_and_resize",
            },
            roi=[0, 0, -0.3, 0.1, 1, 1, 0.8, 1.2],
        ),
        ref=reference_run,
        marker="One workgroup per point",
    ),  # fmt: skip
    "roi_align-avg": Case(_roi_small("avg"), marker="One workgroup per point"),
    "roi_align-max": Case(_roi_small("max"), marker="One workgroup per point"),
    "dft-complex-truncated": Case(
        _dft_small(), ref=reference_run, atol=1e-4, marker="One workgroup per point"
    ),
    "dft-inverse": Case(
        _dft_small(inverse=1), ref=reference_run, atol=1e-4, marker="One workgroup per point"
    ),
    "dft-irfft": Case(
        _dft_small(inverse=1, onesided=1), ref=reference_run, atol=1e-4, marker="One workgroup per point"
    ),
    "dft-onesided-padded": Case(
        _dft_small(onesided=1), ref=reference_run, atol=1e-4, marker="One workgroup per point"
    ),
    "col2im-pads-strides": Case(_col2im, ref=reference_run, marker="One workgroup per point"),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_split_paths_at_small_shapes(name, device, monkeypatch, tmp_path):
    import onnx2wgsl
    from onnx2wgsl.compiler import compile_model, lowering

    monkeypatch.setattr(lowering, "LOOP_BUDGET", lowering.LOOP_SLACK + SMALL_BUDGET)
    case = SMALL[name]
    model, feeds = case.build()
    compile_model(model, tmp_path, verify_ir=True)
    shaders = [f.read_text() for f in (tmp_path / "shaders").iterdir()]
    assert any(case.marker in text for text in shaders), f"no shader takes the split path ({case.marker!r})"
    with onnx2wgsl.load(tmp_path, device=device) as sess:
        got = sess.run(None, feeds)
    assert_close(got, case.ref(model, feeds), case.rtol, case.atol)

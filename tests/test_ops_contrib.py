"""onnxruntime's contrib ops (com.microsoft, and SimplifiedLayerNormalization of its default
domain), legalized into IR ops, compiled and run on the GPU against onnxruntime's CPU kernels."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, gpu_run, node_model, ort_run, rand

from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import UnsupportedError

pytestmark = pytest.mark.gpu

MS = "com.microsoft"


def _check(op, feeds, attrs=None, *, inits=None, device, domain=MS, rtol=1e-4, atol=1e-5, **kw):
    model = node_model(op, feeds, attrs or {}, initializers=inits, domain=domain, **kw)
    want = ort_run(model, feeds)
    got = gpu_run(model, feeds, device)
    assert_close(got, want, rtol, atol)
    return got, want


# -- activations ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 16), (5, 7)])
@pytest.mark.parametrize(
    "op, n_in, attrs",
    [
        ("Gelu", 1, {}),
        ("BiasGelu", 2, {}),
        ("FastGelu", 1, {}),
        ("FastGelu", 2, {}),
        ("QuickGelu", 1, {}),
        ("QuickGelu", 1, {"alpha": 1.1}),
        ("QuickGelu", 1, {"alpha": 1.0}),
    ],
)
def test_gelu_family(op, n_in, attrs, shape, device):
    feeds = {"x": rand(*shape, low=-3, high=3)}
    if n_in == 2:
        feeds["bias"] = rand(shape[-1], seed=1, low=-1, high=1)
    _check(op, feeds, attrs, device=device)


@pytest.mark.parametrize("bias", ["input", "const"])
def test_bias_gelu_bias_is_not_dropped(bias, device):
    x = rand(2, 4, 8, low=-2, high=2)
    b = np.linspace(-1.5, 1.5, 8, dtype=np.float32)
    if bias == "const":
        got, want = _check("BiasGelu", {"x": x}, inits={"b": b}, device=device)
    else:
        got, want = _check("BiasGelu", {"x": x, "b": b}, device=device)
    unbiased = ort_run(node_model("Gelu", {"x": x}, domain=MS), {"x": x})[0]
    assert not np.allclose(got[0], unbiased, atol=1e-2)


def test_bias_add(device):
    # onnxruntime implements BiasAdd on CUDA only: the spec's X + bias + skip in numpy
    feeds = {"x": rand(2, 6, 8), "bias": rand(8, seed=1), "skip": rand(2, 6, 8, seed=2)}
    got = gpu_run(node_model("BiasAdd", feeds, domain=MS), feeds, device)
    assert_close(got, [feeds["x"] + feeds["bias"] + feeds["skip"]])


# -- normalizations ---------------------------------------------------------------------------
def _norm_params(hidden, seed=3):
    rng = np.random.default_rng(seed)
    return {
        "gamma": rng.uniform(0.5, 1.5, hidden).astype(np.float32),
        "beta": rng.normal(0, 1, hidden).astype(np.float32),
        "bias": rng.normal(0, 1, hidden).astype(np.float32),
    }


@pytest.mark.parametrize(
    "shape, skip_shape",
    [((2, 3, 16), (2, 3, 16)), ((2, 3, 16), (1, 3, 16)), ((2, 3, 16), (3, 16)), ((5, 32), (5, 32))],
)
@pytest.mark.parametrize("params", ["gamma", "gamma,beta", "gamma,bias", "gamma,beta,bias"])
@pytest.mark.parametrize(
    "outputs", [("y",), ("y", "mean", "inv", "sum"), ("y", "", "", "sum"), ("y", "", "inv")]
)
def test_skip_layer_norm(shape, skip_shape, params, outputs, device):
    feeds = {"x": rand(*shape, low=-2, high=2), "skip": rand(*skip_shape, seed=1)}
    p = _norm_params(shape[-1])
    wanted = params.split(",")
    order = ["x", "skip"] + [n if n in wanted else "" for n in ("gamma", "beta", "bias")]
    while not order[-1]:
        order.pop()
    inits = {n: p[n] for n in wanted}
    _check(
        "SkipLayerNormalization", feeds, {"epsilon": 1e-5}, inits=inits, input_order=order, outputs=outputs,
        device=device,
    )  # fmt: skip


@pytest.mark.parametrize(
    "shape, skip_shape", [((2, 3, 16), (2, 3, 16)), ((4, 24), (4, 24)), ((2, 3, 8), (3, 8))]
)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("outputs", [("y",), ("y", "", "inv", "sum"), ("y", "", "", "sum")])
def test_skip_simplified_layer_norm(shape, skip_shape, bias, outputs, device):
    feeds = {"x": rand(*shape, low=-2, high=2), "skip": rand(*skip_shape, seed=1)}
    p = _norm_params(shape[-1])
    inits = {"gamma": p["gamma"], **({"bias": p["bias"]} if bias else {})}
    _check(
        "SkipSimplifiedLayerNormalization", feeds, {"epsilon": 1e-6}, inits=inits,
        input_order=["x", "skip", *inits], outputs=outputs, device=device,
    )  # fmt: skip


@pytest.mark.parametrize(
    "shape, axis, scale_shape",
    [((2, 3, 16), -1, (16,)), ((2, 3, 16), 1, (3, 16)), ((4, 32), -1, (32,)), ((2, 3, 4, 8), 2, (1, 8))],
)
@pytest.mark.parametrize("outputs", [("y",), ("y", "inv")])
@pytest.mark.parametrize("scale", ["const", "input"])
def test_simplified_layer_norm(shape, axis, scale_shape, outputs, scale, device):
    x = rand(*shape, low=-2, high=2)
    s = np.random.default_rng(4).uniform(0.5, 1.5, scale_shape).astype(np.float32)
    attrs = {"axis": axis, "epsilon": 1e-6}
    if scale == "const":
        _check(
            "SimplifiedLayerNormalization",
            {"x": x},
            attrs,
            inits={"s": s},
            outputs=outputs,
            domain="",
            device=device,
        )
    else:
        feeds = {"x": x, "s": s}
        _check("SimplifiedLayerNormalization", feeds, attrs, outputs=outputs, domain="", device=device)


def test_rms_norm_becomes_one_norm_kernel():
    x = rand(2, 3, 16)
    model = node_model(
        "SkipSimplifiedLayerNormalization", {"x": x, "skip": x}, {}, initializers={"g": _norm_params(16)["gamma"]},
        domain=MS,
    )  # fmt: skip
    ops = [op.attrs.get("op") for op in compile_model(model).graph.ops if op.kind == "kernel"]
    assert "RMSNormalization" in ops, ops


# -- errors -------------------------------------------------------------------------------------
def test_unsupported_combinations_are_one_line_errors():
    x = rand(2, 3, 16)
    model = node_model(
        "SkipSimplifiedLayerNormalization", {"x": x, "skip": x}, {}, initializers={"g": _norm_params(16)["gamma"]},
        outputs=("y", "mean"), domain=MS,
    )  # fmt: skip
    with pytest.raises(UnsupportedError) as e:
        compile_model(model)
    text = str(e.value)
    assert "\n" not in text.strip() and "SkipSimplifiedLayerNormalization" in text and "mean output" in text
    model = node_model("SimplifiedLayerNormalization", {"x": x, "s": x[0, 0]}, {"stash_type": 11}, domain="")
    with pytest.raises(UnsupportedError, match="stash_type 11"):
        compile_model(model)


def test_unknown_contrib_op_is_still_refused():
    model = node_model("NoSuchContribOp", {"x": rand(2, 3)}, domain=MS)
    with pytest.raises(UnsupportedError, match="com.microsoft.NoSuchContribOp"):
        compile_model(model)

"""fuse-patterns on the GPU: LayerNorm, RMSNorm, Softmax and LogSoftmax written out in primitive
ops, the way exporters emit them, compile to the one kernel of the op they spell and give
onnxruntime's results (which computes them op by op)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import check_against_ort, rand
from onnx import TensorProto, helper, numpy_helper

from onnx2wgsl.compiler import compile_model

pytestmark = pytest.mark.gpu

# the tolerances of the normalization tests in test_ops_reduce.py
NORM_TOL = {"rtol": 1e-3, "atol": 1e-4}


class _Graph:
    """Nodes and initializers of a decomposed pattern, with Reduce* axes given the way the
    opset wants them: an attribute before the op took them as an input, an input after."""

    def __init__(self, opset: int):
        self.opset, self.nodes, self.inits = opset, [], {}

    def const(self, name: str, value) -> str:
        self.inits[name] = np.asarray(value, np.float32)
        return name

    def op(self, kind: str, ins: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(kind, ins, [out], **attrs))
        return out

    def reduce(self, kind: str, x: str, out: str, axes: list[int], keepdims: int = 1) -> str:
        if self.opset >= (13 if kind == "ReduceSum" else 18):
            self.inits[f"{out}.axes"] = np.array(axes, np.int64)
            return self.op(kind, [x, f"{out}.axes"], out, keepdims=keepdims)
        return self.op(kind, [x], out, axes=axes, keepdims=keepdims)

    def model(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes,
            "pattern",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs.items()],
            [helper.make_value_info(o, onnx.TypeProto()) for o in outputs],
            [numpy_helper.from_array(a, n) for n, a in self.inits.items()],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m)


def _square(b: _Graph, v: str, how: str) -> str:
    if how == "pow":
        return b.op("Pow", [v, b.const("two", 2.0)], f"{v}.sq")
    return b.op("Mul", [v, v], f"{v}.sq")


def _divide_by_rms(b: _Graph, num: str, ms: str, how: str, eps: float) -> str:
    """num / sqrt(ms + eps), spelled ``how``."""
    ve = b.op("Add", [ms, b.const("eps", eps)], "ve")
    if how == "pow":  # num * (ms + eps) ** -0.5
        return b.op("Mul", [num, b.op("Pow", [ve, b.const("minus_half", -0.5)], "inv")], "n")
    s = b.op("Sqrt", [ve], "std")
    if how == "div":
        return b.op("Div", [num, s], "n")
    inv = b.op("Reciprocal", [s], "inv") if how == "recip" else b.op("Div", [b.const("one", 1.0), s], "inv")
    return b.op("Mul", [inv, num], "n")


def _affine(b: _Graph, n: str, norm: tuple, scale: bool, shift: bool) -> str:
    if scale:
        n = b.op("Mul", [n, b.const("gamma", rand(*norm, seed=1, low=0.5, high=1.5))], "scaled")
    if shift:
        n = b.op("Add", [n, b.const("beta", rand(*norm, seed=2))], "shifted")
    return n


def _kernels(model, level=2) -> list[str]:
    return [op.attrs["op"] for op in compile_model(model, opt_level=level).graph.kernels()]


# -- LayerNorm ----------------------------------------------------------------------------------
def layer_norm_model(shape, axes, square="pow", divide="div", affine="both", opset=18, eps=1e-5):
    b = _Graph(opset)
    mean = b.reduce("ReduceMean", "x", "mean", axes)
    d = b.op("Sub", ["x", mean], "d")
    var = b.reduce("ReduceMean", _square(b, d, square), "var", axes)
    n = _divide_by_rms(b, d, var, divide, eps)
    norm = shape[min(a % len(shape) for a in axes) :]
    y = _affine(b, n, norm, affine in ("both", "scale"), affine in ("both", "shift"))
    return b, y


@pytest.mark.parametrize(
    "shape,axes,square,divide,affine,opset",
    [
        ((2, 3, 8), [-1], "pow", "div", "both", 13),
        ((2, 3, 8), [-1], "pow", "div", "both", 18),
        ((4, 16), [1], "mul", "recip", "scale", 18),
        ((2, 3, 4, 5), [-2, -1], "pow", "div", "none", 13),
        ((2, 3, 4, 5), [2, 3], "mul", "recip", "shift", 18),
        ((1, 7, 33), [-1], "pow", "rsqrt", "both", 18),
        ((3, 1000), [-1], "pow", "div", "both", 17),
        ((2, 6), [0, 1], "mul", "pow", "both", 13),
    ],
    ids=str,
)
def test_layer_norm(shape, axes, square, divide, affine, opset, device):
    b, y = layer_norm_model(shape, axes, square, divide, affine, opset)
    model = b.model({"x": np.zeros(shape, np.float32)}, [y])
    assert _kernels(model) == ["LayerNormalization"]
    assert len(_kernels(model, 0)) >= 7
    x = rand(*shape, low=-3, high=3) + 1.5
    check_against_ort(model, {"x": x}, device, **NORM_TOL)


def test_layer_norm_scale_with_leading_ones(device):
    # gamma / beta of shape [1, 1, C] (Keras exports them at the input's rank)
    b = _Graph(18)
    mean = b.reduce("ReduceMean", "x", "mean", [-1])
    d = b.op("Sub", ["x", mean], "d")
    n = _divide_by_rms(b, d, b.reduce("ReduceMean", _square(b, d, "pow"), "var", [-1]), "div", 1e-3)
    g = b.op("Mul", [b.const("gamma", rand(1, 1, 12, seed=1)), n], "scaled")
    y = b.op("Add", [b.const("beta", rand(1, 12, seed=2)), g], "y")
    model = b.model({"x": np.zeros((2, 5, 12), np.float32)}, [y])
    assert _kernels(model) == ["LayerNormalization"]
    check_against_ort(model, {"x": rand(2, 5, 12, low=-2, high=2)}, device, **NORM_TOL)


def test_layer_norm_with_a_shared_intermediate_is_not_fused(device):
    # the variance is a second output: the LayerNorm cannot swallow it
    shape = (3, 10)
    b, y = layer_norm_model(shape, [-1], affine="none")
    model = b.model({"x": np.zeros(shape, np.float32)}, [y, "var"])
    assert "LayerNormalization" not in _kernels(model)
    check_against_ort(model, {"x": rand(*shape, low=-3, high=3)}, device, **NORM_TOL)


def test_layer_norm_whose_mean_is_shared_becomes_rms_norm_of_the_deviation(device):
    shape = (3, 10)
    b, y = layer_norm_model(shape, [-1], affine="both")
    model = b.model({"x": np.zeros(shape, np.float32)}, [y, "mean"])
    assert "RMSNormalization" in _kernels(model) and "LayerNormalization" not in _kernels(model)
    check_against_ort(model, {"x": rand(*shape, low=-3, high=3) + 1.0}, device, **NORM_TOL)


def keras_layer_norm_model(shape, variance, inverse, gamma, beta, opset=18, eps=1e-3):
    """Keras LayerNormalization as tf2onnx writes it: s = gamma / sqrt(var + eps), then
    x * s + (beta - mean * s), over the last dim."""
    b = _Graph(opset)
    mean = b.reduce("ReduceMean", "x", "mean", [-1])
    if variance == "deviation":
        d = b.op("Sub", ["x", mean], "d")
        var = b.reduce("ReduceMean", b.op("Mul", [d, d], "d2"), "var", [-1])
    else:  # E[x^2] - E[x]^2
        ex2 = b.reduce("ReduceMean", b.op("Pow", ["x", b.const("two", 2.0)], "x2"), "ex2", [-1])
        var = b.op("Sub", [ex2, b.op("Mul", [mean, mean], "m2")], "var")
    ve = b.op("Add", [var, b.const("eps", eps)], "ve")
    if inverse == "pow":
        s = b.op("Pow", [ve, b.const("minus_half", -0.5)], "inv")
    elif inverse == "recip":
        s = b.op("Reciprocal", [b.op("Sqrt", [ve], "std")], "inv")
    else:
        s = b.op("Div", [b.const("one", 1.0), b.op("Sqrt", [ve], "std")], "inv")
    if gamma:
        s = b.op("Mul", [s, b.const("gamma", rand(shape[-1], seed=1, low=0.5, high=1.5))], "s")
    xs = b.op("Mul", ["x", s], "xs")
    ms = b.op("Mul", [mean, s], "ms")
    if beta:
        y = b.op("Add", [xs, b.op("Sub", [b.const("beta", rand(shape[-1], seed=2)), ms], "sh")], "y")
    else:
        y = b.op("Sub", [xs, ms], "y")
    return b, y


@pytest.mark.parametrize(
    "shape,variance,inverse,gamma,beta",
    [
        ((2, 5, 12), "deviation", "recip", True, True),
        ((4, 16), "deviation", "pow", False, True),
        ((3, 64), "mean-of-squares", "div", True, True),
        ((2, 3, 10), "mean-of-squares", "pow", False, False),
        ((1, 7, 768), "deviation", "recip", True, False),
    ],
    ids=str,
)
def test_keras_layer_norm(shape, variance, inverse, gamma, beta, device):
    b, y = keras_layer_norm_model(shape, variance, inverse, gamma, beta)
    model = b.model({"x": np.zeros(shape, np.float32)}, [y])
    assert _kernels(model) == ["LayerNormalization"]
    x = rand(*shape, low=-2, high=2) + 0.5
    check_against_ort(model, {"x": x}, device, **NORM_TOL)


def test_keras_layer_norm_with_its_scale_read_elsewhere_is_not_fused(device):
    shape = (3, 8)
    b, y = keras_layer_norm_model(shape, "deviation", "recip", True, True)
    model = b.model({"x": np.zeros(shape, np.float32)}, [y, "s"])
    assert "LayerNormalization" not in _kernels(model)
    check_against_ort(model, {"x": rand(*shape, low=-2, high=2)}, device, **NORM_TOL)


# -- RMSNorm ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,axes,square,divide,scale,opset",
    [
        ((2, 3, 8), [-1], "pow", "recip", True, 13),
        ((2, 3, 8), [-1], "pow", "recip", True, 18),
        ((4, 64), [1], "mul", "div", False, 18),
        ((2, 3, 4, 5), [-2, -1], "pow", "rsqrt", True, 13),
        ((2, 600), [-1], "pow", "pow", True, 18),
        ((5, 3), [0, 1], "mul", "div", False, 13),
    ],
    ids=str,
)
def test_rms_norm(shape, axes, square, divide, scale, opset, device):
    b = _Graph(opset)
    ms = b.reduce("ReduceMean", _square(b, "x", square), "ms", axes)
    n = _divide_by_rms(b, "x", ms, divide, 1e-6)
    y = _affine(b, n, shape[min(a % len(shape) for a in axes) :], scale, False)
    model = b.model({"x": np.zeros(shape, np.float32)}, [y])
    assert _kernels(model) == ["RMSNormalization"]
    check_against_ort(model, {"x": rand(*shape, low=-3, high=3)}, device, **NORM_TOL)


def test_rms_norm_input_read_elsewhere(device):
    # a residual Add reads x too: x is the pattern's input, so it may have other readers
    b = _Graph(18)
    ms = b.reduce("ReduceMean", _square(b, "x", "pow"), "ms", [-1])
    n = _divide_by_rms(b, "x", ms, "recip", 1e-6)
    y = b.op("Add", ["x", _affine(b, n, (16,), True, False)], "y")
    model = b.model({"x": np.zeros((3, 16), np.float32)}, [y])
    assert sorted(_kernels(model)) == ["Add", "RMSNormalization"]
    check_against_ort(model, {"x": rand(3, 16, low=-3, high=3)}, device, **NORM_TOL)


# -- Softmax / LogSoftmax -----------------------------------------------------------------------
def softmax_model(shape, axes, stable, divide="div", opset=18, log=False):
    b = _Graph(opset)
    x = "x"
    if stable:
        x = b.op("Sub", ["x", b.reduce("ReduceMax", "x", "max", axes)], "centered")
    e = b.op("Exp", [x], "e")
    s = b.reduce("ReduceSum", e, "sum", axes)
    if log:
        y = b.op("Sub", [x, b.op("Log", [s], "log_sum")], "y")
    elif divide == "div":
        y = b.op("Div", [e, s], "y")
    else:
        y = b.op("Mul", [e, b.op("Reciprocal", [s], "inv")], "y")
    return b.model({"x": np.zeros(shape, np.float32)}, [y])


@pytest.mark.parametrize(
    "shape,axes,stable,divide,opset",
    [
        ((4, 10), [-1], True, "div", 13),
        ((4, 10), [-1], True, "div", 18),
        ((4, 10), [1], False, "recip", 11),
        ((2, 3, 7), [1], True, "div", 18),
        ((2, 5, 4, 3), [-2, -1], True, "recip", 13),
        ((2, 5, 4, 3), [1, 2], False, "div", 18),
        ((3, 1000), [-1], True, "div", 18),
    ],
    ids=str,
)
def test_softmax(shape, axes, stable, divide, opset, device):
    model = softmax_model(shape, axes, stable, divide, opset)
    assert _kernels(model) == ["Softmax"]
    check_against_ort(model, {"x": rand(*shape, low=-5, high=5)}, device)


@pytest.mark.parametrize(
    "shape,axes,stable,opset",
    [
        ((4, 10), [-1], True, 13),
        ((4, 10), [1], False, 18),
        ((2, 3, 7), [1], True, 18),
        ((2, 6, 5), [1, 2], True, 18),
    ],
    ids=str,
)
def test_log_softmax(shape, axes, stable, opset, device):
    model = softmax_model(shape, axes, stable, opset=opset, log=True)
    assert _kernels(model) == ["LogSoftmax"]
    check_against_ort(model, {"x": rand(*shape, low=-5, high=5)}, device)


def test_softmax_with_shared_exponentials_is_not_fused(device):
    b = _Graph(18)
    e = b.op("Exp", ["x"], "e")
    y = b.op("Div", [e, b.reduce("ReduceSum", e, "sum", [-1])], "y")
    model = b.model({"x": np.zeros((3, 6), np.float32)}, [y, e])
    assert "Softmax" not in _kernels(model)
    check_against_ort(model, {"x": rand(3, 6, low=-3, high=3)}, device)


def test_layer_norm_then_softmax(device):
    # two patterns in a row: each becomes its kernel
    shape = (2, 4, 12)
    b, n = layer_norm_model(shape, [-1], affine="both")
    mx = b.reduce("ReduceMax", n, "max", [-1])
    e = b.op("Exp", [b.op("Sub", [n, mx], "centered")], "e")
    y = b.op("Div", [e, b.reduce("ReduceSum", e, "sum", [-1])], "y")
    model = b.model({"x": np.zeros(shape, np.float32)}, [y])
    assert _kernels(model) == ["LayerNormalization", "Softmax"]
    check_against_ort(model, {"x": rand(*shape, low=-3, high=3)}, device, **NORM_TOL)

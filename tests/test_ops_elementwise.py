"""Elementwise ops over every dtype they take, Cast/CastLike, zero-sized tensors and frozen
inputs, compiled and run on the GPU against onnxruntime (CPU), or onnx.reference where
onnxruntime lacks the op or the dtype."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import ml_dtypes
import numpy as np
import onnx
import pytest
from helpers import node_model, ort_run, reference_run
from onnx import helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import CompileError, ConstantRequiredError, UnsupportedError

pytestmark = pytest.mark.gpu

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
SIGNED_INTS = ["int8", "int16", "int32", "int64"]
FLOATS = ["float32", "float16", "float64"]


def gpu(m, feeds, device, **kw):
    with tempfile.TemporaryDirectory() as out:
        compile_model(m, out, verify_ir=True, **kw)
        with onnx2wgsl.load(out, device=device) as sess:
            return sess.run(None, feeds)


def expected(m, feeds, ref):
    return ort_run(m, feeds) if ref == "ort" else reference_run(m, feeds)


def check(m, feeds, device, ref="ort", rtol=1e-5, atol=1e-6):
    got, want = gpu(m, feeds, device), expected(m, feeds, ref)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert g.shape == w.shape, f"output {i}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"output {i}: dtype {g.dtype} != {w.dtype}"
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(
                g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol, err_msg=f"output {i}"
            )
    return got


def rand(shape, dtype="float32", low=-3.0, high=3.0, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(int(low), int(info.min)), min(int(high), int(info.max))
        return rng.integers(lo, hi + 1, size=shape).astype(dt)
    return rng.uniform(low, high, shape).astype(dt)


SHAPES = [(7,), (3, 5, 17), (2, 3, 4, 5)]

# -- float unary math and activations ------------------------------------------------------------
UNARY = {
    # op: (low, high, attrs, opset, reference)
    "Sin": (-6, 6, {}, 17, "ort"),
    "Cos": (-6, 6, {}, 17, "ort"),
    "Tan": (-1.4, 1.4, {}, 17, "ort"),
    "Asin": (-0.99, 0.99, {}, 17, "ort"),
    "Acos": (-0.99, 0.99, {}, 17, "ort"),
    "Atan": (-8, 8, {}, 17, "ort"),
    "Sinh": (-5, 5, {}, 17, "ort"),
    "Cosh": (-5, 5, {}, 17, "ort"),
    "Asinh": (-8, 8, {}, 17, "ort"),
    "Acosh": (1.01, 8, {}, 17, "ort"),
    "Atanh": (-0.95, 0.95, {}, 17, "ort"),
    "Floor": (-8, 8, {}, 17, "ort"),
    "Ceil": (-8, 8, {}, 17, "ort"),
    "Reciprocal": (0.5, 4, {}, 17, "ort"),
    "Softplus": (-30, 30, {}, 17, "ort"),
    "Softsign": (-6, 6, {}, 17, "ort"),
    "HardSwish": (-5, 5, {}, 17, "ort"),
    "Mish": (-12, 12, {}, 18, "ort"),
    "Selu": (-4, 4, {"alpha": 1.5, "gamma": 2.0}, 17, "ort"),
    "Elu": (-4, 4, {"alpha": 0.7}, 17, "ort"),
    "Celu": (-4, 4, {"alpha": 1.3}, 17, "ort"),
    "HardSigmoid": (-6, 6, {"alpha": 0.3, "beta": 0.4}, 17, "ort"),
    "ThresholdedRelu": (-3, 3, {"alpha": 0.5}, 17, "ort"),
    "Shrink": (-3, 3, {"lambd": 0.8, "bias": 0.3}, 17, "ort"),
    "Gelu": (-5, 5, {}, 20, "ort"),
    "Swish": (-8, 8, {"alpha": 0.7}, 24, "onnx"),
    "Sigmoid": (-20, 20, {}, 17, "ort"),
    "Tanh": (-12, 12, {}, 17, "ort"),
    "Exp": (-10, 10, {}, 17, "ort"),
    "Log": (0.001, 100, {}, 17, "ort"),
    "Sqrt": (0, 100, {}, 17, "ort"),
    "Erf": (-4, 4, {}, 17, "ort"),
    "Abs": (-4, 4, {}, 17, "ort"),
    "Neg": (-4, 4, {}, 17, "ort"),
    "Relu": (-4, 4, {}, 17, "ort"),
    "Sign": (-4, 4, {}, 17, "ort"),
    "LeakyRelu": (-4, 4, {"alpha": 0.1}, 17, "ort"),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unary_float(op, shape, device):
    low, high, attrs, opset, ref = UNARY[op]
    x = rand(shape, low=low, high=high, seed=len(shape))
    check(node_model(op, {"x": x}, attrs, opset=opset), {"x": x}, device, ref, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    "op", ["Tanh", "Sinh", "Asinh", "Atanh", "Softplus", "Mish", "Elu", "Selu", "Celu", "Gelu", "Sin", "Tan"]
)
def test_small_arguments_keep_relative_precision(op, device):
    """Near 0, formulas like (e^x - e^-x) / 2 cancel; the results must stay relatively exact."""
    x = np.array([1e-7, -1e-7, 3e-5, -3e-5, 1e-3, -1e-3, 0.02, -0.02, -10.0, -20.0], np.float32)
    if op == "Atanh":
        x = x[np.abs(x) < 1]
    opset = {"Gelu": 20, "Mish": 18}.get(op, 17)
    (got,) = gpu(node_model(op, {"x": x}, opset=opset), {"x": x}, device)
    # the exact value: onnx's reference in float64 (onnxruntime's float32 exp(x) - 1 cancels too)
    x64 = x.astype(np.float64)
    (want,) = reference_run(node_model(op, {"x": x64}, opset=opset), {"x": x64})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate, device):
    x = rand((4, 33), low=-6, high=6)
    check(
        node_model("Gelu", {"x": x}, {"approximate": approximate}, opset=20),
        {"x": x},
        device,
        rtol=1e-5,
        atol=1e-6,
    )


def test_round_is_half_to_even(device):
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 2.4, 2.6, -2.6, 0.0, 1e7 + 0.5], np.float32)
    check(node_model("Round", {"x": x}), {"x": x}, device, rtol=0, atol=0)


def _specials(dtype="float32"):
    with np.errstate(over="ignore"):  # 3e38 is inf in float16, on purpose
        return np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0, 3e38, -1e-40]).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_isnan(dtype, device):
    x = _specials(dtype)
    check(node_model("IsNaN", {"x": x}, opset=20), {"x": x}, device)


@pytest.mark.parametrize("neg,pos", [(1, 1), (0, 1), (1, 0), (0, 0)])
def test_isinf(neg, pos, device):
    x = _specials()
    m = node_model("IsInf", {"x": x}, {"detect_negative": neg, "detect_positive": pos}, opset=20)
    check(m, {"x": x}, device)


def test_nan_passes_through_sign_and_minmax(device):
    a = _specials()
    b = np.array([1.0, np.nan, 0.0, 2.0, np.nan, 1.0, np.inf, -np.inf, 1.0, 2.0], np.float32)
    for op in ("Max", "Min"):
        got = gpu(node_model(op, {"a": a, "b": b}), {"a": a, "b": b}, device)[0]
        np.testing.assert_array_equal(got, (np.maximum if op == "Max" else np.minimum)(a, b))
    got = gpu(node_model("Sign", {"a": a}), {"a": a}, device)[0]
    np.testing.assert_array_equal(got, np.sign(a))


@pytest.mark.parametrize(
    "op, inits",
    [("Relu", {}), ("HardSigmoid", {}), ("Celu", {}),
     ("Clip", {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)})],
)  # fmt: skip
def test_nan_passes_through_clamping_activations(op, inits, device):
    """WGSL's max, min and clamp may drop a NaN; onnxruntime keeps it (found by fuzzing)."""
    x = _specials()
    m = node_model(op, {"x": x}, initializers=inits)
    got = gpu(m, {"x": x}, device)[0]
    want = ort_run(m, {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    check(m, {"x": x}, device)


@pytest.mark.parametrize("slope_shape", [(1,), (4,), (3, 1, 1), (2, 3, 1, 4), ()], ids=str)
def test_prelu_slope_broadcast(slope_shape, device):
    x = rand((2, 3, 5, 4))
    s = rand(slope_shape, low=0.05, high=0.5, seed=3)
    check(node_model("PRelu", {"x": x}, initializers={"s": s}), {"x": x}, device)
    check(node_model("PRelu", {"x": x, "s": s}), {"x": x, "s": s}, device)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32"])
def test_prelu_int(dtype, device):
    x = rand((3, 6), dtype, -50, 50)
    s = rand((6,), dtype, 0, 4, seed=1)
    check(node_model("PRelu", {"x": x, "s": s}, opset=16), {"x": x, "s": s}, device)


# -- arithmetic on every dtype ---------------------------------------------------------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
@pytest.mark.parametrize("dtype", INTS + FLOATS)
def test_arith_dtypes(op, dtype, device):
    """Results wrap like onnxruntime's (narrow ints wrap in their own width)."""
    lo, hi = (-200, 200) if dtype[0] != "u" else (0, 300)
    a, b = rand((3, 4), dtype, lo, hi, seed=1), rand((4,), dtype, lo, hi, seed=2)
    if dtype == "uint64" and op == "Sub":  # uint64 computes in 32 bits: keep results in range
        a = a + np.uint64(300)
    check(
        node_model(op, {"a": a, "b": b}), {"a": a, "b": b}, device, rtol=2e-3 if dtype == "float16" else 1e-5
    )


@pytest.mark.parametrize("dtype", INTS)
def test_int_div_truncates(dtype, device):
    signed = dtype[0] == "i"
    a = rand((5, 6), dtype, -100 if signed else 0, 100, seed=1)
    b = rand((5, 6), dtype, -9 if signed else 1, 9, seed=2)
    b[b == 0] = 3
    check(node_model("Div", {"a": a, "b": b}), {"a": a, "b": b}, device)


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", INTS + ["float32", "float16"])
def test_mod(fmod, dtype, device):
    if dtype.startswith("float") and not fmod:
        a, b = rand((4, 5), dtype, -10, 10, seed=1), rand((4, 5), dtype, -4, 4, seed=2)
    else:
        signed = dtype[0] != "u"
        a = rand((4, 5), dtype, -50 if signed else 0, 50, seed=1)
        b = rand((4, 5), dtype, -7 if signed else 1, 7, seed=2)
    b[b == 0] = 3
    ref = "ort" if fmod or not dtype.startswith("float") else "onnx"
    check(
        node_model("Mod", {"a": a, "b": b}, {"fmod": fmod}),
        {"a": a, "b": b},
        device,
        ref,
        rtol=1e-3,
        atol=1e-5,
    )


def test_mod_float_edge_cases(device):
    x = np.array(
        [0.0, -0.0, 0.0, -0.0, -3.0, 3.0, -1.0, 1.0, np.inf, -np.inf, 1.0, 1.0, np.nan, 1.0], np.float32
    )
    y = np.array(
        [-2.0, 2.0, 2.0, -2.0, np.inf, np.inf, -np.inf, -np.inf, 2.0, 2.0, 0.0, -0.0, 2.0, np.nan], np.float32
    )
    got = gpu(node_model("Mod", {"x": x, "y": y}, {"fmod": 0}), {"x": x, "y": y}, device)[0]
    with np.errstate(all="ignore"):
        want = np.mod(x, y)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got[:4]), np.signbit(want[:4]))
    got = gpu(node_model("Mod", {"x": x, "y": y}, {"fmod": 1}), {"x": x, "y": y}, device)[0]
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(got, np.fmod(x, y))


@pytest.mark.parametrize(
    "op,dtype",
    [
        (op, dt)
        for op in ("Abs", "Neg", "Sign", "Relu")
        for dt in INTS
        if dt in SIGNED_INTS or op in ("Abs", "Sign")
    ],
)  # Neg and Relu are not defined for unsigned types
def test_int_unary(op, dtype, device):
    x = rand((6, 7), dtype, -120, 120)
    ref = "ort" if op != "Relu" or dtype in ("int8", "int32") else "onnx"
    check(node_model(op, {"x": x}, opset=14), {"x": x}, device, ref)


def test_int32_overflow_wraps(device):
    a = np.array([2**31 - 1, -(2**31), 2**30, 123456789], np.int32)
    b = np.array([1, -1, 4, 1000], np.int32)
    for op in ("Add", "Sub", "Mul"):
        check(node_model(op, {"a": a, "b": b}), {"a": a, "b": b}, device)
    check(node_model("Neg", {"a": a}), {"a": a}, device)
    check(node_model("Abs", {"a": a}), {"a": a}, device)


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "uint32", "uint64"])
def test_variadic_int(op, dtype, device):
    feeds = {f"x{i}": rand((2, 3, 4) if i != 1 else (3, 1), dtype, 0, 60, seed=i) for i in range(3)}
    check(node_model(op, feeds), feeds, device)


@pytest.mark.parametrize(
    "base,expo", [("float32", "int32"), ("float32", "int64"), ("int32", "int32"), ("int64", "int64"),
                  ("int32", "float32"), ("int64", "float32"), ("float32", "float32")],
)  # fmt: skip
def test_pow_types(base, expo, device):
    a = rand((4, 6), base, -5 if base.startswith("float") else -6, 6, seed=1)
    if base.startswith("int") and expo.startswith("float"):
        b = rand((4, 6), expo, 0, 4, seed=2).round()
    elif expo.startswith("float"):
        b = rand((4, 6), expo, -3, 3, seed=2).round()
    else:
        b = rand((4, 6), expo, 0, 5, seed=2)
    check(node_model("Pow", {"a": a, "b": b}, opset=15), {"a": a, "b": b}, device, rtol=1e-5)


def test_pow_integral_results_are_exact(device):
    a = np.array([3, 5, 7, -3, 2, 10], np.int32)
    b = np.array([3.0, 3.0, 2.0, 3.0, 10.0, 5.0], np.float32)
    check(node_model("Pow", {"a": a, "b": b}, opset=15), {"a": a, "b": b}, device)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64", "uint64", "float16"])
def test_clip_dtypes(dtype, device):
    x = rand((5, 8), dtype, 0 if dtype[0] == "u" else -100, 100)
    lo, hi = np.array(3 if dtype[0] == "u" else -20, dtype), np.array(60, dtype)
    check(node_model("Clip", {"x": x}, initializers={"lo": lo, "hi": hi}, opset=13), {"x": x}, device)
    check(
        node_model("Clip", {"x": x}, initializers={"hi": hi}, input_order=["x", "", "hi"], opset=13),
        {"x": x},
        device,
    )
    check(
        node_model("Clip", {"x": x, "lo": lo}, input_order=["x", "lo"], opset=13), {"x": x, "lo": lo}, device
    )


def test_clip_runtime_max_only(device):
    x, hi = rand((3, 4)), np.array(0.5, np.float32)
    check(
        node_model("Clip", {"x": x, "hi": hi}, input_order=["x", "", "hi"], opset=13),
        {"x": x, "hi": hi},
        device,
    )


# -- comparisons, logic, bitwise ------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
@pytest.mark.parametrize(
    "dtype", ["float32", "float16", "int8", "int32", "int64", "uint8", "uint32", "uint64"]
)
def test_compare(op, dtype, device):
    a = rand((3, 4, 5), dtype, 0, 5, seed=1)
    b = rand((4, 1), dtype, 0, 5, seed=2)
    if dtype.startswith("float"):
        a, b = a.round(), b.round()  # ties, so Equal and the -OrEqual forms are exercised
    check(node_model(op, {"a": a, "b": b}, opset=16), {"a": a, "b": b}, device)


def test_equal_bool(device):
    a, b = rand((4, 5), "bool", seed=1), rand((5,), "bool", seed=2)
    check(node_model("Equal", {"a": a, "b": b}), {"a": a, "b": b}, device)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical(op, device):
    a, b = rand((2, 3, 4), "bool", seed=1), rand((3, 1), "bool", seed=2)
    check(node_model(op, {"a": a, "b": b}), {"a": a, "b": b}, device)


def test_not(device):
    a = rand((3, 7), "bool")
    check(node_model("Not", {"a": a}), {"a": a}, device)


@pytest.mark.parametrize(
    "op,dtype",
    [(op, dt) for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot") for dt in INTS
     if (op, dt) != ("BitwiseNot", "uint64")],  # ~x of a uint64 never fits the 32 bits it computes in
)  # fmt: skip
def test_bitwise(op, dtype, device):
    info = np.iinfo(
        np.dtype(dtype) if dtype not in ("int64", "uint64") else np.int32 if dtype == "int64" else np.uint32
    )
    a = rand((4, 6), dtype, info.min, info.max, seed=1)
    b = rand((6,), dtype, info.min, info.max, seed=2)
    feeds = {"a": a} if op == "BitwiseNot" else {"a": a, "b": b}
    check(node_model(op, feeds, opset=18), feeds, device)


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"])
def test_bitshift(direction, dtype, device):
    bits = 32 if dtype.endswith("64") else np.dtype(dtype).itemsize * 8
    info = np.iinfo(np.dtype(dtype))
    lo = max(info.min, -(2**31)) if dtype[0] == "i" else 0
    x = rand((3, 8), dtype, lo, min(info.max, 2**31 - 1), seed=1)
    y = rand((3, 8), dtype, 0, bits - 1, seed=2)
    if dtype[0] == "i":
        y[0, :3] = np.array([-1, bits, 100 if bits > 8 else 127], dtype)  # shifts past the width
    opset = 28 if dtype[0] == "i" else 11
    if dtype.endswith("64"):  # 64-bit types compute in 32 bits: only shifts that stay in range
        x, y = x >> np.array(33 if dtype[0] == "u" else 34, x.dtype), np.clip(y, 0, 2)
    check(
        node_model("BitShift", {"x": x, "y": y}, {"direction": direction}, opset=opset),
        {"x": x, "y": y},
        device,
        "onnx",
    )


@pytest.mark.parametrize("dtype", ["float32", "int32", "int64", "uint8", "bool", "float16"])
def test_where(dtype, device):
    c = rand((2, 1, 5), "bool")
    x, y = rand((3, 5), dtype, 0, 9, seed=1), rand((2, 3, 1), dtype, 0, 9, seed=2)
    ref = "onnx" if dtype in ("bool",) else "ort"
    check(node_model("Where", {"c": c, "x": x, "y": y}), {"c": c, "x": x, "y": y}, device, ref)


# -- Cast and CastLike ---------------------------------------------------------------------
CAST_TYPES = [
    "float32",
    "float16",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
]


def _cast_input(src: str, dst: str) -> np.ndarray:
    """Values every (src, dst) pair defines the same way in onnxruntime, numpy and on the GPU:
    in range of both types, fractional parts where src is a float."""
    s = np.dtype(src)
    if s == np.bool_:
        return np.array([True, False, True, True, False, False])
    d = np.dtype(dst)
    lo, hi = -100, 100
    if d.kind == "u" or s.kind == "u":
        lo = 0
    if d == np.int8 or s == np.int8:
        hi = 100
    vals = np.array([lo, hi, 0, 1, -1 if lo < 0 else 2, 37, 99, lo + 7], np.float64)
    if s.kind == "f":
        vals = vals + np.array([0.0, -0.25, 0.0, 0.5, -0.75, 0.9, 0.1, 0.4])
        vals = np.clip(vals, lo, hi)
    return vals.astype(s)


@pytest.mark.parametrize("src", CAST_TYPES)
@pytest.mark.parametrize("dst", CAST_TYPES)
def test_cast(src, dst, device):
    x = _cast_input(src, dst)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    check(
        node_model("Cast", {"x": x}, {"to": to}, opset=19),
        {"x": x},
        device,
        rtol=1e-3 if "float16" in (src, dst) else 1e-6,
    )


@pytest.mark.parametrize("dst", ["int32", "uint8", "int8", "uint32", "int16"])
def test_cast_float_to_int_wraps_like_onnxruntime(dst, device):
    """Out-of-range floats: onnxruntime (static_cast on x86) and numpy agree on these."""
    x = np.array(
        [300.7, -1.5, -129.9, 70000.2, -70000.9, 255.99, 2.5e9 if dst == "uint32" else 1e5], np.float32
    )
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    check(node_model("Cast", {"x": x}, {"to": to}, opset=19), {"x": x}, device)


@pytest.mark.parametrize("dst", ["float16", "bfloat16"])
def test_cast_rounds_to_half_precision(dst, device):
    """Cast to float16/bfloat16 rounds to nearest even inside the graph (seen through a second
    Cast back to float32), with overflow to inf, NaN kept and float16 subnormals."""
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.normal(0, 1000, 200),
            rng.normal(0, 1e-5, 50),
            [65504, 65519, 65520, 1e6, -1e6, np.nan, np.inf, -np.inf, 0, 3e-8, 6.1e-5],
        ]
    ).astype(np.float32)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst) if dst != "bfloat16" else np.dtype("float32"))
    to = onnx.TensorProto.BFLOAT16 if dst == "bfloat16" else to
    nodes = [
        helper.make_node("Cast", ["x"], ["h"], to=to),
        helper.make_node("Cast", ["h"], ["y"], to=onnx.TensorProto.FLOAT),
    ]
    g = helper.make_graph(
        nodes,
        "c",
        [helper.make_tensor_value_info("x", 1, x.shape)],
        [helper.make_tensor_value_info("y", 1, x.shape)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    (got,) = gpu(m, {"x": x}, device)

    with np.errstate(over="ignore"):  # overflow to inf is part of what is tested
        want = x.astype(np.float16 if dst == "float16" else ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "src,dst",
    [
        ("float32", "float16"),
        ("int64", "float32"),
        ("bool", "int32"),
        ("float32", "bool"),
        ("float16", "float64"),
    ],
)
def test_castlike(src, dst, device):
    x = _cast_input(src, dst)
    like = np.zeros(2, dst)
    check(
        node_model("CastLike", {"x": x}, initializers={"like": like}, opset=19), {"x": x}, device, rtol=1e-3
    )


def test_same_storage_casts_are_views():
    x = np.ones((2, 3), np.float16)
    res = compile_model(node_model("Cast", {"x": x}, {"to": onnx.TensorProto.FLOAT}, opset=19))
    assert res.report.dispatches == 0
    res = compile_model(
        node_model("Cast", {"x": x.astype(np.float32)}, {"to": onnx.TensorProto.FLOAT16}, opset=19)
    )
    assert res.report.dispatches == 1  # rounding to float16 is real work


def test_unsupported_dtype_is_a_clear_error():
    """onnx's schemas refuse most such models first; the lowering still checks (IR built directly)."""
    from onnx2wgsl.compiler.lowering import lower
    from onnx2wgsl.compiler.target import get_target
    from onnx2wgsl.ir import DType, Graph, TensorType

    g = Graph(opset={"": 17})
    x = g.add_input("x", TensorType(DType.i32, (2, 3)))
    op = g.append(g.make_op("Erf", [x], [TensorType(DType.i32, (2, 3))], name="erf0"))
    g.outputs = [op.outputs[0]]
    with pytest.raises(
        UnsupportedError, match=r"Erf node 'erf0' \(opset 17\): dtype i32 is not supported for Erf"
    ):
        lower(g, get_target(None))


SMALL_FLOATS = ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT4E2M1"]


def _edge_floats(seed=0):
    rng = np.random.default_rng(seed)
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e6, -1e6, 448, 464, 470, 480, 240, 248, 57344, 61440,
               6, 7, 5, 2.5, 0.25, 0.75, 1e-7, -1e-7, 2**-9, 2**-10, 1.5 * 2**-10, 2**-16, 2**-17, 3 * 2**-17]  # fmt: skip
    return np.concatenate([special, rng.normal(0, 30, 200), rng.normal(0, 0.01, 100)]).astype(np.float32)


@pytest.mark.parametrize(
    "to,saturate", [(t, s) for t in SMALL_FLOATS for s in (1, 0) if s or t != "FLOAT4E2M1"]
)  # saturate applies to float8 types only
def test_cast_to_float8_and_float4(to, saturate, device):
    """Round to nearest even; saturate or overflow to inf/NaN per ONNX Cast's tables, read
    back as the float8/float4 dtype (ml_dtypes) and through a second Cast to float32."""
    x = _edge_floats()
    code = getattr(onnx.TensorProto, to)
    m = node_model("Cast", {"x": x}, {"to": code, "saturate": saturate}, opset=23)
    (got,) = check(m, {"x": x}, device, "onnx", rtol=0, atol=0)
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=code, saturate=saturate),
             helper.make_node("Cast", ["h"], ["y"], to=onnx.TensorProto.FLOAT)]  # fmt: skip
    chain = _graph(nodes, [_vi("x", list(x.shape))], [_vi("y", list(x.shape))], opset=23)
    (back,) = gpu(chain, {"x": x}, device)
    want = got.astype(np.float32)
    if to == "FLOAT4E2M1":  # float4 has no NaN; the GPU keeps it (ml_dtypes makes it -0 at the output)
        want = np.where(np.isnan(x), np.nan, want)
    np.testing.assert_array_equal(back, want)


@pytest.mark.parametrize("src", SMALL_FLOATS)
@pytest.mark.parametrize("dst", ["FLOAT", "FLOAT16", "INT32", "INT8", "UINT8"])
def test_cast_from_float8_and_float4(src, dst, device):

    dt = helper.tensor_dtype_to_np_dtype(getattr(onnx.TensorProto, src))
    x = np.clip(_edge_floats(1), -200, 200).astype(dt)
    if dst.startswith("INT") or dst.startswith("UINT"):
        x = np.where(np.isnan(x.astype(np.float32)), 1, x).astype(dt)
        x = np.clip(x.astype(np.float32), 0 if dst[0] == "U" else -100, 100).astype(dt)
    assert x.dtype == np.dtype(getattr(ml_dtypes, x.dtype.name))
    check(
        node_model("Cast", {"x": x}, {"to": getattr(onnx.TensorProto, dst)}, opset=23),
        {"x": x},
        device,
        "onnx",
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("to", ["INT4", "UINT4", "INT2", "UINT2"])
def test_cast_to_and_from_sub_byte_ints(to, device):
    """Truncate toward zero, then wrap into 4 or 2 bits. ONNX leaves a float cast to an integer
    type undefined out of the type's range; the compiler wraps there, as the spec's narrowing
    integer casts do, and onnx's reference (through ml_dtypes, which since 0.7 gives 0 there and
    wrapped before) is checked in range only."""
    x = np.concatenate([np.arange(-9, 16), [2.5, -2.5, 7.9, -8.7, 1.7]]).astype(np.float32)
    code = getattr(onnx.TensorProto, to)
    dt = helper.tensor_dtype_to_np_dtype(code)
    info, bits = ml_dtypes.iinfo(dt), int(to[-1])
    opset = 25 if to.endswith("2") else 23  # 2-bit types came in opset 25
    model = node_model("Cast", {"x": x}, {"to": code}, opset=opset)
    (got,) = gpu(model, {"x": x}, device)
    assert got.dtype == dt
    wrapped = np.trunc(x).astype(np.int64) % (1 << bits)
    wrapped = np.where(wrapped > info.max, wrapped - (1 << bits), wrapped)
    np.testing.assert_array_equal(got.astype(np.int64), wrapped)
    in_range = (np.trunc(x) >= info.min) & (np.trunc(x) <= info.max)
    (want,) = expected(model, {"x": x}, "onnx")
    np.testing.assert_array_equal(got[in_range].astype(np.int64), np.asarray(want)[in_range].astype(np.int64))
    back = gpu(
        node_model("Cast", {"x": got}, {"to": onnx.TensorProto.FLOAT}, opset=opset), {"x": got}, device
    )[0]
    np.testing.assert_array_equal(back, got.astype(np.float32))
    wide = onnx.TensorProto.INT8 if to.startswith("INT") else onnx.TensorProto.UINT8
    check(node_model("Cast", {"x": got}, {"to": wide}, opset=opset), {"x": got}, device, "onnx")


@pytest.mark.parametrize(
    "to,saturate",
    [
        ("FLOAT8E4M3FN", 1),
        ("FLOAT8E4M3FN", 0),
        ("FLOAT8E5M2", 1),
        ("FLOAT8E5M2", 0),
        ("INT4", 1),
        ("UINT4", 1),
    ],
)  # saturate=0 is for float8 only
def test_quantize_linear_to_small_types(to, saturate, device):
    x = _edge_floats(2)[3:] * np.float32(3)
    x = x[np.isfinite(x)]
    dt = helper.tensor_dtype_to_np_dtype(getattr(onnx.TensorProto, to))
    # The spec's formula adds the zero point for float8 too; onnx's reference drops it, so the
    # float8 cases use a zero point of 0, where both agree.
    scale, zp = np.array(0.5, np.float32), np.array(0 if to.startswith("FLOAT8") else 1, dt)
    attrs = {"saturate": saturate} if to.startswith("FLOAT8") else {}
    m = node_model("QuantizeLinear", {"x": x}, attrs, initializers={"s": scale, "z": zp}, opset=23)
    check(m, {"x": x}, device, "onnx", rtol=0, atol=0)


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [1, 0])
def test_cast_to_float8e8m0(round_mode, saturate, device):
    rng = np.random.default_rng(0)
    x = np.concatenate([[0.0, np.nan, np.inf, 1.0, 1.5, 3.0, 2**127, 3 * 2**126, 2**-126, 2**-127, 1e-40],
                        rng.uniform(0, 100, 50), 2.0 ** rng.integers(-60, 60, 30)]).astype(np.float32)  # fmt: skip
    m = node_model(
        "Cast",
        {"x": x},
        {"to": onnx.TensorProto.FLOAT8E8M0, "saturate": saturate, "round_mode": round_mode},
        opset=24,
    )
    check(m, {"x": x}, device, "onnx", rtol=0, atol=0)


BITCASTS = [("float32", "int32"), ("int32", "float32"), ("uint32", "int32"), ("float32", "uint32"),
            ("int8", "uint8"), ("uint8", "int8"), ("uint16", "int16"), ("int16", "uint16"), ("bool", "uint8"),
            ("float16", "int16"), ("float16", "uint16"), ("int16", "float16"), ("uint16", "float16"),
            ("bfloat16", "uint16"), ("int16", "bfloat16")]  # fmt: skip


@pytest.mark.parametrize("src,dst", BITCASTS, ids=str)
def test_bitcast(src, dst, device):

    def dtype(name):
        return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)

    s = dtype(src)
    if s.kind == "f" or s == np.dtype(ml_dtypes.bfloat16):
        x = _specials("float32")[:8].astype(s)  # NaN, inf, zeros of both signs
        x = np.concatenate(
            [x, rand((40,), seed=1, low=-1e4, high=1e4).astype(s), np.array([6e-8, -3e-5, 1e-40], s)]
        )
    elif s == np.bool_:
        x = rand((20,), "bool")
    else:
        info = np.iinfo(s)
        x = rand((40,), src, max(info.min, -(2**31)), min(info.max, 2**31 - 1))
    if src in ("int16", "uint16") and dst == "float16":
        x[:4] = (
            np.array([0x7C00, 0xFC00, 0x7E00, 0x0001]).astype(np.uint16).view(s)
        )  # inf, -inf, NaN, subnormal
    to = helper.np_dtype_to_tensor_dtype(dtype(dst))
    (got,) = gpu(node_model("BitCast", {"x": x}, {"to": to}, opset=26), {"x": x}, device)
    want = x.view(dtype(dst))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))  # the bits, NaN payloads included


def test_bitcast_of_64_bit_types_is_a_clear_error():
    x = np.ones(3, np.float64)
    with pytest.raises(
        UnsupportedError, match="BitCast of dtype f64 is not supported: its bit pattern is not kept"
    ):
        compile_model(node_model("BitCast", {"x": x}, {"to": onnx.TensorProto.INT64}, opset=26))


# -- float16 / bfloat16 / float64 at the runtime boundary --------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_low_and_high_precision_io(dtype, device):

    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    a, b = rand((3, 5)).astype(dt), rand((5,), seed=1).astype(dt)
    m = node_model("Mul", {"a": a, "b": b}, opset=17)
    with tempfile.TemporaryDirectory() as out:
        compile_model(m, out)
        with onnx2wgsl.load(out, device=device) as sess:
            assert [i.dtype for i in sess.get_inputs()] == [dtype, dtype]
            (y,) = sess.run(None, {"a": a, "b": b})
    want = (a.astype(np.float32) * b.astype(np.float32)).astype(dt)
    assert y.dtype == dt
    np.testing.assert_array_equal(y, want)


# -- zero-sized tensors -----------------------------------------------------------------------
def _graph(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "z", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def _vi(name, shape, elem=onnx.TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def test_zero_sized_tensors_run_without_dispatches(device):
    """An empty input through elementwise ops, a Concat that drops it, a Relu on the result,
    an empty Cast: empty kernels dispatch nothing, the plan and verifier accept them, and
    the runtime returns empty outputs of the right dtype and shape."""
    nodes = [
        helper.make_node("Add", ["e", "b"], ["s"]),  # [0, 4] + [4] -> [0, 4]
        helper.make_node("Concat", ["s", "x"], ["c"], axis=0),  # [0, 4] ++ [3, 4] -> [3, 4]
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Cast", ["s"], ["i"], to=onnx.TensorProto.INT32),
        helper.make_node("Sigmoid", ["e"], ["q"]),
    ]
    m = _graph(
        nodes,
        [_vi("e", [0, 4]), _vi("b", [4]), _vi("x", [3, 4])],
        [_vi("r", [3, 4]), _vi("i", [0, 4], onnx.TensorProto.INT32), _vi("q", [0, 4]), _vi("e2", [0, 4])],
    )
    m.graph.node.append(helper.make_node("Identity", ["e"], ["e2"]))
    res = compile_model(m, verify_ir=True)
    manifest = res.artifact.manifest
    assert all(max(d["grid"]) > 0 for d in manifest["dispatches"])
    assert all(b["size"] > 0 for d in manifest["dispatches"] for b in d["bindings"])
    labels = [d["label"].split()[0] for d in manifest["dispatches"]]
    assert "Sigmoid" not in labels and "Add" not in labels and "Cast" not in labels
    feeds = {"e": np.zeros((0, 4), np.float32), "b": rand((4,)), "x": rand((3, 4), seed=1)}
    got = gpu(m, feeds, device)
    want = ort_run(m, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w)


def test_zero_sized_graph_output_from_constant_shape_math(device):
    """Shape(x)[2:1] is an empty int64 constant: a 0-byte output that the runtime returns."""
    m = _graph(
        [helper.make_node("Shape", ["x"], ["y"], start=2, end=1), helper.make_node("Relu", ["x"], ["z"])],
        [_vi("x", [2, 3, 4])],
        [_vi("y", [0], onnx.TensorProto.INT64), _vi("z", [2, 3, 4])],
        opset=15,
    )
    x = rand((2, 3, 4))
    y, z = gpu(m, {"x": x}, device)
    assert y.shape == (0,) and y.dtype == np.int64
    np.testing.assert_array_equal(z, np.maximum(x, 0))


def test_all_tensors_empty(device):
    """Nothing to place, upload, dispatch or read: the artifact has no arena at all."""
    m = _graph([helper.make_node("Mul", ["x", "x"], ["y"])], [_vi("x", [3, 0])], [_vi("y", [3, 0])])
    res = compile_model(m, verify_ir=True)
    assert res.artifact.manifest["dispatches"] == []
    (y,) = gpu(m, {"x": np.zeros((3, 0), np.float32)}, device)
    assert y.shape == (3, 0) and y.dtype == np.float32


def test_verifier_rejects_a_non_empty_kernel_without_dispatches():
    from onnx2wgsl.ir import verify
    from onnx2wgsl.ir.verify import VerifyError

    m = node_model("Relu", {"x": rand((2, 3))})
    res = compile_model(m)
    g = res.graph
    g.ops[0].dispatches = []
    with pytest.raises(VerifyError, match="no dispatches"):
        verify(g, static=True)


# -- frozen inputs (constants) and the backend's specialization -----------------------------------
def _reshape_model():
    """y = Reshape(x + 1, shape) with ``shape`` a graph input (a compile-time value)."""
    nodes = [helper.make_node("Add", ["x", "one"], ["t"]), helper.make_node("Reshape", ["t", "shape"], ["y"])]
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    return _graph(
        nodes, [_vi("x", [2, 3, 4]), _vi("shape", [2], onnx.TensorProto.INT64)], [_vi("y", None)], [one]
    )


def test_constant_input_requirement_names_the_input():
    with pytest.raises(ConstantRequiredError) as e:
        compile_model(_reshape_model())
    assert e.value.inputs == ("shape",)
    assert "--const shape=FILE.npy" in str(e.value)


def test_shape_math_on_graph_inputs_names_them(device):
    """A shape computed from a small graph input (n * 2) names that input; frozen, it folds."""
    two = numpy_helper.from_array(np.array([1, 2], np.int64), "two")
    nodes = [
        helper.make_node("Mul", ["n", "two"], ["shape"]),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    m = _graph(nodes, [_vi("x", [2, 3, 4]), _vi("n", [2], onnx.TensorProto.INT64)], [_vi("y", None)], [two])
    with pytest.raises(ConstantRequiredError, match="computed from graph inputs 'n'") as e:
        compile_model(m)
    assert e.value.inputs == ("n",)
    x = rand((2, 3, 4))
    (y,) = gpu(m, {"x": x}, device, constants={"n": np.array([4, 3], np.int64)})
    np.testing.assert_array_equal(y, x.reshape(4, 6))


def test_data_feeding_a_shape_is_not_frozen():
    """When a large tensor decides a shape (data, not shape math), nothing is offered to freeze."""
    idx = numpy_helper.from_array(np.array([0, 1], np.int64), "idx")
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=0),  # [64] from 5,120 values
        helper.make_node("Gather", ["m", "idx"], ["m2"]),
        helper.make_node("Cast", ["m2"], ["mi"], to=onnx.TensorProto.INT64),
        helper.make_node("Reshape", ["x", "mi"], ["y"]),
    ]
    m = _graph(nodes, [_vi("x", [64, 80])], [_vi("y", None)], [idx], opset=17)
    with pytest.raises(UnsupportedError) as e:
        compile_model(m)
    assert not isinstance(e.value, ConstantRequiredError), e.value


def test_constants_freeze_inputs(device):
    shape = np.array([4, 6], np.int64)
    res = compile_model(_reshape_model(), constants={"shape": shape})
    assert [i["name"] for i in res.artifact.manifest["inputs"]] == ["x"]
    assert res.artifact.manifest["outputs"][0]["shape"] == [4, 6]
    assert any("frozen" in n for n in res.report.notes)
    x = rand((2, 3, 4))
    (y,) = gpu(_reshape_model(), {"x": x}, device, constants={"shape": shape})
    np.testing.assert_array_equal(y, (x + 1).reshape(4, 6))


@pytest.mark.parametrize(
    "constants,message",
    [
        ({"nope": np.zeros(2, np.int64)}, "not a model input"),
        ({"shape": np.array([4, 6], np.int32)}, "is int32, but the model declares int64"),
        ({"shape": np.array([4, 6, 1], np.int64)}, "has 3 at axis 0, but the model fixes it to 2"),
        ({"shape": np.array(4, np.int64)}, "but the model declares rank 1"),
    ],
)
def test_constants_are_checked(constants, message):
    with pytest.raises(CompileError, match=message):
        compile_model(_reshape_model(), constants=constants)


def test_cli_const(tmp_path, device):
    path = tmp_path / "m.onnx"
    onnx.save(_reshape_model(), path)
    np.save(tmp_path / "shape.npy", np.array([6, 4], np.int64))
    run = [sys.executable, "-m", "onnx2wgsl"]
    r = subprocess.run(
        run + ["compile", str(path), "-o", str(tmp_path / "a")], capture_output=True, text=True
    )
    assert r.returncode == 1 and "--const shape=FILE.npy" in r.stderr
    r = subprocess.run(
        run + ["compile", str(path), "-o", str(tmp_path / "a"), "--const", f"shape={tmp_path / 'shape.npy'}"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["x"] and manifest["outputs"][0]["shape"] == [6, 4]


def test_backend_specializes_on_the_inputs_the_compiler_asks_for(device, monkeypatch):
    import onnx2wgsl.backend as backend

    compiles = []
    original = backend._compile_and_load

    def counting(model, options, dev, constants=None, shapes=None):
        compiles.append(None if constants is None else sorted(constants))
        return original(model, options, dev, constants, shapes)

    monkeypatch.setattr(backend, "_compile_and_load", counting)
    rep = backend.prepare(_reshape_model(), webgpu_device=device)
    try:
        assert rep.session is None and rep.frozen == ("shape",)
        x = rand((2, 3, 4))
        for shape in ([4, 6], [24, 1], [4, 6]):
            (y,) = rep.run([x, np.array(shape, np.int64)])
            np.testing.assert_array_equal(y, (x + 1).reshape(shape))
        # one failed ahead-of-time compile, then one per distinct shape value (cached after)
        assert compiles == [None, ["shape"], ["shape"]]
    finally:
        rep.release()


def test_backend_compiles_ahead_of_time_when_it_can(device):
    import onnx2wgsl.backend as backend

    x = rand((2, 3))
    rep = backend.prepare(node_model("Relu", {"x": x}), webgpu_device=device)
    try:
        assert rep.session is not None and rep.frozen == ()
        np.testing.assert_array_equal(rep.run([x])[0], np.maximum(x, 0))
    finally:
        rep.release()


def test_backend_binds_symbolic_dims_from_the_feeds(device):
    import onnx2wgsl.backend as backend

    m = _graph([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["batch", 3])], [_vi("y", ["batch", 3])])
    with pytest.raises(onnx2wgsl.ShapeRequiredError) as e:
        compile_model(m)
    assert e.value.inputs == ("x",)
    rep = backend.prepare(m, webgpu_device=device)
    try:
        assert rep.session is None and rep.shaped == ("x",)
        for n in (2, 5):
            x = rand((n, 3), seed=n)
            np.testing.assert_array_equal(rep.run([x])[0], np.maximum(x, 0))
    finally:
        rep.release()

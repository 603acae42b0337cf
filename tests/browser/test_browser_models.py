"""Compiled models in Chromium (SwiftShader WebGPU) give what the Python runtime gives.

Each model is compiled with --target js, its package is loaded by tests/browser/harness.js
through the package's own index.js, and every output is compared with
onnx2wgsl.load(dir).run on the same inputs (lavapipe): floats within 1e-4, integers exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from browser_support import decode
from helpers import node_model, rand
from light_models import light_input, light_path, random_input, randomized
from onnx import helper, numpy_helper

import onnx2wgsl

pytestmark = [pytest.mark.gpu, pytest.mark.browser]
DIGITS = str(Path(__file__).resolve().parents[2] / "examples" / "digits" / "model.onnx")


def python_run(out, feeds: dict, device) -> dict:
    sess = onnx2wgsl.load(out, device=device)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def check_outputs(res: dict, want: dict, atol: float = 1e-4, rtol: float = 1e-4) -> None:
    assert list(res["outputs"]) == list(want)
    for name, w in want.items():
        got = decode(res["outputs"][name])
        assert got.shape == w.shape and got.dtype == w.dtype, (name, got.shape, got.dtype, w.shape, w.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(got, w, rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(got, w, err_msg=name)


def run_case(page, compiled, feeds, device, name, model, inputs, *, repeat=1, as_=None, **kw):
    url, out = compiled(name, model, **kw)
    page.open("/tests/harness.html")
    res = page.evaluate("s => runCase(s)", {"pkg": url, "feeds": feeds(name, inputs, as_), "repeat": repeat})
    want = python_run(out, inputs, device)
    check_outputs(res, want)
    assert res["violations"] == []
    return res, want


def _graph_model(nodes, inputs, outputs, inits, name):
    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_value_info(o, onnx.TypeProto()) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def conv_model():
    """Conv (padded, strided) -> Relu -> MaxPool -> grouped Conv -> AveragePool."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    inits = {"w1": rand(8, 3, 3, 3, seed=1), "b1": rand(8, seed=2), "w2": rand(8, 4, 3, 3, seed=3)}
    return _graph_model(nodes, {"x": [1, 3, 17, 15]}, ["y", "r1"], inits, "conv")


def matmul_model():
    """Batched MatMul + bias, Gemm with transB, Sigmoid."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["h"]),
        helper.make_node("Reshape", ["h", "shape"], ["h2"]),
        helper.make_node("Gemm", ["h2", "g", "c"], ["z"], transB=1, alpha=0.5),
        helper.make_node("Sigmoid", ["z"], ["y"]),
    ]
    inits = {"w": rand(24, 33, seed=4), "b": rand(33, seed=5), "shape": np.array([10, 33], np.int64),
             "g": rand(7, 33, seed=6), "c": rand(7, seed=7)}  # fmt: skip
    return _graph_model(nodes, {"x": [2, 5, 24]}, ["y", "h"], inits, "matmul")


def reductions_model():
    """GlobalAveragePool, GlobalMaxPool, Softmax and LogSoftmax over rows of 100."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["gap"]),
        helper.make_node("GlobalMaxPool", ["x"], ["gmp"]),
        helper.make_node("Reshape", ["x", "shape"], ["rows"]),
        helper.make_node("Softmax", ["rows"], ["sm"], axis=1),
        helper.make_node("LogSoftmax", ["rows"], ["lsm"], axis=0),
    ]
    inits = {"shape": np.array([6, 100], np.int64)}
    return _graph_model(nodes, {"x": [2, 3, 10, 10]}, ["gap", "gmp", "sm", "lsm"], inits, "reductions")


def chain_model():
    """A multi-op elementwise chain with broadcasting. There are no fusion passes yet, so each
    op is its own kernel today; when fusion lands, this model exercises the fused kernels."""
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["a"]),
        helper.make_node("Add", ["a", "t"], ["b"]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("Tanh", ["b"], ["d"]),
        helper.make_node("Sub", ["c", "d"], ["e"]),
        helper.make_node("Exp", ["e"], ["f"]),
        helper.make_node("Clip", ["f", "lo", "hi"], ["g"]),
        helper.make_node("Div", ["g", "x2"], ["y"]),
    ]
    inits = {"s": rand(1, 5, 1, seed=8), "t": rand(7, seed=9), "lo": np.array(0.5, np.float32),
             "hi": np.array(2.5, np.float32)}  # fmt: skip
    return _graph_model(nodes, {"x": [3, 5, 7], "x2": [5, 7]}, ["y"], inits, "chain")


SMALL = {
    "conv": (conv_model, {"x": (1, 3, 17, 15)}),
    "matmul": (matmul_model, {"x": (2, 5, 24)}),
    "reductions": (reductions_model, {"x": (2, 3, 10, 10)}),
    "elementwise_chain": (chain_model, {"x": (3, 5, 7), "x2": (5, 7)}),
}


@pytest.mark.parametrize("case", sorted(SMALL))
def test_small_models_match_python(page, compiled, feeds, device, case):
    make, shapes = SMALL[case]
    inputs = {
        n: rand(*s, seed=i + 11) + (2.0 if n == "x2" else 0.0) for i, (n, s) in enumerate(shapes.items())
    }
    run_case(page, compiled, feeds, device, case, make(), inputs)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["shipped", "randomized"])
def test_light_squeezenet_matches_python(page, compiled, feeds, device, variant):
    """The shipped model (its reference input) and the randomized one (informative logits)."""
    if variant == "shipped":
        model, (name, x) = light_path("squeezenet"), light_input("squeezenet")
    else:
        model, (name, x) = randomized("squeezenet"), random_input("squeezenet")
    res, want = run_case(page, compiled, feeds, device, f"squeezenet_{variant}", model, {name: x}, repeat=2)
    if variant == "randomized":  # the logits are informative: the same class wins
        logits = decode(res["outputs"][list(want)[1]])
        assert logits.argmax() == want[list(want)[1]].argmax()
    print(f"light_squeezenet ({variant}) in Chromium: create {res['createMs']:.0f} ms, "
          f"first run {res['firstMs']:.0f} ms, second {res['medianMs']:.0f} ms")  # fmt: skip


def test_attention_decode_in_the_lanes_form_matches_python(page, compiled, feeds, device):
    """A decode step's attention in the lanes form (workgroup memory, a workgroupUniformLoad,
    barriers in a loop over the chunk's keys), which Tint's uniformity analysis must take."""
    from test_ops_nn import _attention_case

    model, inputs = _attention_case(B=1, Hq=4, Hkv=2, Sq=1, Skv=1, past=150, is_causal=1, n_outputs=3)
    _, out = compiled("attention_decode", model)
    shaders = [f.read_text() for f in (out / "shaders").iterdir()]
    assert any("Attention, first of two passes on a GPU" in s for s in shaders)
    run_case(page, compiled, feeds, device, "attention_decode", model, inputs)


def test_digits_classifier_matches_python(page, compiled, feeds, device):
    x = np.load(DIGITS.replace("model.onnx", "digits_test.npz"))["images"][:1]
    run_case(page, compiled, feeds, device, "digits", DIGITS, {"image": x}, dims={"batch": 1}, repeat=3)


def _identity(dtype: str, shape=(2, 3)):
    code = (
        helper.np_dtype_to_tensor_dtype(np.dtype(dtype)) if dtype != "bfloat16" else onnx.TensorProto.BFLOAT16
    )
    g = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["y"])],
        f"id_{dtype}",
        [helper.make_tensor_value_info("a", code, list(shape))],
        [helper.make_tensor_value_info("y", code, list(shape))],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


INT_VALUES = {
    "int8": [-128, -1, 0, 1, 5, 127], "int16": [-32768, -7, 0, 3, 9, 32767], "uint8": [0, 1, 2, 128, 254, 255],
    "uint16": [0, 1, 7, 300, 40000, 65535], "uint32": [0, 1, 2**31, 12345, 2**32 - 2, 2**32 - 1],
    "uint64": [0, 1, 2**31, 12345, 2**32 - 2, 2**32 - 1], "int32": [-(2**31), -5, 0, 7, 99, 2**31 - 1],
}  # fmt: skip


@pytest.mark.parametrize("dtype", [*sorted(INT_VALUES), "bool"])
def test_integer_and_bool_boundaries(page, compiled, feeds, device, dtype):
    """Each dtype goes to its 32-bit storage and back as the Python runtime converts it."""
    if dtype == "bool":
        x = np.array([[True, False, True], [False, False, True]])
    else:
        x = np.array(INT_VALUES[dtype], dtype=dtype).reshape(2, 3)
    res, _ = run_case(page, compiled, feeds, device, f"id_{dtype}", _identity(dtype), {"a": x})
    np.testing.assert_array_equal(decode(res["outputs"]["y"]), x)


@pytest.mark.parametrize("dtype", ["int64", "float64", "float16", "int32"])
def test_add_in_each_dtype(page, compiled, feeds, device, dtype):
    a = (np.arange(12).reshape(3, 4) * 1.37 - 7).astype(dtype)
    b = np.array([1.5, -2, 3.25, 1000], dtype=dtype)
    model = node_model("Add", {"a": a, "b": b})
    # (float16 widened to 32-bit storage: Chromium's SwiftShader adapter has no shader-f16)
    res, want = run_case(
        page, compiled, feeds, device, f"add_{dtype}", model, {"a": a, "b": b}, precision="fp32"
    )
    expected = {
        "int64": "BigInt64Array",
        "float64": "Float64Array",
        "float16": "Float16Array",
        "int32": "Int32Array",
    }
    assert res["outputs"]["y0"]["array"] == expected[dtype]


def test_bfloat16_bits_round_trip(page, compiled, feeds, device):
    import ml_dtypes

    x = np.array([[1.0, -2.5, 3.1415927], [1e-3, -65504.0, 0.0]], dtype=ml_dtypes.bfloat16)
    url, out = compiled("id_bf16", _identity("bfloat16"))
    page.open("/tests/harness.html")
    spec = {
        "a": {
            "url": feeds("id_bf16", {"a": x.view(np.uint16)})["a"]["url"],
            "type": "bfloat16",
            "dims": [2, 3],
        }
    }
    res = page.evaluate("s => runCase(s)", {"pkg": url, "feeds": spec})
    (want,) = onnx2wgsl.load(out, device=device).run(None, {"a": x})
    np.testing.assert_array_equal(decode(res["outputs"]["y"]), want.view(np.uint16))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 65504 + 40 is inf in float16
def test_float16_without_float16array(page, compiled, feeds, device):
    """Where Float16Array is missing, float16 goes in and comes back as Uint16Array bits,
    rounded to nearest even like numpy."""
    a = np.array([[0.1, -2.0, 65504.0, 6e-8], [1e-5, 3.0, -0.0, 1000.0]], np.float16)
    b = np.array([0.2, 1e-4, 40.0, 5e-8], np.float16)
    url, out = compiled(
        "add_f16_fallback", node_model("Add", {"a": a, "b": b}), precision="fp32"
    )  # (see above)
    page.open("/tests/harness.html")
    page.evaluate("() => { delete globalThis.Float16Array; }")
    spec = feeds("add_f16_bits", {"a": a.view(np.uint16), "b": b.view(np.uint16)})
    for f in spec.values():
        f["type"], f["as"] = "float16", "bits"
    res = page.evaluate("s => runCase(s)", {"pkg": url, "feeds": spec})
    assert res["outputs"]["y0"]["array"] == "Uint16Array"
    (want,) = onnx2wgsl.load(out, device=device).run(None, {"a": a, "b": b})
    got = np.frombuffer(decode(res["outputs"]["y0"]).tobytes(), np.uint16).reshape(want.shape)
    np.testing.assert_array_equal(got, want.view(np.uint16))


def test_a_model_compiled_with_a_symbolic_dim_runs_any_size(page, compiled, feeds, device):
    """Position ids from Range(0, seq), the length read as data and a broadcast add: one
    --target js package over seq=0..128 gives what the Python runtime gives at every size."""
    from test_symbolic_compile import _positions_model

    url, out = compiled("positions_symbolic", _positions_model(), dims={"seq": (0, 128)})
    page.open("/tests/harness.html")
    for seq in (0, 1, 17, 128):
        inputs = {"x": rand(2, seq, seed=seq)}
        res = page.evaluate(
            "s => runCase(s)", {"pkg": url, "feeds": feeds(f"positions_{seq}", inputs), "repeat": 1}
        )
        check_outputs(res, python_run(out, inputs, device))
        assert res["violations"] == []


def test_bert_compiled_once_runs_sizes_chosen_at_run_time(page, compiled, feeds, device):
    """One --target js package of BERT with batch=1..4, seq=1..128 gives in Chromium what the
    Python runtime gives, at the ends of the ranges and between."""
    from test_transformers import MODELS, RANGES, bert_feeds

    url, out = compiled("bert_symbolic", onnx.load(MODELS / "bert_tiny_torchscript.onnx"), dims=RANGES)
    page.open("/tests/harness.html")
    for batch, seq in [(1, 1), (2, 17), (4, 128)]:
        inputs = bert_feeds(batch, seq, seed=seq)
        res = page.evaluate(
            "s => runCase(s)", {"pkg": url, "feeds": feeds(f"bert_{batch}x{seq}", inputs), "repeat": 1}
        )
        check_outputs(res, python_run(out, inputs, device))
        assert res["violations"] == []

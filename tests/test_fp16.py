"""Half-precision storage (``--precision fp16``): activations and weights stored as f16 where every
kernel touching them converts at its loads and stores, computing in f32 (compiler/precision.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_ir_round_trips, ort_run
from onnx import TensorProto, helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler import precision as prec
from onnx2wgsl.compiler.driver import run_to_stage
from onnx2wgsl.errors import CompileError, DeviceError
from onnx2wgsl.ir import DType
from onnx2wgsl.runtime.manifest import F16_FEATURE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from light_models import random_input, randomized  # noqa: E402

MODELS = Path(__file__).resolve().parent / "models"


def _run(model, feeds, device, out, **kw):
    res = compile_model(model, out, verify_ir=True, **kw)
    return res, onnx2wgsl.load(out, device=device).run(None, feeds)


def _assert_scaled_close(got, want, tol=1e-2):
    """Each output within ``tol`` of the reference, relative to that output's largest magnitude."""
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, i
        assert np.isfinite(g).all(), f"output {i} is not finite"
        scale = float(np.abs(w).max()) or 1.0
        err = float(np.abs(g.astype(np.float64) - w).max()) / scale
        assert err <= tol, f"output {i}: error {err:.2e} of its scale {scale:.3g}"


def test_squeezenet_fp16_matches_onnxruntime_at_half_the_weight_bytes(device16, tmp_path):
    name = "squeezenet"
    model = randomized(name)
    iname, x = random_input(name)
    want = ort_run(model, {iname: x})
    r16, got = _run(model, {iname: x}, device16, tmp_path / "fp16", precision="fp16")
    _assert_scaled_close(got, want)
    assert [int(g.argmax()) for g in got] == [int(w.argmax()) for w in want]
    r32 = compile_model(model)
    assert not any(v.storage for op in r32.graph.ops for v in op.outputs)  # fp32 stays as it was
    assert r16.report.weight_file_bytes <= 0.51 * r32.report.weight_file_bytes
    manifest = json.loads((tmp_path / "fp16" / "manifest.json").read_text())
    assert F16_FEATURE in manifest["target"]["features"]
    assert F16_FEATURE not in r32.artifact.manifest["target"]["features"]


def test_bert_fp16_matches_onnxruntime(device16, tmp_path):
    from test_transformers import bert_feeds

    model = onnx.load(MODELS / "bert_tiny_torchscript.onnx")
    feeds = bert_feeds(2, 17)
    res, got = _run(model, feeds, device16, tmp_path / "a", precision="fp16", dims={"batch": 2, "seq": 17})
    _assert_scaled_close(got, ort_run(model, feeds))
    stored = [op.attrs["op"] for op in res.graph.ops if op.kind == "kernel" and op.outputs[0].storage]
    assert {"Attention", "MatMul", "LayerNormalization", "Gather"} <= set(stored)


def _planted() -> onnx.ModelProto:
    """Activations near 300 over rows of 4096: their squares (90000) and the row's sum of
    squares (3.7e8) overflow f16, and so does a naive f16 LayerNorm's variance sum."""
    n = 4096
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, n).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, n).astype(np.float32), "beta"),
        numpy_helper.from_array((rng.standard_normal((n, 16)) / 64).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([-1], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Mul", ["a", "a"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axes"], ["s"], keepdims=1),
        helper.make_node("Sqrt", ["s"], ["norm"]),
        helper.make_node("Div", ["a", "norm"], ["unit"]),
        helper.make_node("MatMul", ["unit", "w"], ["proj"]),
        helper.make_node("LayerNormalization", ["a", "gamma", "beta"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "planted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, n])],
        [
            helper.make_tensor_value_info("norm", TensorProto.FLOAT, [2, 1]),
            helper.make_tensor_value_info("proj", TensorProto.FLOAT, [2, 16]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_planted_overflow_stays_finite_by_the_range_guard(device16, tmp_path, monkeypatch):
    model = _planted()
    x = (300 + np.random.default_rng(1).uniform(-10, 10, (2, 4096))).astype(np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(x * x)).all() and np.isinf(np.float16((x * x).sum(-1))).all()
    want = ort_run(model, {"x": x})
    res, got = _run(model, {"x": x}, device16, tmp_path / "guarded", precision="fp16")
    _assert_scaled_close(got, want)
    assert any(v.storage is DType.f16 for op in res.graph.ops for v in op.outputs)  # a is f16
    # without the guard the squares are stored as f16: inf, and the norm with them
    monkeypatch.setattr(prec, "guarded", lambda op: False)
    _, bad = _run(model, {"x": x}, device16, tmp_path / "naive", precision="fp16")
    assert not np.isfinite(bad[0]).all()


def test_ir_text_carries_storage_and_fp16_needs_the_feature(device32, tmp_path):
    model = _planted()
    assert_ir_round_trips(model, precision="fp16")
    compile_model(model, tmp_path, precision="fp16")
    assert F16_FEATURE not in device32.features  # (tests/conftest.py asks for no features)
    with pytest.raises(DeviceError, match="shader-f16"):
        onnx2wgsl.load(tmp_path, device=device32)


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(CompileError, match="fp32, fp16"):
        compile_model(_planted(), precision="fp8")


def test_an_fp16_model_keeps_f16_storage_inside(device16, tmp_path):
    """A float16 model compiles at fp16 when no precision is given: its tensors and weights are
    stored as f16 end to end (not widened), its inputs and outputs stay float16 at the API;
    --precision fp32 widens it, and a float32 model stays fp32."""
    rng = np.random.default_rng(0)
    half = TensorProto.FLOAT16
    inits = [
        numpy_helper.from_array((rng.standard_normal((64, 32)) / 8).astype(np.float16), "w1"),
        numpy_helper.from_array((rng.standard_normal((32, 10)) / 4).astype(np.float16), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "half",
        [helper.make_tensor_value_info("x", half, [4, 64])],
        [helper.make_tensor_value_info("y", half, [4, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((4, 64)).astype(np.float16)
    res, got = _run(model, {"x": x}, device16, tmp_path)  # (no precision: the model's own)
    _assert_scaled_close(got, ort_run(model, {"x": x}))
    assert any("a float16 model: compiled at --precision fp16" in n for n in res.report.notes)
    assert F16_FEATURE in res.artifact.manifest["target"]["features"]
    wide = compile_model(model, precision="fp32")
    assert (
        not any(v.storage for v in wide.graph.values())
        and wide.report.weight_bytes == 2 * res.report.weight_bytes
    )
    mixed = onnx.ModelProto()  # the same graph with float32 weights: most float weights decide
    mixed.CopyFrom(model)
    for t in mixed.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    mixed.graph.node.insert(0, helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT))
    mixed.graph.node[1].input[0] = "x32"
    mixed.graph.node[-1].output[0] = "y32"
    mixed.graph.node.append(helper.make_node("Cast", ["y32"], ["y"], to=half))
    assert prec.model_precision(run_to_stage(mixed, "import")) == "fp32"
    assert compile_model(mixed).artifact.manifest["target"]["features"] == []
    stored = {v.name: v.storage for op in res.graph.ops for v in op.outputs}
    assert stored["r"] is DType.f16 and stored["z"] is DType.f16 and stored["y"] is DType.f16
    assert res.graph.inputs[0].storage is DType.f16
    assert all(v.storage is DType.f16 for v in res.graph.constants() if v.dtype.is_float)


def test_data_movement_ops_keep_f16_storage_and_match(device16, tmp_path):
    """Pad, Slice, Expand, Where, Split, Tile and DepthToSpace between f16 values: each
    kernel converts at its loads and stores, so the values between them are stored f16."""
    from helpers import graph_model, rand

    consts = {
        "starts": np.array([1, 0], np.int64), "ends": np.array([6, 8], np.int64), "axes": np.array([2, 3], np.int64),
        "shape": np.array([2, 4, 5, 8], np.int64), "split": np.array([1, 3], np.int64),
        "pads": np.array([0, 0, 1, 2, 0, 0, 0, 1], np.int64), "pads2": np.array([0, 0, 0, 1, 0, 0, 1, -2], np.int64),
        "reps": np.array([1, 1, 1, 2], np.int64),
    }  # fmt: skip
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Pad", ["r", "pads"], ["p"], mode="reflect"),
        helper.make_node("Pad", ["p", "pads2", "fill"], ["q"]),
        helper.make_node("Slice", ["q", "starts", "ends", "axes"], ["s"]),
        helper.make_node("Expand", ["bias", "shape"], ["e"]),
        helper.make_node("Where", ["cond", "s", "e"], ["w"]),
        helper.make_node("Split", ["w", "split"], ["a", "b"], axis=1),
        helper.make_node("Tile", ["a", "reps"], ["t"]),
        helper.make_node("DepthToSpace", ["b"], ["d"], blocksize=1),
        helper.make_node("Neg", ["t"], ["y1"]),
        helper.make_node("Neg", ["d"], ["y2"]),
    ]
    feeds = {"x": rand(2, 4, 6, 8), "bias": rand(1, 4, 1, 8, seed=1), "cond": rand(2, 1, 5, 8, seed=2) > 0,
             "fill": np.array(0.75, np.float32)}  # fmt: skip
    model = graph_model(nodes, feeds, ["y1", "y2"], consts)
    res, got = _run(model, feeds, device16, tmp_path, precision="fp16")
    _assert_scaled_close(got, ort_run(model, feeds))
    stored = {v.name: v.storage for v in res.graph.values()}
    assert all(stored[n] is DType.f16 for n in ("p", "q", "s", "w", "a", "t", "d")), stored


def test_views_of_f16_storage_take_its_element_size(device16, tmp_path):
    """A Slice that is an aligned contiguous run is a view at f16's byte offset (2 per element),
    and an Expand or Cast between f16 and 32-bit storage is a converting copy, never a view."""
    half = TensorProto.FLOAT16
    consts = [
        numpy_helper.from_array(np.array([1], np.int64), "s"),
        numpy_helper.from_array(np.array([2], np.int64), "e"),
        numpy_helper.from_array(np.array([0], np.int64), "a"),
        numpy_helper.from_array(np.array([1, 256], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Slice", ["r", "s", "e", "a"], ["row"]),  # row 1: 512 bytes in as f16
        helper.make_node("Neg", ["row"], ["y"]),
        helper.make_node("Expand", ["x", "shape2"], ["xe"]),  # (a no-op Expand read by a Cast)
        helper.make_node("Cast", ["xe"], ["x32"], to=TensorProto.FLOAT),
        helper.make_node("CumSum", ["x32", "a"], ["c"]),  # (kept 32-bit by the range guard)
    ]
    consts.append(numpy_helper.from_array(np.array([2, 256], np.int64), "shape2"))
    graph = helper.make_graph(
        nodes,
        "views",
        [helper.make_tensor_value_info("x", half, [2, 256])],
        [
            helper.make_tensor_value_info("y", half, [1, 256]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 256]),
        ],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(3).standard_normal((2, 256)).astype(np.float16)
    res, got = _run(model, {"x": x}, device16, tmp_path, precision="fp16")
    views = [op for op in res.graph.ops if op.kind == "view"]
    assert any(op.attrs.get("offset") == 512 for op in views)
    want = ort_run(model, {"x": x})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_the_api_and_the_cli_take_the_model_s_own_precision(tmp_path):
    """``onnx2wgsl.compile`` and ``onnx2wgsl compile`` without a precision: a float16 model's
    artifact stores f16 (and needs shader-f16), --precision fp32 widens it."""
    from onnx2wgsl.compiler.cli import main

    half = TensorProto.FLOAT16
    w = numpy_helper.from_array(np.full((8, 4), 0.5, np.float16), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "half",
        [helper.make_tensor_value_info("x", half, [2, 8])],
        [helper.make_tensor_value_info("y", half, [2, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "half.onnx")
    onnx2wgsl.compile(model, tmp_path / "api")
    assert main(["compile", str(tmp_path / "half.onnx"), "-o", str(tmp_path / "cli")]) == 0
    assert (
        main(["compile", str(tmp_path / "half.onnx"), "-o", str(tmp_path / "wide"), "--precision", "fp32"])
        == 0
    )
    features = {
        d: json.loads((tmp_path / d / "manifest.json").read_text())["target"]["features"]
        for d in ("api", "cli", "wide")
    }
    assert features == {"api": [F16_FEATURE], "cli": [F16_FEATURE], "wide": []}

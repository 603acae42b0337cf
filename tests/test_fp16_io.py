"""Float graph inputs and outputs stored as f16 under ``--precision fp16``: the manifest records
``storage`` "f16", the runtime converts at the boundary (feeds and results keep the model's
dtype), IO binding hands over f16 buffers, and a model compiled for generation keeps its
inputs and outputs 32-bit but for its KV cache (tests/test_fp16_generation.py)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import ort_run
from onnx import TensorProto, helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.precision import assign_storage
from onnx2wgsl.errors import InputError
from onnx2wgsl.ir import DType
from onnx2wgsl.runtime import manifest as mf
from onnx2wgsl.runtime.manifest import ManifestError


def _model(dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """y = Relu(x @ w + b): x [n, 7] (an odd element count at n = 3), b an optional input (an
    initializer of an input's name) of 7 elements."""
    rng = np.random.default_rng(0)
    npt = helper.tensor_dtype_to_np_dtype(dtype)
    inits = [
        numpy_helper.from_array((rng.standard_normal((7, 7)) / 3).astype(npt), "w"),
        numpy_helper.from_array(rng.standard_normal(7).astype(npt), "b"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "io16",
        [helper.make_tensor_value_info("x", dtype, ["n", 7]), helper.make_tensor_value_info("b", dtype, [7])],
        [helper.make_tensor_value_info("y", dtype, ["n", 7])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _close(got, want, tol=1e-2):
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = float(np.abs(want).max()) or 1.0
    assert float(np.abs(got.astype(np.float64) - want).max()) / scale <= tol


def test_float_inputs_and_outputs_are_stored_f16_and_converted_at_the_boundary(device16, tmp_path):
    model = _model()
    res = compile_model(model, tmp_path, precision="fp16", dims={"n": (1, 4)}, verify_ir=True)
    m = json.loads((tmp_path / "manifest.json").read_text())
    io = {x["name"]: x for x in m["inputs"] + m["outputs"]}
    assert [io[n]["storage"] for n in ("x", "b", "y")] == ["f16"] * 3
    assert [io[n]["dtype"] for n in ("x", "b", "y")] == ["float32"] * 3
    assert io["x"]["size"] == io["y"]["size"] == 4 * 7 * 2 and io["b"]["size"] == 16  # 7 f16s padded
    assert all(v.storage is DType.f16 for v in res.graph.inputs + res.graph.outputs)

    sess = onnx2wgsl.load(tmp_path, device=device16)
    x = np.random.default_rng(1).standard_normal((3, 7)).astype(np.float32)
    b = np.linspace(-1, 1, 7, dtype=np.float32)
    _close(sess.run(None, {"x": x})[0], ort_run(model, {"x": x})[0])  # b at its default
    want = ort_run(model, {"x": x, "b": b})[0]
    _close(sess.run(None, {"x": x, "b": b})[0], want)
    with pytest.raises(InputError, match="must be float32"):
        sess.run(None, {"x": x.astype(np.float16)})

    # IO binding: the output's GPU buffer holds f16s; fed back as x it chains on the GPU
    (t,) = sess.run(None, {"x": x, "b": b}, output_location="gpu")
    assert (t.storage, t.dtype, t.nbytes) == ("f16", "float32", 44)
    _close(t.numpy(), want)
    (again,) = sess.run(None, {"x": t, "b": b})
    _close(again, ort_run(model, {"x": want, "b": b})[0])
    compile_model(model, tmp_path / "fp32", dims={"n": (1, 4)})
    fp32 = onnx2wgsl.load(tmp_path / "fp32", device=device16)
    with pytest.raises(InputError, match="feed its .numpy"):
        fp32.run(None, {"x": t})  # (f16 on the GPU: no silent reinterpretation as f32)
    t.release()


def test_manifest_sizes_f16_inputs_and_outputs_at_two_bytes(tmp_path):
    compile_model(_model(), tmp_path, precision="fp16", dims={"n": (1, 4)})
    m = json.loads((tmp_path / "manifest.json").read_text())
    mf.validate(m)
    assert mf.stored_nbytes("f16", 7) == 16 and mf.stored_nbytes("f32", 7) == 28
    m["inputs"][1]["size"] = 28  # b's f32 size: wrong for f16 storage
    with pytest.raises(ManifestError, match="has size 28"):
        mf.validate(m)


def test_float16_model_at_fp16_has_no_conversion_at_the_boundary(device16, tmp_path):
    model = _model(TensorProto.FLOAT16)
    compile_model(model, tmp_path, precision="fp16", dims={"n": (1, 4)})
    x = np.random.default_rng(2).standard_normal((3, 7)).astype(np.float16)
    (got,) = onnx2wgsl.load(tmp_path, device=device16).run(None, {"x": x})
    _close(got, ort_run(model, {"x": x})[0])


def test_a_generation_graph_keeps_its_inputs_and_outputs_32_bit():
    """(compiler/generation.py records logits and tokens that runtime/generate.py reads as
    32-bit; of the state pairs, none here, tests/test_fp16_generation.py)"""
    from onnx2wgsl.compiler.frontend import import_model

    g, _ = import_model(_model(), dims={"n": (1, 4)})
    g.metadata["generation"] = {"state": []}
    assign_storage(g, "fp16")
    assert all(v.storage is None for v in g.inputs + g.outputs)
    assert any(v.storage is DType.f16 for op in g.ops for v in op.outputs)

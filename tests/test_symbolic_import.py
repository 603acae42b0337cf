"""Dims kept symbolic (--dim seq=1..128): import folds shape arithmetic into expressions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnx2wgsl.compiler.driver import run_to_stage
from onnx2wgsl.compiler.frontend import split_dims
from onnx2wgsl.errors import CompileError
from onnx2wgsl.ir import parse_ir, print_ir, verify
from onnx2wgsl.ir.symbolic import Expr

MODELS = Path(__file__).parent / "models"
RANGES = {"batch": (1, 4), "seq": (1, 128)}


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _x(name="x", shape=("batch", "seq", 8)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _y(name="y"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _import(model, dims=RANGES):
    return run_to_stage(model, "import", dims=dims)


def _at(shape, env):
    return tuple(d.evaluate(env) if isinstance(d, Expr) else d for d in shape)


def test_shape_gather_unsqueeze_concat_reshape_folds():
    # y = x.reshape(batch, seq * 8): the exporter's Shape -> Gather -> Mul -> Concat chain
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Gather", ["s", "i1"], ["n"], axis=0),
        helper.make_node("Mul", ["n", "eight"], ["n8"]),
        helper.make_node("Unsqueeze", ["b", "ax"], ["b1"]),
        helper.make_node("Unsqueeze", ["n8", "ax"], ["n1"]),
        helper.make_node("Concat", ["b1", "n1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [
        helper.make_tensor("i0", TensorProto.INT64, [], [0]),
        helper.make_tensor("i1", TensorProto.INT64, [], [1]),
        helper.make_tensor("eight", TensorProto.INT64, [], [8]),
        _ints("ax", [0]),
    ]
    g = _import(_model(nodes, [_x()], [_y()], inits))
    verify(g)
    assert [op.kind for op in g.ops] == ["Reshape"]
    assert [str(d) for d in g.outputs[0].shape] == ["batch", "8*seq"]
    text = print_ir(g, stage="import")
    assert "dims {batch = 1..4, seq = 1..128}" in text and "f32[batch,(8*seq)]" in text
    assert print_ir(parse_ir(text), stage="import") == text


def test_reshape_with_minus_one_and_zero_over_symbolic_dims():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    g = _import(_model(nodes, [_x(shape=("batch", "seq", 8))], [_y()], [_ints("shape", [0, -1, 4])]))
    assert [str(d) for d in g.outputs[0].shape] == ["batch", "2*seq", "4"]


def test_expand_to_a_symbolic_shape():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Expand", ["w", "s"], ["y"]),
    ]
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 8], np.arange(8, dtype=np.float32))
    g = _import(_model(nodes, [_x()], [_y()], [w]))
    assert [str(d) for d in g.outputs[0].shape] == ["batch", "seq", "8"]
    assert g.ops[0].kind == "Expand"


def _compare_model(cmp: str, rhs: int):
    # Where(Shape(x)[1] <cmp> rhs, 1, 2) decides a Reshape's target
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i1"], ["n"], axis=0),
        helper.make_node(cmp, ["n", "rhs"], ["c"]),
        helper.make_node("Where", ["c", "one", "two"], ["k"]),
        helper.make_node("Concat", ["k", "minus"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [
        helper.make_tensor("i1", TensorProto.INT64, [], [1]),
        helper.make_tensor("rhs", TensorProto.INT64, [], [rhs]),
        _ints("one", [1]),
        _ints("two", [2]),
        _ints("minus", [-1]),
    ]
    return _model(nodes, [_x(shape=(2, "seq", 8))], [_y()], inits)


def test_a_comparison_the_ranges_decide_folds():
    g = _import(_compare_model("Greater", 0))  # seq >= 1 > 0: always true
    assert [str(d) for d in g.outputs[0].shape] == ["1", "16*seq"]
    g = _import(_compare_model("Equal", -1))  # seq is never -1
    assert [str(d) for d in g.outputs[0].shape] == ["2", "8*seq"]


def test_a_comparison_the_ranges_cannot_decide_names_the_node():
    # seq > 64 is computed on the GPU at run time, so the Reshape's target is not a constant
    with pytest.raises(CompileError, match=r"Reshape.*shape input 'shape' is computed at run time.*--dim"):
        _import(_compare_model("Greater", 64))
    # bound, the same model folds
    g = _import(_compare_model("Greater", 64), dims={"seq": 100})
    assert g.outputs[0].shape == (1, 1600)


def test_dims_option_forms():
    assert split_dims({"a": 1, "b": (1, 8), "c": (3, 3), "d": "2..5", "e": "7"})[0] == {
        "a": 1,
        "c": 3,
        "e": 7,
    }
    assert set(split_dims({"b": (1, 8), "d": "2..5"})[1]) == {"b", "d"}
    for bad in [{"s": (5, 2)}, {"s": -1}, {"s": "1..x"}]:
        with pytest.raises(CompileError):
            split_dims(bad)


def test_cli_takes_a_dim_range(tmp_path):
    from helpers import cli

    path = tmp_path / "m.onnx"
    onnx.save(_model([helper.make_node("Relu", ["x"], ["y"])], [_x()], [_y()]), path)
    res = cli("compile", str(path), "-o", str(tmp_path / "out"), "--dim", "batch=1..4", "--dim", "seq=1..128",
              "--dump-ir", str(tmp_path / "ir"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "f32[batch,seq,8]" in next((tmp_path / "ir").glob("*-import.ir")).read_text()
    lowered = next((tmp_path / "ir").glob("*-plan.ir")).read_text()
    assert "${#batch} * ${#seq} * 8u" in lowered  # the kernel reads the dims uniform
    assert "dims[0].x * dims[0].y * 8u" in next((tmp_path / "out" / "shaders").glob("*.wgsl")).read_text()


# -- exported transformers --------------------------------------------------------------------
MODEL_RANGES = {
    "bert_tiny_torchscript": RANGES,
    "bert_tiny_dynamo": RANGES,
    "distilbert_tiny_torchscript": RANGES,
    "llama_tiny_torchscript": RANGES,
    "gpt2_tiny_dynamo": {"seq": (1, 128)},
    "vit_tiny_torchscript": {"batch": (1, 4)},
    "whisper_encoder_tiny_torchscript": {"batch": (1, 4)},
}


@pytest.mark.parametrize("name", sorted(MODEL_RANGES))
def test_symbolic_shapes_match_the_bound_import(name):
    ranges = MODEL_RANGES[name]
    model = onnx.load(str(MODELS / f"{name}.onnx"))
    g = _import(model, ranges)
    verify(g)
    sym = {v.name: v for v in g.values()}
    for point in [(1, 1), (2, 17), (4, 128)]:
        env = dict(zip(["batch", "seq"], point))
        env = {k: env[k] for k in ranges}
        bound = _import(model, env)
        common = [v for v in bound.values() if v.name in sym]
        assert len(common) > len(bound.values()) // 2
        for v in common:
            assert _at(sym[v.name].shape, env) == v.shape, (v.name, point)

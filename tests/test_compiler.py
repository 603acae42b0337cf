"""Compiler behaviour that needs no GPU: determinism, memory plans, folding, dims, errors."""

from __future__ import annotations

import cProfile
import filecmp
import hashlib
import pstats
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import cli, graph_model, node_model, rand
from light_models import LIGHT_MODELS, light_path
from onnx import TensorProto, helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.memory import check_plan
from onnx2wgsl.errors import CompileError, UnsupportedError


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", ["squeezenet", "resnet50", "inception_v2"])
def test_same_model_twice_gives_byte_identical_artifacts(name, tmp_path):
    onnx2wgsl.compile(str(light_path(name)), tmp_path / "a")
    onnx2wgsl.compile(str(light_path(name)), tmp_path / "b")
    a, b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert a == b and len(a) > 3
    assert not filecmp.dircmp(tmp_path / "a", tmp_path / "b").diff_files


@pytest.mark.parametrize("level", [0, 1, 2])
def test_resnet50_arena_is_at_most_15_percent_of_naive(level):
    # "naive" counts every tensor a kernel writes as its own buffer; fusion leaves fewer of
    # them, and in-place reuse (from -O1) keeps the arena under 15% of what remains
    report = compile_model(str(light_path("resnet50")), opt_level=level).report
    assert report.arena_bytes <= 0.15 * report.naive_bytes, report.summary()
    assert report.arena_bytes >= report.lower_bound


@pytest.mark.parametrize("name", ["resnet50", "densenet121", "inception_v2"])
def test_o2_dispatches_at_most_045_per_onnx_node(name):
    model = onnx.load(str(light_path(name)))
    nodes = sum(n.op_type not in ("Constant", "ConstantOfShape") for n in model.graph.node)
    report = compile_model(model, opt_level=2).report
    assert report.dispatches <= 0.45 * nodes, report.summary()
    assert report.arena_bytes <= 1.10 * report.lower_bound, report.summary()


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_every_light_model_plan_is_checked_and_within_limits(name):
    res = compile_model(str(light_path(name)), verify_ir=True)
    check_plan(res.graph)
    limits = res.artifact.manifest["target"]["limits"]
    for b in res.artifact.manifest["buffers"]:
        assert b["size"] <= limits["maxBufferSize"]
    for d in res.artifact.manifest["dispatches"]:
        assert len(d["bindings"]) <= limits["maxStorageBuffersPerShaderStage"]
        assert all(b["size"] <= limits["maxStorageBufferBindingSize"] for b in d["bindings"])
        assert all(b["offset"] % limits["minStorageBufferOffsetAlignment"] == 0 for b in d["bindings"])
        assert max(d["grid"]) <= limits["maxComputeWorkgroupsPerDimension"]


def test_plan_checker_catches_planted_overlap():
    res = compile_model(str(light_path("squeezenet")))
    g = res.graph
    kernels = [op for op in g.ops if op.kind == "kernel"]
    x = kernels[1].inputs[0]
    y = kernels[1].outputs[0]
    y.placement = type(y.placement)(x.placement.buffer, x.placement.offset, y.placement.size)
    with pytest.raises(CompileError, match="memory plan error"):
        check_plan(g)


# -- scale: every stage near-linear in the graph ---------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from compile_time import GRAPHS, chain  # noqa: E402


def test_a_20000_op_elementwise_chain_compiles():
    # once minutes: fusion re-examined the whole group for every op it added (a few seconds
    # now, on two cores; tools/compile_time.py measures each stage, no timing is asserted here)
    res = compile_model(chain(20_000))
    kernels = res.graph.kernels()
    assert [k.attrs["op"] for k in kernels] == ["Fused"] * 20  # 1024 ops per kernel at most
    # three shaders: the first kernel's, the other full ones' (each written over its input:
    # 1024 is a multiple of the chain's period) and the last, shorter one's
    assert len(res.artifact.shaders) == 3
    assert all(len(d.bindings) <= 4 for k in kernels for d in k.dispatches)


def _python_calls(model) -> int:
    prof = cProfile.Profile()
    prof.enable()
    compile_model(model)
    prof.disable()
    return pstats.Stats(prof).total_calls


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_compile_work_grows_linearly(graph):
    # Python calls measure the work deterministically: twice the ops may take twice the calls
    # (and a log factor), not four times, as passes that rescanned the graph per op did
    compile_model(GRAPHS[graph](8))  # imports and caches stay out of the count
    small, big = _python_calls(GRAPHS[graph](500)), _python_calls(GRAPHS[graph](1000))
    assert big <= 2.2 * small, (small, big)


def test_vgg_fc_weight_is_split_under_the_binding_limit():
    res = compile_model(str(light_path("vgg19")))
    gemms = [op for op in res.graph.ops if op.attrs.get("op") == "Gemm"]
    assert len(gemms[0].dispatches) > 1  # 25088 x 4096 floats = 411 MB > 128 MiB
    assert res.report.weight_bytes > 500e6 and res.report.weight_file_bytes < 1e6  # fills stay fills


# -- frontend ----------------------------------------------------------------------------------
def test_ir3_initializers_listed_as_inputs_are_constants():
    res = compile_model(str(light_path("alexnet" if False else "bvlc_alexnet")))
    assert [i["name"] for i in res.artifact.manifest["inputs"]] == ["data_0"]


def _shape_chain_model():
    """y = x + ConstantOfShape(Shape(x)): shape math that must fold on the host."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node(
            "ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([2.5], np.float32))
        ),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)]
    )
    m.ir_version = 8
    return m


def test_shape_math_folds_and_dims_bind():
    res = compile_model(_shape_chain_model(), dims={"batch": 5})
    kinds = [op.attrs.get("op") for op in res.graph.ops]
    assert kinds == ["Add"]
    assert res.artifact.manifest["inputs"][0]["shape"] == [5, 3]


def test_unbound_dim_is_a_clear_error():
    with pytest.raises(
        CompileError, match=r"unbound input dims: 'batch' \(input 'x', axis 0\); bind each with --dim"
    ):
        compile_model(_shape_chain_model())


def test_shape_override():
    res = compile_model(_shape_chain_model(), shapes={"x": "7x3"})
    assert res.artifact.manifest["outputs"][0]["shape"] == [7, 3]
    with pytest.raises(CompileError, match="rank 1, but the model declares rank 2"):
        compile_model(_shape_chain_model(), shapes={"x": (21,)})
    with pytest.raises(CompileError, match="not a model input"):
        compile_model(_shape_chain_model(), shapes={"q": (1, 3)})


def test_unknown_op_names_node_op_and_opset():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    node = helper.make_node("Frobnicate", ["x"], ["y"], name="frob_1", domain="com.example")
    m = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(UnsupportedError) as e:
        compile_model(m)
    assert "Frobnicate node 'frob_1' (opset 1)" in str(e.value)


def test_op_without_lowering_names_node_op_and_opset():
    model = node_model("RandomUniformLike", {"x": rand(2, 3)}, opset=17)  # random, no function body
    model.graph.node[0].name = "rnd_0"
    with pytest.raises(
        UnsupportedError,
        match=r"RandomUniformLike node 'rnd_0' \(opset 17\): no WebGPU lowering for RandomUniformLike",
    ):
        compile_model(model)


def test_string_tensors_are_refused_clearly():
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [2])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [2])
    m = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    with pytest.raises(UnsupportedError, match="dtype string"):
        compile_model(m)


# -- CLI errors --------------------------------------------------------------------------------
def test_cli_errors_are_one_line_with_exit_code_1(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    for args, text in [
        (("compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o")), "model file not found"),
        (("compile", str(bad), "-o", str(tmp_path / "o")), "is not a readable ONNX model"),
        (("run", str(tmp_path)), "is not a compiled artifact"),
    ]:
        r = cli(*args)
        assert r.returncode == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], r.stderr


def test_cli_debug_shows_traceback(tmp_path):
    r = cli("--debug", "compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o"))
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_cli_unbound_dim(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_shape_chain_model(), path)
    r = cli("compile", str(path), "-o", str(tmp_path / "o"))
    assert r.returncode == 1 and "--dim" in r.stderr
    r = cli("compile", str(path), "-o", str(tmp_path / "o"), "--dim", "batch=4")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("sub", [(), ("compile",), ("run",), ("ops",)])
def test_cli_help_everywhere(sub):
    r = cli(*sub, "--help")
    assert r.returncode == 0 and "usage: onnx2wgsl" in r.stdout


def test_readme_lists_every_supported_op():
    from onnx2wgsl.compiler.lowering import supported_ops

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Supported ops")[1].split("\n## ")[0]
    missing = [op for op in supported_ops() if op not in section]
    assert not missing, f"README's op list lacks {missing}"


def _int64_warnings(model) -> list[str]:
    return [w for w in compile_model(model).report.warnings if "int64/uint64" in w]


def test_int64_results_that_can_wrap_in_32_bits_are_named_at_compile_time():
    i64 = np.array([[1, 2], [3, 4]], np.int64)
    added = _int64_warnings(node_model("Add", {"a": i64, "b": i64}))
    assert len(added) == 1 and "1 op with" in added[0] and "Add" in added[0]
    many = [helper.make_node("Mul", ["a", "b"], ["m0"], name="m0")]
    many += [helper.make_node("Mul", [f"m{i}", "b"], [f"m{i + 1}"], name=f"m{i + 1}") for i in range(5)]
    (text,) = _int64_warnings(graph_model(many, {"a": i64, "b": i64}, ["m5"]))
    assert "6 ops with" in text and "Mul 'm0'" in text and "and 2 more" in text
    floats = np.ones((4, 8), np.float32)
    assert _int64_warnings(node_model("Cast", {"x": floats}, {"to": TensorProto.INT64}))


def test_int64_ops_that_cannot_wrap_or_fold_on_the_host_give_no_warning():
    i64 = np.array([[1, 2], [3, 4]], np.int64)
    assert not _int64_warnings(node_model("Max", {"a": i64, "b": i64}))
    assert not _int64_warnings(node_model("Cast", {"x": i64.astype(np.int32)}, {"to": TensorProto.INT64}))
    assert not _int64_warnings(
        node_model("Add", {"a": np.ones((2, 2), np.float32), "b": np.ones((2, 2), np.float32)})
    )
    shape_math = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Mul", ["s", "s"], ["s2"]),
        helper.make_node("Reshape", ["x", "s2"], ["y"]),
    ]
    assert not _int64_warnings(graph_model(shape_math, {"x": np.ones((1, 1), np.float32)}, ["y"]))

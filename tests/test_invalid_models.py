"""Invalid and careless input: only onnx2wgsl's errors leave the compiler, each one line that
names what is wrong; models that ONNX and onnxruntime refuse are refused too."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, gpu_run, graph_model, node_model, ort_run, rand, reference_run
from onnx import TensorProto, helper, numpy_helper

from onnx2wgsl.compiler import cli, compile_model
from onnx2wgsl.errors import CompileError, InternalError, IRError
from onnx2wgsl.ir import parse_ir, print_ir

X = np.zeros((2, 4), np.float32)


def _relu() -> object:
    return node_model("Relu", {"x": X})


# -- the boundary: anything unexpected is an InternalError naming where it happened ---------------
def test_an_unexpected_exception_in_import_names_the_node(monkeypatch):
    from onnx2wgsl.compiler import frontend

    def broken(g, info):
        raise KeyError("planted")

    monkeypatch.setattr(frontend, "legalize", broken)
    with pytest.raises(InternalError, match=r"stage 'import', Relu node \(opset 17\): KeyError") as e:
        compile_model(_relu())
    assert isinstance(e.value.error, KeyError) and "\n" not in str(e.value)
    assert "please report it" in str(e.value)


def test_an_unexpected_exception_in_a_pass_names_the_pass(monkeypatch):
    from onnx2wgsl.compiler.passes.canonicalize import Canonicalize

    def broken(self, g):
        raise IndexError("planted")

    monkeypatch.setattr(Canonicalize, "run", broken)
    with pytest.raises(InternalError, match="stage 'canonicalize': IndexError: planted"):
        compile_model(_relu())


def test_an_unexpected_exception_in_lowering_names_the_op(monkeypatch):
    from onnx2wgsl.compiler import lowering

    def broken(ctx, op):
        raise ZeroDivisionError("planted")

    monkeypatch.setitem(lowering._LOWERINGS, "Relu", broken)
    with pytest.raises(InternalError, match="stage 'lower', Relu node: ZeroDivisionError"):
        compile_model(_relu())


def test_the_callers_own_hook_errors_pass_through_unwrapped():
    def hook(stage, g):
        raise ValueError("the caller's")

    with pytest.raises(ValueError, match="the caller's"):
        compile_model(_relu(), on_stage=hook)


def test_an_unexpected_exception_in_the_ir_parser_is_internal(monkeypatch):
    from onnx2wgsl.ir import parser

    text = print_ir(compile_model(_relu()).graph)

    def broken(self, rec, outer):
        raise KeyError("planted")

    monkeypatch.setattr(parser._Builder, "graph", broken)
    with pytest.raises(InternalError, match="stage 'parse': KeyError"):
        parse_ir(text)


def test_the_cli_prints_an_internal_error_as_one_line(monkeypatch, tmp_path, capsys):
    import onnx

    from onnx2wgsl.compiler import lowering

    monkeypatch.setitem(lowering._LOWERINGS, "Relu", lambda ctx, op: 1 / 0)
    onnx.save(_relu(), tmp_path / "m.onnx")
    assert cli.main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error in stage 'lower', Relu node") and err.count("\n") == 1


# -- damaged models: each a clear CompileError, never an exception of numpy or onnx ---------------
def _folded(node, consts: dict) -> object:
    """x + <node's output>, where the node's inputs are all constants (so it folds on the host)."""
    return graph_model([node, helper.make_node("Add", ["x", "c"], ["y"])], {"x": X}, ["y"], consts)


@pytest.mark.parametrize(
    "model, message",
    [
        (
            lambda: _folded(
                helper.make_node("Gather", ["d", "i"], ["c"]),
                {"d": np.zeros((3, 4), np.float32), "i": np.array(5, np.int64)},
            ),
            r"Gather node \(opset 17\): index 5 is out of range for axis 0 of size 3",
        ),
        (
            lambda: _folded(
                helper.make_node("Concat", ["a", "b"], ["c"], axis=0),
                {"a": np.zeros((1, 4), np.float32), "b": np.zeros((1, 3), np.float32)},
            ),
            r"Concat node \(opset 17\): cannot concatenate shapes \[\[1, 4\], \[1, 3\]\]",
        ),
        (
            lambda: _folded(
                helper.make_node("Range", ["s", "l", "d"], ["c"]),
                {n: np.array(v, np.float32) for n, v in (("s", 0), ("l", 4), ("d", 0))},
            ),
            "Range node .*delta is 0.0, so the range never reaches its limit",
        ),
        (
            lambda: graph_model([helper.make_node("Cast", ["w"], ["y"], to=-2)], {"x": X}, ["y"], {"w": X}),
            r"Cast node \(opset 17\): attribute to=-2 is not an ONNX data type",
        ),
        (lambda: node_model("Cast", {"x": X}, {"to": -2}), "attribute to=-2 is not an ONNX data type"),
        (
            lambda: graph_model([helper.make_node("Shape", [""], ["y"])], {"x": X}, ["y"]),
            r"Shape node \(opset 17\): its input 0 \(data\) is required, but the node leaves it empty",
        ),
        (lambda: _renamed_input(""), "the model's graph has an input with an empty name"),
        (lambda: _short_initializer(), r"initializer 'w' holds 8 bytes of data, but its shape \[2, 4\]"),
        (lambda: _no_outputs(), "the model's graph has no outputs"),
        (
            lambda: node_model("Concat", {"x": X}),
            r"Concat node \(opset 17\): it lacks the required attribute 'axis'",
        ),
        (
            lambda: node_model("Relu", {"x": X}, {"alpha": 1.0}, input_order=["x", "x"]),
            "Relu node .*it has 2 inputs; the op takes 1",
        ),
        (
            lambda: node_model("Flatten", {"x": X}, {"axis": 1.5}),
            "attribute 'axis' is FLOAT, but the op declares it INT",
        ),
        (lambda: _recursive_function(), "local functions cannot be inlined .*must not be recursive"),
    ],
    ids=[
        "gather-index", "concat-shapes", "range-delta-0", "cast-to-const", "cast-to", "omitted-input",
        "empty-input-name", "short-raw-data", "no-outputs", "missing-attribute", "input-count",
        "attribute-type", "recursive-function",
    ],
)  # fmt: skip
def test_a_damaged_model_is_one_clear_compile_error(model, message):
    with pytest.raises(CompileError, match=message) as e:
        compile_model(model())
    assert "\n" not in str(e.value)


def _renamed_input(name: str):
    m = node_model("Relu", {"x": X})
    m.graph.input[0].name = name
    m.graph.node[0].input[0] = name
    return m


def _short_initializer():
    m = node_model("Add", {"x": X}, initializers={"w": X})
    m.graph.initializer[0].raw_data = bytes(8)
    return m


def _no_outputs():
    m = node_model("Relu", {"x": X})
    del m.graph.output[:]
    return m


def _recursive_function():
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    f = helper.make_function(
        "local", "F", ["a"], ["b"], [helper.make_node("F", ["a"], ["b"], domain="local")], opsets
    )
    g = helper.make_graph(
        [helper.make_node("F", ["x"], ["y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    m = helper.make_model(g, opset_imports=opsets, functions=[f])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("content", [b"not a tensor", b""], ids=["garbage", "empty"])
@pytest.mark.parametrize("suffix", [".pb", ".npy"])
def test_cli_a_damaged_input_file_is_one_error_line(tmp_path, capsys, content, suffix):
    import onnx

    onnx.save(_relu(), tmp_path / "m.onnx")
    (tmp_path / f"bad{suffix}").write_bytes(content)
    args = [
        "compile",
        str(tmp_path / "m.onnx"),
        "-o",
        str(tmp_path / "out"),
        "--const",
        f"x={tmp_path}/bad{suffix}",
    ]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: '{tmp_path}/bad{suffix}'")
    assert err.count("\n") == 1 and "internal error" not in err


# -- invalid models that ONNX's checker and onnxruntime refuse -------------------------------------
def _shadowing_model(ir_version: int):
    """y = x + w, where the initializer w (ones) is also a graph input."""
    m = node_model("Add", {"x": X}, initializers={"w": np.ones_like(X)})
    m.graph.input.extend([helper.make_tensor_value_info("w", TensorProto.FLOAT, list(X.shape))])
    m.ir_version = ir_version
    return m


def _with_negative_dim():
    m = node_model("Add", {"x": X}, initializers={"w": X})
    m.graph.initializer[0].dims[0] = -2
    return m


def _with_input_twice():
    m = node_model("Relu", {"x": X})
    m.graph.input.extend([m.graph.input[0]])
    return m


def _reshape(shape):
    return node_model("Reshape", {"x": X}, initializers={"s": np.array(shape, np.int64)})


def _attention(attrs):
    q = np.zeros((1, 2, 3, 4), np.float32)
    return node_model("Attention", {"q": q, "k": q, "v": q}, attrs, opset=23)


@pytest.mark.parametrize(
    "model, message",
    [
        (
            lambda: graph_model(
                [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")],
                {"x": X},
                ["y"],
            ),
            "Neg node 'b': output 'y' is also written by Relu node 'a'; ONNX defines each name once",
        ),
        (
            lambda: graph_model([helper.make_node("Relu", ["x"], ["x"])], {"x": X}, ["x"]),
            "output 'x' is also written by a graph input",
        ),
        (_with_input_twice, "the model's graph lists input 'x' twice"),
        (_with_negative_dim, r"initializer 'w' has a negative dim: \[-2, 4\]"),
        (lambda: _reshape([3, 3]), r"cannot reshape \[2, 4\] \(8 elements\) to \[3, 3\] \(9 elements\)"),
        (lambda: _reshape([2, 2]), r"cannot reshape \[2, 4\] \(8 elements\) to \[2, 2\] \(4 elements\)"),
        (
            lambda: graph_model(
                [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Neg", ["a"], ["b"])], {"x": X}, ["a"]
            ),
            "the graph has a cycle: (Relu -> 'a' -> Neg -> 'b' -> Relu|Neg -> 'b' -> Relu -> 'a' -> Neg)",
        ),
        (lambda: _attention({"is_causal": 2}), "Attention node .*attribute is_causal=2 is out of spec; it is 0 or 1"),
        (
            lambda: node_model("ReduceSum", {"x": X}, {"keepdims": 5}, initializers={"a": np.array([1])}),
            "ReduceSum node .*attribute keepdims=5 is out of spec; it is 0 or 1",
        ),
        (
            lambda: _attention({"qk_matmul_output_mode": 7}),
            "attribute qk_matmul_output_mode=7 is out of spec; it is one of 0, 1, 2, 3",
        ),
    ],
    ids=[
        "two-writers", "writes-an-input", "input-twice", "negative-dim", "reshape-3x3", "reshape-2x2",
        "cycle", "is-causal-2", "keepdims-5", "qk-mode-7",
    ],
)  # fmt: skip
def test_an_invalid_model_is_refused(model, message):
    with pytest.raises(CompileError, match=message) as e:
        compile_model(model())
    assert "\n" not in str(e.value)


def test_an_initializer_shadowing_an_input_is_its_default_from_ir_4(device):
    """As onnxruntime: the input stays an input, and a feed overrides the initializer."""
    import onnx2wgsl.backend as backend

    m = _shadowing_model(8)
    res = compile_model(m)
    assert [i["name"] for i in res.artifact.manifest["inputs"]] == ["x", "w"]
    assert any("'w' have an initializer of the same name" in w for w in res.report.warnings)
    x, w = rand(2, 4), rand(2, 4, seed=1)
    assert_close(gpu_run(m, {"x": x, "w": w}, device), ort_run(m, {"x": x, "w": w}))
    rep = backend.prepare(m, webgpu_device=device)
    try:
        assert_close(list(rep.run([x])), ort_run(m, {"x": x}))  # not fed: the default
        assert_close(list(rep.run({"x": x, "w": w})), ort_run(m, {"x": x, "w": w}))
    finally:
        rep.release()


def test_an_initializer_shadowing_an_input_can_be_frozen():
    res = compile_model(_shadowing_model(8), constants={"w": np.full_like(X, 2)})
    assert [i["name"] for i in res.artifact.manifest["inputs"]] == ["x"]
    assert not res.report.warnings


def test_an_initializer_listed_as_an_input_is_a_constant_before_ir_4():
    res = compile_model(_shadowing_model(3))
    assert [i["name"] for i in res.artifact.manifest["inputs"]] == ["x"]


def test_an_initializer_unlike_its_input_is_refused():
    m = _shadowing_model(8)
    m.graph.input[1].type.tensor_type.shape.dim[0].dim_value = 3
    with pytest.raises(CompileError, match=r"declared of shape \[3, 4\], but its initializer .* \[2, 4\]"):
        compile_model(m)


def _window_model(left: int):
    q = rand(1, 2, 5, 4)
    return node_model("Attention", {"q": q, "k": rand(1, 2, 5, 4, seed=1), "v": rand(1, 2, 5, 4, seed=2)},
                      {"left_window_size": left, "is_causal": 1}, opset=25)  # fmt: skip


def test_a_window_wider_than_the_sequence_bounds_nothing(device):
    """A left_window_size beyond i32 once made WGSL that failed to load; any window at least as
    wide as every query-key distance is no bound at all."""
    huge = compile_model(_window_model(2**40))
    assert "1099511627776" not in "".join(huge.artifact.shaders.values())
    assert huge.artifact.shaders == compile_model(_window_model(-1)).artifact.shaders
    feeds = {n: rand(1, 2, 5, 4, seed=i) for i, n in enumerate("qkv")}
    assert_close(gpu_run(_window_model(2**40), feeds, device), gpu_run(_window_model(-1), feeds, device))
    narrow = gpu_run(_window_model(1), feeds, device)
    assert_close(narrow, reference_run(_window_model(1), feeds), rtol=1e-4, atol=1e-5)


def test_a_window_below_minus_one_is_refused():
    with pytest.raises(CompileError, match="left_window_size must be -1 or nonnegative"):
        compile_model(_window_model(-5))


# -- found by the fuzzer (tools/fuzz.py) -----------------------------------------------------------
def test_a_dead_node_is_not_compiled():
    """Outputs nothing reads once left ops without outputs, which canonicalize indexed."""
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Cast", ["x"], ["unused"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["x", "x"], ["unused2"], axis=0),
    ]
    res = compile_model(graph_model(nodes, {"x": X}, ["y"]))
    assert [op.attrs.get("op") for op in res.graph.ops] == ["Relu"]


def _with_value_info(m, name: str, elem_type: int):
    m.graph.value_info.append(helper.make_tensor_value_info(name, elem_type, None))
    return m


def _output_declared(elem_type: int):
    m = node_model("Relu", {"x": X})
    m.graph.output[0].type.tensor_type.elem_type = elem_type
    return m


def _opset_ir(ir_version: int):
    m = node_model("Relu", {"x": X})
    m.ir_version = ir_version
    return m


def _gemm(a_shape, b_shape, c_shape=None, **attrs):
    inits = {"b": np.ones(b_shape, np.float32)}
    if c_shape is not None:
        inits["c"] = np.ones(c_shape, np.float32)
    # at opset 11 onnx's inference leaves the inner dims unchecked
    return node_model("Gemm", {"a": np.zeros(a_shape, np.float32)}, attrs, initializers=inits, opset=11)


@pytest.mark.parametrize(
    "model, message",
    [
        (
            lambda: graph_model(
                [helper.make_node("Exp", ["i"], ["dead"]), helper.make_node("Relu", ["x"], ["y"])],
                {"x": X}, ["y"], {"i": np.array([1, 2], np.int64)},
            ),
            r"Exp node \(opset 17\): shape inference failed: .*unsupported type: tensor\(int64\)",
        ),
        (
            lambda: _folded(helper.make_node("Exp", ["i"], ["c"]), {"i": np.ones((2, 4), np.int64)}),
            r"Exp node \(opset 17\): shape inference failed: .*unsupported type: tensor\(int64\)",
        ),
        (lambda: _gemm((2, 1), (3, 4), transB=1), r"A \[2, 1\] .* and B \[3, 4\] .* do not share an inner dim"),
        (lambda: _gemm((2, 4), (4, 3), (5,)), r"C of shape \[5\] does not broadcast to \[2, 3\]"),
        (
            lambda: node_model("Conv", {"x": np.zeros((1, 2, 5, 5), np.float32)},
                               initializers={"w": np.ones((2, 2, 3, 3), np.float32), "b": np.ones(5, np.float32)}),
            r"Conv node \(opset 17\): bias has shape \[5\]; the op needs \[2\]",
        ),
        (
            lambda: node_model("InstanceNormalization", {"x": np.zeros((1, 3, 2, 2), np.float32)},
                               initializers={"s": np.ones(4, np.float32), "b": np.ones(3, np.float32)}),
            r"scale has shape \[4\]; the op needs \[3\]",
        ),
        (
            lambda: node_model("MaxPool", {"x": np.zeros((1, 2, 4, 4), np.float32)}, {"kernel_shape": [2, 2**31]}),
            r"MaxPool node \(opset 17\): its output 'y0' would have shape \[1, 2, 3, -\d+\]",
        ),
        (
            lambda: node_model("MaxPool", {"x": np.zeros((1, 2, 4, 4), np.float32)},
                               {"kernel_shape": [2, 2], "strides": [1, 2**30]}),
            r"strides \[1, 1073741824\] is out of range; each is 1 to 16,777,216",
        ),
        (
            lambda: node_model("Transpose", {"x": np.zeros((2, 3, 4), np.float32)}, {"perm": [1, 2]}),
            r"perm \[1, 2\] is not a permutation of the input's 3 axes",
        ),
        (
            lambda: node_model("Shape", {"x": X}, {"start": 1}, opset=13),
            r"Shape node \(opset 13\): 'start' is not an attribute of Shape at opset 13",
        ),
        (
            lambda: graph_model([helper.make_node("Softmax", ["x"], [""])], {"x": X}, ["x"]),
            r"Softmax node \(opset 17\): its output 0 \(output\) is required, but the node leaves it empty",
        ),
        (lambda: _opset_ir(99), "the model's IR version 99 is newer than this onnx package knows"),
        (
            lambda: node_model("Conv", {"x": np.zeros((1, 2, 4, 4), np.float32)}, {"kernel_shape": [1, 3]},
                               initializers={"w": np.ones(2, np.float32)}),
            r"Conv node \(opset 17\): X \[1, 2, 4, 4\] and W \[2\] must have one rank, at least 3",
        ),
        (
            lambda: node_model("GatherElements", {"x": np.zeros((2, 3, 2), np.float32)}, {"axis": 1},
                               initializers={"i": np.zeros((2, 2), np.int64)}),
            r"GatherElements node \(opset 17\): data, indices of shapes \[\[2, 3, 2\], \[2, 2\]\] do not fit",
        ),
        (
            lambda: node_model("ScatterND", {"x": np.zeros((4, 3), np.float32)},
                               initializers={"i": np.array([[1], [3]], np.int64), "u": np.ones((2, 2), np.float32)}),
            r"ScatterND node \(opset 17\): data, indices and updates of shapes \[\[4, 3\], \[2, 1\], \[2, 2\]\] do not fit",
        ),
        (
            lambda: node_model("Gather", {"x": np.zeros((3,), np.float32)}, initializers={"i": np.array([2, 2**62, -1])}),
            r"Gather node \(opset 17\): index 4611686018427387904 is out of range for axis 0 of size 3",
        ),
        (
            lambda: node_model("DepthToSpace", {"x": np.zeros((1, 4, 2, 3), np.float32)}, {"blocksize": 2**31 - 1}),
            r"blocksize 2147483647 does not divide the input's channels \[1, 4, 2, 3\]",
        ),
        (
            lambda: node_model("Add", {"x": np.zeros(2, np.int64)}, initializers={"c": np.array([1, 2**40])}),
            r"constant %c \(i64\) holds 1099511627776, outside the i32 range the GPU stores i64 in",
        ),
        (
            lambda: _loop_with_cond(np.zeros((0, 1), bool)),
            r"Loop node \(opset 17\): its body's condition output holds 0 values \(shape \[0, 1\]\), not one",
        ),
        (
            lambda: node_model("Attention", {"q": np.zeros((1, 2, 3, 4), np.float32), "k": np.zeros((1, 2, 3, 4), np.float32),
                                             "v": np.zeros((1, 2, 4), np.float32)}, opset=23),
            r"Attention node \(opset 23\): Q, K and V have ranks 4, 4 and 3",
        ),
        (
            lambda: node_model("Attention", {"q": np.zeros((1, 2, 3, 4), np.float32), "k": np.zeros((1, 2, 3, 4), np.float32),
                                             "v": np.zeros((1, 2, 5, 4), np.float32)}, opset=23),
            r"Q \[1, 2, 3, 4\], K \[1, 2, 3, 4\] and V \[1, 2, 5, 4\] do not agree",
        ),
        (
            lambda: node_model("BatchNormalization", {"x": np.zeros((1, 2, 4, 4), np.float32)}, opset=9,
                               initializers={"s": np.ones(2, np.float32), "b": np.ones((2, 1), np.float32),
                                             "m": np.ones(2, np.float32), "v": np.ones(2, np.float32)}),
            r"BatchNormalization node \(opset 9\): B has shape \[2, 1\]; the op needs \[2\]",
        ),
        (lambda: _output_declared(TensorProto.INT64), "graph output 'y0' is declared INT64, but its value is f32"),
        (
            lambda: _with_value_info(
                graph_model([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])], {"x": X}, ["y"]),
                "h", TensorProto.INT32,
            ),
            r"Relu node \(opset 17\): its output 'h' is f32, but the graph's value_info declares INT32",
        ),
    ],
    ids=[
        "dead-node-type", "folded-node-type", "gemm-inner-dim", "gemm-c", "conv-bias", "instance-norm-scale",
        "pool-negative-output", "pool-stride", "transpose-perm", "unknown-attribute", "empty-required-output",
        "ir-version", "conv-ranks", "gather-elements-rank",
        "gather-index", "depth-to-space-blocksize", "int64-constant-range",
        "scatter-nd-updates", "loop-condition-shape", "attention-ranks", "attention-shapes", "batchnorm-params", "output-dtype",
        "value-info-dtype",
    ],
)  # fmt: skip
def test_an_invalid_model_found_by_fuzzing_is_refused(model, message):
    with pytest.raises(CompileError, match=message) as e:
        compile_model(model())
    assert "\n" not in str(e.value)


def _loop_with_cond(cond: np.ndarray):
    """A Loop of 3 trips whose body's condition output is the constant ``cond``."""
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(cond)),
         helper.make_node("Add", ["acc", "x"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, None), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2, 4])],
    )  # fmt: skip
    node = helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)
    return graph_model([node], {"x": X}, ["y"], {"n": np.array(3, np.int64)})


def test_one_value_may_be_two_graph_outputs():
    m = node_model("Relu", {"x": X})
    m.graph.output.extend([m.graph.output[0]])
    res = compile_model(m)
    assert [o["name"] for o in res.artifact.manifest["outputs"]] == ["y0", "y0"]


def _ir_text() -> str:
    m = node_model("Gemm", {"a": X, "b": np.zeros((4, 3), np.float32)})
    from onnx2wgsl.compiler.driver import run_to_stage

    return print_ir(run_to_stage(m, "import"), stage="import")


@pytest.mark.parametrize(
    "old, new, error, message",
    [
        ("transA = 0", "transA = 256", CompileError, r"Gemm node: attribute transA=256 is out of spec; it is 0 or 1"),
        ("transA = 0", 'transA = "x"', CompileError, r"Gemm node: attribute transA must be an integer, not 'x'"),
        ("transA = 0, ", "", IRError, r"Gemm node: the IR breaks what stage 'lower' relies on \(KeyError: 'transA'\)"),
        ("Gemm(%a, %b)", "Gemm(%a)", IRError, r"Gemm node: the IR breaks what stage 'lower' relies on \(IndexError"),
    ],
    ids=["flag-value", "flag-type", "missing-attribute", "missing-operand"],
)  # fmt: skip
def test_edited_ir_that_breaks_an_op_is_a_compile_error(old, new, error, message):
    text = _ir_text()
    assert old in text
    with pytest.raises(error, match=message) as e:
        compile_model(parse_ir(text.replace(old, new)), stage="import")
    assert not isinstance(e.value, InternalError) and "\n" not in str(e.value)


def test_ir_with_a_cast_compiles_on():
    """The IR names a Cast's target dtype (to = "i32"); the attribute check once wanted an int."""
    from onnx2wgsl.compiler.driver import run_to_stage

    m = node_model("Cast", {"x": X}, {"to": TensorProto.INT32})
    text = print_ir(run_to_stage(m, "import"), stage="import")
    assert 'to = "i32"' in text
    res = compile_model(parse_ir(text), stage="import")
    assert res.artifact.manifest == compile_model(m).artifact.manifest
    with pytest.raises(CompileError, match="attribute to = 'x32' is not a dtype of the IR"):
        compile_model(parse_ir(text.replace('"i32"', '"x32"')), stage="import")


def test_a_name_that_is_not_utf8_is_refused():
    """protobuf hands an invalid UTF-8 string over as bytes (a mangled file)."""
    data = _relu().SerializeToString().replace(b"Relu", b"R\xa3lu")
    import onnx

    with pytest.raises(CompileError, match=r"string field 'op_type' that is not valid UTF-8: b'R\\xa3lu'"):
        compile_model(onnx.load_from_string(data))


def test_a_tensor_over_the_buffer_limit_is_refused_before_lowering():
    """A Resize of 2**31 channels once spent minutes building host tables before the planner
    refused it."""
    m = node_model("Resize", {"x": np.zeros((1, 2, 4, 4), np.float32)}, {"mode": "nearest"},
                   initializers={"sc": np.array([1, 1, 2, 2], np.float32)}, input_order=["x", "", "sc"], opset=13)  # fmt: skip
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 2**31
    with pytest.raises(
        CompileError, match=r"tensor %x \(f32\[1,2147483648,4,4\]\) needs 137,438,953,472 bytes"
    ):
        compile_model(m)


def test_an_absurd_axis_is_refused_before_onnx_inference_crashes(tmp_path):
    """onnx's LayerNormalization inference indexes with an axis of 2**31 unchecked and the
    process dies (found by fuzzing); run in a child process so that a regression fails here."""
    import subprocess
    import sys

    import onnx

    m = node_model(
        "LayerNormalization", {"x": X}, {"axis": 2**31}, initializers={"s": np.ones(4, np.float32)}
    )
    onnx.save(m, tmp_path / "m.onnx")
    r = subprocess.run(
        [sys.executable, "-m", "onnx2wgsl.compiler.cli", "compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(
        "error: LayerNormalization node (opset 17): attribute axis 2147483648 is out of range"
    )

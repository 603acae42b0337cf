"""If / Loop / Scan resolved at compile time: branches inlined (or both run and selected when
the condition is computed at run time), loops unrolled, vs onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import assert_close, check_against_ort, gpu_run, rand, reference_run
from onnx import TensorProto, helper, numpy_helper

from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import UnsupportedError

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def _branch(name, nodes, outputs):
    return helper.make_graph(nodes, name, [], outputs)


# -- If --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cond", [True, False])
def test_if_with_constant_condition_inlines_the_taken_branch(cond, device):
    x = rand(3, 4)
    then_b = _branch("then", [helper.make_node("Relu", ["x"], ["t"])], [_vi("t", [3, 4])])
    else_b = _branch(
        "else",
        [helper.make_node("Mul", ["x", "two"], ["e0"]), helper.make_node("Sigmoid", ["e0"], ["e"])],
        [_vi("e", [3, 4])],
    )
    m = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b)],
        [_vi("x", [3, 4])],
        [_vi("y", [3, 4])],
        [("c", np.array(cond)), ("two", np.array(2.0, np.float32))],
    )
    res = compile_model(m, opt_level=0)  # unfused: the kernels are the taken branch's ops
    assert [op.attrs["op"] for op in res.graph.kernels()] == (["Relu"] if cond else ["Mul", "Sigmoid"])
    check_against_ort(m, {"x": x}, device)


def test_if_condition_from_shape_math_folds(device):
    # cond = (x.shape[1] == 4): known once the input shape is, so If picks its branch at compile time.
    x = rand(2, 4)
    then_b = _branch("then", [helper.make_node("Neg", ["x"], ["t"])], [_vi("t", [2, 4])])
    else_b = _branch("else", [helper.make_node("Abs", ["x"], ["e"])], [_vi("e", [2, 4])])
    m = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "one"], ["d"]),
            helper.make_node("Equal", ["d", "four"], ["c"]),
            helper.make_node("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b),
        ],
        [_vi("x", [2, 4])],
        [_vi("y", [2, 4])],
        [("one", np.array(1, np.int64)), ("four", np.array(4, np.int64))],
    )
    check_against_ort(m, {"x": x}, device)


def _run_time_if_model(cond_shape=(), then_op="Relu", then_out=("t", [3, 4]), extra=False):
    """y = cond ? then_op(x) : Sigmoid(2x); with ``extra``, a second output (a scalar sum in then,
    a constant in else) and a third that both branches take from the outer scope."""
    then_nodes = [helper.make_node(then_op, ["x"], ["t"])]
    else_nodes = [helper.make_node("Mul", ["x", "two"], ["e0"]), helper.make_node("Sigmoid", ["e0"], ["e"])]
    then_outs, else_outs, outs = [_vi(*then_out)], [_vi("e", [3, 4])], [_vi("y", [3, 4])]
    if extra:
        then_nodes.append(helper.make_node("ReduceSum", ["x"], ["ts"], keepdims=0))
        else_nodes.append(helper.make_node("Constant", [], ["es"], value_float=-1.0))
        then_outs += [_vi("ts", []), _vi("x", [3, 4])]
        else_outs += [_vi("es", []), _vi("x", [3, 4])]
        outs += [_vi("s", []), _vi("same", [3, 4])]
    node = helper.make_node(
        "If", ["c"], [o.name for o in outs],
        then_branch=_branch("then", then_nodes, then_outs), else_branch=_branch("else", else_nodes, else_outs),
    )  # fmt: skip
    inputs = [_vi("x", [3, 4]), _vi("c", list(cond_shape), TensorProto.BOOL)]
    return _model([node], inputs, outs, [("two", np.array(2.0, np.float32))])


@pytest.mark.parametrize("cond", [True, False])
@pytest.mark.parametrize("cond_shape", [(), (1,)], ids=str)
def test_if_with_run_time_condition_selects_between_both_branches(cond, cond_shape, device):
    m = _run_time_if_model(cond_shape)
    res = compile_model(m, opt_level=0)  # unfused: both branches and the select
    assert [op.attrs["op"] for op in res.graph.kernels()] == ["Relu", "Mul", "Sigmoid", "Where"]
    check_against_ort(m, {"x": rand(3, 4), "c": np.full(cond_shape, cond)}, device)


@pytest.mark.parametrize("cond", [True, False])
def test_run_time_if_with_scalar_constant_and_outer_outputs(cond, device):
    # onnxruntime refuses branches that return an outer value directly: onnx.reference
    m = _run_time_if_model(extra=True)
    feeds = {"x": rand(3, 4), "c": np.array(cond)}
    assert_close(gpu_run(m, feeds, device), reference_run(m, feeds))
    assert [op.attrs["op"] for op in compile_model(m, opt_level=0).graph.kernels()].count("Where") == 2


def test_run_time_if_with_branches_of_different_types_is_a_clear_error():
    m = _run_time_if_model(then_op="Transpose", then_out=("t", [4, 3]))  # then [4, 3], else [3, 4]
    with pytest.raises(
        UnsupportedError,
        match=r"If node.*condition is computed at run time.*output 0 \('y'\) different types",
    ):
        compile_model(m)


# -- Loop ------------------------------------------------------------------------------------
def _loop_body(cond_node=None):
    """Body (i, cond, acc) -> (cond, acc + x * (i+1), acc as a scan output)."""
    nodes = [
        helper.make_node("Cast", ["i"], ["fi"], to=F),
        helper.make_node("Add", ["fi", "one"], ["f1"]),
        helper.make_node("Mul", ["x", "f1"], ["xi"]),
        helper.make_node("Add", ["acc", "xi"], ["acc_out"]),
        helper.make_node("Identity", ["acc"], ["scan_out"]),
        cond_node or helper.make_node("Identity", ["cond"], ["cond_out"]),
    ]
    return helper.make_graph(
        nodes,
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL), _vi("acc", [2, 3])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("acc_out", [2, 3]), _vi("scan_out", [2, 3])],
    )


@pytest.mark.parametrize("trip", [1, 4])
def test_loop_with_constant_trip_count_unrolls(trip, device):
    x, a0 = rand(2, 3), rand(2, 3, seed=1)
    m = _model(
        [helper.make_node("Loop", ["M", "c", "a0"], ["a", "scan"], body=_loop_body())],
        [_vi("x", [2, 3]), _vi("a0", [2, 3])],
        [_vi("a", [2, 3]), _vi("scan", [trip, 2, 3])],
        [("M", np.array(trip, np.int64)), ("c", np.array(True)), ("one", np.array(1.0, np.float32))],
    )
    check_against_ort(m, {"x": x, "a0": a0}, device)


def test_loop_condition_computed_from_the_iteration_number_exits_early(device):
    # cond_out = i < 2: three iterations out of a trip count of 10.
    x, a0 = rand(2, 3), rand(2, 3, seed=1)
    body = _loop_body(helper.make_node("Less", ["i", "two"], ["cond_out"]))
    m = _model(
        [helper.make_node("Loop", ["M", "", "a0"], ["a", "scan"], body=body)],
        [_vi("x", [2, 3]), _vi("a0", [2, 3])],
        [_vi("a", [2, 3]), _vi("scan", [3, 2, 3])],
        [("M", np.array(10, np.int64)), ("one", np.array(1.0, np.float32)), ("two", np.array(2, np.int64))],
    )
    res = compile_model(m)
    assert res.graph.outputs[1].shape == (3, 2, 3)
    check_against_ort(m, {"x": x, "a0": a0}, device)


def test_loop_with_run_time_trip_count_is_a_clear_error():
    m = _model(
        [helper.make_node("Loop", ["M", "c", "a0"], ["a", "scan"], body=_loop_body())],
        [_vi("x", [2, 3]), _vi("a0", [2, 3]), _vi("M", [], TensorProto.INT64)],
        [_vi("a", [2, 3]), _vi("scan", [None, 2, 3])],
        [("c", np.array(True)), ("one", np.array(1.0, np.float32))],
    )
    with pytest.raises(UnsupportedError, match="Loop node.*trip count M is computed at run time"):
        compile_model(m)


def test_loop_condition_computed_at_run_time_is_a_clear_error():
    # cond_out = max(acc) < 1: a function of run-time data
    body = _loop_body(helper.make_node("Less", ["m", "one"], ["cond_out"]))
    body.node.insert(0, helper.make_node("ReduceMax", ["acc"], ["m"], keepdims=0))
    m = _model(
        [helper.make_node("Loop", ["M", "c", "a0"], ["a", "scan"], body=body)],
        [_vi("x", [2, 3]), _vi("a0", [2, 3])],
        [_vi("a", [2, 3]), _vi("scan", [None, 2, 3])],
        [("M", np.array(5, np.int64)), ("c", np.array(True)), ("one", np.array(1.0, np.float32))],
    )
    with pytest.raises(UnsupportedError, match="condition is computed at run time"):
        compile_model(m)


# -- Scan ------------------------------------------------------------------------------------
def _scan_model(in_axis, in_dir, out_axis, out_dir, runtime_xs=False):
    """state' = state + x_t * w; y_t = state' (state a model input; the scan input a constant,
    whose slices fold, or a model input, sliced by Gather kernels)."""
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["x_t", "w"], ["xw"]),
            helper.make_node("Add", ["s", "xw"], ["s_out"]),
            helper.make_node("Relu", ["s_out"], ["y_t"]),
        ],
        "body",
        [_vi("s", [3]), _vi("x_t", [3])],
        [_vi("s_out", [3]), _vi("y_t", [3])],
    )
    xs = rand(4, 3, seed=5) if in_axis == 0 else rand(3, 4, seed=5)
    node = helper.make_node(
        "Scan",
        ["s0", "xs"],
        ["s", "ys"],
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[in_axis],
        scan_input_directions=[in_dir],
        scan_output_axes=[out_axis],
        scan_output_directions=[out_dir],
    )
    out_shape = [4, 3] if out_axis == 0 else [3, 4]
    inputs = [_vi("s0", [3]), _vi("w", [3])] + ([_vi("xs", list(xs.shape))] if runtime_xs else [])
    m = _model(
        [node], inputs, [_vi("s", [3]), _vi("ys", out_shape)], [] if runtime_xs else [("xs", xs)], opset=16
    )
    return (m, xs) if runtime_xs else m


@pytest.mark.parametrize(
    "in_axis,in_dir,out_axis,out_dir", [(0, 0, 0, 0), (1, 1, 0, 0), (0, 0, 1, 1), (1, 0, -1, 0)]
)
def test_scan_unrolls_over_a_static_sequence(in_axis, in_dir, out_axis, out_dir, device):
    m = _scan_model(in_axis, in_dir, out_axis, out_dir)
    feeds = {"s0": rand(3, seed=1), "w": rand(3, seed=2)}
    check_against_ort(m, feeds, device)


@pytest.mark.parametrize("in_axis,in_dir,out_axis,out_dir", [(0, 0, 0, 0), (1, 1, 1, 1)])
def test_scan_over_a_run_time_input(in_axis, in_dir, out_axis, out_dir, device):
    m, xs = _scan_model(in_axis, in_dir, out_axis, out_dir, runtime_xs=True)
    check_against_ort(m, {"s0": rand(3, seed=1), "w": rand(3, seed=2), "xs": xs}, device)


def test_subgraph_reads_outer_scope_values_and_inlines_functions(device):
    # A Loop body that uses an outer value (w) and an op expanded from its function body.
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["acc", "w"], ["m"]),
            helper.make_node("Softsign", ["m"], ["acc_out"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL), _vi("acc", [5])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("acc_out", [5])],
    )
    m = _model(
        [helper.make_node("Loop", ["M", "", "a0"], ["a"], body=body)],
        [_vi("a0", [5]), _vi("w", [5])],
        [_vi("a", [5])],
        [("M", np.array(3, np.int64))],
    )
    check_against_ort(
        m, {"a0": rand(5, seed=3, low=-3, high=3), "w": rand(5, seed=4, low=-3, high=3)}, device
    )


def test_unrolled_names_are_deterministic(tmp_path):
    m = _scan_model(0, 0, 0, 0)
    a = compile_model(m, tmp_path / "a")
    b = compile_model(m, tmp_path / "b")
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert isinstance(a.graph, type(b.graph))
    onnx.checker.check_model(m)

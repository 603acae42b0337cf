"""If / Loop / Scan resolved at compile time: branches inlined (or both run and selected when
the condition is computed at run time), loops unrolled, vs onnxruntime."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import assert_close, check_against_ort, gpu_run, ort_run, rand, reference_run
from onnx import TensorProto, helper, numpy_helper

from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import CompileError, ConstantRequiredError, UnsupportedError

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


_SR = ("sr", TensorProto.INT64)
_SR_IS_16K = [helper.make_node("Equal", ["sr", "k16000"], ["c"])]


def _rate_branches(bad):
    """(then, else): h = LSTM(x), or in the ``bad`` branch(es) an LSTM fed Squeeze(x), which
    for x: [1, 5, 4] has rank 2 and fails shape inference."""
    good = _branch(
        "good", [helper.make_node("LSTM", ["x", "W", "R"], ["gy", "h"], hidden_size=3)], [_vi("h", None)]
    )
    squeezed = [
        helper.make_node("Squeeze", ["x"], ["sq"]),
        helper.make_node("LSTM", ["sq", "W", "R"], ["by", "h"], hidden_size=3, name="bad/lstm"),
    ]
    broken = _branch("bad", squeezed, [_vi("h", None)])
    return (broken if bad in ("then", "both") else good), (broken if bad in ("else", "both") else good)


def _rate_model(cond_nodes=_SR_IS_16K, bad="else", cond_input=_SR, cond="c", outer=None):
    """A voice-activity model's shape: an If on a run-time scalar (``cond`` computed by
    ``cond_nodes`` from input ``cond_input``) whose ``bad`` branch does not compile at
    x: [1, 5, 4]. x's dims are symbolic, so onnxruntime loads the model and fails only if it
    takes that branch. ``outer``: the If sits in the then branch of an If on Equal(sr, 16000)."""
    then_b, else_b = _rate_branches(bad)
    nodes = [
        *cond_nodes,
        helper.make_node("If", [cond], ["h"], then_branch=then_b, else_branch=else_b, name="rate_if"),
    ]
    inputs = [_vi("x", ["t", "b", 4]), _vi(cond_input[0], [], cond_input[1])]
    if outer:
        then_b, (else_b, _) = _branch("outer_then", nodes, [_vi("h", None)]), _rate_branches(bad=None)
        outer_if = helper.make_node(
            "If", ["c"], ["h"], then_branch=then_b, else_branch=else_b, name="outer_if"
        )
        nodes = [*_SR_IS_16K, outer_if]
        inputs.append(_vi("sr", [], TensorProto.INT64))
    rng = np.random.default_rng(7)
    inits = [
        ("W", rng.uniform(-1, 1, (1, 12, 4)).astype(np.float32)),
        ("R", rng.uniform(-1, 1, (1, 12, 3)).astype(np.float32)),
        ("k16000", np.array(16000, np.int64)),
        ("k8000", np.array(8000.0, np.float32)),
    ]
    return _model(nodes, inputs, [_vi("h", None)], inits)


_X_SHAPE = {"x": (1, 5, 4)}


def test_run_time_if_whose_other_branch_fails_names_the_input_to_freeze(device):
    m = _rate_model()
    with pytest.raises(ConstantRequiredError) as e:
        compile_model(m, shapes=_X_SHAPE)
    text = str(e.value)
    assert "\n" not in text and e.value.inputs == ("sr",), text
    assert text.startswith(
        "If node 'rate_if' (opset 17): its condition is computed at run time from graph input 'sr'"
    )
    assert "its else branch fails: LSTM node 'bad/lstm' (opset 17): shape inference failed" in text, text
    assert (
        "--const sr=FILE.npy" in text and "the then branch compiles and is taken when sr == 16000" in text
    ), text
    assert isinstance(e.value.__cause__, CompileError)
    x, sr = rand(1, 5, 4), np.array(16000, np.int64)
    got = gpu_run(m, {"x": x}, device, shapes=_X_SHAPE, constants={"sr": sr})
    assert_close(got, ort_run(m, {"x": x, "sr": sr}))


@pytest.mark.parametrize(
    "cond_nodes,bad,cond_input,hint",
    [
        (_SR_IS_16K, "then", _SR, "the else branch compiles and is taken when sr is 15999 or 16001"),
        ([helper.make_node("Equal", ["sr", "k16000"], ["e"]), helper.make_node("Not", ["e"], ["c"])], "then", _SR,
         "the else branch compiles and is taken when sr == 16000"),
        ([helper.make_node("Cast", ["sr"], ["f"], to=F), helper.make_node("Greater", ["f", "k8000"], ["c"])], "else", _SR,
         "the then branch compiles and is taken when sr == 8001"),
        ([helper.make_node("Identity", ["flag"], ["c"])], "then", ("flag", TensorProto.BOOL),
         "the else branch compiles and is taken when flag == False"),
        (_SR_IS_16K, "both", _SR, ""),  # neither branch compiles: no value to name
    ],
    ids=["equal", "not-equal", "greater", "bool-input", "both-fail"],
)  # fmt: skip
def test_run_time_if_error_says_which_value_folds_to_the_branch_that_compiles(
    cond_nodes, bad, cond_input, hint
):
    with pytest.raises(ConstantRequiredError) as e:
        compile_model(_rate_model(cond_nodes, bad, cond_input), shapes=_X_SHAPE)
    name = cond_input[0]
    assert e.value.inputs == (name,)
    freeze = f"freeze it with --const {name}=FILE.npy (Python: constants={{name: array}})"
    assert str(e.value).endswith(freeze + (f"; {hint}" if hint else "")), str(e.value)


def test_run_time_if_on_data_whose_branch_fails_names_the_data_but_offers_no_freeze():
    # cond = max(x) > 8000: x (20 values) is data, not a setting to compile once per value
    cond_nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "k8000"], ["c"]),
    ]
    with pytest.raises(CompileError) as e:
        compile_model(_rate_model(cond_nodes), shapes=_X_SHAPE)
    assert not isinstance(e.value, ConstantRequiredError)
    assert "from graph input 'x'" in str(e.value) and "depends on run-time data" in str(e.value), str(e.value)
    assert "--const" not in str(e.value)


def test_a_nested_run_time_if_reports_its_own_error_on_one_line():
    m = _rate_model(
        [helper.make_node("Identity", ["flag"], ["c2"])], "else", ("flag", TensorProto.BOOL), "c2", outer=True
    )
    with pytest.raises(ConstantRequiredError) as e:
        compile_model(m, shapes=_X_SHAPE)
    text = str(e.value)
    assert e.value.inputs == ("flag",) and "\n" not in text and "outer_if" not in text, text
    assert text.startswith("If node 'rate_if'") and text.count("If node") == 1, text
    assert text.endswith("the then branch compiles and is taken when flag == True"), text
    # flag frozen, the inner If folds to its good branch and the outer one compiles both of its
    compile_model(m, shapes=_X_SHAPE, constants={"flag": np.array(True)})


def test_cli_run_time_if_error_is_one_line(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_rate_model(), path)
    np.save(tmp_path / "sr.npy", np.array(16000, np.int64))
    cmd = [sys.executable, "-m", "onnx2wgsl", "compile", str(path), "-o", str(tmp_path / "o"), "--shape"]
    r = subprocess.run([*cmd, "x=1x5x4"], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: If node 'rate_if'"), r.stderr
    assert "--const sr=FILE.npy" in lines[0] and "sr == 16000" in lines[0], r.stderr
    r = subprocess.run(
        [*cmd, "x=1x5x4", "--const", f"sr={tmp_path / 'sr.npy'}"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_backend_compiles_a_run_time_if_per_value_of_its_condition_input(device):
    import onnx2wgsl.backend as backend

    m = _rate_model()
    rep = backend.prepare(m, webgpu_device=device)
    try:
        x = rand(1, 5, 4)
        sr = np.array(16000, np.int64)
        assert_close(list(rep.run({"x": x, "sr": sr})), ort_run(m, {"x": x, "sr": sr}))
        assert rep.frozen == ("sr",) and rep.shaped == ("x",)
        with pytest.raises(CompileError, match="First input tensor must have rank 3"):
            rep.run({"x": x, "sr": np.array(8000, np.int64)})  # the branch it takes does not compile
    finally:
        rep.release()


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

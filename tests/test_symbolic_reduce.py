"""Reductions, softmax and normalizations over dims kept symbolic: compiled once, run at sizes
across the dims' ranges (both ends included) in one session, each run compared with onnxruntime."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from helpers import assert_close, check_symbolic, graph_model, ort_run, rand, with_dim_params
from onnx import helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model

BS = {"batch": (1, 4), "seq": (1, 128)}
SIZES = [(1, 1), (2, 17), (4, 128)]  # (batch, seq): both ends of the ranges, and between


def _model(nodes, inputs, outputs, shapes, initializers=None, opset=17):
    m = graph_model(nodes, inputs, outputs, initializers, opset=opset)
    return with_dim_params(m, shapes)


def _check_rows(nodes, hidden, inits, device, opset=17, level=None):
    """``nodes`` map x [batch, seq, hidden] to y of the same shape: compiled once over BS and
    checked against onnxruntime at every point of SIZES."""
    shapes = {"x": ["batch", "seq", hidden], "y": ["batch", "seq", hidden]}
    m = _model(nodes, {"x": rand(2, 5, hidden)}, ["y"], shapes, inits, opset=opset)
    feeds = [{"x": rand(b, s, hidden, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device, **({} if level is None else {"opt_level": level}))


# -- Softmax / LogSoftmax ---------------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("kind", ["Softmax", "LogSoftmax"])
def test_softmax_over_symbolic_attention_scores(device, kind, level):
    """[batch, heads, seq, seq] scores, axis -1: a symbolic axis length and symbolic rows."""
    m = _model(
        [helper.make_node(kind, ["x"], ["y"], axis=-1)],
        {"x": rand(2, 3, 5, 5)},
        ["y"],
        {"x": ["batch", 3, "seq", "seq"], "y": ["batch", 3, "seq", "seq"]},
    )
    feeds = [{"x": rand(b, 3, s, s, seed=s, low=-4, high=4)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device, opt_level=level)


def test_softmax_over_a_static_axis_with_symbolic_rows(device):
    m = _model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        {"x": rand(2, 5, 40)},
        ["y"],
        {"x": ["batch", "seq", 40], "y": ["batch", "seq", 40]},
    )
    feeds = [{"x": rand(b, s, 40, seed=s, low=-4, high=4)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


def test_softmax_over_a_symbolic_inner_axis(device):
    """axis 1 of [batch, seq, 6]: the axis has a symbolic length and a static stride."""
    m = _model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
        {"x": rand(2, 5, 6)},
        ["y"],
        {"x": ["batch", "seq", 6], "y": ["batch", "seq", 6]},
    )
    feeds = [{"x": rand(b, s, 6, seed=s, low=-4, high=4)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


@pytest.mark.parametrize("kind", ["Softmax", "LogSoftmax"])
def test_softmax_over_a_long_symbolic_axis_runs_in_chunks(device, kind):
    """A range past the two-pass threshold: the chunk count is an expression of the length."""
    m = _model(
        [helper.make_node(kind, ["x"], ["y"], axis=-1)],
        {"x": rand(2, 5)},
        ["y"],
        {"x": ["batch", "n"], "y": ["batch", "n"]},
    )
    feeds = [{"x": rand(b, n, seed=n, low=-8, high=8)} for b, n in [(1, 1), (2, 4097), (3, 40000)]]
    check_symbolic(m, {"batch": (1, 3), "n": (1, 40000)}, feeds, device)


# -- LayerNormalization / RMSNormalization ----------------------------------------------------
@pytest.mark.parametrize("level", [0, 2])
def test_layer_norm_with_symbolic_rows(device, level):
    hidden = 32
    _check_rows(
        [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
        hidden,
        {"g": rand(hidden, seed=1), "b": rand(hidden, seed=2)},
        device,
        level=level,
    )


def test_layer_norm_over_a_symbolic_axis(device):
    """axis 1 of [batch, seq, 8]: the normalized count seq * 8 is symbolic (its mean divides
    by a run-time count)."""
    m = _model(
        [helper.make_node("LayerNormalization", ["x", "g"], ["y"], axis=1, epsilon=1e-5)],
        {"x": rand(2, 5, 8)},
        ["y"],
        {"x": ["batch", "seq", 8], "y": ["batch", "seq", 8]},
        {"g": rand(8, seed=1)},
    )
    feeds = [{"x": rand(b, s, 8, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


def test_rms_norm_with_symbolic_rows(device):
    hidden = 48
    _check_rows(
        [helper.make_node("RMSNormalization", ["x", "g"], ["y"], axis=-1, epsilon=1e-6)],
        hidden,
        {"g": rand(hidden, seed=1)},
        device,
        opset=23,
    )


@pytest.mark.parametrize("level", [0, 2])
def test_decomposed_layer_norm(device, level):
    """ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div (then scale and shift), as exporters
    write it: -O2 fuses the pattern, -O0 runs each op."""
    hidden = 32
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),  # opset 17: axes an attribute
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["s"]),
        helper.make_node("Add", ["s", "b"], ["y"]),
    ]
    inits = {
        "two": np.array(2.0, np.float32),
        "eps": np.array(1e-5, np.float32),
        "g": rand(hidden, seed=1),
        "b": rand(hidden, seed=2),
    }
    _check_rows(nodes, hidden, inits, device, opset=17, level=level)


# -- Reduce* ----------------------------------------------------------------------------------
def _reduce(kind, axes, keepdims, x_shape, x_dims, y_dims, dtype=np.float32):
    """A Reduce* node at opset 18 (axes as a constant input)."""
    node = helper.make_node(kind, ["x", "axes"], ["y"], keepdims=keepdims)
    return _model(
        [node],
        {"x": np.zeros(x_shape, dtype)},
        ["y"],
        {"x": x_dims, "y": y_dims},
        {"axes": np.array(axes, np.int64)},
        opset=18,
    )


REDUCE_KINDS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceLogSumExp"]


@pytest.mark.parametrize("kind", REDUCE_KINDS)
def test_reduce_over_a_static_axis_keeps_symbolic_dims(device, kind):
    m = _reduce(kind, [-1], 1, (2, 5, 24), ["batch", "seq", 24], ["batch", "seq", 1])
    feeds = [{"x": rand(b, s, 24, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


@pytest.mark.parametrize("kind", REDUCE_KINDS + ["ReduceProd", "ReduceL1", "ReduceSumSquare", "ReduceLogSum"])
def test_reduce_over_a_symbolic_axis(device, kind):
    m = _reduce(kind, [1], 0, (2, 5, 6), ["batch", "seq", 6], ["batch", 6])
    low = 0.9 if kind in ("ReduceProd", "ReduceLogSum") else -1.0
    high = 1.1 if kind == "ReduceProd" else 1.0
    feeds = [{"x": rand(b, s, 6, seed=s, low=low, high=high)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


@pytest.mark.parametrize("level", [0, 2])
def test_reduce_over_two_symbolic_axes(device, level):
    """ReduceMean over batch and seq: the reduced count batch * seq is symbolic, the rows static."""
    m = _reduce("ReduceMean", [0, 1], 0, (2, 5, 6), ["batch", "seq", 6], [6])
    feeds = [{"x": rand(b, s, 6, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device, opt_level=level)


def test_reduce_sum_int_over_a_symbolic_axis(device):
    m = _reduce("ReduceSum", [0, 1], 1, (2, 5), ["batch", "seq"], [1, 1], np.int32)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.integers(-50, 50, (b, s)).astype(np.int32)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


@pytest.mark.parametrize("kind", ["ReduceSum", "ReduceMax"])
def test_reduce_over_a_long_symbolic_axis_runs_in_two_stages(device, kind):
    m = _reduce(kind, [1], 0, (2, 5), ["batch", "n"], ["batch"])
    feeds = [{"x": rand(b, n, seed=n)} for b, n in [(1, 1), (2, 5000), (3, 70000)]]
    check_symbolic(m, {"batch": (1, 3), "n": (1, 70000)}, feeds, device, rtol=1e-3, atol=1e-3)


# -- ArgMax / ArgMin, CumSum ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [1, 2])
def test_arg_over_symbolic_shapes(device, kind, axis):
    """axis 1 (seq): a symbolic length; axis 2: a static one with symbolic rows."""
    y_dims = ["batch", 1, 6] if axis == 1 else ["batch", "seq", 1]
    m = _model(
        [helper.make_node(kind, ["x"], ["y"], axis=axis, keepdims=1, select_last_index=int(axis == 2))],
        {"x": rand(2, 5, 6)},
        ["y"],
        {"x": ["batch", "seq", 6], "y": y_dims},
    )
    # rounded values: ties, which the index rules break
    feeds = [{"x": np.round(rand(b, s, 6, seed=s) * 3)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 1)])
@pytest.mark.parametrize("n", [40, 300])
def test_cumsum_over_a_symbolic_axis(device, exclusive, reverse, n):
    """seq up to 40 scans a row per invocation; up to 300 scans chunks of 64 from their offsets,
    the chunk count an expression of seq (1 at seq <= 64)."""
    m = _model(
        [helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)],
        {"x": rand(2, 5, 3)},
        ["y"],
        {"x": ["batch", "seq", 3], "y": ["batch", "seq", 3]},
        {"axis": np.array(1, np.int64)},
    )
    sizes = [(1, 1), (2, 17), (3, 64), (4, n)] if n > 64 else [(1, 1), (2, 17), (4, n)]
    feeds = [{"x": rand(b, s, 3, seed=s)} for b, s in sizes]
    check_symbolic(m, {"batch": (1, 4), "seq": (1, n)}, feeds, device)


def test_cumsum_over_a_static_axis_with_symbolic_rows(device):
    m = _model(
        [helper.make_node("CumSum", ["x", "axis"], ["y"])],
        {"x": rand(2, 5, 100)},
        ["y"],
        {"x": ["batch", "seq", 100], "y": ["batch", "seq", 100]},
        {"axis": np.array(-1, np.int64)},
    )
    feeds = [{"x": rand(b, s, 100, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


# -- the other normalizations on the row kernel -------------------------------------------------
def test_hardmax_over_a_symbolic_axis(device):
    m = _model(
        [helper.make_node("Hardmax", ["x"], ["y"], axis=-1)],
        {"x": rand(2, 5)},
        ["y"],
        {"x": ["batch", "seq"], "y": ["batch", "seq"]},
    )
    feeds = [{"x": np.round(rand(b, s, seed=s) * 3)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


def test_instance_norm_over_symbolic_spatial_dims(device):
    m = _model(
        [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-5)],
        {"x": rand(2, 3, 5)},
        ["y"],
        {"x": ["batch", 3, "seq"], "y": ["batch", 3, "seq"]},
        {"s": rand(3, seed=1), "b": rand(3, seed=2)},
    )
    feeds = [{"x": rand(b, 3, s, seed=s)} for b, s in [(1, 2), (2, 17), (4, 128)]]
    check_symbolic(m, BS, feeds, device, atol=1e-4)


@pytest.mark.parametrize("p", [1, 2])
def test_lp_norm_over_a_symbolic_axis(device, p):
    m = _model(
        [helper.make_node("LpNormalization", ["x"], ["y"], axis=1, p=p)],
        {"x": rand(2, 5, 4)},
        ["y"],
        {"x": ["batch", "seq", 4], "y": ["batch", "seq", 4]},
    )
    feeds = [{"x": rand(b, s, 4, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


def test_mean_variance_normalization_over_symbolic_axes(device):
    m = _model(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=[0, 1])],
        {"x": rand(2, 5, 4)},
        ["y"],
        {"x": ["batch", "seq", 4], "y": ["batch", "seq", 4]},
    )
    feeds = [{"x": rand(b, s, 4, seed=s)} for b, s in [(1, 2), (2, 17), (4, 128)]]
    check_symbolic(m, BS, feeds, device, atol=1e-4)


@pytest.mark.parametrize("level", [0, 2])
def test_decomposed_softmax(device, level):
    """ReduceMax, Sub, Exp, ReduceSum, Div over a symbolic axis, as exporters write it."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], axes=[-1]),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Exp", ["d"], ["e"]),
        helper.make_node("ReduceSum", ["e", "axes"], ["s"]),
        helper.make_node("Div", ["e", "s"], ["y"]),
    ]
    m = _model(
        nodes,
        {"x": rand(2, 3, 5, 5)},
        ["y"],
        {"x": ["batch", 3, "seq", "seq"], "y": ["batch", 3, "seq", "seq"]},
        {"axes": np.array([-1], np.int64)},
    )
    feeds = [{"x": rand(b, 3, s, s, seed=s, low=-4, high=4)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device, opt_level=level)


def test_rows_past_the_grid_limit(device):
    """Up to 70000 rows: a grid of two dims over the run's row count."""
    m = _model(
        [
            helper.make_node("Softmax", ["x"], ["y"], axis=-1),
            helper.make_node("ReduceSum", ["x", "axes"], ["s"]),
        ],
        {"x": rand(2, 8)},
        ["y", "s"],
        {"x": ["n", 8], "y": ["n", 8], "s": ["n", 1]},
        {"axes": np.array([-1], np.int64)},
    )
    feeds = [{"x": rand(n, 8, seed=n)} for n in (1, 65536, 70000)]
    check_symbolic(m, {"n": (1, 70000)}, feeds, device)


def test_einsum_over_symbolic_labels(device):
    """A diagonal's sum per batch (the space repeats the symbolic label) times a vector."""
    m = _model(
        [helper.make_node("Einsum", ["a", "v"], ["y"], equation="bssh,bs->bh")],
        {"a": rand(2, 5, 5, 3), "v": rand(2, 5)},
        ["y"],
        {"a": ["batch", "seq", "seq", 3], "v": ["batch", "seq"], "y": ["batch", 3]},
    )
    feeds = [{"a": rand(b, s, s, 3, seed=s), "v": rand(b, s, seed=b)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


def test_lrn_over_symbolic_spatial_dims(device):
    m = _model(
        [helper.make_node("LRN", ["x"], ["y"], size=3, alpha=1e-3, beta=0.75, bias=1.0)],
        {"x": rand(2, 5, 4, 4)},
        ["y"],
        {"x": ["batch", 5, "seq", 4], "y": ["batch", 5, "seq", 4]},
    )
    feeds = [{"x": rand(b, 5, s, 4, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


def test_det_of_a_symbolic_batch(device):
    m = _model(
        [helper.make_node("Det", ["x"], ["y"])],
        {"x": rand(2, 3, 3)},
        ["y"],
        {"x": ["batch", 3, 3], "y": ["batch"]},
    )
    feeds = [{"x": rand(b, 3, 3, seed=b)} for b in (1, 2, 4)]
    check_symbolic(m, BS, feeds, device)


def test_det_of_symbolic_size_matrices_is_a_clear_error():
    from onnx2wgsl.errors import UnsupportedError

    m = _model(
        [helper.make_node("Det", ["x"], ["y"])],
        {"x": rand(2, 3, 3)},
        ["y"],
        {"x": [2, "seq", "seq"], "y": [2]},
    )
    with tempfile.TemporaryDirectory() as out, pytest.raises(UnsupportedError, match="matrix size"):
        compile_model(m, out, dims={"seq": (1, 8)})


# -- TopK -------------------------------------------------------------------------------------
def _topk(k, x_shape, x_dims, y_dims, axis=-1):
    return _model(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis)],
        {"x": rand(*x_shape)},
        ["v", "i"],
        {"x": x_dims, "v": y_dims, "i": y_dims},
        {"k": np.array([k], np.int64)},
    )


@pytest.mark.parametrize(("k", "L"), [(5, 40), (2, 1000), (64, 260000)])
def test_topk_over_a_static_axis_with_symbolic_rows(device, k, L):
    """Ranking every point; k rounds over the row; the rows' chunks' candidates first."""
    m = _topk(k, (2, L), ["batch", L], ["batch", k])
    feeds = [{"x": np.round(rand(b, L, seed=b) * 50)} for b in (1, 2, 3)]  # ties
    check_symbolic(m, {"batch": (1, 3)}, feeds, device)


@pytest.mark.parametrize(("k", "hi"), [(3, 40), (3, 2000)])
def test_topk_over_a_symbolic_axis(device, k, hi):
    m = _topk(k, (2, 5, 6), ["batch", "seq", 6], ["batch", k, 6], axis=1)
    feeds = [{"x": np.round(rand(b, s, 6, seed=s) * 50)} for b, s in [(1, k), (2, 17), (4, hi)]]
    check_symbolic(m, {"batch": (1, 4), "seq": (k, hi)}, feeds, device)


def test_topk_over_a_symbolic_axis_too_long_for_one_workgroup_is_a_clear_error():
    from onnx2wgsl.errors import UnsupportedError

    m = _topk(64, (2, 5), ["batch", "n"], ["batch", 64])
    with tempfile.TemporaryDirectory() as out, pytest.raises(UnsupportedError, match="chunking a symbolic"):
        compile_model(m, out, dims={"batch": (1, 2), "n": (64, 300000)})


def test_topk_with_k_past_the_least_axis_length_is_a_clear_error():
    from onnx2wgsl.errors import CompileError

    m = _topk(3, (2, 5), ["batch", "n"], ["batch", 3])
    with tempfile.TemporaryDirectory() as out, pytest.raises(CompileError, match="least value is at least k"):
        compile_model(m, out, dims={"batch": (1, 2), "n": (1, 10)})


# -- more shapes ------------------------------------------------------------------------------
def test_group_norm_over_symbolic_spatial_dims(device):
    m = _model(
        [helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2, epsilon=1e-5)],
        {"x": rand(2, 4, 5)},
        ["y"],
        {"x": ["batch", 4, "seq"], "y": ["batch", 4, "seq"]},
        {"s": rand(4, seed=1), "b": rand(4, seed=2)},
        opset=21,
    )
    m.graph.output[0].type.tensor_type.elem_type = 1  # onnx's inference leaves this op's output untyped
    feeds = [{"x": rand(b, 4, s, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device, atol=1e-4)


def test_softmax_opset_11_coerces_to_2d(device):
    """Before opset 13, Softmax normalizes over every dim from ``axis`` on."""
    m = _model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
        {"x": rand(2, 5, 8)},
        ["y"],
        {"x": ["batch", "seq", 8], "y": ["batch", "seq", 8]},
        opset=11,
    )
    feeds = [{"x": rand(b, s, 8, seed=s, low=-4, high=4)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


def test_integer_reduce_mean_divides_by_the_run_time_count(device):
    m = _reduce("ReduceMean", [1], 0, (2, 5), ["batch", "seq"], ["batch"], np.int32)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.integers(0, 1000, (b, s)).astype(np.int32)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device)


@pytest.mark.parametrize("level", [0, 2])
def test_decomposed_rms_norm(device, level):
    hidden = 16
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2", "axes"], ["ms"]),
        helper.make_node("Add", ["ms", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["rms"]),
        helper.make_node("Div", ["x", "rms"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["y"]),
    ]
    inits = {
        "two": np.array(2.0, np.float32),
        "eps": np.array(1e-6, np.float32),
        "axes": np.array([-1], np.int64),
        "g": rand(hidden, seed=1),
    }
    _check_rows(nodes, hidden, inits, device, opset=18, level=level)


def test_ranges_that_include_zero(device):
    """seq may be 0: no rows to normalize, and sums over no points (0, the sum's identity)."""
    nodes = [
        helper.make_node("Softmax", ["x"], ["y"], axis=-1),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
        helper.make_node("CumSum", ["x", "axis"], ["c"]),
    ]
    m = _model(
        nodes,
        {"x": rand(2, 5)},
        ["y", "s", "c"],
        {"x": [3, "seq"], "y": [3, "seq"], "s": [3], "c": [3, "seq"]},
        {"axes": np.array([1], np.int64), "axis": np.array(1, np.int64)},
        opset=18,
    )
    feeds = [{"x": rand(3, s, seed=s)} for s in (0, 1, 9, 100)]
    # (not check_symbolic: the IR verifier cannot yet order a grid whose range starts at 0)
    with tempfile.TemporaryDirectory() as out:
        compile_model(m, out, dims={"seq": (0, 100)})
        with onnx2wgsl.load(out, device=device) as sess:
            for f in feeds:
                assert_close(sess.run(None, f), ort_run(m, f))


@pytest.mark.parametrize("lo", [1, 4096])
def test_many_symbolic_rows(device, lo):
    """Rows that are many at every size take an invocation each; else a workgroup each."""
    m = _reduce("ReduceMax", [1], 0, (2, 600), ["n", 600], ["n"])
    feeds = [{"x": rand(n, 600, seed=n)} for n in (lo, lo + 7, 5000)]
    check_symbolic(m, {"n": (lo, 5000)}, feeds, device)


def test_symbolic_row_kernels_round_trip_through_the_ir_text():
    from helpers import assert_ir_round_trips

    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], axis=-1),
        helper.make_node("LayerNormalization", ["p", "g"], ["n"], axis=-1),
        helper.make_node("CumSum", ["n", "axis"], ["c"]),
        helper.make_node("ReduceSum", ["c", "axes"], ["y"]),
    ]
    m = _model(
        nodes,
        {"x": rand(2, 5, 70)},
        ["y"],
        {"x": ["batch", "seq", 70], "y": ["batch", 1, 70]},
        {"g": rand(70), "axis": np.array(2, np.int64), "axes": np.array([1], np.int64)},
        opset=18,
    )
    assert_ir_round_trips(m, dims=BS)


def test_layer_norm_statistics_outputs(device):
    """Mean and InvStdDev, one per row, at symbolic row counts."""
    hidden = 20
    m = _model(
        [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean", "inv"], axis=-1)],
        {"x": rand(2, 5, hidden)},
        ["y", "mean", "inv"],
        {
            "x": ["batch", "seq", hidden],
            "y": ["batch", "seq", hidden],
            "mean": ["batch", "seq", 1],
            "inv": ["batch", "seq", 1],
        },
        {"g": rand(hidden, seed=1), "b": rand(hidden, seed=2)},
    )
    feeds = [{"x": rand(b, s, hidden, seed=s)} for b, s in SIZES]
    check_symbolic(m, BS, feeds, device, rtol=1e-3)


def test_softmax_over_a_long_static_axis_with_symbolic_rows(device):
    m = _model(
        [helper.make_node("LogSoftmax", ["x"], ["y"], axis=-1)],
        {"x": rand(2, 40000)},
        ["y"],
        {"x": ["batch", 40000], "y": ["batch", 40000]},
    )
    feeds = [{"x": rand(b, 40000, seed=b, low=-8, high=8)} for b in (1, 2, 3)]
    check_symbolic(m, {"batch": (1, 3)}, feeds, device)

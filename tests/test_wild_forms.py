"""Forms that exporters give full-size models in the wild, as small graphs: each reproduces
what optimum or torch.onnx writes (docs/wild_models.md lists the models these came from),
compiled with dims kept symbolic and compared with onnxruntime at several sizes."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from helpers import assert_ir_round_trips, check_symbolic, graph_model, ort_run, rand, with_dim_params
from onnx import helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import CompileError, InputError


def _ints(name: str, values) -> helper.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64), name)
    )


# -- optimum names a derived input dim by its arithmetic ----------------------------------------
def _cache_model():
    """A decoder step as optimum declares it: past [b, 2, past, 4] and the new keys [b, 2, seq, 4]
    concatenate into [b, 2, past + seq, 4], whose attention mask is declared
    ``[batch_size, 'past_sequence_length + sequence_length']``."""
    nodes = [
        helper.make_node("Concat", ["past", "new"], ["present"], axis=2),
        helper.make_node("ReduceSum", ["present", "axes"], ["scores"], keepdims=0),
        helper.make_node("Mul", ["scores", "mask"], ["y"]),
    ]
    m = graph_model(
        nodes,
        {"past": rand(1, 2, 3, 4), "new": rand(1, 2, 2, 4), "mask": rand(1, 5)},
        ["present", "y"],
        {"axes": np.array([1, 3], np.int64)},
    )
    return with_dim_params(
        m,
        {
            "past": ["batch_size", 2, "past_sequence_length", 4],
            "new": ["batch_size", 2, "sequence_length", 4],
            "mask": ["batch_size", "past_sequence_length + sequence_length"],
            "present": ["batch_size", 2, "past_sequence_length + sequence_length", 4],
            "y": ["batch_size", "past_sequence_length + sequence_length"],
        },
    )


def _cache_feeds(b: int, past: int, seq: int) -> dict:
    return {
        "past": rand(b, 2, past, 4, seed=past),
        "new": rand(b, 2, seq, 4, seed=seq + 7),
        "mask": rand(b, past + seq, seed=b),
    }


def test_input_dim_written_as_a_sum_of_dims(device):
    dims = {"batch_size": (1, 2), "past_sequence_length": (1, 16), "sequence_length": (1, 8)}
    feeds = [_cache_feeds(1, 1, 1), _cache_feeds(2, 9, 3), _cache_feeds(1, 16, 8)]
    check_symbolic(_cache_model(), dims, feeds, device)


def test_input_dim_expression_over_a_bound_dim(device):
    dims = {"batch_size": 1, "past_sequence_length": 6, "sequence_length": (1, 8)}
    feeds = [_cache_feeds(1, 6, 1), _cache_feeds(1, 6, 8)]
    check_symbolic(_cache_model(), dims, feeds, device)


def test_input_dim_expression_is_checked_at_run_time(device):
    dims = {"batch_size": (1, 2), "past_sequence_length": (1, 16), "sequence_length": (1, 8)}
    with tempfile.TemporaryDirectory() as out:
        compile_model(_cache_model(), out, dims=dims)
        with onnx2wgsl.load(out, device=device) as sess:
            feeds = _cache_feeds(1, 4, 2)
            feeds["mask"] = rand(1, 5)  # past + seq is 6
            with pytest.raises(InputError, match="mask"):
                sess.run(None, feeds)


def test_input_dim_expression_over_a_dim_no_input_has_bare():
    m = with_dim_params(_cache_model(), {"past": ["batch_size", 2, "past_len", 4]})
    dims = {"batch_size": 1, "past_sequence_length": (1, 16), "sequence_length": (1, 8), "past_len": (1, 16)}
    with pytest.raises(CompileError, match="'past_sequence_length' is the bare dim of no input"):
        compile_model(m, dims=dims)


def test_unbound_dim_expression_names_it():
    with pytest.raises(CompileError, match="'past_sequence_length \\+ sequence_length'"):
        compile_model(_cache_model(), dims={"batch_size": 1, "sequence_length": (1, 8)})


# -- T5 slices its relative position bias from a start that depends on the length --------------
def _t5_bias_slice_model(negative: bool):
    """``bias[:, -seq:, :]`` (T5's position bias, torch.onnx: Shape -> Gather -> Neg ->
    Unsqueeze -> Slice to INT64_MAX), or ``bias[:, seq:, :]`` when not ``negative``."""
    nodes = [
        helper.make_node("Shape", ["q"], ["q_shape"]),
        _ints("one", 1),
        helper.make_node("Gather", ["q_shape", "one"], ["seq"], axis=0),
        helper.make_node("Neg", ["seq"], ["neg_seq"])
        if negative
        else helper.make_node("Identity", ["seq"], ["neg_seq"]),
        _ints("zero", [0]),
        helper.make_node("Unsqueeze", ["neg_seq", "zero"], ["start"]),
        _ints("end", [np.iinfo(np.int64).max]),
        _ints("axis", [1]),
        _ints("step", [1]),
        helper.make_node("Slice", ["bias", "start", "end", "axis", "step"], ["sliced"]),
        helper.make_node("Relu", ["sliced"], ["y"]),
    ]
    m = graph_model(nodes, {"bias": rand(1, 6, 3), "q": rand(1, 2, 3)}, ["y"])
    return with_dim_params(m, {"bias": [1, "n", 3], "q": [1, "seq", 3], "y": [1, "out", 3]})


@pytest.mark.parametrize("negative", [True, False], ids=["minus_seq", "seq"])
def test_slice_start_from_a_symbolic_dim(device, negative):
    dims = {"n": (1, 24), "seq": (1, 16)}
    sizes = [(12, 4), (5, 5), (3, 9), (24, 1)]  # n < seq clamps the start to the dim
    feeds = [{"bias": rand(1, n, 3, seed=n), "q": rand(1, s, 3, seed=s)} for n, s in sizes]
    check_symbolic(_t5_bias_slice_model(negative), dims, feeds, device)


def test_slice_start_from_a_symbolic_dim_round_trips_in_ir_text():
    assert_ir_round_trips(_t5_bias_slice_model(True), dims={"n": (1, 24), "seq": (1, 16)})
    assert_ir_round_trips(
        _cache_model(), dims={"batch_size": 1, "past_sequence_length": (1, 16), "sequence_length": (1, 8)}
    )


def test_slice_start_from_a_symbolic_dim_over_a_static_axis(device):
    m = with_dim_params(_t5_bias_slice_model(True), {"bias": [1, 20, 3]})
    feeds = [{"bias": rand(1, 20, 3), "q": rand(1, s, 3, seed=s)} for s in (1, 7, 16)]
    check_symbolic(m, {"seq": (1, 16)}, feeds, device)


def test_slice_start_of_undecided_sign_is_refused():
    nodes = [
        helper.make_node("Shape", ["q"], ["q_shape"]),
        _ints("one", [1]),
        _ints("two", [2]),
        helper.make_node("Slice", ["q_shape", "one", "two"], ["seq"]),
        _ints("four", [4]),
        helper.make_node("Sub", ["seq", "four"], ["start"]),  # seq - 4: either sign
        _ints("end", [np.iinfo(np.int64).max]),
        _ints("axis", [1]),
        helper.make_node("Slice", ["bias", "start", "end", "axis"], ["y"]),
    ]
    m = graph_model(nodes, {"bias": rand(1, 6, 3), "q": rand(1, 2, 3)}, ["y"])
    m = with_dim_params(m, {"bias": [1, "n", 3], "q": [1, "seq", 3], "y": [1, "out", 3]})
    with pytest.raises(CompileError, match="sign depends on the dims"):
        compile_model(m, dims={"n": (1, 24), "seq": (1, 16)})


def test_t5_bias_slice_matches_onnxruntime_at_one_size(device):
    """The same graph with every dim bound folds to a static slice: the reference for the form."""
    m = _t5_bias_slice_model(True)
    feeds = {"bias": rand(1, 12, 3), "q": rand(1, 4, 3)}
    with tempfile.TemporaryDirectory() as out:
        compile_model(m, out, dims={"n": 12, "seq": 4})
        with onnx2wgsl.load(out, device=device) as sess:
            np.testing.assert_allclose(sess.run(None, feeds)[0], ort_run(m, feeds)[0], rtol=1e-6)


# -- wav2vec2 splits heads over a length its conv feature encoder derives -----------------------
def test_reshape_heads_over_a_length_derived_by_a_strided_conv(device):
    """Conv over raw audio, then ``x.view(b, frames, -1, head_dim)`` with ``frames`` read back with
    Shape: the -1 divides ``16*((len - 3) // 2) + 16`` elements by ``4*((len - 3) // 2) + 4``."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[2]),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Shape", ["t"], ["t_shape"]),
        _ints("one", [1]),
        _ints("two", [2]),
        helper.make_node("Slice", ["t_shape", "one", "two"], ["frames"]),
        _ints("head", [1]),
        _ints("tail", [-1, 4]),
        helper.make_node("Concat", ["head", "frames", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["t", "target"], ["heads"]),
        helper.make_node("Transpose", ["heads"], ["y"], perm=[0, 2, 1, 3]),
    ]
    m = graph_model(nodes, {"x": rand(1, 8, 21)}, ["y"], {"w": rand(16, 8, 3, seed=1)})
    m = with_dim_params(m, {"x": [1, 8, "len"], "y": [1, 4, "frames", 4]})
    feeds = [{"x": rand(1, 8, n, seed=n)} for n in (3, 4, 21, 64)]
    check_symbolic(m, {"len": (3, 64)}, feeds, device)


# -- FPN-style nets: a map resized to its skip connection's size, over any height and width -----
@pytest.mark.parametrize(
    "mode,attrs",
    [
        ("nearest", dict(coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
        ("linear", dict(coordinate_transformation_mode="pytorch_half_pixel")),
        ("linear", dict(coordinate_transformation_mode="half_pixel")),
    ],
    ids=["nearest", "pytorch_half_pixel", "half_pixel"],
)
def test_resize_to_a_symbolic_size_read_with_shape(device, mode, attrs):
    """``interpolate(y, size=skip.shape[-2:])`` as the dynamo exporter writes it: Resize's sizes
    are a shape computed from the dims, so its scales (skip over y) are too."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        _ints("two", [2]),
        _ints("four", [4]),
        helper.make_node("Slice", ["x_shape", "two", "four"], ["hw"]),
        _ints("nc", [1, 4]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["y", "", "", "sizes"], ["up"], mode=mode, **attrs),
        helper.make_node("Add", ["up", "x"], ["z"]),
    ]
    m = graph_model(nodes, {"x": rand(1, 4, 9, 13)}, ["z"], {"w": rand(4, 4, 3, 3, seed=1)})
    m = with_dim_params(m, {"x": [1, 4, "h", "w"], "z": [1, 4, "h", "w"]})
    sizes = [(9, 13), (16, 16), (5, 31), (32, 7)]
    feeds = [{"x": rand(1, 4, h, w, seed=h * w)} for h, w in sizes]
    check_symbolic(m, {"h": (4, 32), "w": (4, 32)}, feeds, device)


def test_sizes_halved_three_times_equal_the_size_over_8(device):
    """Three stride-2 convs give ``(((h - 1) // 2) // 2) // 2 + 1``; one stride-8 conv
    ``(h - 1) // 8 + 1``: one size, which an Add of the two must see."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a1"], strides=[2], pads=[1, 1]),
        helper.make_node("Conv", ["a1", "w"], ["a2"], strides=[2], pads=[1, 1]),
        helper.make_node("Conv", ["a2", "w"], ["a3"], strides=[2], pads=[1, 1]),
        helper.make_node("Conv", ["x", "w1"], ["b"], strides=[8]),
        helper.make_node("Add", ["a3", "b"], ["y"]),
    ]
    m = graph_model(
        nodes, {"x": rand(1, 2, 17)}, ["y"], {"w": rand(2, 2, 3, seed=1), "w1": rand(2, 2, 1, seed=2)}
    )
    m = with_dim_params(m, {"x": [1, 2, "len"], "y": [1, 2, "out"]})
    feeds = [{"x": rand(1, 2, n, seed=n)} for n in (1, 8, 9, 17, 40)]
    check_symbolic(m, {"len": (1, 40)}, feeds, device)

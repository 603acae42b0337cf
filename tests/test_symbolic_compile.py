"""Models compiled once with dims kept symbolic (``--dim seq=1..128``) and run at many sizes in
one session, each run compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_symbolic, graph_model, rand, with_dim_params
from onnx import TensorProto, helper

SEQ = {"seq": (1, 128)}


def test_elementwise_broadcast_over_a_symbolic_dim(device):
    nodes = [helper.make_node("Add", ["x", "b"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
    m = graph_model(nodes, {"x": rand(3, 4)}, ["y"], {"b": rand(4, seed=1)})
    m = with_dim_params(m, {"x": ["seq", 4], "y": ["seq", 4]})
    check_symbolic(m, SEQ, [{"x": rand(n, 4, seed=n)} for n in (1, 17, 128)], device)


@pytest.mark.parametrize("level", [0, 2])
def test_two_symbolic_dims_broadcast_against_each_other(device, level):
    nodes = [helper.make_node("Mul", ["x", "w"], ["t"]), helper.make_node("Sub", ["t", "x"], ["y"])]
    m = graph_model(nodes, {"x": rand(2, 3, 4), "w": rand(2, 1, 4)}, ["y"])
    m = with_dim_params(m, {"x": ["batch", "seq", 4], "w": ["batch", 1, 4]})
    feeds = [{"x": rand(b, s, 4, seed=s), "w": rand(b, 1, 4, seed=b)} for b, s in [(1, 1), (2, 64), (4, 128)]]
    check_symbolic(m, {"batch": (1, 4), **SEQ}, feeds, device, opt_level=level)


def test_symbolic_kernels_round_trip_through_the_ir_text():
    from helpers import assert_ir_round_trips

    nodes = [helper.make_node("Mul", ["x", "w"], ["t"]), helper.make_node("Sub", ["t", "x"], ["y"])]
    m = graph_model(nodes, {"x": rand(2, 3, 4), "w": rand(2, 1, 4)}, ["y"])
    m = with_dim_params(m, {"x": ["batch", "seq", 4], "w": ["batch", 1, 4]})
    assert_ir_round_trips(m, dims={"batch": (1, 4), **SEQ})


def _positions_model():
    """y = x + float(Range(0, seq)) + seq: position ids and a length read as data."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i1"], ["n"], axis=0),
        helper.make_node("Range", ["zero", "n", "one"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["posf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "posf"], ["t"]),
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["t", "nf"], ["y"]),
    ]
    inits = {"i1": np.array(1, np.int64), "zero": np.array(0, np.int64), "one": np.array(1, np.int64)}
    m = graph_model(nodes, {"x": rand(2, 5)}, ["y"], inits)
    return with_dim_params(m, {"x": [2, "seq"], "y": [2, "seq"]})


def test_range_and_lengths_read_as_data_run_on_the_gpu(device):
    check_symbolic(_positions_model(), SEQ, [{"x": rand(2, n, seed=n)} for n in (1, 17, 128)], device)


@pytest.mark.parametrize("start,delta", [(0, 1), (3, 2), (100, -3)])
def test_range_of_a_symbolic_length(device, start, delta):
    """Range(start, seq, delta) feeds a Gather of a table: its length is a dim expression."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Range", ["a", "n", "d"], ["idx"]),
        helper.make_node("Cast", ["idx"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = {"i0": np.array(0, np.int64), "a": np.array(start, np.int64), "d": np.array(delta, np.int64)}
    m = graph_model(nodes, {"x": rand(5)}, ["y"], inits)
    m = with_dim_params(m, {"x": ["seq"]})
    check_symbolic(m, {"seq": (0, 128)}, [{"x": rand(n, seed=n)} for n in (0, 1, 4, 17, 128)], device)


def test_constant_of_shape_of_a_symbolic_shape(device):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node(
            "ConstantOfShape", ["s"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.5])
        ),
        helper.make_node("Mul", ["x", "ones"], ["y"]),
    ]
    m = with_dim_params(graph_model(nodes, {"x": rand(2, 3)}, ["y"]), {"x": ["batch", "seq"]})
    feeds = [{"x": rand(b, s, seed=s)} for b, s in [(1, 1), (2, 17), (4, 128)]]
    check_symbolic(m, {"batch": (1, 4), **SEQ}, feeds, device)


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_over_symbolic_batch_and_sequence(device, causal):
    """ONNX Attention (opset 23): the key walk's length and every row offset come from the
    dims uniform."""
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=causal)]
    m = graph_model(
        nodes, {"q": rand(1, 2, 3, 8), "k": rand(1, 2, 3, 8), "v": rand(1, 2, 3, 8)}, ["y"], opset=23
    )
    m = with_dim_params(m, {n: ["batch", 2, "seq", 8] for n in "qkvy"})
    feeds = [
        {n: rand(b, 2, s, 8, seed=s + i) for i, n in enumerate("qkv")} for b, s in [(1, 1), (2, 17), (4, 128)]
    ]
    check_symbolic(m, {"batch": (1, 4), **SEQ}, feeds, device)


def test_multi_head_attention_over_a_symbolic_sequence(device):
    nodes = [
        helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], num_heads=2, domain="com.microsoft")
    ]
    m = graph_model(
        nodes,
        {"q": rand(1, 3, 16), "k": rand(1, 3, 16), "v": rand(1, 3, 16)},
        ["y"],
        opsets={"com.microsoft": 1},
    )
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT  # onnx has no inference for it
    m = with_dim_params(m, {n: [2, "seq", 16] for n in "qkvy"})
    feeds = [{n: rand(2, s, 16, seed=s + i) for i, n in enumerate("qkv")} for s in (1, 17, 128)]
    check_symbolic(m, SEQ, feeds, device)


def test_attention_keys_split_into_chunks_over_a_symbolic_length(device):
    """Up to 3,000 keys: more than one invocation may walk, so the keys split into chunks; how
    many chunks a row has follows the run's key count."""
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"])]
    m = graph_model(
        nodes, {"q": rand(1, 2, 1, 8), "k": rand(1, 2, 3, 8), "v": rand(1, 2, 3, 8)}, ["y"], opset=23
    )
    m = with_dim_params(
        m, {"q": [1, 2, "q", 8], "k": [1, 2, "kv", 8], "v": [1, 2, "kv", 8], "y": [1, 2, "q", 8]}
    )
    feeds = [
        {"q": rand(1, 2, q, 8, seed=q), "k": rand(1, 2, kv, 8, seed=kv), "v": rand(1, 2, kv, 8, seed=kv + 1)}
        for q, kv in [(1, 1), (2, 513), (4, 3000)]
    ]
    res = check_symbolic(m, {"q": (1, 4), "kv": (1, 3000)}, feeds, device)
    assert res.report.dispatches == 2  # the chunk pass and the combine pass


def test_rotary_embedding_over_a_symbolic_sequence(device):
    rng = np.random.default_rng(3)
    cos = rng.uniform(-1, 1, (200, 4)).astype(np.float32)
    sin = rng.uniform(-1, 1, (200, 4)).astype(np.float32)
    nodes = [
        helper.make_node(
            "RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], num_heads=2, domain="com.microsoft"
        )
    ]
    m = graph_model(
        nodes, {"x": rand(2, 3, 16), "pos": np.zeros((2, 3), np.int64)}, ["y"], {"cos": cos, "sin": sin},
        opsets={"com.microsoft": 1},
    )  # fmt: skip
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    m = with_dim_params(m, {"x": ["batch", "seq", 16], "pos": ["batch", "seq"], "y": ["batch", "seq", 16]})
    feeds = [
        {"x": rand(b, s, 16, seed=s), "pos": rng.integers(0, 200, (b, s)).astype(np.int64)}
        for b, s in [(1, 1), (2, 17), (4, 128)]
    ]
    check_symbolic(m, {"batch": (1, 4), **SEQ}, feeds, device)

"""Models compiled once with dims kept symbolic (``--dim seq=1..128``) and run at many sizes in
one session, each run compared with onnxruntime."""

from __future__ import annotations

import pytest
from helpers import check_symbolic, graph_model, rand, with_dim_params
from onnx import helper

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

"""In-place reuse: kernels that write their output over an input dying at them, on the GPU
against onnxruntime, and what the plan checker refuses."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_against_ort, graph_model, rand
from light_models import light_path
from onnx import helper

from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.memory import check_plan
from onnx2wgsl.errors import CompileError


def _model(nodes, inputs: dict[str, np.ndarray], outputs: list[str], inits: dict[str, np.ndarray]):
    return graph_model(nodes, inputs, outputs, inits, opset=20)


def _in_place(model, level=2) -> dict[str, int]:
    """Kernel op -> how many of that op's kernels write an output over an input."""
    out: dict[str, int] = {}
    for op in compile_model(model, opt_level=level).graph.kernels():
        if op.attrs.get("in_place"):
            out[op.attrs["op"]] = out.get(op.attrs["op"], 0) + 1
    return out


def _residual(host_nodes, inputs, inits, out_shape):
    """``host_nodes`` make %h; the residual %r comes from a Softmax kernel (so it is no graph
    input and fuses into nothing) and dies at the host op's epilogue Add."""
    q = rand(*out_shape, seed=9)
    nodes = [
        helper.make_node("Softmax", ["q"], ["r"], axis=-1),
        *host_nodes,
        helper.make_node("Add", ["h", "r"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    feeds = {**inputs, "q": q}
    return _model(nodes, feeds, ["y"], inits), feeds


HOSTS = {
    "conv-gemm": (
        [helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1])],
        {"x": rand(1, 3, 9, 9)},
        {"w": rand(8, 3, 3, 3, seed=1), "b": rand(8, seed=2)},
        (1, 8, 9, 9),
    ),
    "conv-direct": (
        [helper.make_node("Conv", ["x", "w"], ["h"], group=4, strides=[2, 2])],
        {"x": rand(2, 4, 7, 7)},
        {"w": rand(4, 1, 3, 3, seed=1)},
        (2, 4, 3, 3),
    ),
    "conv-transpose": (
        [helper.make_node("ConvTranspose", ["x", "w"], ["h"], strides=[2, 2])],
        {"x": rand(1, 4, 5, 5)},
        {"w": rand(4, 2, 3, 3, seed=1)},
        (1, 2, 11, 11),
    ),
    "gemm-const-b": (
        [helper.make_node("Gemm", ["a", "b", "c"], ["h"], transB=1, alpha=0.5)],
        {"a": rand(5, 6)},
        {"b": rand(7, 6, seed=1), "c": rand(7, seed=2)},
        (5, 7),
    ),
    "batched-matmul": (
        [helper.make_node("MatMul", ["a", "b"], ["h"])],
        {"a": rand(3, 4, 5), "b": rand(3, 5, 6, seed=1)},
        {},
        (3, 4, 6),
    ),
}


@pytest.mark.gpu
@pytest.mark.parametrize("host", list(HOSTS))
def test_epilogue_writes_over_a_dying_residual(host, device):
    nodes, inputs, inits, shape = HOSTS[host]
    model, feeds = _residual(nodes, inputs, inits, shape)
    op = nodes[0].op_type
    assert _in_place(model).get(op) == 1
    assert not _in_place(model, level=0)
    check_against_ort(model, feeds, device)
    check_against_ort(model, feeds, device, opt_level=0)


@pytest.mark.gpu
def test_elementwise_kernels_write_over_dying_inputs(device):
    # Softmaxes make kernels of their own, so each elementwise group between them reads a
    # dying kernel output: the one-result group overwrites it; the two-result group overwrites
    # it with one result and writes the other apart; the broadcast operand %z and the graph
    # input %x are never overwritten.
    x, z = rand(2, 3, 8), rand(3, 1, seed=1)
    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], axis=-1),
        helper.make_node("Mul", ["p", "z"], ["m"]),
        helper.make_node("Tanh", ["m"], ["t"]),
        helper.make_node("Softmax", ["t"], ["u"], axis=1),
        helper.make_node("Sigmoid", ["u"], ["s"]),
        helper.make_node("Sqrt", ["s"], ["y1"]),
        helper.make_node("Neg", ["s"], ["n"]),
        helper.make_node("Softmax", ["n"], ["y2"], axis=0),
    ]
    model = _model(nodes, {"x": x, "z": z}, ["y1", "y2"], {})
    assert _in_place(model) == {"Fused": 2, "Softmax": 2}  # the last two Softmaxes too
    check_against_ort(model, {"x": x, "z": z}, device)


def test_resnet50_writes_residual_sums_in_place():
    g = compile_model(str(light_path("resnet50"))).graph
    convs = [op for op in g.kernels() if op.attrs["op"] == "Conv" and op.attrs.get("in_place")]
    assert len(convs) >= 16  # every bottleneck block's last Conv adds its residual in place
    for op in convs:
        for d in op.dispatches:
            assert len({id(b.value) for b in d.bindings}) == len(d.bindings)


def _planned(model):
    return compile_model(model).graph


def _chain():
    x = rand(64)
    nodes = [
        helper.make_node("Softmax", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Softmax", ["b"], ["c"]),
        helper.make_node("Add", ["a", "c"], ["y"]),
    ]
    return _model(nodes, {"x": x}, ["y"], {})


def test_an_in_place_write_over_a_tensor_read_later_is_caught():
    g = _planned(_chain())
    relu = next(op for op in g.kernels() if op.attrs["op"] == "Relu")
    assert not relu.attrs.get("in_place")  # %a is read again by the Add
    check_plan(g)
    relu.attrs["in_place"] = [[0, 0]]
    with pytest.raises(CompileError, match="writes %b over %a, but %a"):
        check_plan(g)


def test_an_in_place_write_over_a_graph_input_is_caught():
    g = _planned(_chain())
    softmax = next(op for op in g.kernels() if op.inputs[0] is g.inputs[0])
    softmax.attrs["in_place"] = [[0, 0]]
    with pytest.raises(CompileError, match="graph input or output"):
        check_plan(g)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization"])
def test_row_kernels_write_over_a_dying_input(kind, device):
    # the input comes from a kernel (Tanh of the graph input) and dies at the row kernel;
    # rows of 300 run one workgroup each, rows of 7 one invocation each
    for shape in ((2, 3, 300), (5, 4, 7)):
        x = rand(*shape, seed=4)
        inits = {}
        if kind == "LayerNormalization":
            ins, attrs = ["t", "g", "b"], {"axis": -1}
            inits = {"g": rand(shape[-1], seed=5), "b": rand(shape[-1], seed=6)}
        elif kind == "InstanceNormalization":
            ins, attrs = ["t", "g", "b"], {}
            inits = {"g": rand(shape[1], seed=5), "b": rand(shape[1], seed=6)}
        else:
            ins, attrs = ["t"], {"axis": 1}
        nodes = [
            helper.make_node("Tanh", ["x"], ["t"]),
            helper.make_node(kind, ins, ["n"], **attrs),
            helper.make_node("Neg", ["n"], ["y"]),
        ]
        model = _model(nodes, {"x": x}, ["y"], inits)
        assert _in_place(model).get(kind) == 1, shape
        check_against_ort(model, {"x": x}, device, rtol=1e-3, atol=1e-4)


def test_the_compile_summary_counts_kernels_in_place():
    res = compile_model(str(light_path("resnet50")))
    count = sum(bool(op.attrs.get("in_place")) for op in res.graph.kernels())
    line = next(x for x in res.report.summary().splitlines() if x.strip().startswith("in place"))
    assert res.report.in_place == count == int(line.split()[2]) > 0

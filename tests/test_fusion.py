"""Fusion on the GPU: elementwise groups and epilogues give onnxruntime's results with fewer
kernels, on every kernel template that takes an epilogue."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import check_against_ort, graph_model, rand
from onnx import TensorProto, helper

from onnx2wgsl.compiler import compile_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from compile_time import chain  # noqa: E402

pytestmark = pytest.mark.gpu


def _model(nodes, inputs: dict[str, np.ndarray], outputs: list[str], inits: dict[str, np.ndarray], opset=17):
    return graph_model(nodes, inputs, outputs, inits, opset=opset)


def _kernels(model, level=2) -> list[str]:
    return [op.attrs["op"] for op in compile_model(model, opt_level=level).graph.kernels()]


def _check(model, feeds, device, kernels: list[str]):
    """-O2 matches onnxruntime with exactly ``kernels``; -O0 matches too, unfused."""
    assert sorted(_kernels(model)) == sorted(kernels)
    check_against_ort(model, feeds, device)
    assert len(_kernels(model, 0)) > len(kernels)
    check_against_ort(model, feeds, device, opt_level=0)


# Epilogue bodies: (nodes after the host op's result "h", extra inputs, extra initializers).
EPILOGUES = {
    "relu": ([helper.make_node("Relu", ["h"], ["y"])], {}, {}),
    "clip": (
        [helper.make_node("Clip", ["h", "lo", "hi"], ["y"])],
        {},
        {"lo": np.float32(-0.2), "hi": np.float32(0.3)},
    ),
    "silu": ([helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["h", "s"], ["y"])], {}, {}),
    "gelu-tanh": ([helper.make_node("Gelu", ["h"], ["y"], approximate="tanh")], {}, {}),
    "hardswish": ([helper.make_node("HardSwish", ["h"], ["y"])], {}, {}),
    "leaky": ([helper.make_node("LeakyRelu", ["h"], ["y"], alpha=0.1)], {}, {}),
    "residual-relu": (
        [helper.make_node("Add", ["r", "h"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        {"r": None},
        {},
    ),
    "scale-tanh": (
        [helper.make_node("Mul", ["h", "k"], ["s"]), helper.make_node("Tanh", ["s"], ["y"])],
        {},
        {"k": np.float32(0.7)},
    ),
}


def _with_epilogue(host_nodes, inputs, inits, out_shape, epi: str, opset=20):
    nodes, extra_in, extra_init = EPILOGUES[epi]
    inputs = dict(inputs)
    for n in extra_in:
        inputs[n] = rand(*out_shape, seed=9)
    return _model(host_nodes + nodes, inputs, ["y"], {**inits, **extra_init}, opset), inputs


@pytest.mark.parametrize("epi", list(EPILOGUES))
def test_conv_gemm_epilogue(epi, device):
    x = rand(1, 3, 9, 9)
    w, b = rand(8, 3, 3, 3, seed=1), rand(8, seed=2)
    host = [helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1])]
    model, feeds = _with_epilogue(host, {"x": x}, {"w": w, "b": b}, (1, 8, 9, 9), epi)
    _check(model, feeds, device, ["Conv"])


@pytest.mark.parametrize("epi", ["residual-relu", "hardswish"])
def test_depthwise_conv_epilogue(epi, device):
    x = rand(2, 4, 7, 7)
    w = rand(4, 1, 3, 3, seed=1)
    host = [helper.make_node("Conv", ["x", "w"], ["h"], group=4, strides=[2, 2])]
    model, feeds = _with_epilogue(host, {"x": x}, {"w": w}, (2, 4, 3, 3), epi)
    _check(model, feeds, device, ["Conv"])


@pytest.mark.parametrize("epi", ["residual-relu", "silu"])
def test_conv_transpose_epilogue(epi, device):
    x = rand(1, 4, 5, 5)
    w = rand(4, 2, 3, 3, seed=1)
    host = [helper.make_node("ConvTranspose", ["x", "w"], ["h"], strides=[2, 2])]
    model, feeds = _with_epilogue(host, {"x": x}, {"w": w}, (1, 2, 11, 11), epi)
    _check(model, feeds, device, ["ConvTranspose"])


@pytest.mark.parametrize("epi", ["residual-relu", "gelu-tanh", "clip"])
def test_gemm_epilogue(epi, device):
    a = rand(5, 6)
    b, c = rand(7, 6, seed=1), rand(7, seed=2)
    host = [helper.make_node("Gemm", ["a", "b", "c"], ["h"], transB=1, alpha=0.5)]
    model, feeds = _with_epilogue(host, {"a": a}, {"b": b, "c": c}, (5, 7), epi)
    _check(model, feeds, device, ["Gemm"])


@pytest.mark.parametrize("epi", ["residual-relu", "scale-tanh"])
def test_batched_matmul_epilogue(epi, device):
    a, b = rand(3, 4, 5), rand(3, 5, 6, seed=1)
    host = [helper.make_node("MatMul", ["a", "b"], ["h"])]
    model, feeds = _with_epilogue(host, {"a": a, "b": b}, {}, (3, 4, 6), epi)
    _check(model, feeds, device, ["MatMul"])


def test_epilogue_operand_broadcasts(device):
    # the residual is a per-row column, read broadcast along the MatMul's columns
    a = rand(4, 5)
    w, r = rand(5, 3, seed=1), rand(4, 1, seed=2)
    nodes = [helper.make_node("MatMul", ["a", "w"], ["h"]), helper.make_node("Sub", ["h", "r"], ["y"])]
    model = _model(nodes, {"a": a, "r": r}, ["y"], {"w": w})
    _check(model, {"a": a, "r": r}, device, ["MatMul"])


def test_elementwise_group_with_two_results(device):
    # %s is a graph output and feeds the rest of the group: one kernel writes both
    x, z = rand(2, 3, 4), rand(3, 4, seed=1)
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Mul", ["s", "z"], ["m"]),
        helper.make_node("Sqrt", ["s"], ["q"]),
        helper.make_node("Sub", ["m", "q"], ["y"]),
    ]
    model = _model(nodes, {"x": x, "z": z}, ["s", "y"], {})
    _check(model, {"x": x, "z": z}, device, ["Fused"])


def test_mixed_dtypes_inside_a_group(device):
    # comparisons give bool, Where and Cast bring it back: every value keeps its stored form.
    # Greater feeds both Where and (through Cast) Add, so all five must fuse or none of the
    # path would: one group.
    x = rand(3, 5, low=-2, high=2)
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["p"]),
        helper.make_node("Neg", ["x"], ["n"]),
        helper.make_node("Where", ["p", "x", "n"], ["a"]),
        helper.make_node("Cast", ["p"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "c"], ["y"]),
    ]
    model = _model(nodes, {"x": x}, ["y"], {"zero": np.float32(0)})
    _check(model, {"x": x}, device, ["Fused"])


def test_groups_stay_within_the_binding_limit(device):
    # nine inputs summed pairwise: one group cannot bind them all under 8 bindings
    xs = {f"x{i}": rand(4, seed=i) for i in range(9)}
    nodes, acc = [], "x0"
    for i in range(1, 9):
        nodes.append(helper.make_node("Add", [acc, f"x{i}"], [f"s{i}"]))
        acc = f"s{i}"
    nodes.append(helper.make_node("Relu", [acc], ["y"]))
    model = _model(nodes, xs, ["y"], {})
    compiled = compile_model(model)
    kernels = list(compiled.graph.kernels())
    assert 2 <= len(kernels) <= 3
    assert all(len(d.bindings) <= 8 for k in kernels for d in k.dispatches)
    check_against_ort(model, xs, device)


def test_a_2000_op_chain_runs_as_two_kernels(device):
    # a group stops at MAX_GROUP_OPS ops: drivers compile one long kernel in superlinear time
    model = chain(2000)
    x = rand(1, 64)
    assert _kernels(model) == ["Fused", "Fused"]
    check_against_ort(model, {"x": x}, device)


def test_no_merge_across_a_path_through_another_group(device):
    # Relu -> Add(b) is a direct edge, and no op-level path joins them otherwise; but Relu
    # feeds the group {Add(a), Neg, Mul}, whose Neg feeds ReduceSum, which feeds Add(b).
    # Fusing Relu with Add(b) would make a cycle of kernels (it once hung the compiler).
    x, z = rand(4, 4), rand(2, 4, 4, seed=1)
    nodes = [
        helper.make_node("Relu", ["x"], ["p"]),
        helper.make_node("Neg", ["z"], ["n"]),
        helper.make_node("Add", ["z", "p"], ["a"]),
        helper.make_node("Mul", ["a", "n"], ["m"]),
        helper.make_node("ReduceSum", ["n"], ["r"], axes=[0], keepdims=0),
        helper.make_node("Add", ["p", "r"], ["b"]),
    ]
    model = _model(nodes, {"x": x, "z": z}, ["m", "b"], {}, opset=12)
    _check(model, {"x": x, "z": z}, device, ["Relu", "Fused", "ReduceSum", "Add"])


@pytest.mark.parametrize("group", [1, 6])  # the implicit-GEMM and the direct kernel
def test_conv_prologue_pads_with_zeros_after_it(group, device):
    # BatchNorm-ReLU computed inside the Conv's loads: with a positive shift, relu(0 * s + t)
    # is not 0, so reading the padding through the prologue would be wrong; it must stay 0.
    x = rand(1, 6, 7, 7)
    inits = {
        "s": rand(6, 1, 1, seed=1, low=0.5, high=1.5),
        "t": rand(6, 1, 1, seed=2, low=0.1, high=0.5),
        "w": rand(12, 6 // group, 3, 3, seed=3),
    }
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["m"]),
        helper.make_node("Add", ["m", "t"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1], group=group),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = _model(nodes, {"x": x}, ["y"], inits)
    _check(model, {"x": x}, device, ["Conv"])


def test_prologue_reads_a_run_time_operand(device):
    # the prologue's other operand is a graph input read broadcast along H and W
    x, g = rand(2, 4, 5, 5), rand(2, 4, 1, 1, seed=5)
    nodes = [
        helper.make_node("Mul", ["x", "g"], ["m"]),
        helper.make_node("Conv", ["m", "w", "b"], ["y"], strides=[2, 2]),
    ]
    model = _model(nodes, {"x": x, "g": g}, ["y"], {"w": rand(8, 4, 3, 3, seed=6), "b": rand(8, seed=7)})
    _check(model, {"x": x, "g": g}, device, ["Conv"])


@pytest.mark.parametrize("group", [1, 2])
def test_prologue_convs_of_other_sizes_share_a_shader(group, tmp_path, device):
    """A prologue whose operands are read per channel (BatchNorm-ReLU) is indexed by the
    element's channel, not by sizes written in: the conv_rows shaders of two such convs over
    different spatial sizes are one (and a group's channels are the right ones)."""
    import json

    import onnx2wgsl

    x = rand(1, 8, 12, 12)
    inits = {
        f"{k}{j}": rand(8, 1, 1, seed=10 * j + i, low=0.5, high=1.5)
        for j in (1, 2)
        for i, k in enumerate("st")
    }
    inits |= {f"w{j}": rand(16, 8 // group, 1, 1, seed=j) for j in (1, 2)}
    nodes = []
    for j, (src, dst) in enumerate((("x", "c1"), ("p", "y")), start=1):
        nodes += [
            helper.make_node("Mul", [src, f"s{j}"], [f"m{j}"]),
            helper.make_node("Add", [f"m{j}", f"t{j}"], [f"a{j}"]),
            helper.make_node("Relu", [f"a{j}"], [f"r{j}"]),
            helper.make_node("Conv", [f"r{j}", f"w{j}"], [dst], group=group),
        ]
        if j == 1:
            nodes += [
                helper.make_node("MaxPool", ["c1"], ["q"], kernel_shape=[2, 2], strides=[2, 2]),
                helper.make_node("Slice", ["q", "c0", "c8", "c1ax"], ["p"]),
            ]
    inits |= {"c0": np.array([0], np.int64), "c8": np.array([8], np.int64), "c1ax": np.array([1], np.int64)}
    model = _model(nodes, {"x": x}, ["y"], inits)
    _check(model, {"x": x}, device, ["Conv", "MaxPool", "Conv"])  # (the Slice is a view)
    onnx2wgsl.compile(model, tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    convs = [d["shader"] for d in m["dispatches"] if "conv_rows" in m["shaders"][d["shader"]]["name"]]
    assert len(convs) == 2 and convs[0] == convs[1]
    assert "fn load_x(i: u32, n: u32, c: u32)" in (tmp_path / m["shaders"][convs[0]]["file"]).read_text()


def test_prologue_with_an_operand_over_space_keeps_its_sizes(device):
    # an operand that varies over H and W is read through the element's coordinates
    x = rand(2, 4, 6, 6)
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["xs"]),
        helper.make_node("Conv", ["xs", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    model = _model(nodes, {"x": x}, ["y"], {"w": rand(8, 4, 3, 3, seed=2), "k": rand(1, 1, 6, 6, seed=3)})
    _check(model, {"x": x}, device, ["Conv"])


def test_no_prologue_when_the_input_has_another_use(device):
    x = rand(1, 4, 5, 5)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["c"]),
        helper.make_node("ReduceSum", ["r"], ["y2"], keepdims=0),
    ]
    model = _model(nodes, {"x": x}, ["c", "y2"], {"w": rand(4, 4, 3, 3, seed=1)})
    assert sorted(_kernels(model)) == ["Conv", "ReduceSum", "Relu"]
    check_against_ort(model, {"x": x}, device)


@pytest.mark.parametrize(
    "a_perm,b_perm",
    [(None, [0, 2, 1]), ([0, 2, 1], None), ([0, 2, 1], [0, 2, 1])],
    ids=["transB", "transA", "both"],
)
def test_transposed_matmul_operands_are_read_in_place(a_perm, b_perm, device):
    a = rand(3, 4, 5) if a_perm is None else rand(3, 5, 4)
    b = rand(3, 5, 6, seed=1) if b_perm is None else rand(3, 6, 5, seed=1)
    nodes, names = [], []
    for n, perm in (("a", a_perm), ("b", b_perm)):
        if perm is None:
            names.append(n)
        else:
            nodes.append(helper.make_node("Transpose", [n], [n + "t"], perm=perm))
            names.append(n + "t")
    nodes.append(helper.make_node("MatMul", names, ["y"]))
    model = _model(nodes, {"a": a, "b": b}, ["y"], {})
    _check(model, {"a": a, "b": b}, device, ["MatMul"])


def test_transposed_gemm_operand_with_a_matrix_b(device):
    # a 4-D A against a 2-D B read transposed (a Linear layer whose weight arrives at run time)
    a, w = rand(2, 3, 4, 5), rand(6, 5, seed=1)
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["a", "wt"], ["y"]),
    ]
    model = _model(nodes, {"a": a, "w": w}, ["y"], {})
    _check(model, {"a": a, "w": w}, device, ["MatMul"])


def test_transposes_of_operands_are_read_through_permuted_strides(device):
    # %x is read both as stored and transposed; %u's transpose is broadcast along dim 0; the
    # Transpose of %q is also a graph output, so it is written as well.
    x, u, q = rand(4, 4, 6), rand(6, 4, seed=1), rand(6, 4, 4, seed=2)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["u"], ["ut"], perm=[1, 0]),
        helper.make_node("Transpose", ["q"], ["qt"], perm=[2, 1, 0]),
        helper.make_node("Add", ["xt", "x"], ["a"]),
        helper.make_node("Mul", ["a", "ut"], ["m"]),
        helper.make_node("Sub", ["m", "qt"], ["y"]),
    ]
    feeds = {"x": x, "u": u, "q": q}
    model = _model(nodes, feeds, ["y", "qt"], {})
    _check(model, feeds, device, ["Fused"])


def test_a_transpose_of_a_value_computed_in_the_group_stays_a_kernel(device):
    x = rand(5, 3)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
        helper.make_node("Tanh", ["t"], ["y"]),
    ]
    model = _model(nodes, {"x": x}, ["y"], {})
    assert sorted(_kernels(model)) == ["Relu", "Transpose"] or sorted(_kernels(model)) == ["Fused", "Relu"]
    check_against_ort(model, {"x": x}, device)


def test_a_transposed_residual_is_read_by_the_epilogue(device):
    # an NHWC residual transposed to NCHW is read through strides at the Conv's store
    x, q = rand(1, 4, 5, 5), rand(1, 5, 5, 6, seed=1)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["q"], ["r"], perm=[0, 3, 1, 2]),
        helper.make_node("Add", ["h", "r"], ["y"]),
    ]
    feeds = {"x": x, "q": q}
    model = _model(nodes, feeds, ["y"], {"w": rand(6, 4, 3, 3, seed=2)})
    _check(model, feeds, device, ["Conv"])


def test_a_transposed_input_is_computed_in_the_conv_loads(device):
    # an NHWC input transposed to NCHW and scaled per channel, read by the Conv's prologue
    x = rand(1, 5, 5, 4)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["xt", "k"], ["xs"]),
        helper.make_node("Conv", ["xs", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = {"w": rand(6, 4, 3, 3, seed=2), "k": rand(4, 1, 1, seed=3)}
    model = _model(nodes, {"x": x}, ["y"], inits)
    _check(model, {"x": x}, device, ["Conv"])

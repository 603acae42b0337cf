"""Graph passes: each rewrite is checked for its effect on the graph and for unchanged numbers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import bn_params, check_against_ort, rand
from onnx import TensorProto, helper, numpy_helper

from onnx2wgsl.compiler import compile_model


def _model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def _kinds(model, level=2):
    return [
        op.attrs.get("op") for op in compile_model(model, opt_level=level).graph.ops if op.kind == "kernel"
    ]


@pytest.mark.gpu
@pytest.mark.parametrize("bias", [True, False])
def test_conv_batchnorm_folds_into_weights(bias, device):
    inits = {"w": rand(8, 3, 3, 3, seed=1), **bn_params(8, names="sbmv")}
    conv_in = ["x", "w"] + (["cb"] if bias else [])
    if bias:
        inits["cb"] = rand(8, seed=2)
    nodes = [
        helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], epsilon=1e-3),
    ]
    m = _model(nodes, [("x", [1, 3, 6, 6])], ["y"], inits)
    assert _kinds(m, 0) == ["Conv", "Mul", "Add"]
    assert _kinds(m) == ["Conv"]
    x = rand(1, 3, 6, 6)
    check_against_ort(m, {"x": x}, device, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_conv_scale_and_shift_by_scalars_and_channels(device):
    inits = {"w": rand(4, 2, 1, 1, seed=1), "k": np.array(0.5, np.float32), "t": rand(1, 4, 1, 1, seed=3)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Mul", ["k", "c"], ["d"]),
        helper.make_node("Add", ["d", "t"], ["y"]),
    ]
    m = _model(nodes, [("x", [2, 2, 5, 5])], ["y"], inits)
    assert _kinds(m) == ["Conv"]
    check_against_ort(m, {"x": rand(2, 2, 5, 5)}, device, rtol=1e-4, atol=1e-5)


def _after_fold_affine(model):
    """The graph's ops after canonicalize and fold-affine: (kind, shapes of its constants)."""
    from onnx2wgsl.compiler.frontend import import_model
    from onnx2wgsl.compiler.passes import run_passes
    from onnx2wgsl.compiler.passes.canonicalize import Canonicalize
    from onnx2wgsl.compiler.passes.fold_affine import FoldAffine

    g, _ = import_model(model)
    g = run_passes(g, [Canonicalize(), FoldAffine()])
    return [(op.kind, [tuple(v.shape) for v in op.inputs if v is not None and v.is_const]) for op in g.ops]


@pytest.mark.gpu
def test_a_chain_of_channel_affines_becomes_one_scale_and_shift(device):
    """BatchNormalization, then a Caffe-style scale and shift, then Relu, read by a Conv (as
    converted DenseNets hold them): one Mul and one Add are left, which the conv's prologue
    reads (two constants per element rather than six); an Add before a Mul moves after it."""
    inits = {
        **bn_params(6, names="sbmv"),
        "c": rand(1, 6, 1, 1, seed=1, low=0.5, high=1.5),
        "d": rand(6, 1, 1, seed=2),  # (rank 3: broadcast from the right)
        "e": np.array(0.25, np.float32),
        "f": rand(1, 6, 1, 1, seed=3),
        "w": rand(8, 6, 3, 3, seed=4),
    }
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"]),
        helper.make_node("Mul", ["n", "c"], ["n1"]),
        helper.make_node("Add", ["d", "n1"], ["n2"]),
        helper.make_node("Add", ["n2", "e"], ["n3"]),  # an Add, then a Mul: swapped
        helper.make_node("Mul", ["f", "n3"], ["n4"]),
        helper.make_node("Relu", ["n4"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    m = _model(nodes, [("x", [1, 6, 7, 7])], ["y"], inits)
    ops = _after_fold_affine(m)
    assert [k for k, _ in ops] == ["Mul", "Add", "Relu", "Conv"]
    assert ops[0][1] == [(1, 6, 1, 1)] and ops[1][1] == [(1, 6, 1, 1)]
    assert _kinds(m) == ["Conv"]  # (-O2: the rest is the conv's prologue)
    check_against_ort(m, {"x": rand(1, 6, 7, 7, seed=5)}, device, rtol=1e-4, atol=1e-4)
    check_against_ort(m, {"x": rand(1, 6, 7, 7, seed=5)}, device, rtol=1e-4, atol=1e-4, opt_level=1)


def test_affine_chains_stop_at_a_value_read_twice_or_a_widening_constant():
    """A value another op (or the graph's output) reads keeps its op; a constant that widens its
    operand's shape is no channel affine; a Mul then an Add is the form chains end in."""
    inits = {
        "a": rand(1, 4, 1, 1, seed=1),
        "b": rand(1, 4, 1, 1, seed=2),
        "c": rand(2, 1, 4, 5, 5, seed=3),
        "t": rand(4, 1, 1, seed=4),
    }
    nodes = [
        helper.make_node("Mul", ["x", "a"], ["p"]),
        helper.make_node("Mul", ["p", "b"], ["q"]),  # p is also an output: no merge
        helper.make_node("Add", ["q", "t"], ["r"]),  # Mul then Add: kept
        helper.make_node("Add", ["r", "c"], ["y"]),  # widens [1,4,5,5] to [2,1,4,5,5]
    ]
    m = _model(nodes, [("x", [1, 4, 5, 5])], ["y", "p"], inits)
    assert [k for k, _ in _after_fold_affine(m)] == ["Mul", "Mul", "Add", "Add"]


@pytest.mark.gpu
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_then_per_column_affine(trans_b, device):
    w = rand(5, 6, seed=1) if trans_b else rand(6, 5, seed=1)
    inits = {"w": w, "c": rand(5, seed=2), "s": rand(1, 5, seed=3), "t": rand(5, seed=4)}
    nodes = [
        helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=trans_b, alpha=0.5, beta=2.0),
        helper.make_node("Mul", ["g", "s"], ["h"]),
        helper.make_node("Add", ["h", "t"], ["y"]),
    ]
    m = _model(nodes, [("x", [3, 6])], ["y"], inits)
    assert _kinds(m) == ["Gemm"]
    check_against_ort(m, {"x": rand(3, 6)}, device)


@pytest.mark.gpu
def test_batched_matmul_plus_bias_becomes_one_kernel(device):
    inits = {"w": rand(16, 12, seed=1), "b": rand(12, seed=2)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    m = _model(nodes, [("x", [2, 7, 16])], ["y"], inits)
    assert _kinds(m) == ["MatMul"]
    check_against_ort(m, {"x": rand(2, 7, 16)}, device)


@pytest.mark.gpu
def test_no_fold_when_the_output_has_other_uses_or_the_constant_varies_spatially(device):
    inits = {"w": rand(4, 2, 3, 3, seed=1), "s": rand(1, 4, 1, 1, seed=2), "p": rand(1, 1, 4, 4, seed=3)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Mul", ["c", "s"], ["y1"]),  # c is also a graph output
        helper.make_node("Conv", ["x", "w"], ["c2"]),
        helper.make_node("Mul", ["c2", "p"], ["y2"]),  # varies along H, W: not per channel
    ]
    m = _model(nodes, [("x", [1, 2, 6, 6])], ["c", "y1", "y2"], inits)
    assert _kinds(m, level=1).count("Mul") == 2
    assert sorted(_kinds(m)) == ["Conv", "Conv", "Mul"]  # -O2: the spatial Mul is an epilogue
    check_against_ort(m, {"x": rand(1, 2, 6, 6)}, device, rtol=1e-4, atol=1e-5)


def _concat_model(hw: int, nested: bool):
    """Two convs concatenated on channels; optionally a third conv reads the concat and a
    second concat appends its output (the DenseNet pattern)."""
    inits = {
        "w1": rand(16, 3, 3, 3, seed=1),
        "w2": rand(16, 3, 1, 1, seed=2),
        "w3": rand(16, 32, 3, 3, seed=3),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
    ]
    out = "c"
    if nested:
        nodes += [
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Conv", ["r", "w3"], ["d"], pads=[1, 1, 1, 1]),
            helper.make_node("Concat", ["c", "d"], ["e"], axis=1),
        ]
        out = "e"
    nodes.append(helper.make_node("Sigmoid", [out], ["y"]))
    return _model(nodes, [("x", [1, 3, hw, hw])], ["y"], inits)


@pytest.mark.gpu
@pytest.mark.parametrize("nested", [False, True])
def test_concat_written_in_place_by_its_producers(nested, device):
    m = _concat_model(8, nested)  # 16 channels x 8 x 8 x 4 bytes = 4096: aligned slices
    res = compile_model(m, verify_ir=True)
    assert [op.kind for op in res.graph.ops].count("concat_view") == (2 if nested else 1)
    assert "Concat" not in [op.attrs.get("op") for op in res.graph.ops]
    check_against_ort(m, {"x": rand(1, 3, 8, 8)}, device, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_concat_copies_when_slices_would_be_misaligned(device):
    m = _concat_model(5, False)  # 16 x 5 x 5 x 4 = 1600 bytes: not a multiple of 256
    res = compile_model(m, verify_ir=True)
    assert "concat_view" not in [op.kind for op in res.graph.ops]
    assert compile_model(m, opt_level=0).graph.dispatch_count() == res.graph.dispatch_count()
    check_against_ort(m, {"x": rand(1, 3, 5, 5)}, device, rtol=1e-4, atol=1e-4)

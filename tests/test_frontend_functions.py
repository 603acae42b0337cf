"""ONNX function inlining: ops without a lowering of their own expand from their schema's body."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import assert_close, check_against_ort, gpu_run, node_model, rand, reference_run
from onnx import TensorProto, helper

from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.functions import function_body, lowered
from onnx2wgsl.errors import UnsupportedError

# Ops whose only way onto the GPU is their function body today: (id, op, inputs, initializers,
# attrs, opset). Covers schema defaults, context-dependent bodies and bodies that call
# other functions.
INLINED = [
    ("hann", "HannWindow", {}, {"n": np.array(10, np.int64)}, {}, 17),
    ("hamming-symmetric", "HammingWindow", {}, {"n": np.array(9, np.int64)}, {"periodic": 0}, 17),
    ("blackman", "BlackmanWindow", {}, {"n": np.array(12, np.int64)}, {}, 17),
    (
        "nll-mean",
        "NegativeLogLikelihoodLoss",
        {"x": rand(4, 5, seed=3)},
        {"t": np.array([0, 4, 2, 1], np.int64)},
        {},
        17,
    ),
    (
        "nll-none-ignore",
        "NegativeLogLikelihoodLoss",
        {"x": rand(4, 5, 3, seed=4)},
        {"t": np.array([[0, 4, 2], [1, 1, 3], [2, 0, 0], [4, 3, 1]], np.int64)},
        {"reduction": "none", "ignore_index": 1},
        17,
    ),
    (
        "sce-sum",
        "SoftmaxCrossEntropyLoss",
        {"x": rand(3, 6, seed=5)},
        {"t": np.array([5, 0, 2], np.int64)},
        {"reduction": "sum"},
        17,
    ),
]


@pytest.mark.parametrize("op,inputs,inits,attrs,opset", [c[1:] for c in INLINED], ids=[c[0] for c in INLINED])
def test_inlined_op_matches_onnxruntime(op, inputs, inits, attrs, opset, device):
    assert not lowered(op)
    check_against_ort(node_model(op, inputs, attrs, opset=opset, initializers=inits), inputs, device)


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_nested_function_passes_attribute_references_down(alpha, device):
    # SwiGLU's body calls Swish <alpha = @alpha>, whose body reads @alpha again.
    a, b = rand(3, 8, seed=1), rand(3, 8, seed=2)
    attrs = {} if alpha is None else {"alpha": alpha}
    model = node_model("SwiGLU", {"a": a, "b": b}, attrs, opset=28)
    model.ir_version = 13
    feeds = {"a": a, "b": b}
    want = a * (1 / (1 + np.exp(-(1.0 if alpha is None else alpha) * a))) * b
    assert_close(gpu_run(model, feeds, device), [want.astype(np.float32)], rtol=1e-5, atol=1e-6)
    assert_close(reference_run(model, feeds), [want.astype(np.float32)], rtol=1e-5, atol=1e-6)


def test_body_keeps_its_own_opset():
    node = helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3)
    schema = onnx.defs.get_schema("HardSigmoid", 22)
    body = function_body(node, schema, 22, [helper.make_tensor_type_proto(TensorProto.FLOAT, [3])])
    assert body.opset[""] == 18
    assert body.inputs == ["X"] and body.outputs == ["Y"]
    # @alpha became the node's value, @beta the schema default
    consts = {
        n.output[0]: helper.get_attribute_value(n.attribute[0]) for n in body.nodes if n.op_type == "Constant"
    }
    assert pytest.approx(consts["Alpha"]) == 0.3 and pytest.approx(consts["Beta"]) == 0.5
    assert not any(a.ref_attr_name for n in body.nodes for a in n.attribute)


def _local_function_model(nodes, attributes=(), **call_attrs) -> onnx.ModelProto:
    """A model calling a function ``local.F(X) -> Y`` defined in the model itself."""
    fn = helper.make_function(
        "local", "F", ["X"], ["Y"], nodes, [helper.make_opsetid("", 18)], list(attributes)
    )
    g = helper.make_graph(
        [helper.make_node("F", ["x"], ["y"], domain="local", name="f_0", **call_attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
        functions=[fn],
    )
    m.ir_version = 8
    return m


def test_inlined_constants_fold_and_only_real_work_reaches_the_gpu(device):
    # A hard-sigmoid written the way ONNX schema bodies are: constants cast like the input.
    model = _local_function_model(
        [
            helper.make_node("Constant", [], ["A"], value_float=0.25),
            helper.make_node("CastLike", ["A", "X"], ["Ac"]),
            helper.make_node("Constant", [], ["B"], value_float=0.5),
            helper.make_node("CastLike", ["B", "X"], ["Bc"]),
            helper.make_node("Mul", ["X", "Ac"], ["XA"]),
            helper.make_node("Add", ["XA", "Bc"], ["Z"]),
            helper.make_node("Constant", [], ["Zero"], value_float=0.0),
            helper.make_node("Constant", [], ["One"], value_float=1.0),
            helper.make_node("Clip", ["Z", "Zero", "One"], ["Y"]),
        ]
    )
    res = compile_model(model)
    kinds = sorted(op.attrs["op"] for op in res.graph.kernels())
    # Constant/CastLike fold away; Mul, Add and Clip remain
    assert "CastLike" not in kinds and "Cast" not in kinds and "Constant" not in kinds
    assert len(kinds) <= 3, kinds
    x = rand(4, 4, low=-4.0, high=4.0)
    assert_close(gpu_run(model, {"x": x}, device), [np.clip(x * 0.25 + 0.5, 0, 1)], rtol=1e-6, atol=1e-6)


def test_errors_inside_a_body_name_the_calling_op():
    # Bernoulli's body draws with RandomUniformLike, which has no lowering
    model = node_model("Bernoulli", {"x": rand(5, low=0.0)}, opset=17)
    model.graph.node[0].name = "bern_0"
    with pytest.raises(UnsupportedError, match=r"RandomUniformLike node 'bern_0/RandomUniformLike'"):
        compile_model(model)


def test_inlining_inside_a_function_of_a_constant_input_folds(device):
    # All inputs constant: the node folds on the host, no body is needed.
    c = rand(6, seed=3)
    x = rand(6, seed=4)
    model = node_model("Add", {"x": x}, initializers={"c": c})
    g = helper.make_graph(
        [
            helper.make_node("Softsign", ["c"], ["s"]),
            helper.make_node("Add", ["x", "s"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
        [onnx.numpy_helper.from_array(c, "c")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    res = compile_model(model)
    assert [op.attrs["op"] for op in res.graph.kernels()] == ["Add"]
    check_against_ort(model, {"x": x}, device)


def test_unknown_custom_domain_op_still_fails_clearly():
    g = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    with pytest.raises(UnsupportedError, match="no WebGPU lowering for com.example.Frobnicate"):
        compile_model(model)


def test_model_local_function_with_attribute_reference(device):
    # A function defined in the model itself, called with an attribute.
    fn = helper.make_function(
        "local",
        "ScaledTanh",
        ["X"],
        ["Y"],
        [
            helper.make_node("Constant", [], ["S"], value_float=0.0),
            helper.make_node("Tanh", ["X"], ["T"]),
            helper.make_node("Mul", ["T", "S"], ["Y"]),
        ],
        [helper.make_opsetid("", 17)],
        attributes=["scale"],
    )
    ref = onnx.AttributeProto()
    ref.name, ref.ref_attr_name, ref.type = "value_float", "scale", onnx.AttributeProto.FLOAT
    del fn.node[0].attribute[:]
    fn.node[0].attribute.append(ref)
    g = helper.make_graph(
        [helper.make_node("ScaledTanh", ["x"], ["y"], domain="local", scale=2.5)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
    )
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], functions=[fn]
    )
    model.ir_version = 8
    x = rand(2, 5)
    check_against_ort(model, {"x": x}, device)

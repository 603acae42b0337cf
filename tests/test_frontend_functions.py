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

# (op, attrs, opset): ops whose only way onto the GPU is their function body today.
INLINED = [
    ("HardSigmoid", {}, 17),  # schema defaults substituted for @alpha / @beta
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 22),  # body at opset 18 inside an opset-22 model
    ("Softsign", {}, 17),
    ("Softplus", {}, 17),
    ("HardSwish", {}, 22),  # nested: HardSwish -> HardSigmoid with its own attributes
    ("Gelu", {}, 20),  # context-dependent body
    ("Gelu", {"approximate": "tanh"}, 20),
]


@pytest.mark.parametrize("op,attrs,opset", INLINED, ids=[f"{o}-{a}-{v}" for o, a, v in INLINED])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5)])
def test_inlined_op_matches_onnxruntime(op, attrs, opset, shape, device):
    assert not lowered(op)
    x = rand(*shape, low=-4.0, high=4.0)
    check_against_ort(node_model(op, {"x": x}, attrs, opset=opset), {"x": x}, device)


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


def test_inlined_constants_fold_and_only_real_work_reaches_the_gpu():
    x = rand(4, 4)
    res = compile_model(node_model("HardSigmoid", {"x": x}, {"alpha": 0.25}, opset=18))
    kinds = sorted(op.attrs["op"] for op in res.graph.kernels())
    # Constant/CastLike fold away; Mul, Add and Clip (Max/Min at opset 18) remain
    assert "CastLike" not in kinds and "Cast" not in kinds and "Constant" not in kinds
    assert len(kinds) <= 4, kinds


def test_errors_inside_a_body_name_the_calling_op():
    x = rand(5)
    with pytest.raises(UnsupportedError, match=r"'ThresholdedRelu/\w+'"):
        compile_model(node_model("ThresholdedRelu", {"x": x}, {"alpha": 0.5}, opset=22))


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

"""Build small ONNX models, run them through onnx2wgsl and onnxruntime, compare."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model


def node_model(
    op_type: str,
    inputs: dict[str, np.ndarray],
    attrs: dict | None = None,
    *,
    opset: int = 17,
    initializers: dict[str, np.ndarray] | None = None,
    n_outputs: int = 1,
    input_order: Sequence[str] | None = None,
    domain: str = "",
    outputs: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """A one-node model: runtime inputs from ``inputs`` (any numpy dtype; their dtypes and
    shapes are declared), constants from ``initializers``.

    ``input_order`` lists the node's input names (use "" for an omitted optional input), as
    ``outputs`` lists its output names (default y0, y1, ... for ``n_outputs``). An op of
    another ``domain`` imports that domain at version 1."""
    initializers = initializers or {}
    order = list(input_order) if input_order is not None else list(inputs) + list(initializers)
    outs = list(outputs) if outputs is not None else [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, order, outs, domain=domain or None, **(attrs or {}))
    opsets = {domain: 1} if domain else None
    return graph_model(
        [node], inputs, [o for o in outs if o], initializers, opset=opset, name=op_type.lower(), opsets=opsets
    )


def graph_model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    outputs: list[str],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    name: str = "g",
    opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """A model of ``nodes``: runtime inputs declared from ``inputs`` (dtype and shape),
    constants from ``initializers``, outputs typed by shape inference. ``opsets`` adds
    imports of other domains (e.g. {"com.microsoft": 1})."""
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs.items()
        ],
        [helper.make_value_info(o, onnx.TypeProto()) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()],
    )
    imports = [helper.make_opsetid("", opset)] + [
        helper.make_opsetid(d, v) for d, v in (opsets or {}).items()
    ]
    m = helper.make_model(graph, opset_imports=imports)
    m.ir_version = 8 if opset < 21 else 10  # the oldest IR each opset allows
    return onnx.shape_inference.infer_shapes(m)


def bn_params(c: int, seed: int = 0, names=("scale", "bias", "mean", "var")) -> dict[str, np.ndarray]:
    """BatchNormalization's scale, bias, mean and var for ``c`` channels (positive scale and
    var), under ``names``."""
    rng = np.random.default_rng(seed)
    values = (
        rng.uniform(0.5, 1.5, c).astype(np.float32),
        rng.normal(0, 1, c).astype(np.float32),
        rng.normal(0, 1, c).astype(np.float32),
        rng.uniform(0.5, 2.0, c).astype(np.float32),
    )
    return dict(zip(names, values))


def two_layer_model() -> onnx.ModelProto:
    """x[2,8] -> y = Relu(x @ w)[2,4], z = Sigmoid(x)[2,8]: two outputs, one weight."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["y"]),
        helper.make_node("Sigmoid", ["x"], ["z"]),
    ]
    return graph_model(nodes, {"x": rand(2, 8)}, ["y", "z"], {"w": rand(8, 4)}, name="two")


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def reference_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnx's reference evaluator, for cases onnxruntime's CPU provider does not implement."""
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(y) for y in ReferenceEvaluator(model).run(None, feeds)]


def gpu_run(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], device, **compile_kwargs
) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as out:
        compile_model(model, out, verify_ir=True, **compile_kwargs)
        sess = onnx2wgsl.load(out, device=device)
        return sess.run(None, feeds)


def assert_close(
    got: list[np.ndarray], want: list[np.ndarray], rtol: float = 1e-4, atol: float = 1e-5
) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {i}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"output {i}: dtype {g.dtype} != {w.dtype}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {i}")


def check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-5, **compile_kwargs):
    assert_close(gpu_run(model, feeds, device, **compile_kwargs), ort_run(model, feeds), rtol, atol)


def rand(*shape, seed=0, low=-1.0, high=1.0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def assert_ir_round_trips(model: onnx.ModelProto, **compile_kwargs) -> None:
    """The model's IR prints and parses back exactly after every compile stage."""
    from onnx2wgsl.ir import WeightBlob, graph_diff, parse_ir, print_ir

    def check(stage, g):
        blob = WeightBlob()
        back = parse_ir(print_ir(g, stage=stage, weights=blob), bytes(blob))
        assert graph_diff(g, back) is None, stage

    compile_model(model, on_stage=check, **compile_kwargs)


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run the onnx2wgsl command line in a fresh process; its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "onnx2wgsl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# -- inputs with a default (initializers that are also graph inputs, IR version >= 4) -----------
DEFAULT_W = rand(4, 3, seed=1)


def defaults_graph(nodes, inputs: dict, defaults: dict, outputs: list[str], opset: int = 17):
    """A model of float ``outputs`` whose ``defaults`` are initializers that are also graph
    inputs (IR version 8)."""
    declared = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in {**inputs, **defaults}.items()
    ]
    g = helper.make_graph(
        nodes,
        "g",
        declared,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in defaults.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def defaults_model():
    """y = Reshape(x, s) @ w + b, z = Gather(y, k, axis=1): s is compiled in; w (stored in the
    weights file), b (zeros: one repeated word) and k (int64) stay inputs with defaults."""
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
        helper.make_node("Gather", ["y", "k"], ["z"], axis=1),
    ]
    defaults = {
        "s": np.array([2, 4], np.int64),
        "w": DEFAULT_W,
        "b": np.zeros(3, np.float32),
        "k": np.array([2, 0], np.int64),
    }
    return defaults_graph(nodes, {"x": rand(8)}, defaults, ["y", "z"])


def tampered_defaults() -> dict:
    """case -> (edit of defaults_model's manifest, words of the one-line ManifestError)."""

    def default(m: dict, name: str) -> dict:
        return next(io for io in m["inputs"] if io["name"] == name)["default"]

    return {
        "past the file": (lambda m: default(m, "w").update(file_offset=m["weights"]["size"] - 8), "past the end"),
        "huge offset": (lambda m: default(m, "w").update(file_offset=1 << 52), "past the end"),
        "unaligned": (lambda m: default(m, "w").update(file_offset=2), "is unaligned"),
        "wrong size": (lambda m: default(m, "w").update(size=44), "has size 44, but the input has size 48"),
        "no offset": (lambda m: default(m, "w").pop("file_offset"), "default.file_offset must be"),
        "bad fill": (lambda m: default(m, "b").update(fill=1 << 32), "fill must be a 32-bit word"),
        "not an object": (lambda m: m["inputs"][1].update(default=[0]), "default must be an object"),
        "on an output": (lambda m: m["outputs"][0].update(default={"size": 48, "fill": 0}), "only inputs have"),
    }  # fmt: skip


def with_dim_params(model: onnx.ModelProto, shapes: dict[str, Sequence[int | str]]) -> onnx.ModelProto:
    """The model with its named inputs' and outputs' dims set (a str makes a dim_param) and
    every inner value's shape dropped, as an exporter leaves dims it keeps dynamic."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[vi.name]:
                dims.add().CopyFrom(
                    onnx.TensorShapeProto.Dimension(dim_param=d)
                    if isinstance(d, str)
                    else onnx.TensorShapeProto.Dimension(dim_value=d)
                )
    for vi in m.graph.output:
        if vi.name not in shapes and vi.type.HasField("tensor_type"):  # (an untyped one stays so)
            vi.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    return m


def check_symbolic(model, dims: dict, feeds_list: list[dict], device, rtol=1e-4, atol=1e-5, **compile_kwargs):
    """Compile once with dims kept symbolic, run every feed in one session, compare each with
    onnxruntime; returns the session's artifact folder's compile result."""
    with tempfile.TemporaryDirectory() as out:
        res = compile_model(model, out, dims=dims, verify_ir=True, **compile_kwargs)
        with onnx2wgsl.load(out, device=device) as sess:
            for feeds in feeds_list:
                assert_close(sess.run(None, feeds), ort_run(model, feeds), rtol, atol)
        return res

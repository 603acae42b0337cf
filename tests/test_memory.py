"""The memory planner and the plan checker: planted violations are caught; limits are kept."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_against_ort, rand
from light_models import light_input, light_path, light_reference
from onnx import TensorProto, helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.memory import check_plan, lifetimes, roots
from onnx2wgsl.errors import CompileError
from onnx2wgsl.ir import Binding, Placement


@pytest.fixture(scope="module")
def planned():
    return compile_model(str(light_path("squeezenet"))).graph


def _kernels(g):
    return [op for op in g.ops if op.kind == "kernel"]


def test_the_real_plan_passes(planned):
    check_plan(planned)


def _live_pair(g):
    """Two arena tensors that are live at once but never bound by one dispatch."""
    blocks = [b for b in lifetimes(g, roots(g)) if not b.value.is_const]
    for i, a in enumerate(blocks):
        for b in blocks[i + 1 :]:
            if (
                a.start <= b.end
                and b.start <= a.end
                and not any(
                    {id(a.value), id(b.value)} <= {id(x.value) for x in d.bindings}
                    for op in _kernels(g)
                    for d in op.dispatches
                )
            ):
                return a.value, b.value
    raise AssertionError("no two tensors live at once")


def test_overlapping_live_tensors_are_caught(planned, monkeypatch):
    a, b = _live_pair(planned)
    monkeypatch.setattr(b, "placement", Placement(a.placement.buffer, a.placement.offset, b.placement.size))
    with pytest.raises(CompileError, match="live at once and share bytes"):
        check_plan(planned)


def test_writable_and_readable_alias_in_one_dispatch_is_caught(planned, monkeypatch):
    op = _kernels(planned)[2]
    d = op.dispatches[0]
    # the input bound a second time, writable
    monkeypatch.setattr(d, "bindings", [*d.bindings, Binding(op.inputs[0], 0, None, True)])
    with pytest.raises(CompileError, match="binds bytes of .* as writable"):
        check_plan(planned)


def test_binding_out_of_bounds_is_caught(planned, monkeypatch):
    y = _kernels(planned)[-1].outputs[0]
    p = y.placement
    monkeypatch.setattr(y, "placement", Placement(p.buffer, planned.buffers[p.buffer]["size"] - 256, p.size))
    with pytest.raises(CompileError, match="overruns"):
        check_plan(planned)


def test_misaligned_binding_is_caught(planned, monkeypatch):
    b = _kernels(planned)[1].dispatches[0].bindings[0]
    monkeypatch.setattr(b, "offset", 4)
    monkeypatch.setattr(b, "size", b.value.nbytes - 4)
    with pytest.raises(CompileError, match="misaligned"):
        check_plan(planned)


def test_arena_is_close_to_the_lower_bound():
    for name in ("resnet50", "densenet121", "inception_v2"):
        r = compile_model(str(light_path(name))).report
        assert r.lower_bound <= r.arena_bytes <= 1.10 * r.lower_bound, (name, r.summary())


def test_limits_split_arenas_under_max_buffer_size(tmp_path):
    """A tiny maxBufferSize forces several arenas; the plan stays valid and within limits."""
    import json

    limits = tmp_path / "small.json"
    limits.write_text(
        json.dumps(
            {"name": "small", "limits": {"maxBufferSize": 2 * 2**20, "maxStorageBufferBindingSize": 2**20}}
        )
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64, 32, 32])  # 1 MiB each
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["y"])]  # fmt: skip
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64, 32, 32])
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    res = compile_model(m, target=str(limits), opt_level=0)  # unfused: three 1 MiB tensors live at once
    arenas = [b for b in res.artifact.manifest["buffers"] if b["kind"] == "arena"]
    assert len(arenas) >= 2 and all(b["size"] <= 2 * 2**20 for b in arenas)
    check_plan(res.graph)


def test_a_tensor_over_the_binding_limit_is_a_compile_error(tmp_path):
    import json

    limits = tmp_path / "tiny.json"
    limits.write_text(json.dumps({"limits": {"maxStorageBufferBindingSize": 4096}}))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])
    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    with pytest.raises(CompileError, match="maxStorageBufferBindingSize"):
        compile_model(m, target=str(limits))


@pytest.mark.gpu
@pytest.mark.slow
def test_a_200_mib_weight_compiles_for_default_limits_and_runs(tmp_path, device):
    k, n = 8192, 6400  # 8192 x 6400 float32 = 200 MiB
    w = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32) * np.float32(1 / 90)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "big",
            [x],
            [y],
            [numpy_helper.from_array(w, "w")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert w.nbytes == 200 * 2**20
    report = onnx2wgsl.compile(m, tmp_path / "a")
    assert report.weight_bytes >= w.nbytes and report.dispatches >= 2
    check_against_ort(m, {"x": rand(2, k)}, device, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_limits_read_from_the_device_make_a_target(tmp_path, device):
    import json
    import subprocess
    import sys

    out = tmp_path / "dev.json"
    r = subprocess.run(
        [sys.executable, "-m", "onnx2wgsl", "limits", "-o", str(out)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["limits"]["maxStorageBufferBindingSize"] >= 134217728
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])
    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    res = compile_model(m, tmp_path / "a", target=str(out))
    assert res.artifact.manifest["target"]["limits"] == data["limits"]
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        xv = rand(3, 4)
        np.testing.assert_array_equal(sess.run(None, {"x": xv})[0], np.maximum(xv, 0))


def test_a_callers_device_must_grant_the_artifacts_limits():
    from types import SimpleNamespace

    from onnx2wgsl.runtime.session import _check_device

    small = SimpleNamespace(
        limits={"max-storage-buffers-per-shader-stage": 8, "max-buffer-size": 2**28}, features=set()
    )
    _check_device(small, {"maxStorageBuffersPerShaderStage": 8}, [])
    with pytest.raises(
        onnx2wgsl.DeviceError, match="maxStorageBuffersPerShaderStage = 8, the artifact needs 10"
    ):
        _check_device(small, {"maxStorageBuffersPerShaderStage": 10}, [])
    with pytest.raises(onnx2wgsl.DeviceError, match="lacks features"):
        _check_device(small, {}, ["shader-f16"])


@pytest.mark.gpu
def test_grids_over_the_workgroup_limit_are_folded(tmp_path, device):
    """With at most 16 workgroups per dimension every big kernel is refolded (flat workgroup
    ids recomputed in the shader); squeezenet still gives its shipped reference."""
    import json

    limits = tmp_path / "grid16.json"
    limits.write_text(json.dumps({"name": "grid16", "limits": {"maxComputeWorkgroupsPerDimension": 16}}))
    out = tmp_path / "sq"
    res = compile_model(str(light_path("squeezenet")), out, target=str(limits))
    folded = [
        d for op in res.graph.kernels() for d in op.dispatches if res.graph.shaders[d.shader].fold is not None
    ]
    assert len(folded) >= 5  # the large convs, pools and concats
    assert all(max(d.grid) <= 16 for op in res.graph.kernels() for d in op.dispatches)
    name, x = light_input("squeezenet")
    (y,) = onnx2wgsl.load(out, device=device).run(None, {name: x})
    np.testing.assert_allclose(y, light_reference("squeezenet"), rtol=1e-3, atol=1e-4)


def test_a_grid_no_folding_can_fit_is_a_compile_error(tmp_path):
    import json

    limits = tmp_path / "grid2.json"
    limits.write_text(json.dumps({"name": "grid2", "limits": {"maxComputeWorkgroupsPerDimension": 2}}))
    with pytest.raises(CompileError, match=r"more than 2\^3 can address.*maxComputeWorkgroupsPerDimension"):
        compile_model(str(light_path("squeezenet")), target=str(limits))

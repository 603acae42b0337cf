"""An artifact compiled for several precisions (``--precision fp16,fp32``): one complete
artifact per precision under an index manifest.json; the runtime loads the first variant
whose features the device has."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from helpers import ort_run
from onnx import TensorProto, helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.cli import main
from onnx2wgsl.errors import CompileError, DeviceError, ManifestError
from onnx2wgsl.runtime.manifest import F16_FEATURE, read, validate_index


def conv_matmul() -> onnx.ModelProto:
    """Conv -> Relu -> Flatten -> MatMul -> Add: f16-stored weights and activations under fp16."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
        numpy_helper.from_array(rng.standard_normal((8 * 6 * 6, 10)).astype(np.float32) * 0.05, "m"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "c"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["mm"]),
        helper.make_node("Add", ["mm", "c"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "convmm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("variants") / "convmm"
    res = compile_model(conv_matmul(), out, precision="fp16,fp32")
    return out, res


def test_index_lists_both_complete_artifacts_and_is_deterministic(artifact, tmp_path, capsys):
    out, res = artifact
    index = validate_index(json.loads((out / "manifest.json").read_text()))
    assert [(v["precision"], v["path"], v["features"]) for v in index["variants"]] == [
        ("fp16", "fp16", [F16_FEATURE]),
        ("fp32", "fp32", []),
    ]
    assert res.report.output == str(out) and any("precision variants" in n for n in res.report.notes)
    # each variant is byte for byte what a single-precision compile writes
    for p in ("fp16", "fp32"):
        compile_model(conv_matmul(), tmp_path / p, precision=p)
        assert _files(out / p) == _files(tmp_path / p)
    assert read(out / "fp16")["weights"]["size"] < read(out / "fp32")["weights"]["size"]
    # the same model and options give the same bytes, the index included
    compile_model(conv_matmul(), tmp_path / "again", precision="fp16,fp32")
    assert _files(tmp_path / "again") == _files(out)
    with pytest.raises(ManifestError, match="one artifact per precision"):
        read(out)
    # the CLI's --precision fp16,fp32 writes what the API's list does (both from the file, whose
    # sha256 the manifests record), and inspect shows both schedules
    onnx.save(conv_matmul(), tmp_path / "m.onnx")
    compile_model(tmp_path / "m.onnx", tmp_path / "api", precision=["fp16", "fp32"])
    argv = ["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "cli"), "--precision", "fp16,fp32"]
    assert main(argv) == 0
    assert _files(tmp_path / "cli") == _files(tmp_path / "api")
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "precision variant fp16" in shown and "precision variant fp32" in shown


def test_runtime_picks_fp16_with_shader_f16_and_fp32_without(artifact, device32):
    out, _ = artifact
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (want,) = ort_run(conv_matmul(), {"x": x})
    # `device32` (tests/conftest.py) is created without features: the fp32 variant is the one it runs
    assert F16_FEATURE not in device32.features
    s32 = onnx2wgsl.load(out, device=device32)
    assert s32.precision == "fp32" and s32.path == out / "fp32"
    np.testing.assert_allclose(s32.run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-5)
    s32.release()
    s = onnx2wgsl.load(out)  # the runtime's own device: the adapter's features decide
    if F16_FEATURE not in s.device.adapter.features:
        in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
        (pytest.fail if in_ci else pytest.skip)("this adapter lacks shader-f16")
    assert s.precision == "fp16" and F16_FEATURE in s.device.features
    np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=2e-2, atol=2e-2)
    s.release()


def test_no_fitting_variant_and_bad_precisions_are_clear_errors(tmp_path, device32):
    out = tmp_path / "only16"
    compile_model(conv_matmul(), out, precision="fp16,fp32")
    index = json.loads((out / "manifest.json").read_text())
    index["variants"] = index["variants"][:1]  # fp16 only
    (out / "manifest.json").write_text(json.dumps(index))
    with pytest.raises(
        DeviceError, match=r"runs none of the artifact's precision variants \(fp16 needs \['shader-f16'\]\)"
    ):
        onnx2wgsl.load(out, device=device32)
    index["variants"][0]["path"] = "../fp16"
    (out / "manifest.json").write_text(json.dumps(index))
    with pytest.raises(ManifestError, match="plain folder name"):
        onnx2wgsl.load(out, device=device32)
    for bad in ("fp16,fp16", "fp16,bf16", "", 16):
        with pytest.raises(CompileError):
            compile_model(conv_matmul(), None, precision=bad)

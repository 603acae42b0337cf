"""The JS runtime's f16-stored inputs and outputs (``--precision fp16``): a model with no kernel
(an input that is its output) stores its float I/O as f16 yet needs no shader-f16, so
SwiftShader runs it: feeds are rounded to f16 (nearest even) on the way in and widened on
the way out, as the Python runtime does."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from browser_support import decode
from onnx import helper

import onnx2wgsl


def _identity(code: int) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["y"])],
        "id16",
        [helper.make_tensor_value_info("a", code, [3, 3])],
        [helper.make_tensor_value_info("y", code, [3, 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


# ties to even (1 + 2^-11, 1 + 3 * 2^-11), a subnormal tie, beyond 65504, an odd count of 9
VALUES = [1 + 2**-11, 1 + 3 * 2**-11, 2**-25 * 3, 65520.0, -65519.0, 0.1, -0.0, 6e-8, np.inf]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@pytest.mark.parametrize("dtype", ["float32", "float16", "float16 bits"])
def test_f16_stored_io_round_trips_as_the_python_runtime(page, compiled, feeds, device, dtype):
    npt = np.float32 if dtype == "float32" else np.float16
    x = np.array(VALUES, np.float32).astype(npt).reshape(3, 3)
    code = onnx.TensorProto.FLOAT if dtype == "float32" else onnx.TensorProto.FLOAT16
    name = f"id16_{npt.__name__}"
    url, out = compiled(name, _identity(code), precision="fp16")
    m = json.loads((out / "manifest.json").read_text())
    assert [io["storage"] for io in m["inputs"] + m["outputs"]] == ["f16", "f16"]
    assert m["inputs"][0]["size"] == 20 and "shader-f16" not in m["target"]["features"]
    (want,) = onnx2wgsl.load(out, device=device).run(None, {"a": x})
    np.testing.assert_array_equal(want, x.astype(np.float16).astype(npt))
    page.open("/tests/harness.html")
    if dtype == "float16 bits":
        page.evaluate("() => { delete globalThis.Float16Array; }")
        spec = feeds(f"{name}_bits", {"a": x.view(np.uint16)})
        spec["a"]["type"], spec["a"]["as"] = "float16", "bits"
    else:
        spec = feeds(name, {"a": x})
    res = page.evaluate("s => runCase(s)", {"pkg": url, "feeds": spec})
    got = decode(res["outputs"]["y"])
    if dtype == "float16 bits":
        got = np.frombuffer(got.tobytes(), np.uint16).reshape(3, 3)
        np.testing.assert_array_equal(got, want.view(np.uint16))
    else:
        bits = np.uint32 if dtype == "float32" else np.uint16  # (-0.0 and inf compared bit for bit)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(bits), want.view(bits))

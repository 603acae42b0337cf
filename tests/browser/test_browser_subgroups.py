"""A package compiled with ``--subgroups`` in Chromium: its shaders open with WGSL's `enable
subgroups;`, the session asks the adapter for the feature, and the result matches onnxruntime.
Chromium's SwiftShader adapter has subgroups 4 lanes wide, under the kernels' 8, so this also
runs the plain path each subgroup shader keeps (lavapipe's 8 lanes run the broadcasts: see
tests/test_subgroups.py), and a LayerNorm's rows fold in subgroups of 4 lanes (a subgroup per
row, 8 rows a workgroup of 64: several rows for each subgroup)."""

from __future__ import annotations

import numpy as np
from browser_support import decode
from helpers import ort_run, rand
from onnx import TensorProto, helper, numpy_helper


def conv_matmul():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [72, 40])
    inits = [
        numpy_helper.from_array(rand(8, 8, 3, 3, seed=1) / 8, "cw"),
        numpy_helper.from_array(np.array([72, 16], np.int64), "s"),
        numpy_helper.from_array(rand(16, 40, seed=2), "w"),
        numpy_helper.from_array(rand(40, seed=4), "g"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "s"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["m"]),
        helper.make_node("LayerNormalization", ["m", "g"], ["y"], axis=-1),
    ]
    g = helper.make_graph(nodes, "sg", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_subgroup_package_runs_in_chromium(page, compiled, feeds):
    url, out = compiled("subgroups", conv_matmul(), subgroups=True)
    texts = [p.read_text() for p in sorted((out / "shaders").glob("*.wgsl"))]
    assert sum(t.startswith("enable subgroups;") for t in texts) == 3  # the conv, the matmul, the norm
    assert sum("a subgroup per row" in t for t in texts) == 1
    x = rand(1, 8, 12, 12, seed=3)
    (want,) = ort_run(conv_matmul(), {"x": x})
    page.open("/tests/harness.html")
    res = page.evaluate(
        """async ([pkg, spec]) => {
          const mod = await import(pkg + 'index.js');
          const adapter = await navigator.gpu.requestAdapter();
          const has = adapter.features.has('subgroups');
          const info = adapter.info || {};
          if (!has) return { has };
          const session = await mod.createSession();
          const out = await encodeOutputs(await session.run(await loadFeeds(spec, mod.Tensor)));
          await session.release();
          return { has, out, min: info.subgroupMinSize, max: info.subgroupMaxSize };
        }""",
        [url, feeds("subgroups", {"x": x})],
    )
    assert res["has"], f"this Chromium's adapter lacks subgroups (the test expects SwiftShader's): {res}"
    # SwiftShader's subgroups are 4 lanes wide: the shaders' plain path ran, behind their branch
    assert res["max"] is None or res["max"] < 8, res
    np.testing.assert_allclose(decode(res["out"]["y"]), want, rtol=1e-4, atol=1e-4)

"""A package compiled for several precisions (``--precision fp16,fp32``) in Chromium: its entry
picks the first variant the adapter runs; SwiftShader lacks shader-f16, so that is fp32, and
only fp32's files are fetched."""

from __future__ import annotations

import numpy as np
from browser_support import decode
from helpers import ort_run
from test_fp16_variants import conv_matmul


def test_package_entry_picks_fp32_on_swiftshader_and_matches_onnxruntime(page, compiled, feeds):
    url, out = compiled("convmm_variants", conv_matmul(), precision="fp16,fp32")
    assert (out / "fp16" / "weights.bin").is_file() and (out / "fp32" / "weights.bin").is_file()
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (want,) = ort_run(conv_matmul(), {"x": x})
    page.open("/tests/harness.html")
    res = page.evaluate(
        """async ([pkg, spec]) => {
          const mod = await import(pkg + 'index.js');
          const adapter = await navigator.gpu.requestAdapter();
          const session = await mod.createSession();
          const out = await encodeOutputs(await session.run(await loadFeeds(spec, mod.Tensor)));
          const fetched = performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname);
          await session.release();
          return { f16: adapter.features.has('shader-f16'), precision: session.precision, out, fetched,
                   support: await mod.isModelSupported() };
        }""",
        [url, feeds("convmm_variants", {"x": x})],
    )
    assert not res["f16"], "this Chromium's adapter has shader-f16: the test expects SwiftShader"
    assert res["precision"] == "fp32" and res["support"] == {"supported": True}
    np.testing.assert_allclose(decode(res["out"]["y"]), want, rtol=1e-4, atol=1e-5)
    assert f"{url}fp32/weights.bin" in res["fetched"]
    assert not [p for p in res["fetched"] if p.startswith(f"{url}fp16/")]

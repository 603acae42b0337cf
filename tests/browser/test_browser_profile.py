"""profile.js in Chromium: per-kernel GPU times from timestamp queries, one entry per dispatch
that ran, outputs the same as a plain run's, and a clear error without timestamp-query."""

from __future__ import annotations

import json

import pytest
from browser_support import decode
from helpers import assert_close, two_layer_model
from light_models import randomized

pytestmark = [pytest.mark.gpu, pytest.mark.browser]

PROFILE = """async ([pkg, n]) => {
  const rt = await import(pkg + 'index.js');
  const { createProfiledSession, profile } = await import(pkg + 'profile.js');
  const session = await createProfiledSession(pkg);
  const dims = session.inputMetadata[0].shape;
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i) * 0.5);
  const feeds = { [session.inputNames[0]]: new rt.Tensor('float32', data, dims) };
  const plain = await session.run(feeds);
  const runs = [];
  for (let i = 0; i < n; i++) runs.push(await profile(session, feeds));
  const after = await session.run(feeds); // the plain encoding again
  const enc = async (outs) => Object.fromEntries(await Promise.all(Object.entries(outs).map(async ([k, t]) =>
    [k, { type: t.type, dims: [...t.dims], b64: b64(await t.getData()) }])));
  const res = { plain: await enc(plain), profiled: await enc(runs[0].outputs), after: await enc(after),
                kernels: runs.map((r) => r.kernels), gpuMs: runs.map((r) => r.gpuMs), features: [...session.device.features] };
  await session.release();
  return res;
}"""


def _check(res, manifest):
    assert "timestamp-query" in res["features"]
    for name, out in res["plain"].items():
        assert_close(decode(res["profiled"][name]), decode(out), atol=0, rtol=0)
        assert_close(decode(res["after"][name]), decode(out), atol=0, rtol=0)
    for kernels, total in zip(res["kernels"], res["gpuMs"]):
        # one entry per dispatch (none has a zero grid here), heaviest first, named as the manifest names them
        assert sorted(k["dispatch"] for k in kernels) == list(range(len(manifest["dispatches"])))
        ms = [k["ms"] for k in kernels]
        assert ms == sorted(ms, reverse=True) and min(ms) >= 0 and total == pytest.approx(sum(ms))
        for k in kernels:
            d = manifest["dispatches"][k["dispatch"]]
            assert k["label"] == d["label"] and k["shader"] == manifest["shaders"][d["shader"]]["name"]
            assert k["grid"] == d["grid"] and k.get("flops") == d.get("flops")
    return res


def test_profile_times_every_dispatch(page, compiled):
    url, out = compiled("two", two_layer_model())
    page.open("/tests/harness.html")
    res = page.evaluate(PROFILE, [url, 2])
    _check(res, json.loads((out / "manifest.json").read_text()))


def test_profile_of_a_cnn_accounts_for_the_run(page, compiled):
    url, out = compiled("squeezenet_profile", randomized("squeezenet"))
    page.open("/tests/harness.html")
    res = _check(page.evaluate(PROFILE, [url, 1]), json.loads((out / "manifest.json").read_text()))
    (kernels,) = res["kernels"]
    assert res["gpuMs"][0] > 0 and kernels[0]["ms"] > 0  # SwiftShader's timestamps tick
    convs = [k for k in kernels if k["label"].startswith("Conv")]
    assert convs and all(k["gflops"] is None or k["gflops"] >= 0 for k in convs)


def test_profile_needs_timestamp_query(page, compiled):
    url, _ = compiled("two", two_layer_model())
    page.open("/tests/harness.html")
    err = page.evaluate(
        """async (pkg) => {
          const rt = await import(pkg + 'index.js');
          const { profile } = await import(pkg + 'profile.js');
          const adapter = await navigator.gpu.requestAdapter();
          const device = await adapter.requestDevice(); // no timestamp-query
          const session = await rt.InferenceSession.create(pkg, { device });
          try { await profile(session, {}); return null; } catch (e) { return e.message; } finally { await session.release(); device.destroy(); }
        }""",
        url,
    )
    assert err and "timestamp-query" in err and "createProfiledSession" in err

"""examples/web in Chromium: the demo page renders its top-5 bars (DOM and pixels of a
screenshot), the worker example classifies in a Web Worker, and without WebGPU the runtime
fails clearly while the fallback example runs model.onnx on onnxruntime-web's WASM backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from browser_support import JSTOOLS, Page, launch, read_png, unavailable

import onnx2wgsl

pytestmark = [pytest.mark.gpu, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits" / "model.onnx"
SAMPLES = ROOT / "examples" / "web" / "samples.json"


@pytest.fixture(scope="module")
def digits(compiled):
    return compiled("digits", DIGITS, dims={"batch": 1})


def python_probabilities(out, device) -> np.ndarray:
    import json

    samples = json.loads(SAMPLES.read_text())
    images = np.array(samples["images"], np.float32).reshape(-1, 1, 1, 8, 8) / 16
    sess = onnx2wgsl.load(out, device=device)
    return np.concatenate([sess.run(None, {"image": im})[0] for im in images])


def test_demo_page_renders_top5_bars(page, digits, device, tmp_path):
    url, out = digits
    page.page.set_viewport_size({"width": 820, "height": 520})
    page.open(f"/examples/index.html?model={url}&sample=8", ready="window.__done")
    assert page.evaluate("() => window.__error || null") is None
    bars = page.evaluate(
        """() => [...document.querySelectorAll('#bars li')].map((li) => ({
          label: Number(li.dataset.label), p: Number(li.dataset.p),
          width: li.querySelector('.bar').getBoundingClientRect().width,
          track: li.querySelector('.track').getBoundingClientRect().width,
          box: (({x, y, width, height}) => ({x, y, width, height}))(li.querySelector('.bar').getBoundingClientRect()) }))"""
    )
    probs = python_probabilities(out, device)[8]
    assert [b["label"] for b in bars] == list(np.argsort(-probs)[:5])
    np.testing.assert_allclose([b["p"] for b in bars], np.sort(probs)[::-1][:5], atol=1e-4)
    assert bars[0]["label"] == 8 and bars[0]["width"] > 0.9 * bars[0]["track"]
    assert all(b["width"] > 0 for b in bars)
    timing = page.evaluate("() => document.getElementById('timing').textContent")
    assert "load" in timing and "median of 10 runs" in timing
    shot = tmp_path / "demo.png"
    page.page.screenshot(path=str(shot))
    if os.environ.get("ONNX2WGSL_SCREENSHOT"):  # keep it to look at
        Path(os.environ["ONNX2WGSL_SCREENSHOT"]).write_bytes(shot.read_bytes())
    # the pixels: the top bar is drawn in its green across its width, the next in blue
    img = read_png(shot.read_bytes())
    box = bars[0]["box"]
    row = img[int(box["y"] + box["height"] / 2), int(box["x"]) : int(box["x"] + box["width"])]
    green = np.all(np.abs(row[:, :3].astype(int) - [0x1B, 0x9E, 0x5A]) < 12, axis=1)
    assert green.mean() > 0.95, f"top bar is not drawn green across its width ({green.mean():.2f})"
    canvas = page.evaluate(
        "() => (({x, y, width, height}) => ({x, y, width, height}))(document.getElementById('digit').getBoundingClientRect())"
    )
    digit = img[
        int(canvas["y"]) : int(canvas["y"] + canvas["height"]),
        int(canvas["x"]) : int(canvas["x"] + canvas["width"]),
        :3,
    ]
    assert digit.max() > 200 and digit.min() < 30, "the digit image is not drawn"


def test_worker_example_classifies_in_a_worker(page, digits, device):
    url, out = digits
    page.open(f"/examples/worker.html?model={url}", ready="window.__done")
    assert page.evaluate("() => window.__error || null") is None
    results = page.evaluate("() => window.__results")
    got = np.array([r["probabilities"] for r in results], np.float32)
    np.testing.assert_allclose(got, python_probabilities(out, device), atol=1e-4, rtol=1e-4)
    assert [r["predicted"] for r in results] == [r["label"] for r in results]


# What isSupported() says and the error InferenceSession.create() throws, after ``%s`` (a
# statement that takes WebGPU away, or nothing).
_SUPPORT_AND_CREATE = """async (pkg) => withModule(pkg, async (rt) => {
  %s
  const support = await rt.isSupported(pkg);
  let err;
  try { await rt.InferenceSession.create(pkg); } catch (e) { err = `${e.name}: ${e.message}`; }
  return { support, err };
})"""


def test_runtime_says_why_without_navigator_gpu(page, digits):
    url, _ = digits
    page.open("/tests/harness.html")
    out = page.evaluate(
        _SUPPORT_AND_CREATE
        % "Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true });",
        url,
    )
    assert out["support"]["supported"] is False and "navigator.gpu is missing" in out["support"]["reason"]
    assert out["err"].startswith("DeviceError: WebGPU is not available here (navigator.gpu is missing")
    assert "onnxruntime-web's WASM backend" in out["err"]


@pytest.fixture(scope="module")
def no_webgpu_browser(playwright):
    """Chromium without --enable-unsafe-webgpu: navigator.gpu exists, no adapter is granted."""
    b = launch(playwright, webgpu=False)
    yield b
    b.close()


def _page(browser, server):
    p = Page(browser.new_context().new_page(), server)
    p.page.on("console", lambda m: None)
    return p


def test_without_webgpu_create_fails_clearly_and_the_demo_says_so(no_webgpu_browser, server, digits):
    url, _ = digits
    p = _page(no_webgpu_browser, server)
    p.open("/tests/harness.html")
    out = p.evaluate(
        _SUPPORT_AND_CREATE % "",
        url,
    )
    assert out["support"]["supported"] is False
    assert out["err"] == (
        "DeviceError: WebGPU is present but no adapter was granted (the GPU is blocklisted or WebGPU is "
        "disabled); run model.onnx with onnxruntime-web's WASM backend instead"
    )
    assert out["support"]["reason"] == out["err"].removeprefix("DeviceError: ")
    p.open(f"/examples/index.html?model={url}", ready="window.__done")
    status = p.evaluate("() => document.getElementById('status').textContent")
    assert "no adapter was granted" in status and "fallback.html" in status
    p.page.context.close()


def test_fallback_example_runs_model_onnx_on_wasm(no_webgpu_browser, server, digits, device):
    ort = JSTOOLS / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"
    if not ort.is_file():
        unavailable(f"onnxruntime-web is not installed ({ort})")
    url, out = digits
    p = _page(no_webgpu_browser, server)
    p.open(f"/examples/fallback.html?model={url}&ort=/ort/ort.wasm.min.mjs", ready="window.__done")
    assert p.evaluate("() => window.__error || null") is None
    res = p.evaluate("() => window.__result")
    assert res["backend"] == "wasm" and "no adapter was granted" in res["reason"]
    np.testing.assert_allclose(res["probabilities"], python_probabilities(out, device)[3], atol=1e-4)
    p.page.context.close()


def test_fallback_example_prefers_webgpu(page, digits, device):
    url, out = digits
    page.open(f"/examples/fallback.html?model={url}&ort=/ort/ort.wasm.min.mjs", ready="window.__done")
    res = page.evaluate("() => window.__result")
    assert res["backend"] == "webgpu"
    np.testing.assert_allclose(res["probabilities"], python_probabilities(out, device)[3], atol=1e-4)

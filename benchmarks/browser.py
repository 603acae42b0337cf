"""The browser pair of benchmarks/run.py: onnx2wgsl's JS package against onnxruntime-web's
WebGPU backend, in headless Chromium on its WebGPU adapter (SwiftShader here), driven by
Playwright. Each engine gets a fresh browser (a new process and profile) per model, on the same
page (benchmarks/web/bench.html, served from 127.0.0.1 with the tests' strict CSP; onnxruntime-web's
page also allows WASM compilation, which it needs even on WebGPU), with the same feeds.

run.py calls ``measure`` for the models of --browser-models; the numbers land in RESULTS.md's
"In the browser" table. Needs `bash scripts/setup-browser.sh` (Chromium, onnxruntime-web in
.cache/jstools) and Playwright for Python (the test extras).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from browser_support import CHROMIUM, JSTOOLS, Server, launch  # noqa: E402  (the tests' server)

ENGINES = ["onnx2wgsl-js", "ort-web"]
ORT_DIST = JSTOOLS / "node_modules" / "onnxruntime-web" / "dist"
ORT_BUNDLE = "ort.webgpu.bundle.min.mjs"


def unavailable() -> str | None:
    """Why the browser pair cannot run here (None when it can)."""
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (bash scripts/setup-browser.sh)"
    if not (ORT_DIST / ORT_BUNDLE).is_file():
        return f"no onnxruntime-web in {JSTOOLS} (bash scripts/setup-browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    return None


def ort_web_version() -> str:
    try:
        return json.loads((ORT_DIST.parent / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "?"


def _write_feeds(folder: Path, url: str, feeds_path: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {}
    with np.load(feeds_path) as z:
        for k, name in enumerate(z.files):
            a = np.ascontiguousarray(z[name])
            (folder / f"{k}.bin").write_bytes(a.tobytes())
            spec[name] = {"url": f"{url}{k}.bin", "type": a.dtype.name, "dims": list(a.shape)}
    return spec


def _decode(out: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(out["b64"]), dtype=np.dtype(out["type"])).reshape(out["dims"])


def measure(name: str, model: Path, feeds_path: Path, dims: dict, work: Path, *, engines=ENGINES, iters: int,
            warmup: int, timeout: float, log) -> dict[str, dict]:  # fmt: skip
    """The browser engines on one model: {engine: result} in run.py's result shape (load_s,
    first_s, warm_s, arrays...) or {"error": ...}."""
    from playwright.sync_api import sync_playwright

    import onnx2wgsl

    root = work / "web"
    root.mkdir(exist_ok=True)
    outputs = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
    out: dict[str, dict] = {}
    if "onnx2wgsl-js" in engines:
        try:
            # (headless Chromium's adapter here is SwiftShader, a CPU's: the cpu target)
            onnx2wgsl.compile(
                str(model), root / "m" / name, emit="js", dims=dims or None, force=True, target="cpu"
            )
        except Exception as e:  # reported like an engine's failure, the run goes on
            out["onnx2wgsl-js"] = {"error": f"compile: {str(e).splitlines()[0]}"}
    server = Server(
        root, mounts={"/bench/": HERE / "web", "/model/": model.parent}, wasm=("/bench/bench.html?ort",)
    )
    feeds = _write_feeds(root / "feeds" / name, f"/feeds/{name}/", feeds_path)
    common = {"feeds": feeds, "outputs": outputs, "warmup": warmup, "iters": iters}
    specs = {
        "onnx2wgsl-js": {**common, "engine": "onnx2wgsl", "pkg": f"/m/{name}/"},
        "ort-web": {
            **common,
            "engine": "ort-web",
            "model": f"/model/{model.name}",
            "ort": f"/ort/{ORT_BUNDLE}",
            "ortDir": "/ort/",
        },  # fmt: skip
    }
    try:
        with sync_playwright() as p:
            for engine, spec in specs.items():
                if engine not in engines or engine in out:
                    continue
                (root / "m" / f"{engine}.json").write_text(json.dumps(spec))
                out[engine] = _one(p, server, engine, f"/m/{engine}.json", timeout)
                r = out[engine]
                if "error" in r:
                    log(f"  {engine:12s} failed: {r['error']}")
                else:
                    log(
                        f"  {engine:12s} first {r['first_s'] * 1000:9.1f} ms  warm median {np.median(r['warm_s']) * 1000:9.2f} ms"
                    )
    finally:
        server.httpd.shutdown()
    return out


def _one(p, server: Server, engine: str, spec_url: str, timeout: float) -> dict:
    """One engine in a fresh browser: its result, or {"error": ...}."""
    browser = launch(p)
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        query = ("?ort&" if engine == "ort-web" else "?") + f"spec={spec_url}"
        page.goto(f"{server.url}/bench/bench.html{query}")
        deadline = time.monotonic() + timeout
        while not page.evaluate("() => !!window.__done"):
            if time.monotonic() > deadline:
                return {"error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.2)
        done = page.evaluate("() => window.__done")
    finally:
        browser.close()
    if done["error"]:
        return {"error": done["error"] + (f" ({errors[0]})" if errors else "")}
    r = done["result"]
    names = list(r["outputs"])
    return {
        "load_s": r["createMs"] / 1000,
        "first_s": r["firstMs"] / 1000,
        "warm_s": [t / 1000 for t in r["warmMs"]],
        "outputs": names,
        "adapter": r["adapter"],
        "arrays": [_decode(r["outputs"][n]) for n in names],
    }

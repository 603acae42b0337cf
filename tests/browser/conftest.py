"""Fixtures of the browser tests: a static http server on 127.0.0.1 with a strict CSP, Debian's
Chromium with its SwiftShader WebGPU adapter driven by Playwright, and compiled packages.

Under CI=true a missing Chromium or Playwright fails the run; elsewhere these tests skip."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import onnx2wgsl

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = os.environ.get("ONNX2WGSL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# RECIPES: SwiftShader's WebGPU adapter appears only with --enable-unsafe-webgpu
FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]  # fmt: skip
WEBGPU = ["--enable-unsafe-webgpu"]
# no eval, no inline script: the runtime must work under this
CSP = ("default-src 'self'; script-src 'self'; worker-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'")  # fmt: skip
CSP_WASM = CSP.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")
JSTOOLS = ROOT / ".cache" / "jstools"
TIMEOUT_MS = 300_000  # SwiftShader runs compute on the CPU: a CNN takes seconds


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(
            f"CI=true but the browser tests cannot run: {reason} (bash scripts/setup-browser.sh)",
            pytrace=False,
        )
    pytest.skip(f"{reason}; run `bash scripts/setup-browser.sh`")


class Server:
    """Serves folders under URL prefixes, with the strict CSP on every response."""

    def __init__(self, root: Path):
        self.root = root
        self.mounts = {
            "/runtime/": ROOT / "runtime" / "js",
            "/tests/": HERE,
            "/examples/": ROOT / "examples" / "web",
            "/m/": root / "m",
            "/feeds/": root / "feeds",
            "/ort/": JSTOOLS / "node_modules" / "onnxruntime-web" / "dist",
        }
        for d in ("m", "feeds"):
            (root / d).mkdir(exist_ok=True)
        mounts = self.mounts

        class Handler(http.server.SimpleHTTPRequestHandler):
            extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                              ".wgsl": "text/plain", ".json": "application/json"}  # fmt: skip

            def translate_path(self, path):
                path = path.split("?", 1)[0].split("#", 1)[0]
                for prefix, folder in mounts.items():
                    if path.startswith(prefix):
                        rel = path[len(prefix) :]
                        target = (folder / rel).resolve()
                        if folder.resolve() in target.parents or target == folder.resolve():
                            return str(target)
                return str(root / "__nothing__")

            def end_headers(self):
                # the fallback page runs onnxruntime-web's WASM, which needs wasm-unsafe-eval
                wasm = self.path.startswith("/examples/fallback.html")
                self.send_header("Content-Security-Policy", CSP_WASM if wasm else CSP)
                self.send_header("Cache-Control", "no-store")
                super().end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("web"))
    yield s
    s.httpd.shutdown()


@pytest.fixture(scope="session")
def playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"Chromium not found at {CHROMIUM}")
    with sync_playwright() as p:
        yield p


def launch(playwright, webgpu: bool = True):
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=FLAGS + (WEBGPU if webgpu else []), timeout=120_000
    )


@pytest.fixture(scope="session")
def browser(playwright):
    b = launch(playwright)
    yield b
    b.close()


class Page:
    """A Playwright page on a served path, failing the test on page errors or CSP violations."""

    def __init__(self, page, server):
        self.page, self.server, self.errors = page, server, []
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def open(self, path: str, ready: str = "window.__ready"):
        self.page.goto(self.server.url + path)
        self.wait(ready)
        return self

    def wait(self, expression: str, timeout_s: float = TIMEOUT_MS / 1000):
        """Poll from here: Playwright's wait_for_function evaluates strings in the page, which
        the strict CSP (rightly) forbids."""
        deadline = time.monotonic() + timeout_s
        while not self.page.evaluate(f"() => !!({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} not true after {timeout_s} s")
            time.sleep(0.1)

    def evaluate(self, script: str, arg=None):
        return self.page.evaluate(script, arg)


@pytest.fixture
def page(browser, server):
    context = browser.new_context()
    p = Page(context.new_page(), server)
    yield p
    context.close()
    assert not p.errors, f"errors in the page: {p.errors}"


@pytest.fixture(scope="session")
def compiled(server):
    """compiled(name, model, **compile_kwargs) -> (url, dir): a --target js package, made once."""
    made = {}

    def make(name: str, model, **kwargs):
        if name not in made:
            out = server.root / "m" / name
            onnx2wgsl.compile(model, out, emit="js", **kwargs)
            made[name] = (f"/m/{name}/", out)
        return made[name]

    return make


@pytest.fixture(scope="session")
def feeds(server):
    """feeds(case, {name: array}, as_=None, plain=False) -> the harness's feed spec (raw files)."""

    def write(case: str, arrays: dict, as_: str | None = None, plain: bool = False) -> dict:
        folder = server.root / "feeds" / case
        folder.mkdir(parents=True, exist_ok=True)
        spec = {}
        for name, a in arrays.items():
            safe = "".join(c if c.isalnum() else "_" for c in name)
            (folder / f"{safe}.bin").write_bytes(np.ascontiguousarray(a).tobytes())
            spec[name] = {"url": f"/feeds/{case}/{safe}.bin", "type": a.dtype.name, "dims": list(a.shape),
                          "as": as_, "plain": plain}  # fmt: skip
        return spec

    return write

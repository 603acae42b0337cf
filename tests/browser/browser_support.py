"""Helpers the browser tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

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


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(
            f"CI=true but the browser tests cannot run: {reason} (bash scripts/setup-browser.sh)",
            pytrace=False,
        )
    pytest.skip(f"{reason}; run `bash scripts/setup-browser.sh`")


class Server:
    """Serves folders under URL prefixes, with the strict CSP on every response."""

    def __init__(self, root: Path, mounts: dict[str, Path] | None = None, wasm: tuple[str, ...] = ()):
        """``mounts`` adds URL prefixes; pages under the ``wasm`` prefixes may compile WASM
        (onnxruntime-web needs it), like the fallback example."""
        self.root = root
        self.mounts = {
            "/runtime/": ROOT / "runtime" / "js",
            "/tests/": HERE,
            "/examples/": ROOT / "examples" / "web",
            "/m/": root / "m",
            "/feeds/": root / "feeds",
            "/ort/": JSTOOLS / "node_modules" / "onnxruntime-web" / "dist",
        }
        self.mounts.update(mounts or {})
        for d in ("m", "feeds"):
            (root / d).mkdir(exist_ok=True)
        mounts = self.mounts
        wasm_pages = ("/examples/fallback.html", *wasm)

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
                wasm = self.path.startswith(wasm_pages)
                self.send_header("Content-Security-Policy", CSP_WASM if wasm else CSP)
                self.send_header("Cache-Control", "no-store")
                super().end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def launch(playwright, webgpu: bool = True):
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=FLAGS + (WEBGPU if webgpu else []), timeout=120_000
    )


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


def decode(out: dict) -> np.ndarray:
    """An output the harness encoded -> numpy (float16 bits and bool bytes included)."""
    dtype = np.dtype(out["type"]) if out["type"] != "bfloat16" else np.dtype(np.uint16)
    return np.frombuffer(base64.b64decode(out["b64"]), dtype=dtype).reshape(out["dims"])


def read_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium's screenshots are)."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, head = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = head
    assert depth == 8 and color in (2, 6) and not interlace, f"unsupported PNG {head}"
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        f, line = (
            raw[y * (stride + 1)],
            np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32),
        )
        cur = line.copy()
        if f == 1:
            for x in range(bpp, stride):
                cur[x] = (cur[x] + cur[x - bpp]) & 255
        elif f == 2:
            cur = (line + prev) & 255
        elif f == 3:
            for x in range(stride):
                cur[x] = (line[x] + ((cur[x - bpp] if x >= bpp else 0) + prev[x]) // 2) & 255
        elif f == 4:
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b, c = prev[x], prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y], prev = cur, cur
    return out.reshape(height, width, bpp)

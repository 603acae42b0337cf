"""Fixtures of the browser tests: a static http server on 127.0.0.1 with a strict CSP, Debian's
Chromium with its SwiftShader WebGPU adapter driven by Playwright, and compiled packages.

Under CI=true a missing Chromium or Playwright fails the run; elsewhere these tests skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser_support import CHROMIUM, Page, Server, launch, unavailable

import onnx2wgsl


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
        unavailable("Playwright for Python is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        unavailable(f"Chromium not found at {CHROMIUM}")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright):
    b = launch(playwright)
    yield b
    b.close()


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

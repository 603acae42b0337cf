"""The runtime's wgpu instance: started with the platform's primary backends (on Linux, Vulkan
without OpenGL's EGL), widened to every backend where those have no adapter, and left alone
where the caller made it. Each case runs in a fresh process, since a process has one."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="checks Linux's backends (CI runs Linux)")

ADAPTER = """
import json
from onnx2wgsl.runtime.session import request_adapter
try:
    info = request_adapter().info
    got = {"backend": info["backend_type"], "device": info["device"]}
except Exception as e:
    got = {"error": type(e).__name__}
got["egl"] = "libEGL" in open("/proc/self/maps").read()
print(json.dumps(got))
"""

PLAIN = """
import json, wgpu
try:
    info = wgpu.gpu.request_adapter_sync(power_preference="high-performance").info
    got = {"backend": info["backend_type"], "device": info["device"]}
except Exception as e:
    got = {"error": "failed"}
got["egl"] = "libEGL" in open("/proc/self/maps").read()
print(json.dumps(got))
"""


def _run(code: str, **env: str) -> dict:
    env = {**os.environ, **env}
    env.pop("WGPU_BACKEND_TYPE", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_runtime_starts_vulkan_without_opengl(device):
    got = _run(ADAPTER)
    assert got["backend"] == device.adapter.info["backend_type"] == "Vulkan"
    assert not got["egl"], "the runtime's instance started OpenGL (EGL)"
    if ctypes.util.find_library("EGL"):
        # (the check can see EGL: wgpu's default instance, every backend, starts it)
        assert _run(PLAIN)["egl"]


def test_without_a_vulkan_driver_it_finds_what_every_backend_finds():
    # no Vulkan driver: the runtime widens its instance, and gets the adapter (OpenGL, or none)
    # that wgpu's default instance gets
    env = {"VK_ICD_FILENAMES": "/nonexistent/icd.json", "VK_DRIVER_FILES": "/nonexistent/icd.json"}
    got, plain = _run(ADAPTER, **env), _run(PLAIN, **env)
    assert got.get("backend") == plain.get("backend") and got.get("device") == plain.get("device")
    assert got.get("backend") != "Vulkan"
    if "backend" not in got:
        assert got["error"] == "DeviceError" or got["error"] == "RuntimeError"


def test_an_instance_the_caller_made_is_kept(device):
    code = "import wgpu\nwgpu.gpu.request_adapter_sync(power_preference='high-performance')\n" + ADAPTER
    got = _run(code)
    assert got["backend"] == "Vulkan"
    if ctypes.util.find_library("EGL"):
        assert got["egl"]  # (the caller's instance has every backend: it was not replaced)

"""Shared fixtures. GPU tests need a WebGPU adapter (Mesa's lavapipe in CI): under CI=true a
missing adapter fails the run loudly; elsewhere those tests are skipped with the reason."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def device():
    from onnx2wgsl.errors import DeviceError
    from onnx2wgsl.runtime import request_device

    try:
        dev = request_device()
    except DeviceError as e:
        if IN_CI:
            pytest.fail(f"CI=true but no WebGPU adapter: {e}", pytrace=False)
        pytest.skip(f"no WebGPU adapter: {e}")
    info = dev.adapter.info
    if IN_CI and info.get("backend_type") != "Vulkan":
        pytest.fail(
            f"CI=true expects lavapipe over Vulkan, got {info.get('device')} ({info.get('backend_type')})"
        )
    return dev


@pytest.fixture(scope="session")
def device16():
    """A device with shader-f16 (lavapipe has it): f16 storage (--precision fp16) needs one."""
    from onnx2wgsl.errors import DeviceError
    from onnx2wgsl.runtime import request_device
    from onnx2wgsl.runtime.manifest import F16_FEATURE

    try:
        return request_device(features=[F16_FEATURE])
    except DeviceError as e:
        if IN_CI:
            pytest.fail(f"CI=true but no WebGPU adapter with shader-f16: {e}", pytrace=False)
        pytest.skip(f"no WebGPU adapter with shader-f16: {e}")


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the expected IR of tests/golden/**/*.ir from what the passes now produce "
        "(also ONNX2WGSL_UPDATE_GOLDEN=1); review the diff before committing it",
    )

"""Shared fixtures. GPU tests need a WebGPU adapter (Mesa's lavapipe in CI): under CI=true a
missing adapter fails the run loudly; elsewhere those tests are skipped with the reason."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _request(features: list[str]):
    from onnx2wgsl.errors import DeviceError
    from onnx2wgsl.runtime import request_device

    try:
        dev = request_device(features=features)
    except DeviceError as e:
        if IN_CI:
            pytest.fail(
                f"CI=true but no WebGPU adapter{' with ' + features[0] if features else ''}: {e}",
                pytrace=False,
            )
        pytest.skip(f"no WebGPU adapter{' with ' + features[0] if features else ''}: {e}")
    info = dev.adapter.info
    if IN_CI and info.get("backend_type") != "Vulkan":
        pytest.fail(
            f"CI=true expects lavapipe over Vulkan, got {info.get('device')} ({info.get('backend_type')})"
        )
    return dev


@pytest.fixture(scope="session")
def device():
    """The device most tests run on: with shader-f16 where the adapter offers it (lavapipe does),
    as ``onnx2wgsl.load`` asks for what an artifact needs; a float16 model compiles at fp16."""
    from onnx2wgsl.runtime.manifest import F16_FEATURE

    dev = _request([])
    return _request([F16_FEATURE]) if F16_FEATURE in dev.adapter.features else dev


@pytest.fixture(scope="session")
def device32():
    """A device created without features: what an adapter lacking shader-f16 gives."""
    return _request([])


@pytest.fixture(scope="session")
def device16():
    """A device with shader-f16 (lavapipe has it): f16 storage (--precision fp16) needs one."""
    from onnx2wgsl.runtime.manifest import F16_FEATURE

    return _request([F16_FEATURE])


@pytest.fixture(scope="session")
def device_sg():
    """A device with subgroups (lavapipe has them, 8 lanes wide): kernels compiled with
    --subgroups need one."""
    from onnx2wgsl.runtime.manifest import SUBGROUPS_FEATURE

    return _request([SUBGROUPS_FEATURE])


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the expected IR of tests/golden/**/*.ir from what the passes now produce "
        "(also ONNX2WGSL_UPDATE_GOLDEN=1); review the diff before committing it",
    )

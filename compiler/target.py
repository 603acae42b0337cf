"""Limits profiles: what a compiled artifact may assume of the device that runs it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from onnx2wgsl.errors import CompileError

# The WebGPU spec's default limits: every conforming browser grants at least these.
WEBGPU_DEFAULT_LIMITS: dict[str, int] = {
    "maxBindGroups": 4,
    "maxBindingsPerBindGroup": 1000,
    "maxStorageBuffersPerShaderStage": 8,
    "maxUniformBuffersPerShaderStage": 12,
    "maxStorageBufferBindingSize": 134217728,
    "maxUniformBufferBindingSize": 65536,
    "maxBufferSize": 268435456,
    "minStorageBufferOffsetAlignment": 256,
    "minUniformBufferOffsetAlignment": 256,
    "maxComputeWorkgroupStorageSize": 16384,
    "maxComputeInvocationsPerWorkgroup": 256,
    "maxComputeWorkgroupSizeX": 256,
    "maxComputeWorkgroupSizeY": 256,
    "maxComputeWorkgroupSizeZ": 64,
    "maxComputeWorkgroupsPerDimension": 65535,
}


@dataclass(frozen=True)
class Target:
    """A named limits profile (and optional features) to compile against."""

    name: str
    limits: dict[str, int] = field(default_factory=lambda: dict(WEBGPU_DEFAULT_LIMITS))
    features: tuple[str, ...] = ()

    def limit(self, key: str) -> int:
        return self.limits[key]

    @property
    def max_bindings(self) -> int:
        return self.limits["maxStorageBuffersPerShaderStage"]

    @property
    def max_binding_size(self) -> int:
        return self.limits["maxStorageBufferBindingSize"]

    @property
    def max_buffer_size(self) -> int:
        return self.limits["maxBufferSize"]

    @property
    def alignment(self) -> int:
        return self.limits["minStorageBufferOffsetAlignment"]

    @property
    def max_groups(self) -> int:
        return self.limits["maxComputeWorkgroupsPerDimension"]


TARGETS: dict[str, Target] = {"webgpu": Target("webgpu")}


def get_target(spec: str | Target | None) -> Target:
    """A target by name ('webgpu'), from a JSON file of limits, or as given."""
    if spec is None:
        return TARGETS["webgpu"]
    if isinstance(spec, Target):
        return spec
    if spec in TARGETS:
        return TARGETS[spec]
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CompileError(f"limits file {spec!r} is not valid JSON ({e})") from e
        limits = dict(WEBGPU_DEFAULT_LIMITS)
        unknown = set(data.get("limits", {})) - set(limits)
        if unknown:
            raise CompileError(f"limits file {spec!r} names unknown limits {sorted(unknown)}")
        limits.update({k: int(v) for k, v in data.get("limits", {}).items()})
        return Target(data.get("name", path.stem), limits, tuple(data.get("features", ())))
    raise CompileError(
        f"unknown target {spec!r}", hint=f"use one of {sorted(TARGETS)} or a JSON file of limits"
    )

"""Limits profiles: what a compiled artifact may assume of the device that runs it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from onnx2wgsl.errors import CompileError
from onnx2wgsl.runtime.manifest import DEFAULT_LIMITS

# The WebGPU spec's default limits (every conforming browser grants at least these) are part of
# the artifact contract, so they live beside the manifest schema.
WEBGPU_DEFAULT_LIMITS = DEFAULT_LIMITS

# Loop iterations one shader invocation may run, all its loops together (an inner loop's
# iterations count as well as the outer loop's). Mesa 22's lavapipe (llvmpipe's "loop
# limiter") gives each invocation this budget and, once it is spent, makes every loop exit
# early without an error: the kernel then stores wrong numbers. Later Mesa has no such limit
# and WebGPU names none, but an artifact may meet either driver, so every kernel keeps each
# invocation's loops under it (long reductions are split across invocations or workgroups).
LOOP_BUDGET = 65_535

# Invocations a device keeps busy at once, which kernels with few tasks aim to fill by
# splitting their reductions across lanes (conv_rows: compiler/lowering/conv.py, row_split).
# A GPU runs tens of thousands; measured on an NVIDIA H200, convs whose tiles were split up to
# 16384 lanes made the four CNNs 2.6-6.5x faster than unsplit, more lanes no faster (docs/internals.md).
# A CPU adapter (lavapipe, SwiftShader) runs a few SIMD lanes per core and pays each load per
# lane: the split's partial sums only cost there (15-48% slower on lavapipe), so its target has 0.
GPU_LANES = 16_384
CPU_LANES = 0


@dataclass(frozen=True)
class Target:
    """A named limits profile (and optional features) to compile against."""

    name: str
    limits: dict[str, int] = field(default_factory=lambda: dict(WEBGPU_DEFAULT_LIMITS))
    features: tuple[str, ...] = ()
    lanes: int = GPU_LANES  # invocations the device runs at once (GPU_LANES, CPU_LANES)
    # a tuning table (compiler/tune.py): problem key -> the form its kernel takes
    tuning: dict[str, dict] = field(default_factory=dict)
    # a tuning run's round: every tunable kernel takes its candidate of this index (its
    # default when it has fewer); None outside tuning
    explore: int | None = None

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

    def __post_init__(self) -> None:
        if not isinstance(self.lanes, int) or self.lanes < 0:
            raise CompileError(
                f"target {self.name!r}: lanes must be a count of invocations (0 or more), not {self.lanes!r}"
            )
        # at most 4 x the grid's limit: every split form's grid is then within it along x (at
        # most lanes / 4 workgroups)
        object.__setattr__(self, "lanes", min(self.lanes, 4 * self.max_groups))


# webgpu: the spec's default limits, for a GPU; cpu: the same for a CPU adapter (lavapipe,
# SwiftShader), whose kernels fill no more lanes than their tasks give
TARGETS: dict[str, Target] = {"webgpu": Target("webgpu"), "cpu": Target("cpu", lanes=CPU_LANES)}


def _camel(kebab: str) -> str:
    head, *rest = kebab.split("-")
    return head + "".join(w.capitalize() for w in rest)


def device_target() -> Target:
    """The limits of this machine's WebGPU adapter, and whether it is a CPU, as a target."""
    from onnx2wgsl.errors import DeviceError
    from onnx2wgsl.runtime.session import request_adapter

    try:
        adapter = request_adapter()  # (a DeviceError saying how to get one when there is none)
    except DeviceError:
        raise
    except Exception as e:  # no wgpu backend library
        raise DeviceError(f"cannot query the WebGPU adapter ({e})") from e
    have = {_camel(k): v for k, v in dict(adapter.limits).items()}
    limits = {k: int(have.get(k, v)) for k, v in WEBGPU_DEFAULT_LIMITS.items()}
    name = adapter.info.get("device") or "device"
    return Target(f"device ({name})", limits, lanes=CPU_LANES if is_cpu_adapter(adapter) else GPU_LANES)


def is_cpu_adapter(adapter) -> bool:
    """A wgpu adapter that is a CPU's (lavapipe, SwiftShader): the cpu target suits it."""
    return str(adapter.info.get("adapter_type", "")).lower() == "cpu"


def target_json(t: Target) -> str:
    return (
        json.dumps(
            {"name": t.name, "limits": t.limits, "features": list(t.features), "lanes": t.lanes}, indent=1
        )
        + "\n"
    )


def get_target(spec: str | Target | None) -> Target:
    """A target by name ('webgpu'; 'device' = this machine's adapter), from a JSON file of
    limits (as `onnx2wgsl limits` writes), or as given."""
    if spec is None:
        return TARGETS["webgpu"]
    if isinstance(spec, Target):
        return spec
    if spec in TARGETS:
        return TARGETS[spec]
    if spec == "device":
        return device_target()
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
        lanes = data.get("lanes", GPU_LANES)  # (Target checks it)
        return Target(data.get("name", path.stem), limits, tuple(data.get("features", ())), lanes=lanes)
    raise CompileError(
        f"unknown target {spec!r}",
        hint=f"use one of {sorted(TARGETS) + ['device']} or a JSON file of limits (see `onnx2wgsl limits`)",
    )

"""The artifact contract: manifest.json's format name, version and a structural check.

The manifest is the only thing the compiler and the runtimes share. Both runtimes (this one
and runtime/js) check it the same way before they touch a device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnx2wgsl.errors import ManifestError

FORMAT = "onnx2wgsl-artifact"
VERSION = 1
MANIFEST = "manifest.json"

# key -> type, for the top level and for each entry of the listed arrays
_SCHEMA: dict[str, Any] = {
    "format": str,
    "version": int,
    "name": str,
    "target": {"name": str, "limits": dict, "features": list},
    "buffers": [{"name": str, "kind": str, "size": int}],
    "weights": {"file": str, "size": int, "sha256": str, "segments": list},
    "inputs": [
        {"name": str, "dtype": str, "storage": str, "shape": list, "buffer": str, "offset": int, "size": int}
    ],
    "outputs": [
        {"name": str, "dtype": str, "storage": str, "shape": list, "buffer": str, "offset": int, "size": int}
    ],
    "shaders": [{"name": str, "file": str, "entry": str, "bindings": list}],
    "dispatches": [{"shader": int, "grid": list, "bindings": list}],
}
BINDING_TYPES = ("storage", "read-only-storage")

# The WebGPU spec's default limits: a device grants them without asking, every browser has them.
DEFAULT_LIMITS: dict[str, int] = {
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
STORAGE_TYPES = ("f32", "i32", "u32")


def _check(obj: Any, schema: Any, where: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(obj, dict):
            raise ManifestError(f"manifest {where or 'root'} must be an object")
        for key, sub in schema.items():
            if key not in obj:
                raise ManifestError(f"manifest {where + '.' if where else ''}{key} is missing")
            _check(obj[key], sub, f"{where + '.' if where else ''}{key}")
    elif isinstance(schema, list):
        if not isinstance(obj, list):
            raise ManifestError(f"manifest {where} must be a list")
        for i, item in enumerate(obj):
            _check(item, schema[0], f"{where}[{i}]")
    elif schema is int:
        if not isinstance(obj, int) or isinstance(obj, bool) or obj < 0:
            raise ManifestError(f"manifest {where} must be a non-negative integer")
    elif not isinstance(obj, schema):
        raise ManifestError(f"manifest {where} must be a {schema.__name__}")


def validate(m: dict) -> dict:
    """Check a parsed manifest; return it, or raise ManifestError naming the first problem."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError("not an onnx2wgsl artifact (manifest format field is wrong)")
    if m.get("version") != VERSION:
        raise ManifestError(
            f"artifact format version {m.get('version')} is not {VERSION}, the one this runtime reads; "
            "recompile the model with this onnx2wgsl version"
        )
    _check(m, _SCHEMA, "")
    buffers = {b["name"] for b in m["buffers"]}
    for io in m["inputs"] + m["outputs"]:
        if io["buffer"] not in buffers and io["size"]:
            raise ManifestError(f"manifest input/output {io['name']!r} names unknown buffer {io['buffer']!r}")
        if io["storage"] not in STORAGE_TYPES:
            raise ManifestError(f"manifest input/output {io['name']!r} has unknown storage {io['storage']!r}")
    for s in m["shaders"]:
        if any(t not in BINDING_TYPES for t in s["bindings"]):
            raise ManifestError(f"shader {s['name']!r} has an unknown binding type")
    for i, d in enumerate(m["dispatches"]):
        if not 0 <= d["shader"] < len(m["shaders"]):
            raise ManifestError(f"dispatch {i} names shader {d['shader']}, which does not exist")
        if len(d["grid"]) != 3:
            raise ManifestError(f"dispatch {i} grid must have 3 numbers")
        if len(d["bindings"]) != len(m["shaders"][d["shader"]]["bindings"]):
            raise ManifestError(f"dispatch {i} binds a different number of buffers than its shader declares")
        for b in d["bindings"]:
            if b.get("buffer") not in buffers:
                raise ManifestError(f"dispatch {i} binds unknown buffer {b.get('buffer')!r}")
    return m


def read(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{str(directory)!r} is not a compiled artifact (no {MANIFEST}); "
            "make one with `onnx2wgsl compile MODEL.onnx -o DIR`"
        )
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON ({e})") from e
    return validate(m)

"""Artifacts written by hand (manifest, WGSL, weights) for the runtimes' contract: here, one with
dims chosen at run time (format version 3), before the compiler emits such artifacts."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

# y[i] = x[i] * 2 + seq + 100 * k over seq * 4 elements; z[i] = t[i] + 1 over seq elements.
# Symbols are read from the dims uniform in manifest order: dims[0].x is seq, dims[0].y is k.
SCALE = """@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> dims: array<vec4<u32>, 1>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x >= dims[0].x * 4u) { return; }
  y[id.x] = x[id.x] * 2.0 + f32(dims[0].x) + 100.0 * f32(dims[0].y);
}
"""
INC = """@group(0) @binding(0) var<uniform> dims: array<vec4<u32>, 1>;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x >= dims[0].x) { return; }
  z[id.x] = t[id.x] + 1.0;
}
"""
SEQ = 128  # seq's bound
K = 5  # k's bound


def _io(name, shape, buffer, offset, size, dtype="float32", storage="f32"):
    return {"name": name, "dtype": dtype, "storage": storage, "shape": shape, "buffer": buffer,
            "offset": offset, "size": size}  # fmt: skip


def _slot(buffer, offset, size):
    return {"buffer": buffer, "offset": offset, "size": size}


DIMS = {"buffer": "dims", "offset": 0, "size": 16}
SYMBOLIC = {
    "format": "onnx2wgsl-artifact",
    "version": 3,
    "name": "symbolic",
    "target": {"name": "webgpu", "limits": {}, "features": []},
    "symbols": [{"name": "seq", "min": 0, "max": SEQ}, {"name": "k", "min": 1, "max": K}],
    "buffers": [
        {"name": "in", "kind": "inputs", "size": 3604},
        {"name": "out", "kind": "outputs", "size": 2560},
        {"name": "dims", "kind": "dims", "size": 16},
    ],
    "weights": {"file": "weights.bin", "size": 0, "sha256": hashlib.sha256(b"").hexdigest(), "segments": []},
    "inputs": [
        _io("x", ["seq", 4], "in", 0, SEQ * 16),
        _io("t", ["seq"], "in", 2048, SEQ * 4),
        _io("p", [["*", 2, "seq"]], "in", 2560, SEQ * 8),  # fed, unused: its dim is an expression
        _io("q", ["k"], "in", 3584, K * 4, "int32", "i32"),  # binds k
    ],
    "outputs": [_io("y", ["seq", 4], "out", 0, SEQ * 16), _io("z", ["seq"], "out", 2048, SEQ * 4)],
    "shaders": [
        {
            "name": "scale",
            "file": "shaders/000_scale.wgsl",
            "entry": "main",
            "bindings": ["read-only-storage", "storage", "uniform"],
        },
        {
            "name": "inc",
            "file": "shaders/001_inc.wgsl",
            "entry": "main",
            "bindings": ["uniform", "read-only-storage", "storage"],
        },
    ],  # fmt: skip
    "dispatches": [
        {
            "shader": 0,
            "grid": [["//", ["+", ["*", 4, "seq"], 63], 64], 1, 1],
            "bindings": [_slot("in", 0, SEQ * 16), _slot("out", 0, SEQ * 16), DIMS],
        },
        {
            "shader": 1,
            "grid": [["//", ["+", "seq", 63], 64], 1, 1],
            "bindings": [DIMS, _slot("in", 2048, SEQ * 4), _slot("out", 2048, SEQ * 4)],
        },
    ],  # fmt: skip
}
SHADERS = {"shaders/000_scale.wgsl": SCALE, "shaders/001_inc.wgsl": INC}


def symbolic_manifest() -> dict:
    """The manifest (with its shaders' sha256), a fresh copy to edit."""
    m = copy.deepcopy(SYMBOLIC)
    for s in m["shaders"]:
        s["sha256"] = hashlib.sha256(SHADERS[s["file"]].encode()).hexdigest()
    return m


def write_artifact(out: Path, manifest: dict | None = None) -> Path:
    """The artifact folder: manifest.json, an empty weights.bin, the shaders."""
    (out / "shaders").mkdir(parents=True, exist_ok=True)
    for path, code in SHADERS.items():
        (out / path).write_text(code)
    (out / "weights.bin").write_bytes(b"")
    (out / "manifest.json").write_text(json.dumps(manifest or symbolic_manifest(), indent=1))
    return out


def expected(x, t, k):
    """What the artifact computes (numpy arrays in, out)."""
    return x * 2 + x.shape[0] + 100 * k, t + 1


def _set(path: str, value):
    """An edit of the manifest at a dotted path ("inputs.0.shape.0")."""

    def edit(m):
        *head, last = path.split(".")
        for key in head:
            m = m[int(key)] if isinstance(m, list) else m[key]
        if isinstance(m, list):
            m[int(last)] = value
        else:
            m[last] = value

    return edit


# case -> (edit of the manifest, the start of the one-line ManifestError both runtimes give)
BAD_EXPR = "manifest input/output 'p' shape has a bad expression"
MALFORMED = {
    "symbol name": (_set("symbols.0.name", "s-q"), "manifest symbol 's-q' must be a new identifier, with 0 <= min"),
    "symbol twice": (_set("symbols.1.name", "seq"), "manifest symbol 'seq' must be a new identifier"),
    "symbol range": (_set("symbols.0.min", 200), "manifest symbol 'seq' must be a new identifier, with 0 <= min <= max"),
    "symbol too big": (_set("symbols.0.max", 2**31), "manifest symbol 'seq' must be a new identifier"),
    "symbol no int": (_set("symbols.0.max", "128"), "manifest symbols[0].max must be a non-negative integer"),
    "symbols no list": (_set("symbols", {"seq": 1}), "manifest symbols must be a list"),
    "unbound symbol": (_set("inputs.3.shape", [["+", "k", 0]]), "manifest symbol 'k' is no input's dim"),
    "unknown name": (_set("inputs.0.shape.0", "len"), "manifest input/output 'x' shape has a bad expression"),
    "unknown op": (_set("inputs.2.shape.0", ["**", 2, "seq"]), BAD_EXPR),
    "arity": (_set("inputs.2.shape.0", ["//", "seq"]), BAD_EXPR),
    "arity 3": (_set("inputs.2.shape.0", ["max", "seq", 1, 2]), BAD_EXPR),
    "sum of one": (_set("inputs.2.shape.0", ["+", "seq"]), BAD_EXPR),
    "empty": (_set("inputs.2.shape.0", []), BAD_EXPR),
    "float": (_set("inputs.2.shape.0", ["*", 2.5, "seq"]), BAD_EXPR),
    "bool": (_set("inputs.2.shape.0", ["*", True, "seq"]), BAD_EXPR),
    "null": (_set("inputs.2.shape.0", ["*", None, "seq"]), BAD_EXPR),
    "too big": (_set("inputs.2.shape.0", ["+", *(["seq"] * 300)]), BAD_EXPR),
    "too deep": (_set("inputs.2.shape.0", json.loads("[" * 300 + "1" + "]" * 300)), BAD_EXPR),
    "huge int": (_set("inputs.2.shape.0", ["*", 2**60, "seq"]), BAD_EXPR),
    "zero divisor": (_set("inputs.2.shape.0", ["//", "seq", ["+", "seq", -128]]), BAD_EXPR),
    "negative dim": (_set("inputs.2.shape.0", ["+", "seq", -129]), BAD_EXPR),
    "slot too small": (_set("outputs.0.size", 2044), "manifest input/output 'y' has size 2044 for shape [seq, 4]"),
    "default": (_set("inputs.1.default", {"size": 512, "fill": 0}), "manifest input 't' has a default and a symbolic shape"),
    "grid at the bound": (_set("dispatches.0.grid.0", ["*", "seq", 600]), "dispatch 0 grid must be 3 numbers from 1 to 65535"),
    "grid op": (_set("dispatches.0.grid.0", ["^", "seq", 6]), "manifest dispatch 0 grid has a bad expression"),
    "grid work": (_set("dispatches.0.grid", [["*", "seq", 400], 2, 1]), "dispatch 0 asks for 102,400 workgroups"),
    "dims size": (_set("buffers.2.size", 32), "dims buffer 'dims' must be the only one, of 16 bytes per 4 symbols"),
    "dims twice": (lambda m: m["buffers"].append({"name": "d2", "kind": "dims", "size": 16}), "dims buffer 'd2' must be the only one"),
    "dims as storage": (_set("dispatches.0.bindings.0", DIMS), "dispatch 0 must bind the whole dims buffer to its uniform bindings only"),
    "uniform not dims": (_set("dispatches.0.bindings.2", _slot("in", 0, 16)), "dispatch 0 must bind the whole dims buffer"),
    "part of dims": (_set("dispatches.0.bindings.2", {**DIMS, "size": 4}), "dispatch 0 must bind the whole dims buffer"),
    "io in dims": (_set("inputs.3.buffer", "dims"), "manifest input/output 'q' names unknown buffer 'dims'"),
    "binding type": (_set("shaders.0.bindings.2", "uniform-ish"), "shader 'scale' has an unknown binding type"),
}  # fmt: skip

"""The artifact: manifest.json + shaders/*.wgsl + weights.bin, deterministic to the byte."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnx2wgsl import __version__
from onnx2wgsl.errors import CompileError, UnsupportedError
from onnx2wgsl.ir import DType, Graph, Value
from onnx2wgsl.ir.kernel import DIMS
from onnx2wgsl.ir.symbolic import simplify
from onnx2wgsl.ir.types import storage_dtype
from onnx2wgsl.runtime.manifest import (
    F16_FEATURE,
    FORMAT,
    MANIFEST,
    SHADER_FILE,
    SUBGROUPS_FEATURE,
    VERSION,
    validate,
    validate_index,
)

from .target import Target

WEIGHTS = "weights.bin"


@dataclass
class Artifact:
    manifest: dict
    shaders: dict[str, str]  # file name -> WGSL
    weights: bytes

    def write(self, out: str | Path, force: bool = False) -> Path:
        """Write into ``out``: a new or empty folder, or one holding an earlier artifact (whose
        shader files are replaced); any other folder only with ``force``. Files that no compile
        wrote are never deleted."""
        out = Path(out)
        check_output_dir(out, force)
        shader_dir = out / "shaders"
        for old in _artifact_files(out):
            if old.parent == shader_dir and old.name not in self.shaders:
                old.unlink()  # a stale shader of the earlier compile must not linger
        shader_dir.mkdir(parents=True, exist_ok=True)
        for name, text in self.shaders.items():
            (shader_dir / name).write_bytes(text.encode("utf-8"))  # the bytes the manifest hashes
        (out / WEIGHTS).write_bytes(self.weights)
        (out / MANIFEST).write_text(json.dumps(self.manifest, indent=1) + "\n")
        return out


def write_index(out: str | Path, variants: list[tuple[str, dict]]) -> dict:
    """Write the index manifest of an artifact compiled for several precisions: ``variants``
    lists (precision, manifest) in order of preference, each artifact already written in the
    folder ``out/<precision>``. A single-precision artifact that was there before loses its
    top-level shaders and weights, which the index no longer names."""
    out = Path(out)
    earlier = _earlier_manifest(out)
    if earlier is not None and "variants" not in earlier:
        for old in _artifact_files(out):
            old.unlink()
        weights = earlier.get("weights")
        if isinstance(weights, dict) and weights.get("file") == WEIGHTS and (out / WEIGHTS).is_file():
            (out / WEIGHTS).unlink()
    index = {
        "format": FORMAT,
        "version": VERSION,
        "name": variants[0][1]["name"],
        "variants": [
            {"precision": p, "features": list(m["target"]["features"]), "path": p} for p, m in variants
        ],
    }
    validate_index(index)
    (out / MANIFEST).write_text(json.dumps(index, indent=1) + "\n")
    return index


def _earlier_manifest(out: Path) -> dict | None:
    """The manifest of an artifact already in ``out``, or None."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def holds_artifact(out: Path) -> bool:
    return _earlier_manifest(out) is not None


def _artifact_files(out: Path) -> list[Path]:
    """The shader files an earlier artifact in ``out`` lists (only plain names inside shaders/)."""
    shaders = (_earlier_manifest(out) or {}).get("shaders")
    files = [s.get("file") for s in shaders if isinstance(s, dict)] if isinstance(shaders, list) else []
    return [out / f for f in files if isinstance(f, str) and SHADER_FILE.fullmatch(f) and (out / f).is_file()]


def check_output_dir(out: str | Path, force: bool = False) -> None:
    """Refuse an output that is a file, or a folder holding files but no artifact of ours."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise CompileError(
            f"output {str(out)!r} exists and is not a folder", hint="choose another output path"
        )
    if force or holds_artifact(out) or not any(out.iterdir()):
        return
    raise CompileError(
        f"output folder {str(out)!r} is not empty and holds no onnx2wgsl artifact",
        hint="choose a new or empty folder, or pass --force (Python: force=True) to write the "
        "artifact's files into it; other files there are kept",
    )


def storage_bytes(v: Value) -> bytes:
    """A constant's bytes as the GPU stores it (32-bit scalars by the dtype policy, or f16s
    padded to a 4-byte multiple for a constant the precision pass narrowed)."""
    if v.storage is DType.f16:
        raw = np.ascontiguousarray(v.data.astype(np.float16)).tobytes()
        return raw + bytes(-len(raw) % 4)
    return _storage_bytes(v.data, v.dtype, f"constant %{v.name}")


def _storage_bytes(data: np.ndarray, dtype: DType, what: str) -> bytes:
    st = storage_dtype(dtype)
    if st.value == "i32" and data.dtype.itemsize > 4 or data.dtype == np.uint64:
        info = np.iinfo(np.int32 if st.value == "i32" else np.uint32)
        if data.size and (data.min() < info.min or data.max() > info.max):
            bad = data.min() if data.min() < info.min else data.max()
            raise UnsupportedError(
                f"{what} ({dtype.name}) holds {bad}, outside the {st.value} range the "
                f"GPU stores {dtype.name} in",
                hint="64-bit integers are computed in 32 bits on the GPU; keep such values in that range",
            )
    return np.ascontiguousarray(data.astype(st.numpy)).tobytes()


def _default_bytes(v: Value, data, name: str) -> bytes:
    """An input default's bytes, stored as the input is (f16s padded to a 4-byte multiple)."""
    if v.storage is DType.f16:
        raw = np.ascontiguousarray(np.asarray(data).astype(np.float16)).tobytes()
        return raw + bytes(-len(raw) % 4)
    return _storage_bytes(np.asarray(data), v.dtype, f"the default of input {name!r}")


class _WeightsFile:
    """weights.bin as it is written: a run of 32-bit words stored once (``fill``) or bytes."""

    def __init__(self) -> None:
        self.blob = bytearray()

    def add(self, raw: bytes) -> dict:
        words = np.frombuffer(raw, dtype=np.uint32)
        if not words.size or (words == words[0]).all():
            return {"size": len(raw), "fill": int(words[0]) if words.size else 0}
        self.blob += raw
        return {"size": len(raw), "file_offset": len(self.blob) - len(raw)}


def _io(v: Value, name: str, default: dict | None = None) -> dict:
    p = v.placement
    return {
        "name": name,
        "dtype": v.dtype.numpy.name,
        "storage": v.stored.value,
        "shape": [_dim_json(d) for d in v.shape],
        "buffer": p.buffer,
        "offset": p.offset,
        "size": v.nbytes,
        **({"default": default} if default is not None else {}),
    }


def _dim_json(d) -> int | str | list:
    """A dim in the manifest: an int, or an expression tree of the symbols (ir/symbolic.py)."""
    d = simplify(d)
    return d if isinstance(d, int) else d.to_json()


def _features(target: Target, kernels) -> list[str]:
    """The device features the artifact needs: the target's, shader-f16 when a shader holds
    f16 buffers (a compile at --precision fp16), and subgroups when a shader uses them (a
    target that offers subgroups lets kernels use them; an artifact with none does not ask)."""
    features = [f for f in target.features if f != SUBGROUPS_FEATURE]
    if any(k.uses_f16 for k in kernels) and F16_FEATURE not in features:
        features.append(F16_FEATURE)
    if any(k.uses_subgroups for k in kernels):
        features.append(SUBGROUPS_FEATURE)
    return features


def tuning_table(g: Graph) -> dict[str, dict]:
    """The tuning table's entries (``--tuning``, or a ``--tune`` run's) that chose the form of
    one of the graph's kernels, by key: recorded in the manifest, from which a compile takes
    them again (``--tuning DIR``) to build the same artifact without measuring."""
    used = {
        d.tune.key: json.loads(d.tune.choice)
        for op in g.ops
        for d in op.dispatches
        if d.tune is not None and d.tune.source == "table"
    }
    return dict(sorted(used.items()))


def build_artifact(g: Graph, target: Target, source_sha256: str | None = None) -> Artifact:
    """Serialize a planned graph."""
    segments = []
    weights = _WeightsFile()
    for v in g.constants():
        raw = storage_bytes(v)
        if not raw:
            continue  # an empty constant has no bytes to upload
        p = v.placement
        segments.append({"buffer": p.buffer, "offset": p.offset, **weights.add(raw)})

    shader_index = {name: i for i, name in enumerate(g.shaders)}
    dims_size = 16 * -(-len(g.symbols) // 4)  # the run's symbol values, 4 to a vec4<u32>
    binding_types: dict[str, list[str]] = {}
    dispatches = []
    for op in g.ops:
        for d in op.dispatches:
            types = ["read-only-storage" if b.value.is_const else "storage" for b in d.bindings]
            slots = [
                {
                    "buffer": b.value.placement.buffer,
                    "offset": b.value.placement.offset + b.offset,
                    "size": b.nbytes,
                }
                for b in d.bindings
            ]
            if g.shaders[d.shader].uses_dims:  # the dims uniform binds after the storage buffers
                types.append("uniform")
                slots.append({"buffer": DIMS, "offset": 0, "size": dims_size})
            binding_types.setdefault(d.shader, types)
            dispatches.append(
                {
                    "shader": shader_index[d.shader],
                    "grid": [_dim_json(n) for n in d.grid],
                    "bindings": slots,
                    "label": f"{op.attrs.get('op', op.kind)} {op.name}".strip(),
                    "flops": _dim_json(d.flops),  # for profiles (`onnx2wgsl bench --profile`)
                }
            )
    # WGSL text is rendered here, once, from the kernels (ir/kernel.py)
    shaders = {f"{name}.wgsl": kernel.text for name, kernel in g.shaders.items() if name in binding_types}
    used = [n for n in g.shaders if n in binding_types]
    remap = {shader_index[n]: i for i, n in enumerate(used)}
    for d in dispatches:
        d["shader"] = remap[d["shader"]]

    input_names = g.metadata.get("input_names", [v.name for v in g.inputs])
    output_names = g.metadata.get("output_names", [v.name for v in g.outputs])
    # an input's default (its initializer, which a feed overrides) is stored as a weight is
    defaults = g.metadata.get("input_defaults", {})
    inputs = [
        _io(v, n, weights.add(_default_bytes(v, defaults[v.name], n)))
        if v.name in defaults else _io(v, n)
        for v, n in zip(g.inputs, input_names)
    ]  # fmt: skip
    blob = weights.blob
    limits = dict(target.limits)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "name": g.name,
        "producer": f"onnx2wgsl {__version__}",
        "source": {
            "opset": g.opset,
            "producer": g.metadata.get("producer", ""),
            **({"sha256": source_sha256} if source_sha256 else {}),
        },
        "target": {
            "name": target.name,
            "limits": limits,
            "features": _features(target, [g.shaders[n] for n in used]),
        },
        **(
            {"symbols": [{"name": s.name, "min": s.lo, "max": s.hi} for s in g.symbols.values()]}
            if g.symbols
            else {}
        ),  # fmt: skip
        "buffers": [{"name": n, **b} for n, b in g.buffers.items()]
        + (
            [{"name": DIMS, "kind": "dims", "size": dims_size}]
            if any(k.uses_dims for k in g.shaders.values())
            else []
        ),
        "weights": {
            "file": WEIGHTS,
            "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "segments": segments,
        },
        "inputs": inputs,
        "outputs": [_io(v, n) for v, n in zip(g.outputs, output_names)],
        "shaders": [
            {
                "name": n,
                "file": f"shaders/{n}.wgsl",
                "sha256": hashlib.sha256(g.shaders[n].text.encode("utf-8")).hexdigest(),
                "entry": "main",
                "bindings": binding_types[n],
            }
            for n in used
        ],
        "dispatches": dispatches,
        **({"generation": g.metadata["generation"]} if "generation" in g.metadata else {}),
        **({"tuning": tuning} if (tuning := tuning_table(g)) else {}),
    }
    return Artifact(validate(manifest), shaders, bytes(blob))

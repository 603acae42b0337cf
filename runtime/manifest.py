"""The artifact contract: manifest.json's format name, version and its check.

The manifest is the only thing the compiler and the runtimes share. Both runtimes (this one
and runtime/js) check it the same way before they touch a device or read another file: its
structure, every number (sizes, offsets and grids within the buffers and limits the artifact
declares) and every path (plain names inside the artifact folder), so that an artifact from
an untrusted source can fail to load but cannot make a runtime read outside its folder,
allocate without bound, or write past a buffer's end.

Version 3 adds dims chosen at run time: ``symbols`` with their ranges, shapes and grids whose
entries may be expression trees over them (:func:`evaluate`), and a ``dims`` buffer holding
the run's symbol values for the shaders. Slots and buffers are sized at the bound (every
symbol at its max), so bind groups stay static; a manifest without symbols is version 2's.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from onnx2wgsl.errors import ManifestError, first_line

FORMAT = "onnx2wgsl-artifact"
VERSION = 3
VERSIONS = (2, 3)  # the versions this runtime reads: 3 is 2 plus symbols
MANIFEST = "manifest.json"
SUBGROUPS_FEATURE = "subgroups"  # WebGPU's feature for subgroup operations (compiled with --subgroups)
# WGSL's subgroup operations are an extension: a shader that uses them opens with these lines
# (the kernels keep each subgroup's lanes together where they share loads, leaving early only
# as a whole subgroup, which WGSL's uniformity analysis cannot see)
SUBGROUPS_HEADER = "enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n"
# wgpu-native's names for WebGPU features it spells otherwise
NATIVE_FEATURES = {SUBGROUPS_FEATURE: "subgroup"}
F16_FEATURE = "shader-f16"  # WebGPU's feature for f16 in shaders: artifacts compiled at fp16 list it
MAX_INT = 2**53 - 1  # JSON integers both runtimes read exactly
MAX_MANIFEST_BYTES = 64 << 20
MAX_SHADER_BYTES = 16 << 20
SHADER_FILE = re.compile(r"shaders/[A-Za-z0-9_.\-]{1,200}\.wgsl")
WEIGHTS_FILE = re.compile(r"[A-Za-z0-9_.\-]{1,200}\.bin")
SHA256 = re.compile(r"[0-9a-f]{64}")
ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
PRECISIONS = ("fp32", "fp16")
VARIANT_DIR = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # a variant's folder: a plain name, no dots
MAX_VARIANTS = 8

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
    "shaders": [{"name": str, "file": str, "sha256": str, "entry": str, "bindings": list}],
    "dispatches": [{"shader": int, "grid": list, "bindings": list}],
}
BINDING_TYPES = ("storage", "read-only-storage", "uniform")  # uniform: the dims buffer only
MAX_SYMBOL = 2**31 - 1
EXPR_OPS = ("+", "*", "//", "tdiv", "%", "max", "min")  # + and * take 2 or more, the rest 2
MAX_EXPR_NODES = 256  # entries of a tree's lists, in all: the compiler's are a handful

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
STORAGE_TYPES = ("f32", "i32", "u32", "f16")  # f16: a float input/output of a --precision fp16 compile


def stored_nbytes(storage: str, n: int) -> int:
    """Bytes ``n`` elements stored as ``storage`` occupy on the GPU: 4 each, or 2 each for f16
    padded to a multiple of 4 (WebGPU copies and writes whole 4-byte words)."""
    return -(-n // 2) * 4 if storage == "f16" else 4 * n


# the dtype names a manifest may give an input or output (the JS runtime reads the same set)
DTYPES = (
    "float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16",
    "uint32", "uint64", "bool", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
    "float8_e8m0fnu", "float4_e2m1fn", "int4", "uint4", "int2", "uint2",
)  # fmt: skip


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
        if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj <= MAX_INT:
            raise ManifestError(f"manifest {where} must be a non-negative integer (at most 2^53 - 1)")
    elif not isinstance(obj, schema):
        raise ManifestError(f"manifest {where} must be a {schema.__name__}")


def _check_format(m) -> None:
    """The format and version fields every manifest (an artifact's or an index's) starts with."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError("not an onnx2wgsl artifact (manifest format field is wrong)")
    if m.get("version") not in VERSIONS:
        raise ManifestError(
            f"artifact format version {m.get('version')} is not {' or '.join(map(str, VERSIONS))}; "
            "recompile the model with this onnx2wgsl version"
        )


def validate(m: dict) -> dict:
    """Check a parsed manifest; return it, or raise ManifestError naming the first problem."""
    _check_format(m)
    _check(m, _SCHEMA, "")
    ranges = _symbols(m)
    limits = dict(DEFAULT_LIMITS)
    for k, v in m["target"]["limits"].items():
        _check(v, int, f"target.limits.{k}")
        limits[k] = v
    for f in m["target"]["features"]:
        _check(f, str, "target.features[]")
    tuning = m.get("tuning", {})  # (the compiler's record of its tuned forms; runtimes ignore it)
    if not isinstance(tuning, dict) or not all(isinstance(v, dict) for v in tuning.values()):
        raise ManifestError("manifest tuning is not a table of problem keys to kernel forms")
    align = limits["minStorageBufferOffsetAlignment"]
    if align < 4 or align & (align - 1):
        raise ManifestError(
            f"manifest target.limits.minStorageBufferOffsetAlignment {align} is not a power of two >= 4"
        )
    sizes, dims, dims_size = _buffers(m, limits, len(ranges))
    for io in m["inputs"] + m["outputs"]:
        where = f"input/output {io['name']!r}"
        if io["storage"] not in STORAGE_TYPES:
            raise ManifestError(f"manifest {where} has unknown storage {io['storage']!r}")
        if io["dtype"] not in DTYPES:
            raise ManifestError(f"manifest {where} has dtype {io['dtype']!r}, which this runtime cannot read")
        n = 1
        for d in io["shape"]:
            if not isinstance(d, (list, str)):
                _check(d, int, f"{where} shape")
            else:
                d = _expr(d, ranges, f"{where} shape")
            n *= d
        # every element is stored as a 32-bit scalar (or an f16); a symbolic slot holds the shape at the bound
        static = not any(isinstance(d, (list, str)) for d in io["shape"])
        need = stored_nbytes(io["storage"], n)
        if io["size"] != need if static else io["size"] < need:
            raise ManifestError(f"manifest {where} has size {io['size']} for shape {show_shape(io['shape'])}")
        if io["size"]:
            _within(sizes, io, where)
        if "default" in io and not static:
            raise ManifestError(f"manifest input {io['name']!r} has a default and a symbolic shape")
    bare = {d for io in m["inputs"] for d in io["shape"] if isinstance(d, str)}
    for name in ranges:
        if name not in bare:
            raise ManifestError(f"manifest symbol {name!r} is no input's dim")
    names = [io["name"] for io in m["inputs"]]  # feeds are by name (a model may list an output twice)
    if len(set(names)) != len(names):
        raise ManifestError("manifest inputs repeat a name")
    _weights(m["weights"], sizes)
    for io in m["inputs"]:
        if "default" in io:
            _default(io, m["weights"])
    for io in m["outputs"]:
        if "default" in io:
            raise ManifestError(f"manifest output {io['name']!r} has a default, which only inputs have")
    for s in m["shaders"]:
        if not SHADER_FILE.fullmatch(s["file"]) or not SHA256.fullmatch(s["sha256"]):
            raise ManifestError(f"shader {s['name']!r}: file must be shaders/NAME.wgsl, with its sha256")
        if not ENTRY.fullmatch(s["entry"]):
            raise ManifestError(f"shader {s['name']!r} has a bad entry point name")
        if not all(isinstance(t, str) and t in BINDING_TYPES for t in s["bindings"]):
            raise ManifestError(f"shader {s['name']!r} has an unknown binding type")
    for i, d in enumerate(m["dispatches"]):
        if not 0 <= d["shader"] < len(m["shaders"]):
            raise ManifestError(f"dispatch {i} names shader {d['shader']}, which does not exist")
        per_dim = limits["maxComputeWorkgroupsPerDimension"]
        grid = d["grid"]
        # an expression may give 0 (at the bound too): that run skips the dispatch
        at_max = [_expr(g, ranges, f"dispatch {i} grid") if isinstance(g, (list, str)) else g for g in grid]
        if len(grid) != 3 or not all(
            0 <= g <= per_dim if isinstance(g0, (list, str)) else _is_int(g) and 1 <= g <= per_dim
            for g, g0 in zip(at_max, grid)
        ):
            raise ManifestError(f"dispatch {i} grid must be 3 numbers from 1 to {per_dim}")
        types = m["shaders"][d["shader"]]["bindings"]
        if len(d["bindings"]) != len(types):
            raise ManifestError(f"dispatch {i} binds a different number of buffers than its shader declares")
        for b, t in zip(d["bindings"], types):
            _check(b, {"buffer": str, "offset": int, "size": int}, f"dispatches[{i}].bindings[]")
            if (b["buffer"] == dims) != (t == "uniform") or (
                t == "uniform" and (b["offset"] or b["size"] != dims_size)
            ):
                raise ManifestError(
                    f"dispatch {i} must bind the whole dims buffer to its uniform bindings only"
                )
            if t == "uniform":
                continue
            if b["offset"] % limits["minStorageBufferOffsetAlignment"] or not (
                0 < b["size"] <= limits["maxStorageBufferBindingSize"]
            ):
                raise ManifestError(f"dispatch {i} has a binding of bad offset or size")
            _within(sizes, b, f"dispatch {i} binding")
        # (WebGPU refuses a buffer that one dispatch uses both read-only and writable)
        writable = {b["buffer"] for b, t in zip(d["bindings"], types) if t == "storage"}
        for b, t in zip(d["bindings"], types):
            if t == "read-only-storage" and b["buffer"] in writable:
                raise ManifestError(f"dispatch {i} binds buffer {b['buffer']!r} both read-only and writable")
        most = max_workgroups(d["bindings"], per_dim)
        if math.prod(at_max) > most:
            raise ManifestError(
                f"dispatch {i} asks for {math.prod(at_max):,} workgroups, more than the "
                f"{most:,} its bindings' elements can give work to"
            )
    if "generation" in m:
        _generation(m, ranges)
    return m


def _generation(m: dict, ranges: dict[str, tuple[int, int]]) -> None:
    """A decoder compiled for generation (compiler/generation.py): its roles name inputs and
    outputs of the right kinds, its dims are symbols whose ranges cover prompt and decode up
    to max_length, and each past's slot lies in a buffer that holds no output (after a
    step the runtime copies every present into its past's slot), or, for a ``shared`` pair, in
    the very bytes of its present (written in place; nothing is copied)."""
    gen = m["generation"]
    _check(
        gen,
        {"max_length": int, "input_ids": str, "next_token": str, "sequence_dim": str, "past_dim": str,
         "state": [{"past": str, "present": str}]},
        "generation",
    )  # fmt: skip
    inputs = {io["name"]: io for io in m["inputs"]}
    outputs = {io["name"]: io for io in m["outputs"]}
    for role in ("input_ids", "attention_mask", "position_ids"):
        if role in gen and (not isinstance(gen[role], str) or gen[role] not in inputs):
            raise ManifestError(f"manifest generation.{role} names no input")
    if "logits" in gen and (
        not isinstance(gen["logits"], str) or outputs.get(gen["logits"], {}).get("storage") != "f32"
    ):
        raise ManifestError("manifest generation.logits names no float output")
    tok = outputs.get(gen["next_token"])
    if tok is None or tok["storage"] != "i32":
        raise ManifestError("manifest generation.next_token names no integer output")
    sampling = gen.get("sampling")
    if sampling is not None:
        _check(sampling, {"params": str, "token": str, "candidates": int}, "generation.sampling")
        params, sampled = inputs.get(sampling["params"]), outputs.get(sampling["token"])
        if params is None or params["storage"] != "f32" or sampled is None or sampled["storage"] != "i32":
            raise ManifestError("manifest generation.sampling must name a float input and an integer output")
    # (a sequence dim of one token a step is fixed: no symbol)
    ids = inputs.get(gen["input_ids"])
    one = ids is not None and ids["shape"][-1:] == [1]
    seq = ranges.get(gen["sequence_dim"], (1, 1) if one else None)
    n = gen["max_length"]
    if "total_dim" in gen:  # the pasts of the max length: the total length (the mask's) is the symbol
        total = ranges.get(gen["total_dim"]) if isinstance(gen["total_dim"], str) else None
        past = None if total is None else (total[0] - 1, total[1] - 1)
    else:
        past = ranges.get(gen["past_dim"])
    if seq is None or past is None or not (seq[0] <= 1 <= seq[1] and past[0] == 0 and 2 <= n <= past[1] + 1):
        raise ManifestError(
            "manifest generation's sequence_dim and past_dim (or total_dim) must be symbols whose "
            "ranges hold 1 and 0..max_length - 1 (1..max_length; max_length at least 2)"
        )
    pasts = [s["past"] for s in gen["state"]]
    if not pasts or len(set(pasts)) != len(pasts):
        raise ManifestError("manifest generation.state must pair distinct past inputs with present outputs")
    for s in gen["state"]:
        p, q = inputs.get(s["past"]), outputs.get(s["present"])
        if p is None or q is None or p["storage"] != q["storage"] or len(p["shape"]) != len(q["shape"]):
            raise ManifestError(
                f"manifest generation.state pairs {s['past']!r} with {s['present']!r}, "
                "not an input and an output of one storage and rank"
            )
        if s.get("shared", False) is not False:  # the present is the past's own buffer: no copy
            if s["shared"] is not True or [p[k] for k in ("buffer", "offset", "size", "shape")] != [
                q[k] for k in ("buffer", "offset", "size", "shape")
            ]:
                raise ManifestError(
                    f"manifest generation.state: shared past {s['past']!r} and present {s['present']!r} "
                    "must lie in the same bytes, of one shape"
                )
            continue
        # (a copy between two ranges of one buffer is not allowed in WebGPU)
        if p["size"] and p["buffer"] in {o["buffer"] for o in m["outputs"]}:
            raise ManifestError(
                f"manifest generation: past {s['past']!r} lies in a buffer that holds outputs"
            )


def _symbols(m: dict) -> dict[str, tuple[int, int]]:
    """The symbols' ranges, by name, in manifest order (none: a static artifact)."""
    ranges: dict[str, tuple[int, int]] = {}
    syms = m.get("symbols", [])
    _check(syms, [{"name": str, "min": int, "max": int}], "symbols")
    for s in syms:
        if not ENTRY.fullmatch(s["name"]) or s["name"] in ranges or not s["min"] <= s["max"] <= MAX_SYMBOL:
            raise ManifestError(
                f"manifest symbol {s['name']!r} must be a new identifier, with 0 <= min <= max < 2^31"
            )
        ranges[s["name"]] = (s["min"], s["max"])
    return ranges


def _expr(e: Any, ranges: Mapping[str, Any], where: str) -> int:
    """An expression tree's value at the bound: the tree is ints, declared symbols' names and
    [op, args...] lists of at most MAX_EXPR_NODES entries in all (which bounds its depth too),
    and its value there a non-negative integer of at most 2^53 - 1."""
    todo, n = [e], 0
    value = None
    while todo:
        x = todo.pop()
        if _is_int(x) and abs(x) <= MAX_INT or isinstance(x, str) and x in ranges:
            continue
        if not isinstance(x, list) or (n := n + len(x)) > MAX_EXPR_NODES or not x or x[0] not in EXPR_OPS:
            break
        if len(x) < 3 if x[0] in "+*" else len(x) != 3:
            break
        todo += x[1:]
    else:
        try:
            value = evaluate(e, {k: hi for k, (_, hi) in ranges.items()})
        except ZeroDivisionError:
            pass
    if value is None or not 0 <= value <= MAX_INT:
        raise ManifestError(f"manifest {where} has a bad expression")
    return value


def evaluate(e: Any, values: Mapping[str, int]) -> int:
    """An expression tree's value at the symbols' ``values`` (ZeroDivisionError for a zero divisor)."""
    if isinstance(e, int):
        return e
    if isinstance(e, str):
        return values[e]
    op, *args = e
    v = [evaluate(a, values) for a in args]
    if op == "+":
        return sum(v)
    if op == "*":
        return math.prod(v)
    a, b = v
    if op == "tdiv":  # truncating, as ONNX's integer Div
        q = abs(a) // abs(b)
        return q if (a < 0) == (b < 0) else -q
    if op == "max":
        return max(a, b)
    if op == "min":
        return min(a, b)
    return a // b if op == "//" else a % b  # the only ops left (the manifest check allows no others)


def show_shape(shape: list) -> str:
    """A shape as text: ints, symbol names and expressions (``[seq, 4*seq]``)."""
    return f"[{', '.join(show_dim(d) for d in shape)}]"


def show_dim(e: Any) -> str:
    if not isinstance(e, list):
        return str(e)
    op, *args = e
    parts = [show_dim(a) if not isinstance(a, list) or a[0] in ("max", "min", "tdiv") else f"({show_dim(a)})"
             for a in args]  # fmt: skip
    return (
        f"{op}({', '.join(parts)})"
        if op in ("max", "min", "tdiv")
        else (" " + op + " " if op != "*" else "*").join(parts)
    )


def max_workgroups(bindings: list[dict], per_dimension: int) -> int:
    """The most workgroups a compiled dispatch launches: one per element of its largest binding
    (no kernel gives a workgroup less than one element of work), plus the padding of a grid
    folded under the per-dimension limit. The compiler checks its dispatches against it too, so
    a larger grid in a manifest is damage, and would only spend GPU time."""
    return max((b["size"] // 4 for b in bindings), default=0) + per_dimension


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _buffers(m: dict, limits: dict, n_symbols: int) -> tuple[dict[str, int], str | None, int]:
    """The storage buffers' sizes by name, and the dims buffer's name (None if none) and size:
    the one buffer of kind dims holds the symbols' values as u32, 16 bytes per 4."""
    sizes: dict[str, int] = {}
    dims, dims_size = None, 0
    for b in m["buffers"]:
        if b["name"] in sizes or b["name"] == dims:
            raise ManifestError(f"manifest names buffer {b['name']!r} twice")
        if b["kind"] == "dims" and (dims is not None or b["size"] != 16 * -(-n_symbols // 4)):
            raise ManifestError(f"dims buffer {b['name']!r} must be the only one, of 16 bytes per 4 symbols")
        if not 0 < b["size"] <= limits["maxBufferSize"] or b["size"] % 4:
            raise ManifestError(
                f"buffer {b['name']!r} has size {b['size']}, not a multiple of 4 from 4 to maxBufferSize"
            )
        if b["kind"] == "dims":
            dims, dims_size = b["name"], b["size"]
        else:
            sizes[b["name"]] = b["size"]
    return sizes, dims, dims_size


def _within(sizes: dict[str, int], r: dict, where: str) -> None:
    """A range of a storage buffer: it exists, and offset and size are 4-aligned and inside it."""
    size = sizes.get(r["buffer"])
    if size is None:
        raise ManifestError(f"manifest {where} names unknown buffer {r['buffer']!r}")
    if r["offset"] % 4 or r["size"] % 4 or r["offset"] + r["size"] > size:
        raise ManifestError(
            f"manifest {where} lies outside buffer {r['buffer']!r} "
            f"(offset {r['offset']}, size {r['size']}, buffer size {size})"
        )


def _weights(w: dict, sizes: dict[str, int]) -> None:
    if not WEIGHTS_FILE.fullmatch(w["file"]) or not SHA256.fullmatch(w["sha256"]):
        raise ManifestError(
            "manifest weights: file must be a plain NAME.bin beside the manifest, with its sha256"
        )
    for i, seg in enumerate(w["segments"]):
        where = f"weights.segments[{i}]"
        _check(seg, {"buffer": str, "offset": int, "size": int}, where)
        _within(sizes, seg, where)
        _weight_bytes(seg, w, where)


def _default(io: dict, w: dict) -> None:
    """An input's default: its bytes in the weights file, or one 32-bit word repeated."""
    where = f"input {io['name']!r} default"
    d = io["default"]
    _check(d, {"size": int}, where)
    if d["size"] != io["size"]:
        raise ManifestError(f"manifest {where} has size {d['size']}, but the input has size {io['size']}")
    _weight_bytes(d, w, where)


def _weight_bytes(r: dict, w: dict, where: str) -> None:
    """Bytes of the weights file (a segment's, an input's default): 4-aligned within it, or one
    32-bit word repeated (``fill``)."""
    if "fill" in r:
        if not _is_int(r["fill"]) or not 0 <= r["fill"] < 2**32:
            raise ManifestError(f"manifest {where}.fill must be a 32-bit word")
    else:
        _check(r.get("file_offset"), int, f"{where}.file_offset")
        if r["file_offset"] % 4 or r["file_offset"] + r["size"] > w["size"]:
            raise ManifestError(f"manifest {where} is unaligned or reads past the end of {w['file']}")


def _checked_path(directory: str | Path, name: str, size: int | None, limit: int) -> tuple[Path, int]:
    """The path and size of a file the manifest names: a regular file inside the artifact folder
    (links resolved), of the size it declares (at most ``limit``)."""
    root = Path(directory).resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        raise ManifestError(
            f"artifact file {name!r} is missing, not a regular file, or outside the artifact folder"
        )
    actual = path.stat().st_size
    if (size is not None and actual != size) or actual > limit:
        raise ManifestError(f"{name} does not match the manifest (size {actual:,}); recompile")
    return path, actual


def artifact_file(
    directory: str | Path, name: str, size: int | None, limit: int, sha256: str | None
) -> bytearray:
    """The bytes of a file the manifest names: a regular file inside the artifact folder (links
    resolved), read in bounded chunks, of the size (at most ``limit``) and sha256 it declares."""
    path, actual = _checked_path(directory, name, size, limit)
    h = hashlib.sha256() if sha256 is not None else None
    data = bytearray(actual)  # read in place: no copy of a weights file of hundreds of MB
    view, got = memoryview(data), 0
    with open(path, "rb") as f:
        while got < actual and (n := f.readinto(view[got : got + (1 << 24)])):
            if h is not None:
                h.update(view[got : got + n])
            got += n
        longer = bool(f.read(1))  # (the file grew since stat)
    view.release()
    if got != actual or longer or (h is not None and h.hexdigest() != sha256):
        raise ManifestError(f"{name} does not match the manifest (size or sha256); recompile")
    return data


def mapped_artifact_file(directory: str | Path, name: str, size: int):
    """A file the manifest names (a regular file inside the artifact folder, of the size it
    declares) mapped read-only, not read: a weights file of hundreds of MB is neither copied
    into memory nor zero-filled first; its pages come from the page cache as the hash and the
    upload read them. ``check_sha256`` checks it. The caller closes it (``close()``) after its
    last use; while a process loads the artifact its weights file must not be rewritten."""
    import mmap

    path, _ = _checked_path(directory, name, size, size)
    if not size:
        return _Empty()
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class _Empty(bytes):
    """An empty file's contents, closed like a mapping."""

    def close(self) -> None:
        pass


def check_sha256(name: str, data: bytes | bytearray, sha256: str) -> None:
    """The check ``artifact_file`` makes of a file read without its sha256."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ManifestError(f"{name} does not match the manifest (size or sha256); recompile")


_INDEX_SCHEMA: dict[str, Any] = {
    "format": str,
    "version": int,
    "name": str,
    "variants": [{"precision": str, "features": list, "path": str}],
}


def validate_index(m: dict) -> dict:
    """Check a parsed index manifest (a compile for several precisions, ``--precision
    fp16,fp32``): its ``variants``, in order of preference, each a precision, the features it
    needs and the folder (a plain name inside the artifact) of its own complete artifact."""
    _check_format(m)
    _check(m, _INDEX_SCHEMA, "")
    if not 1 <= len(m["variants"]) <= MAX_VARIANTS:
        raise ManifestError(f"manifest variants must list 1 to {MAX_VARIANTS} variants")
    seen = set()
    for i, v in enumerate(m["variants"]):
        if v["precision"] not in PRECISIONS:
            raise ManifestError(
                f"manifest variants[{i}].precision {v['precision']!r} is not one of {PRECISIONS}"
            )
        for f in v["features"]:
            _check(f, str, f"variants[{i}].features[]")
        if not VARIANT_DIR.fullmatch(v["path"]) or v["path"] in seen:
            raise ManifestError(
                f"manifest variants[{i}].path {v['path']!r} is not a plain folder name of its own"
            )
        seen.add(v["path"])
    return m


def is_index(m: dict) -> bool:
    """Whether a parsed manifest is an index of precision variants rather than an artifact."""
    return isinstance(m, dict) and "variants" in m


def choose(index: dict, have: Iterable[str]) -> dict | None:
    """The first variant of ``index`` whose features are all in ``have``, or None."""
    have = set(have)
    return next((v for v in index["variants"] if set(v["features"]) <= have), None)


def read(directory: str | Path) -> dict:
    """The artifact's checked manifest; an index of precision variants is refused (open it
    with ``read_any``, or name one variant's folder)."""
    m = read_any(directory)
    if is_index(m):
        folders = ", ".join(str(Path(directory) / v["path"]) for v in m["variants"])
        raise ManifestError(
            f"{str(directory)!r} holds one artifact per precision ({folders}); load it with "
            "onnx2wgsl.load, which picks the one the device runs, or name one variant's folder"
        )
    return m


def read_any(directory: str | Path) -> dict:
    """The checked manifest of an artifact or of an index of precision variants."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{str(directory)!r} is not a compiled artifact (no {MANIFEST}); "
            "make one with `onnx2wgsl compile MODEL.onnx -o DIR`"
        )
    raw = artifact_file(directory, MANIFEST, None, MAX_MANIFEST_BYTES, None)
    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ManifestError(f"{path} is not valid JSON ({first_line(e) or type(e).__name__})") from e
    return validate_index(m) if is_index(m) else validate(m)

"""``--target js``: make an artifact directory an npm-installable ES-module package.

Beside manifest.json, shaders/ and weights.bin it writes the hand-written browser runtime
(runtime/js, shipped as package data, copied unchanged), TypeScript declarations with this
model's input and output names, a package.json, the source model as model.onnx (for a
fallback to onnxruntime-web's WASM backend) and a README. Everything is a pure function of
the manifest and the source model, so the package is as byte-deterministic as the artifact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from importlib import resources
from pathlib import Path

import onnx

from onnx2wgsl import __version__
from onnx2wgsl.runtime.manifest import FORMAT, VERSION, show_dim

# copied unchanged from runtime/js (the runtime is the same for every model)
RUNTIME_FILES = ("onnx2wgsl.js", "onnx2wgsl.d.ts", "index.js", "profile.js", "profile.d.ts")
VARIANTS_ENTRY = "variants.js"  # index.js of a package compiled for several precisions
GENERATE_FILES = ("generate.js", "generate.d.ts")  # in the packages of artifacts compiled for generation


def runtime_files(manifest: dict) -> tuple[str, ...]:
    return RUNTIME_FILES + (GENERATE_FILES if "generation" in manifest else ())


SOURCE_MODEL = "model.onnx"


def runtime_js_dir():
    """The folder of the browser runtime inside the installed package (runtime/js)."""
    return resources.files("onnx2wgsl.runtime") / "js"


def package_name(text: str) -> str:
    """An npm package name made from a model's file stem or graph name."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:214]
    return name or "model"


def write_js_package(
    out: str | os.PathLike,
    source: str | os.PathLike | onnx.ModelProto | None = None,
    *,
    name: str | None = None,
) -> list[str]:
    """Add the browser runtime, types, package.json, model.onnx and README to the artifact in
    ``out`` (written by compile first). Returns the file names added."""
    out = Path(out)
    manifest = json.loads((out / "manifest.json").read_text())
    # a compile for several precisions: the index lists the variants, whose inputs and outputs
    # are the same; the package's types and README follow the first, its entry picks one
    variants = manifest.get("variants")
    if variants:
        manifest = json.loads((out / variants[0]["path"] / "manifest.json").read_text())
    if name is None:
        if source is not None and not isinstance(source, onnx.ModelProto):
            path = Path(source).resolve()
            # a file called model.onnx is better named by its folder (examples/digits/model.onnx)
            name = path.parent.name if path.stem == "model" and path.parent.name else path.stem
        else:
            name = manifest["name"]
    pkg = package_name(name)
    written = []
    js = runtime_js_dir()
    for f in runtime_files(manifest):
        src = VARIANTS_ENTRY if variants and f == "index.js" else f
        (out / f).write_bytes((js / src).read_bytes())
        written.append(f)
    written += _copy_source(source, out)
    files = {
        "index.d.ts": index_dts(manifest, bool(variants)),
        "package.json": json.dumps(
            package_json(manifest, pkg, SOURCE_MODEL in written, [v["path"] for v in variants or ()]),
            indent=2,
        )
        + "\n",
        "README.md": readme(manifest, pkg, SOURCE_MODEL in written, [v["precision"] for v in variants or ()]),
    }
    for f, text in files.items():
        (out / f).write_text(text)
        written.append(f)
    return written


def _copy_source(source, out: Path) -> list[str]:
    if source is None:
        return []
    if isinstance(source, onnx.ModelProto):
        (out / SOURCE_MODEL).write_bytes(source.SerializeToString(deterministic=True))
        return [SOURCE_MODEL]
    src = Path(source)
    shutil.copyfile(src, out / SOURCE_MODEL)
    written = [SOURCE_MODEL]
    # external data files travel with the model (compile already checked they lie beside it)
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    proto = onnx.load(str(src), load_external_data=False)
    locations = sorted(
        {
            e.value
            for t in _get_all_tensors(proto)
            if uses_external_data(t)
            for e in t.external_data
            if e.key == "location"
        }
    )
    for loc in locations:
        (out / loc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.parent / loc, out / loc)
        written.append(loc)
    return written


def package_json(manifest: dict, name: str, has_source: bool, variants: list[str] | None = None) -> dict:
    """package.json of the model's package: an ES module with types, no dependencies
    (``variants``: the folders of a compile for several precisions)."""
    files = [
        "index.js",
        "index.d.ts",
        *(f for f in runtime_files(manifest) if f != "index.js"),
        "manifest.json",
        *([f"{v}/" for v in variants] if variants else ["shaders/", manifest["weights"]["file"]]),
    ]
    files += [SOURCE_MODEL] if has_source else []
    return {
        "name": name,
        "version": "1.0.0",
        "description": f"{manifest['name']} compiled to WebGPU compute shaders by {manifest.get('producer', 'onnx2wgsl')}",
        "type": "module",
        "main": "./index.js",
        "module": "./index.js",
        "types": "./index.d.ts",
        "exports": {
            ".": {"types": "./index.d.ts", "default": "./index.js"},
            "./runtime": {"types": "./onnx2wgsl.d.ts", "default": "./onnx2wgsl.js"},
            "./profile": {"types": "./profile.d.ts", "default": "./profile.js"},
            **(
                {"./generate": {"types": "./generate.d.ts", "default": "./generate.js"}}
                if "generation" in manifest
                else {}
            ),
            "./package.json": "./package.json",
            "./*": "./*",
        },
        "files": [*files, "README.md"],
        "sideEffects": False,
        "peerDependencies": {"@webgpu/types": "*"},
        "peerDependenciesMeta": {"@webgpu/types": {"optional": True}},
        "onnx2wgsl": {"format": FORMAT, "version": VERSION, "compiler": __version__},
    }


def _io_line(io: dict) -> str:
    return f"{io['dtype']}[{', '.join(show_dim(d) for d in io['shape'])}]"


def index_dts(manifest: dict, variants: bool = False) -> str:
    """index.d.ts: the runtime's types plus this model's feeds and output names (``variants``:
    the entry of a compile for several precisions, which picks one)."""
    picks = (
        """
/** The precision variant this browser runs: the first whose features the adapter has. */
export declare function pickVariant(options?: SessionOptions): Promise<{ precision: 'fp16' | 'fp32'; features: string[]; path: string; url: string }>;
/** The chosen variant's session; `precision` says which. */
export declare function createSession(options?: SessionOptions): Promise<InferenceSession & { precision: 'fp16' | 'fp32' }>;"""
        if variants
        else """
/** InferenceSession.create(modelUrl, options). */
export declare function createSession(options?: SessionOptions): Promise<InferenceSession>;"""
    )
    feeds = "\n".join(
        f"  /** {_io_line(io)}{', optional: omitted, its default is used' if 'default' in io else ''} */\n"
        f"  {json.dumps(io['name'])}{'?' if 'default' in io else ''}: Tensor<{json.dumps(io['dtype'])}> | "
        f"DataTypeMap[{json.dumps(io['dtype'])}] | GPUBuffer;"
        for io in manifest["inputs"]
    )
    outputs = " | ".join(json.dumps(o["name"]) for o in manifest["outputs"]) or "never"
    return f"""// Types of this model's package: onnx2wgsl's browser runtime plus this model's inputs and
// outputs. Generated by onnx2wgsl from manifest.json.
import type {{ DataTypeMap, InferenceSession, SessionOptions, Support, Tensor }} from './onnx2wgsl.js';

export * from './onnx2wgsl.js';

/** The URL of this package's folder, where manifest.json, shaders/ and weights.bin lie. */
export declare const modelUrl: string;{picks}
/** isSupported(modelUrl): whether this browser can run this model, and why not. */
export declare function isModelSupported(options?: {{ powerPreference?: GPUPowerPreference }}): Promise<Support>;

/** The feeds of {manifest["name"]}: pass them to session.run(). */
export type ModelFeeds = {{
{feeds}
}};
/** The output names of {manifest["name"]}. */
export type OutputName = {outputs};
"""


def readme(manifest: dict, pkg: str, has_source: bool, variants: list[str] | None = None) -> str:
    """README.md of the package: what the model takes and gives, and how to run it
    (``variants``: the precisions of a compile for several, in order of preference)."""
    held = (
        f"one artifact per precision ({', '.join(f'`{v}/`' for v in variants)}: each a `manifest.json`, "
        "`shaders/*.wgsl` and `weights.bin`) under an index `manifest.json`, of which `createSession()` "
        "loads the first the adapter runs (`session.precision` says which),"
        if variants
        else "the artifact (`manifest.json`, `shaders/*.wgsl`, `weights.bin`)"
    )
    rows = "\n".join(
        f"| {kind}{' (optional: has a default)' if 'default' in io else ''} | `{io['name']}` | {io['dtype']} | [{', '.join(show_dim(d) for d in io['shape'])}] | {io['storage']} |"
        for kind, group in (("input", manifest["inputs"]), ("output", manifest["outputs"]))
        for io in group
    )
    first = manifest["inputs"][0] if manifest["inputs"] else None
    feed = f"{first['name']}: data" if first else ""
    fallback = (
        f"""
## Without WebGPU

`isModelSupported()` says why WebGPU cannot run the model here, and `createSession()` then
fails with a `DeviceError` saying so. `{SOURCE_MODEL}` is the model this package was compiled
from; run it with onnxruntime-web's WASM backend instead:

```js
import * as ort from 'onnxruntime-web';
import {{ isModelSupported, createSession, modelUrl }} from '{pkg}';

const session = (await isModelSupported()).supported
  ? await createSession()
  : await ort.InferenceSession.create(new URL('{SOURCE_MODEL}', modelUrl).href, {{ executionProviders: ['wasm'] }});
// both take {{ name: new Tensor(type, data, dims) }} (each its own Tensor class) and resolve to {{ name: tensor }}
```
"""
        if has_source
        else ""
    )
    generation = (
        f"""
## Generating tokens

The model is compiled for generation (max length {manifest["generation"]["max_length"]}): `generate.js`
streams token ids with the KV cache kept on the GPU, in a page or a Worker.

```js
import {{ createSession }} from '{pkg}';
import {{ generate, resetGeneration }} from '{pkg}/generate';

const session = await createSession();
const controller = new AbortController();  // controller.abort() stops before the next step
for await (const id of generate(session, promptIds, {{ maxNewTokens: 64, signal: controller.signal }})) show(id);
resetGeneration(session);  // the next generate() starts a new sequence
```
"""
        if "generation" in manifest
        else ""
    )
    return f"""# {pkg}

`{manifest["name"]}` compiled ahead of time to WebGPU compute shaders by
{manifest.get("producer", "onnx2wgsl")}. This folder is an npm package (an ES module with
TypeScript types and no dependencies) and can equally be served as static files. It holds
{held} and onnx2wgsl's browser
runtime (`onnx2wgsl.js`), which interprets the manifest: it generates no code, so it runs
under a strict Content-Security-Policy, in a page or in a Web Worker.

| | name | type | shape | on the GPU |
|---|---|---|---|---|
{rows}

## Use

```js
import {{ createSession, isModelSupported, Tensor }} from '{pkg}';   // or './{pkg}/index.js'

const session = await createSession({{ onProgress: (p) => console.log(p.stage, p.loaded, p.total) }});
const outputs = await session.run({{ {feed} }});  // typed arrays or Tensor objects
console.log(session.inputMetadata, outputs);
await session.release();
```

The package's files must be reachable over http(s) beside `index.js` (a bundler may need them
copied as static assets); `InferenceSession.create(url)` loads the artifact from any other
URL, and `InferenceSession.create(files)` from a FileList or a map of its files.
{generation}
- `InferenceSession.create(urlOrFiles, {{device, onProgress, preferredOutputLocation, powerPreference}})`
  fetches the manifest and the weights (checked against the manifest's sha256 before use),
  builds all pipelines with `createComputePipelineAsync` in parallel and one bind group per
  dispatch. `session.warmup()` runs once on zeros.
- `session.run(feeds, {{fetches}})`: feeds are `Tensor`s, typed arrays of the input's type
  (int64 as `BigInt64Array`, checked to fit in int32; bool as `Uint8Array`; float16 as
  `Float16Array` or `Uint16Array` bits) or `GPUBuffer`s; outputs come back as `Tensor`s.
  Zero-sized tensors are accepted and returned without GPU work.
- `session.inputNames`, `outputNames`, `inputMetadata`, `outputMetadata` (name, type, shape,
  storage), `session.device`, `session.release()`.

## GPU buffers: who owns what

Every tensor lives on the GPU as 32-bit scalars (the `storage` column: f32, i32 or u32).

- Inputs: a `GPUBuffer` (or `Tensor.fromGpuBuffer`) on `session.device`, with `COPY_SRC`
  usage, holding the input in its storage form. The session copies it and never destroys it.
- Outputs with `preferredOutputLocation: 'gpu-buffer'` (per session or per run): each run
  makes a new buffer per output; the tensor owns it and `tensor.dispose()` destroys it.
  `await tensor.getData()` reads it back.
- Outputs into your buffers: `run(feeds, {{fetches: {{name: gpuBuffer}}}})` (`COPY_DST` usage);
  the buffer stays yours.
- `create(source, {{device}})` uses your `GPUDevice`; `release()` then destroys only the
  session's own buffers. Without it the session creates a device and `release()` destroys it,
  and with it any output tensors still in GPU buffers.
{fallback}"""

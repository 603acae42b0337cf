"""The browser runtime's API in Chromium: load work, IO binding with GPU buffers, zero-sized
tensors, errors that name what was expected, files instead of URLs, a strict CSP."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from browser_support import decode
from helpers import (
    assert_close,
    defaults_model,
    node_model,
    ort_run,
    rand,
    tampered_defaults,
    two_layer_model,
)

import onnx2wgsl
from onnx2wgsl.compiler.target import WEBGPU_DEFAULT_LIMITS, Target

pytestmark = [pytest.mark.gpu, pytest.mark.browser]


@pytest.fixture
def two(page, compiled, device):
    url, out = compiled("two", two_layer_model())
    page.open("/tests/harness.html")
    x = rand(2, 8, seed=3)
    y, z = onnx2wgsl.load(out, device=device).run(None, {"x": x})
    return page, url, x, y, z


def js(page, body: str, arg):
    """Run `body` (async JS with `rt` = the package module and `arg`) in the page."""
    return page.evaluate(
        f"async ([pkg, arg]) => withModule(pkg, async (rt) => {{ {body} }})", [arg["pkg"], arg]
    )


def test_load_builds_everything_once_and_run_only_encodes(page, compiled, feeds, device):
    url, out = compiled("two", two_layer_model())
    page.open("/tests/harness.html")
    res = page.evaluate(
        "s => runCase(s)", {"pkg": url, "feeds": feeds("two", {"x": rand(2, 8)}), "repeat": 3}
    )
    m = json.loads((out / "manifest.json").read_text())
    load, run = res["loadCounts"], res["runCounts"]
    # every pipeline async (none synchronous), one bind group per dispatch, all at load
    assert load.get("createComputePipelineAsync") == len(m["shaders"]) and "createComputePipeline" not in load
    assert load["createBindGroup"] == len(m["dispatches"]) and load["createBuffer"] == len(m["buffers"]) + 1
    # a run: one command encoder and one submit, no buffers, bind groups or pipelines
    assert run == {"createCommandEncoder": 3, "submit": 3}
    stages = {p["stage"]: p for p in res["progress"]}
    assert stages["weights"]["loaded"] == stages["weights"]["total"] == m["weights"]["size"]
    assert stages["pipelines"]["loaded"] == stages["pipelines"]["total"] == len(m["shaders"])
    meta = res["meta"]
    assert meta["inputNames"] == ["x"] and meta["outputNames"] == ["y", "z"]
    assert meta["inputMetadata"] == [
        {
            "name": "x",
            "isTensor": True,
            "type": "float32",
            "shape": [2, 8],
            "storage": "f32",
            "optional": False,
        }
    ]


def test_strict_csp_is_in_force_and_never_violated(page, compiled):
    """The test server sends script-src 'self' (no unsafe-eval). Code Playwright evaluates is
    exempt from CSP's eval check, so the page itself probes eval (blocked) and then loads and
    runs the model on its own (?auto=): no violation, no error."""
    url, _ = compiled("two", two_layer_model())
    page.open(f"/tests/harness.html?auto={url}", ready="window.__auto")
    auto = page.evaluate("() => window.__auto")
    assert auto["evalAtLoad"].startswith("blocked: EvalError")
    assert auto["error"] is None and auto["outputs"] == ["y", "z"]
    assert auto["violations"] == ["script-src: eval"]  # only the probe's own attempt


def test_gpu_buffers_in_and_out_with_the_callers_device(two):
    page, url, x, y, z = two
    out = js(
        page,
        """
        const adapter = await navigator.gpu.requestAdapter();
        const device = await adapter.requestDevice();
        const session = await rt.InferenceSession.create(arg.pkg, { device });
        // an input GPUBuffer on the caller's device, in the f32 storage form
        const input = device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
        new Float32Array(input.getMappedRange()).set(arg.x);
        input.unmap();
        // y stays on the GPU in a buffer the run makes; z goes into the caller's buffer
        const zbuf = device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
        const r = await session.run({ x: input }, { fetches: { y: null, z: zbuf }, preferredOutputLocation: 'gpu-buffer' });
        const read = async (buf) => {
          const rb = device.createBuffer({ size: buf.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
          const enc = device.createCommandEncoder();
          enc.copyBufferToBuffer(buf, 0, rb, 0, buf.size);
          device.queue.submit([enc.finish()]);
          await rb.mapAsync(GPUMapMode.READ);
          return [...new Float32Array(rb.getMappedRange())];
        };
        let dataThrows = false;
        try { r.y.data; } catch { dataThrows = true; }
        const res = { yLocation: r.y.location, zLocation: r.z.location, zIsCallers: r.z.gpuBuffer === zbuf, dataThrows,
          y: [...await r.y.getData()], yRaw: await read(r.y.gpuBuffer), z: await read(zbuf) };
        // a GPU tensor fed back in as an input (Tensor.fromGpuBuffer shape)
        const again = await session.run({ x: rt.Tensor.fromGpuBuffer(input, { dataType: 'float32', dims: [2, 8] }) });
        res.again = [...again.y.data];
        // ownership: dispose() destroys the run's buffer; release() leaves the caller's device and buffers alive
        const yb = r.y.gpuBuffer;
        r.y.dispose();
        device.pushErrorScope('validation');
        const enc = device.createCommandEncoder();
        enc.copyBufferToBuffer(yb, 0, zbuf, 0, 32);
        device.queue.submit([enc.finish()]);
        res.useAfterDispose = (await device.popErrorScope())?.message || null;
        await session.release();
        res.zAfterRelease = await read(zbuf);
        res.inputAfterRelease = await read(input);
        return res;
        """,
        {"pkg": url, "x": x.ravel().tolist()},
    )
    assert out["yLocation"] == "gpu-buffer" and out["zLocation"] == "gpu-buffer" and out["zIsCallers"]
    assert out["dataThrows"]
    assert out["useAfterDispose"] and "destroyed" in out["useAfterDispose"].lower()
    np.testing.assert_allclose(np.array(out["y"]).reshape(2, 4), y, atol=1e-5)
    np.testing.assert_allclose(np.array(out["yRaw"]).reshape(2, 4), y, atol=1e-5)
    np.testing.assert_allclose(np.array(out["z"]).reshape(2, 8), z, atol=1e-5)
    np.testing.assert_allclose(np.array(out["again"]).reshape(2, 4), y, atol=1e-5)
    np.testing.assert_allclose(np.array(out["zAfterRelease"]).reshape(2, 8), z, atol=1e-5)
    np.testing.assert_allclose(np.array(out["inputAfterRelease"]).reshape(2, 8), x, atol=0)


def test_released_session_destroys_its_own_device(two):
    page, url, *_ = two
    out = js(
        page,
        """
        const session = await rt.InferenceSession.create(arg.pkg);
        const device = session.device;
        await session.release();
        const info = await device.lost;
        let err;
        try { await session.run({ x: new Float32Array(16) }); } catch (e) { err = `${e.name}: ${e.message}`; }
        return { reason: info.reason, err };
        """,
        {"pkg": url},
    )
    assert out["reason"] == "destroyed"
    assert out["err"] == "InputError: the session was released"


def test_feed_errors_name_what_was_expected(two):
    page, url, *_ = two
    out = js(
        page,
        """
        const session = await rt.InferenceSession.create(arg.pkg);
        const msgs = [];
        const feeds = [
          { nope: new Float32Array(16) }, {}, { x: new Float64Array(16) }, { x: new rt.Tensor('float32', new Float32Array(16), [8, 2]) },
          { x: new Float32Array(15) }, { x: new rt.Tensor('int32', new Int32Array(16), [2, 8]) },
        ];
        for (const f of feeds) {
          try { await session.run(f); msgs.push('no error'); } catch (e) { msgs.push(`${e.name}: ${e.message}`); }
        }
        try { await session.run({ x: new Float32Array(16) }, { fetches: ['w'] }); } catch (e) { msgs.push(`${e.name}: ${e.message}`); }
        const ok = await session.run({ x: new Float32Array(16) }, { fetches: ['z'] });  // still usable after errors
        msgs.push(Object.keys(ok).join());
        await session.release();
        return msgs;
        """,
        {"pkg": url},
    )
    assert out == [
        "InputError: unknown input names ['nope']; the model expects: x (float32[2, 8])",
        "InputError: missing inputs ['x']; the model expects: x (float32[2, 8])",
        "InputError: input 'x' must be float32 (Float32Array), got Float64Array",
        "InputError: input 'x' must have shape [2, 8], got [8, 2]",
        "InputError: input 'x' must have 16 elements (shape [2, 8]), got 15",
        "InputError: input 'x' must be float32, got int32",
        "InputError: unknown output names ['w']; the model's outputs are ['y', 'z']",
        "z",
    ]


def test_int64_feeds_outside_int32_are_refused(page, compiled):
    url, _ = compiled(
        "add_int64_range", node_model("Add", {"a": np.zeros((2, 3), np.int64), "b": np.zeros(3, np.int64)})
    )
    page.open("/tests/harness.html")
    out = js(
        page,
        """
        const s = await rt.InferenceSession.create(arg.pkg);
        const r = await s.run({ a: BigInt64Array.from([-3n, -2n, -1n, 0n, 1n, 2n]), b: BigInt64Array.from([7n, 7n, 7n]) });
        let err;
        try { await s.run({ a: BigInt64Array.from([2n ** 40n, 0n, 0n, 0n, 0n, 0n]), b: new BigInt64Array(3) }); } catch (e) { err = e.message; }
        return { y: [...r.y0.data].map(Number), type: r.y0.data.constructor.name, err };
        """,
        {"pkg": url},
    )
    assert out["y"] == [4, 5, 6, 7, 8, 9] and out["type"] == "BigInt64Array"
    assert out["err"] == "input 'a' has values outside the int32 range the GPU computes in"


def test_zero_sized_tensors_need_no_gpu_work(page, compiled, feeds, device):
    a, b = np.zeros((0, 3), np.float32), rand(3)
    url, out = compiled("zero", node_model("Add", {"a": a, "b": b}))
    page.open("/tests/harness.html")
    res = page.evaluate(
        "s => runCase(s)", {"pkg": url, "feeds": feeds("zero", {"a": a, "b": b}), "repeat": 2}
    )
    y = decode(res["outputs"]["y0"])
    assert y.shape == (0, 3) and y.dtype == np.float32
    assert res["runCounts"] == {}  # no encoder, no submit, no buffer
    (want,) = onnx2wgsl.load(out, device=device).run(None, {"a": a, "b": b})
    assert want.shape == y.shape


def test_zero_sized_input_beside_real_work(page, compiled, feeds, device):
    a, b = np.zeros((0, 4), np.float32), rand(3, 4, seed=5)
    model = node_model("Concat", {"a": a, "b": b}, {"axis": 0})
    url, out = compiled("concat_zero", model)
    page.open("/tests/harness.html")
    res = page.evaluate("s => runCase(s)", {"pkg": url, "feeds": feeds("concat_zero", {"a": a, "b": b})})
    (want,) = onnx2wgsl.load(out, device=device).run(None, {"a": a, "b": b})
    np.testing.assert_allclose(decode(res["outputs"]["y0"]), want, atol=1e-6)


def test_create_from_files_and_concurrent_runs(two):
    page, url, x, y, z = two
    out = js(
        page,
        """
        const m = await (await fetch(arg.pkg + 'manifest.json')).json();
        const files = new Map();
        for (const f of ['manifest.json', m.weights.file, ...m.shaders.map((s) => s.file)])
          files.set(f, await (await fetch(arg.pkg + f)).blob());
        const s = await rt.InferenceSession.create(files);
        const xs = [arg.x, arg.x.map((v) => -v), arg.x.map((v) => 2 * v)].map((a) => Float32Array.from(a));
        const all = await Promise.all(xs.map((x) => s.run({ x })));   // queued, never interleaved
        const one = [];
        for (const x of xs) one.push([...(await s.run({ x })).y.data]);
        const warm = await s.warmup(2);
        await s.release();
        return { y: [...all[0].y.data], z: [...all[0].z.data], same: all.every((r, i) => r.y.data.every((v, j) => v === one[i][j])), warm };
        """,
        {"pkg": url, "x": x.ravel().tolist()},
    )
    np.testing.assert_allclose(np.array(out["y"]).reshape(2, 4), y, atol=1e-5)
    np.testing.assert_allclose(np.array(out["z"]).reshape(2, 8), z, atol=1e-5)
    assert out["same"] and out["warm"] >= 0


def test_damaged_artifacts_are_refused(page, compiled, server):
    _, good = compiled("two", two_layer_model())
    cases = {}
    for case in ("weights", "version", "schema", "grid"):
        d = server.root / "m" / f"damaged_{case}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(good, d)
        cases[case] = f"/m/damaged_{case}/"
    blob = (good / "weights.bin").read_bytes()
    (server.root / "m" / "damaged_weights" / "weights.bin").write_bytes(blob[:-4] + b"\0\0\0\1")
    m = json.loads((good / "manifest.json").read_text())
    (server.root / "m" / "damaged_version" / "manifest.json").write_text(json.dumps({**m, "version": 99}))
    grid = json.loads(json.dumps(m))
    grid["dispatches"][0]["grid"] = [65535, 65535, 64]
    (server.root / "m" / "damaged_grid" / "manifest.json").write_text(json.dumps(grid))
    del m["dispatches"][0]["grid"]
    (server.root / "m" / "damaged_schema" / "manifest.json").write_text(json.dumps(m))
    page.open("/tests/harness.html")
    out = js(
        page,
        """
        const msgs = {};
        for (const [k, url] of Object.entries(arg.cases)) {
          try { await rt.InferenceSession.create(url); msgs[k] = 'loaded'; } catch (e) { msgs[k] = `${e.name}: ${e.message}`; }
        }
        try { await rt.InferenceSession.create('/m/nothing/'); } catch (e) { msgs.missing = `${e.name}: ${e.message}`; }
        return msgs;
        """,
        {"pkg": "/m/two/", "cases": cases},
    )
    page.errors.remove("Failed to load resource: the server responded with a status of 404 (File not found)")
    assert (
        out["weights"] == "ManifestError: weights.bin does not match the manifest (size or sha256); recompile"
    )
    assert out["version"].startswith("ManifestError: artifact format version 99 is not 2 or 3; recompile")
    assert out["schema"] == "ManifestError: manifest dispatches[0].grid is missing"
    assert out["grid"].startswith("ManifestError: dispatch 0 asks for 274869518400 workgroups, more than the")
    assert out["missing"].startswith("ManifestError: could not fetch") and "404" in out["missing"]


def test_limits_beyond_the_defaults_are_requested_or_refused(page, compiled):
    model = two_layer_model()
    more = Target("more", {**WEBGPU_DEFAULT_LIMITS, "maxStorageBufferBindingSize": 256 << 20})
    huge = Target("huge", {**WEBGPU_DEFAULT_LIMITS, "maxStorageBufferBindingSize": 64 << 30})
    f16 = Target("f16", dict(WEBGPU_DEFAULT_LIMITS), ("shader-f16",))
    urls = {
        k: compiled(f"two_{k}", model, target=t)[0] for k, t in (("more", more), ("huge", huge), ("f16", f16))
    }
    page.open("/tests/harness.html")
    out = js(
        page,
        """
        const r = {};
        const s = await rt.InferenceSession.create(arg.urls.more);
        r.granted = s.device.limits.maxStorageBufferBindingSize;
        await s.release();
        r.hugeSupport = await rt.isSupported(arg.urls.huge);
        try { await rt.InferenceSession.create(arg.urls.huge); } catch (e) { r.hugeError = `${e.name}: ${e.message}`; }
        r.f16Support = await rt.isSupported(arg.urls.f16);
        r.plain = await rt.isSupported();
        const adapter = await navigator.gpu.requestAdapter();
        const small = await adapter.requestDevice();  // default limits: too small for "more"
        try { await rt.InferenceSession.create(arg.urls.more, { device: small }); } catch (e) { r.smallDevice = e.message; }
        r.hasF16 = adapter.features.has('shader-f16');
        return r;
        """,
        {"pkg": urls["more"], "urls": urls},
    )
    assert out["granted"] == 256 << 20
    assert out["hugeSupport"]["supported"] is False
    assert "grants maxStorageBufferBindingSize = " in out["hugeSupport"]["reason"]
    assert (
        "the artifact needs 68719476736; recompile for this device's limits" in out["hugeSupport"]["reason"]
    )
    assert out["hugeError"].startswith("DeviceError: the WebGPU adapter (google swiftshader")
    assert out["plain"] == {"supported": True}
    if not out["hasF16"]:  # SwiftShader has no shader-f16
        assert out["f16Support"] == {
            "supported": False,
            "reason": out["f16Support"]["reason"],
        } and out["f16Support"]["reason"].endswith("lacks features ['shader-f16'] that the artifact needs")
    assert out["smallDevice"] == (
        "the GPUDevice given grants maxStorageBufferBindingSize = 134217728, the artifact needs 268435456; "
        "recompile for this device's limits"
    )


def test_an_omitted_input_with_a_default_gets_it(page, compiled):
    """An input whose initializer is its default: omitted, the default is used (as onnxruntime
    does); fed, the feed overrides it; the validator checks the field as the Python one does."""
    m = defaults_model()
    url, out = compiled("defaults", m)
    manifest = json.loads((out / "manifest.json").read_text())
    cases = tampered_defaults()
    tampered = {}
    for case, (edit, _) in cases.items():
        tampered[case] = copy.deepcopy(manifest)
        edit(tampered[case])
    x, w = rand(8, seed=2), rand(4, 3, seed=3)
    page.open("/tests/harness.html")
    res = js(
        page,
        """
        const session = await rt.InferenceSession.create(arg.pkg);
        const x = new Float32Array(arg.x);
        const out = async (feeds) => Object.values(await session.run(feeds)).map((t) => [...t.data]);
        const r = {
          meta: session.inputMetadata.map((io) => [io.name, io.optional]),
          plain: await out({ x }),
          fed: await out({ x, w: new Float32Array(arg.w) }),
          again: await out({ x }),
          warm: await session.warmup(),
          errors: {},
        };
        try { await session.run({ w: new Float32Array(12) }); } catch (e) { r.missing = e.message; }
        for (const [k, m] of Object.entries(arg.tampered)) {
          try { rt.validateManifest(m); r.errors[k] = 'valid'; } catch (e) { r.errors[k] = `${e.name}: ${e.message}`; }
        }
        await session.release();
        return r;
        """,
        {"pkg": url, "x": x.tolist(), "w": w.ravel().tolist(), "tampered": tampered},
    )
    assert res["meta"] == [["x", False], ["w", True], ["b", True], ["k", True]]

    def outputs(got):
        return [np.array(got[0], np.float32).reshape(2, 3), np.array(got[1], np.float32).reshape(2, 2)]

    assert_close(outputs(res["plain"]), ort_run(m, {"x": x}))
    assert_close(outputs(res["fed"]), ort_run(m, {"x": x, "w": w}))
    assert_close(outputs(res["again"]), ort_run(m, {"x": x}))
    assert res["missing"].startswith(
        "missing inputs ['x']; the model expects: x (float32[8]), w (float32[4, 3], optional)"
    )
    for case, (_, words) in cases.items():
        assert res["errors"][case].startswith("ManifestError: ") and words in res["errors"][case], case

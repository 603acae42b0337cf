// One engine, one model, one fresh page: benchmarks/browser.py opens bench.html?spec=URL and
// reads window.__done. The spec (JSON) names the engine ('onnx2wgsl': a package compiled with
// --target js; 'ort-web': onnxruntime-web's WebGPU backend on the .onnx), the feeds as raw files,
// and the warm-up and timed run counts. Times are performance.now() around each engine's own
// calls: create (session creation), first (create + first run), warm (each timed run). Outputs
// come back as base64 bytes for the Python side to compare.

const ARRAYS = { float32: Float32Array, int32: Int32Array, int64: BigInt64Array, uint8: Uint8Array, bool: Uint8Array };

function b64(view) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function feedsFor(spec, Tensor) {
  const feeds = {};
  for (const [name, f] of Object.entries(spec.feeds)) {
    const data = new ARRAYS[f.type](await (await fetch(f.url)).arrayBuffer());
    feeds[name] = new Tensor(f.type, data, f.dims);
  }
  return feeds;
}

async function engine(spec) {
  if (spec.engine == 'onnx2wgsl') {
    const rt = await import(spec.pkg + 'index.js');
    return { Tensor: rt.Tensor, create: () => rt.InferenceSession.create(spec.pkg) };
  }
  const ort = await import(spec.ort);
  ort.env.wasm.wasmPaths = spec.ortDir;
  ort.env.wasm.numThreads = 1; // threads need a cross-origin isolated page
  ort.env.logLevel = 'error';
  return { Tensor: ort.Tensor, ort, create: () => ort.InferenceSession.create(spec.model, { executionProviders: ['webgpu'] }) };
}

async function measure(spec) {
  const e = await engine(spec);
  const t0 = performance.now();
  const session = await e.create();
  const createMs = performance.now() - t0;
  if (e.ort && !e.ort.env.webgpu.device) throw new Error('onnxruntime-web created no WebGPU device: it would run on WASM');
  const feeds = await feedsFor(spec, e.Tensor);
  const t1 = performance.now();
  let outputs = await session.run(feeds);
  const firstMs = createMs + performance.now() - t1;
  for (let i = 0; i < spec.warmup; i++) outputs = await session.run(feeds);
  const warmMs = [];
  for (let i = 0; i < spec.iters; i++) {
    const t = performance.now();
    outputs = await session.run(feeds);
    warmMs.push(performance.now() - t);
  }
  const encoded = {};
  for (const name of spec.outputs) {
    const t = outputs[name];
    if (!t) throw new Error(`no output ${name}`);
    const data = t.getData ? await t.getData() : t.data;
    encoded[name] = { type: t.type, dims: [...t.dims], b64: b64(data) };
  }
  // the adapter the engine's device came from (GPUDevice.adapterInfo)
  const info = (e.ort ? e.ort.env.webgpu.device : session.device)?.adapterInfo;
  await session.release();
  const adapter = info ? [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' / ') : '?';
  return { createMs, firstMs, warmMs, outputs: encoded, adapter };
}

const specUrl = new URLSearchParams(location.search).get('spec');
(async () => measure(await (await fetch(specUrl)).json()))().then(
  (result) => (window.__done = { result, error: null }),
  (e) => (window.__done = { result: null, error: `${e.name}: ${e.message}` }),
);
document.getElementById('status').textContent = 'running';

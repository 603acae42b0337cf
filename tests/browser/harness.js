// The browser side of tests/browser: loads a compiled model's package, runs it on feeds the
// test wrote as raw files, and hands outputs back as base64 bytes. No test logic lives here;
// the Python tests decide and compare.

export const violations = [];
document.addEventListener('securitypolicyviolation', (e) => violations.push(`${e.violatedDirective}: ${e.blockedURI}`));

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, int16: Int16Array, int32: Int32Array,
  int64: BigInt64Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array,
  bool: Uint8Array, bfloat16: Uint16Array,
};
const arrayFor = (type, as) => (type == 'float16' ? (as == 'bits' ? Uint16Array : globalThis.Float16Array) : ARRAYS[type]);

export function b64(view) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export async function loadFeeds(feeds, Tensor) {
  const out = {};
  for (const [name, f] of Object.entries(feeds)) {
    const buf = await (await fetch(f.url)).arrayBuffer();
    const data = new (arrayFor(f.type, f.as))(buf);
    out[name] = f.plain ? data : new Tensor(f.type, data, f.dims);
  }
  return out;
}

export async function encodeOutputs(outputs) {
  const res = {};
  for (const [name, t] of Object.entries(outputs)) {
    const data = await t.getData();
    res[name] = { type: t.type, dims: [...t.dims], location: t.location, array: data.constructor.name, b64: b64(data) };
  }
  return res;
}

// counts GPUDevice object creations, by method, while `counting` is set
export const counts = {};
let counting = false;
const GPU_CLASSES = globalThis.GPUDevice && globalThis.GPUQueue;
for (const name of GPU_CLASSES ? ['createBuffer', 'createBindGroup', 'createBindGroupLayout', 'createPipelineLayout', 'createShaderModule',
  'createComputePipeline', 'createComputePipelineAsync', 'createCommandEncoder'] : []) {
  const original = GPUDevice.prototype[name];
  GPUDevice.prototype[name] = function (...args) {
    if (counting) counts[name] = (counts[name] || 0) + 1;
    return original.apply(this, args);
  };
}
if (GPU_CLASSES) {
  const originalSubmit = GPUQueue.prototype.submit;
  GPUQueue.prototype.submit = function (...args) {
    if (counting) counts.submit = (counts.submit || 0) + 1;
    return originalSubmit.apply(this, args);
  };
}
const snapshot = () => ({ ...counts });
const reset = () => Object.keys(counts).forEach((k) => delete counts[k]);

/** Load spec.pkg, run spec.repeat times on spec.feeds; report outputs, timings, progress, GPU calls. */
export async function runCase(spec) {
  const mod = await import(spec.pkg + 'index.js');
  const progress = [];
  reset();
  counting = true;
  let t = performance.now();
  const session = await mod.InferenceSession.create(spec.pkg, { ...spec.options, onProgress: (p) => progress.push(p) });
  const createMs = performance.now() - t;
  const loadCounts = snapshot();
  reset();
  const feeds = await loadFeeds(spec.feeds, mod.Tensor);
  const times = [];
  let outputs;
  for (let i = 0; i < (spec.repeat || 1); i++) {
    t = performance.now();
    outputs = await session.run(feeds, spec.runOptions);
    times.push(performance.now() - t);
  }
  const runCounts = snapshot();
  counting = false;
  const encoded = await encodeOutputs(outputs);
  const meta = { inputNames: session.inputNames, outputNames: session.outputNames, inputMetadata: session.inputMetadata,
    outputMetadata: session.outputMetadata };
  await session.release();
  const rest = times.slice(1).sort((a, b) => a - b);
  return { outputs: encoded, createMs, firstMs: times[0], medianMs: rest.length ? rest[rest.length >> 1] : null, progress,
    loadCounts, runCounts, meta, violations };
}

/** Whatever a test wants to run in the page, with the package's module at hand. */
export async function withModule(pkg, body) {
  return body(await import(pkg + 'index.js'));
}

Object.assign(window, { runCase, withModule, loadFeeds, encodeOutputs, b64, violations, counts,
  setCounting: (on) => { counting = on; } });
window.tryEval = () => { try { return String(eval('1 + 1')); } catch (e) { return `blocked: ${e.name}`; } };

// ?auto=PKG: probe eval and load + run PKG from the page's own code, where CSP applies in full
// (code Playwright evaluates is exempt from CSP's eval check)
const auto = new URLSearchParams(location.search).get('auto');
if (auto) {
  const evalAtLoad = window.tryEval();
  (async () => {
    const rt = await import(auto + 'index.js');
    const session = await rt.InferenceSession.create(auto);
    await session.warmup();
    const feeds = {};
    for (const io of session.inputMetadata) feeds[io.name] = new rt.Tensor(io.type, new (ARRAYS[io.type])(io.shape.reduce((a, b) => a * b, 1)), io.shape);
    const out = await session.run(feeds);
    await session.release();
    return Object.keys(out);
  })().then(
    (outputs) => (window.__auto = { evalAtLoad, outputs, error: null, violations }),
    (e) => (window.__auto = { evalAtLoad, outputs: null, error: `${e.name}: ${e.message}`, violations }),
  );
}
document.getElementById('status').textContent = 'ready';
window.__ready = true;

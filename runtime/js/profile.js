// Per-kernel GPU times in the browser, for a session of the runtime beside this file. Not part
// of the runtime a page loads to run a model: import it only to profile.
//
//   import { createProfiledSession, profile } from './profile.js';
//   const session = await createProfiledSession(modelUrl);        // a device with timestamp-query
//   const { outputs, kernels, gpuMs } = await profile(session, feeds);
//   console.table(kernels);                                        // heaviest first
//
// Each dispatch runs in a compute pass of its own with a timestamp at its start and end
// (timestampWrites), so the run is slower than a plain one by the passes' overhead; the times
// are the GPU's own. Browsers may quantize timestamps (Chrome to 100 us unless started with
// --enable-webgpu-developer-features).
import { InferenceSession } from './onnx2wgsl.js';

const QUERIES = 4096; // the most queries one GPUQuerySet may hold

/** InferenceSession.create(src, options) on a device made with the timestamp-query feature and
 * the adapter's limits; release() also destroys that device. */
export async function createProfiledSession(src, options = {}) {
  const adapter = await navigator.gpu?.requestAdapter({ powerPreference: options.powerPreference });
  if (!adapter) throw new Error('no WebGPU adapter: profiling needs WebGPU');
  if (!adapter.features.has('timestamp-query'))
    throw new Error("this adapter lacks the 'timestamp-query' feature, which per-kernel GPU times need");
  const requiredLimits = {};
  for (const key in adapter.limits) if (typeof adapter.limits[key] == 'number') requiredLimits[key] = adapter.limits[key];
  const device = await adapter.requestDevice({ requiredFeatures: [...adapter.features], requiredLimits });
  let session;
  try {
    session = await InferenceSession.create(src, { ...options, device });
  } catch (e) {
    device.destroy();
    throw e;
  }
  const release = session.release.bind(session);
  session.release = async () => {
    await release();
    device.destroy();
  };
  return session;
}

/**
 * session.run(feeds, options) with every dispatch timed on the GPU. Resolves to { outputs,
 * kernels, gpuMs }: kernels has one entry per dispatch that ran (zero grids are skipped) with
 * its index in manifest.json's dispatches, label (the ONNX nodes it covers), shader, grid, ms
 * and flops (GFLOP/s when both are known), heaviest first; gpuMs is their sum.
 */
export async function profile(session, feeds, options) {
  const device = session.device;
  if (!device?.features.has('timestamp-query'))
    throw new Error("profiling needs a device with the 'timestamp-query' feature: create the session with createProfiledSession()");
  await session._busy; // runs queued before this one are not timed
  let timed;
  session._encode = (enc, steps) => {
    const sets = [];
    const count = 2 * steps.length;
    for (let at = 0; at < count; at += QUERIES) sets.push(device.createQuerySet({ type: 'timestamp', count: Math.min(QUERIES, count - at) }));
    steps.forEach(([pipeline, group, grid], j) => {
      const [set, at] = [sets[Math.floor((2 * j) / QUERIES)], (2 * j) % QUERIES];
      const pass = enc.beginComputePass({ timestampWrites: { querySet: set, beginningOfPassWriteIndex: at, endOfPassWriteIndex: at + 1 } });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...grid);
      pass.end();
    });
    const bytes = Math.max(8 * count, 8);
    const resolved = device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    sets.forEach((set, i) => enc.resolveQuerySet(set, 0, set.count, resolved, i * QUERIES * 8));
    enc.copyBufferToBuffer(resolved, 0, read, 0, bytes);
    timed = { steps, sets, resolved, read };
  };
  let outputs;
  try {
    outputs = await session.run(feeds, options);
  } finally {
    delete session._encode; // the prototype's plain encoding again
  }
  if (!timed) return { outputs, kernels: [], gpuMs: 0 }; // nothing ran on the GPU
  const { steps, sets, resolved, read } = timed;
  await read.mapAsync(GPUMapMode.READ);
  const ticks = new BigUint64Array(read.getMappedRange().slice(0));
  read.unmap();
  for (const b of [read, resolved, ...sets]) b.destroy();
  const m = session.manifest;
  const kernels = steps.map(([, , grid, k], j) => {
    const d = m.dispatches[k];
    const ns = ticks[2 * j + 1] > ticks[2 * j] ? Number(ticks[2 * j + 1] - ticks[2 * j]) : 0;
    const kernel = { dispatch: k, label: d.label, shader: m.shaders[d.shader].name, grid, ms: ns / 1e6 };
    if (typeof d.flops == 'number') Object.assign(kernel, { flops: d.flops, gflops: ns ? d.flops / ns : null });
    return kernel;
  });
  const gpuMs = kernels.reduce((sum, k) => sum + k.ms, 0);
  return { outputs, kernels: kernels.sort((a, b) => b.ms - a.ms), gpuMs };
}

// A module worker that runs a compiled model off the main thread, unchanged: the runtime needs
// only navigator.gpu, fetch and crypto.subtle, which workers have.
//   const w = new Worker('worker.js', { type: 'module' });
//   w.postMessage({ type: 'load', model: new URL('model/', location.href).href });
//   w.postMessage({ type: 'run', id: 1, feeds: { image: float32Array } });  // -> { id, outputs }
let session;
let runtime;

self.onmessage = async ({ data: msg }) => {
  try {
    if (msg.type == 'load') {
      runtime = await import(new URL('index.js', msg.model).href);
      const t = performance.now();
      session = await runtime.InferenceSession.create(msg.model);
      await session.warmup();
      self.postMessage({ type: 'loaded', ms: performance.now() - t, inputs: session.inputMetadata, outputs: session.outputMetadata });
    } else if (msg.type == 'run') {
      const feeds = {};
      for (const io of session.inputMetadata) feeds[io.name] = new runtime.Tensor(io.type, msg.feeds[io.name], io.shape);
      const t = performance.now();
      const out = await session.run(feeds);
      const ms = performance.now() - t;
      const outputs = Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data]));
      self.postMessage({ type: 'result', id: msg.id, outputs, ms }, Object.values(outputs).map((a) => a.buffer));
    } else if (msg.type == 'release') {
      await session?.release();
      session = undefined;
      self.postMessage({ type: 'released' });
    }
  } catch (e) {
    self.postMessage({ type: 'error', id: msg.id, error: `${e.name}: ${e.message}` });
  }
};

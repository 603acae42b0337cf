// Falling back to onnxruntime-web's WASM backend where WebGPU cannot run the compiled model.
// The package ships the source model as model.onnx for this. Both sessions take
// { name: new Tensor(type, data, dims) } (each with its own Tensor class) and resolve to
// { name: tensor } with .data, so the calling code is the same.
//
// onnxruntime-web is not bundled: `npm install onnxruntime-web` here (or pass ortUrl). Its WASM
// needs `script-src 'wasm-unsafe-eval'` in a Content-Security-Policy; the WebGPU path needs nothing.
export const DEFAULT_ORT = new URL('./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs', import.meta.url).href;

export async function createSession(modelUrl, { ortUrl = DEFAULT_ORT, ...options } = {}) {
  const rt = await import(new URL('index.js', modelUrl).href);
  const support = await rt.isSupported(modelUrl);
  if (support.supported) {
    return { backend: 'webgpu', session: await rt.InferenceSession.create(modelUrl, options), Tensor: rt.Tensor };
  }
  const ort = await import(ortUrl);
  ort.env.wasm.numThreads = 1; // threads need a cross-origin isolated page
  const session = await ort.InferenceSession.create(new URL('model.onnx', modelUrl).href, { executionProviders: ['wasm'] });
  return { backend: 'wasm', reason: support.reason, session, Tensor: ort.Tensor };
}

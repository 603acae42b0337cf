// The entry of a package compiled for several precisions (--precision fp16,fp32), in place of
// index.js: its manifest.json lists the variants in order of preference, each a complete
// artifact in its own folder; a session loads the first the adapter (or the GPUDevice given)
// runs, so the browser fetches only that variant's shaders and weights.
import { InferenceSession, isSupported, ManifestError } from './onnx2wgsl.js';

export * from './onnx2wgsl.js';

/** The URL of this package's folder, where the index manifest.json lies. */
export const modelUrl = new URL('./', import.meta.url).href;

/**
 * The variant this browser runs: {precision, features, path, url}, the first whose features
 * the adapter (or options.device) has; without WebGPU or a fitting variant, the last listed
 * (whose load then fails with the runtime's DeviceError naming what is missing).
 */
export async function pickVariant(options = {}) {
  const r = await fetch(new URL('manifest.json', modelUrl));
  if (!r.ok) throw new ManifestError(`could not fetch ${modelUrl}manifest.json (HTTP ${r.status})`);
  const { variants } = await r.json();
  const ok = (v) =>
    v && /^(fp16|fp32)$/.test(v.precision) && /^[\w-]{1,64}$/.test(v.path) && Array.isArray(v.features) && v.features.every((f) => typeof f == 'string');
  if (!Array.isArray(variants) || !variants.length || !variants.every(ok))
    throw new ManifestError('manifest.json lists no valid precision variants (each a precision, features and a plain folder name); recompile');
  let have = options.device?.features;
  if (!have) {
    const adapter = await globalThis.navigator?.gpu?.requestAdapter({ powerPreference: options.powerPreference });
    have = adapter?.features || new Set();
  }
  const v = variants.find((v) => v.features.every((f) => have.has(f))) || variants[variants.length - 1];
  return { ...v, url: new URL(v.path + '/', modelUrl).href };
}

/** The chosen variant's InferenceSession; session.precision says which ('fp16' or 'fp32'). */
export async function createSession(options) {
  const v = await pickVariant(options);
  const s = await InferenceSession.create(v.url, options);
  s.precision = v.precision;
  return s;
}

/** isSupported() of the variant this browser would run: whether it can, and why not. */
export async function isModelSupported(options) {
  try {
    return await isSupported((await pickVariant(options)).url, options);
  } catch (e) {
    return { supported: false, reason: e.message };
  }
}

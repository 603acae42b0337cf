// The entry of a compiled model's package: the runtime, bound to the artifact beside this file.
import { InferenceSession, isSupported } from './onnx2wgsl.js';

export * from './onnx2wgsl.js';

/** The URL of this package's folder, where manifest.json, shaders/ and weights.bin lie. */
export const modelUrl = new URL('./', import.meta.url).href;

/** InferenceSession.create(modelUrl, options): this package's model on WebGPU. */
export const createSession = (options) => InferenceSession.create(modelUrl, options);

/** isSupported(modelUrl): whether this browser can run this package's model, and why not. */
export const isModelSupported = (options) => isSupported(modelUrl, options);

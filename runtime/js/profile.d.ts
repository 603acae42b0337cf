// Types of profile.js: per-kernel GPU times for a session of onnx2wgsl.js.
/// <reference types="@webgpu/types" />
import type { ArtifactSource, FeedValue, InferenceSession, RunOptions, SessionOptions, Tensor } from './onnx2wgsl.js';

/** One dispatch's GPU time. */
export interface KernelTime {
  /** Its index in manifest.json's dispatches. */
  dispatch: number;
  /** The ONNX nodes it covers. */
  label: string;
  shader: string;
  grid: number[];
  ms: number;
  /** Its floating-point operations, where the compiler counted them. */
  flops?: number;
  gflops?: number | null;
}

export interface Profile {
  outputs: Record<string, Tensor>;
  /** Heaviest first; dispatches with zero work are skipped and absent. */
  kernels: KernelTime[];
  /** The kernels' sum. */
  gpuMs: number;
}

/** InferenceSession.create on a device with the timestamp-query feature (release() destroys it). */
export declare function createProfiledSession(source: ArtifactSource, options?: Omit<SessionOptions, 'device'>): Promise<InferenceSession>;
/** session.run with every dispatch timed on the GPU, in a compute pass of its own. */
export declare function profile(session: InferenceSession, feeds: Record<string, FeedValue>, options?: RunOptions): Promise<Profile>;

// Types of generate.js: token-by-token generation for a session of onnx2wgsl.js.
/// <reference types="@webgpu/types" />
import type { InferenceSession } from './onnx2wgsl.js';

export interface GenerateOptions {
  /** Tokens to generate (default 64). */
  maxNewTokens?: number;
  /** Stop after this token (or any of these), which is yielded. */
  eosTokenId?: number | readonly number[];
  /** Stop before the next step once aborted. */
  signal?: AbortSignal;
  /** Sampling (an artifact compiled with --sample-candidates K); greedy when none is given. */
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  /** Seed of the uniform draws (one per sampled token). */
  seed?: number;
}

/**
 * Token ids from a session of an artifact compiled with --max-length, each yielded as soon as
 * it is chosen; the prompt goes after the sequence so far. The KV cache stays on the GPU.
 */
export declare function generate(
  session: InferenceSession,
  promptIds: Iterable<number>,
  options?: GenerateOptions,
): AsyncGenerator<number, void, unknown>;
/** Forget the sequence: the next generate() starts from an empty KV cache. */
export declare function resetGeneration(session: InferenceSession): void;

declare module './onnx2wgsl.js' {
  interface InferenceSession {
    /** generate(this, promptIds, options), once generate.js is imported. */
    generate(promptIds: Iterable<number>, options?: GenerateOptions): AsyncGenerator<number, void, unknown>;
    /** resetGeneration(this), once generate.js is imported. */
    resetGeneration(): void;
  }
}

// Token-by-token generation in the browser, for a session of the runtime beside this file on
// an artifact compiled with `onnx2wgsl compile MODEL.onnx -o DIR --max-length N`. Not part of
// the runtime a page loads to run a model: import it to generate.
//
//   import { generate, resetGeneration } from './generate.js';
//   for await (const id of generate(session, promptIds, { maxNewTokens: 64, signal })) show(id);
//
// Importing it also gives every InferenceSession the same as methods:
//   for await (const id of session.generate(promptIds, { maxNewTokens: 64, signal })) show(id);
//   session.resetGeneration();
//
// The KV cache stays on the GPU: a step writes the new ids, mask and positions (a few bytes),
// runs the recorded dispatches, copies each present into its past's slot (none that is its
// past's own buffer, written in place: the manifest's shared pairs) and reads back the chosen id
// (at most 8 bytes mapped), creating nothing but its command encoder.
import { DeviceError, evaluateDim, InferenceSession, InputError } from './onnx2wgsl.js';

const numel = (shape) => shape.reduce((a, b) => a * b, 1);

/**
 * Yield token ids from `session` as soon as each is chosen: the prompt goes after the
 * sequence so far (resetGeneration(session) forgets it). Options: maxNewTokens (64),
 * eosTokenId (a number or an array; yielded, then stops), signal (an AbortSignal: stops before
 * the next step), and with --sample-candidates, temperature, topK, topP, repetitionPenalty and
 * seed (of this module's own uniform draws, not numpy's). Steps are queued with the session's
 * runs, never interleaved; do not run the session while generating (its past slots hold the cache).
 */
export async function* generate(session, promptIds, options = {}) {
  const { maxNewTokens = 64, eosTokenId, signal, temperature, topK, topP, repetitionPenalty, seed } = options;
  const gen = (session._generation ??= generationState(session));
  const { g } = gen;
  const eos = new Set(eosTokenId == null ? [] : [].concat(eosTokenId).map(Number));
  let params = null;
  if (temperature != null || topK != null || topP != null || (repetitionPenalty ?? 1) != 1) {
    if (!gen.params) throw new InputError('this artifact chooses greedily only; compile with --sample-candidates K to sample on the GPU');
    const [t, k, p, r] = [temperature ?? 1, topK ?? 0, topP ?? 1, repetitionPenalty ?? 1];
    if (!(t >= 0 && k >= 0 && p > 0 && p <= 1 && r > 0))
      throw new InputError('sampling needs temperature >= 0, topK >= 0, 0 < topP <= 1 and repetitionPenalty > 0');
    const greedy = t == 0 || (temperature == null && topK == null && topP == null); // (over the penalized logits)
    params = new Float32Array(greedy ? [1, 1, p, r, 0] : [t, k, p, r, 0]);
  }
  const draw = uniforms(seed ?? Math.floor(Math.random() * 2 ** 32));
  let feed = [...gen.pending, ...Array.from(promptIds, Number)];
  if (!feed.length) throw new InputError('generate needs at least one prompt token to start from');
  if (gen.cached + feed.length > g.max_length)
    throw new InputError(
      `the sequence would hold ${gen.cached + feed.length} tokens, more than the artifact's max length ${g.max_length}; ` +
        'resetGeneration() or recompile with a larger --max-length',
    );
  gen.pending = [];
  for (let i = 0; i < maxNewTokens && !signal?.aborted; i++) {
    if (params) params[4] = draw();
    const step = session._busy.then(async () => {
      // a prompt longer than a step takes runs in pieces
      for (; feed.length > gen.chunk; feed = feed.slice(gen.chunk)) await generationStep(session, gen, feed.slice(0, gen.chunk), params, false);
      return generationStep(session, gen, feed, params, true);
    });
    session._busy = step.catch(() => {});
    const token = await step;
    gen.pending = [token];
    yield token;
    if (eos.has(token) || gen.cached + 1 >= g.max_length) return; // (the sequence is full)
    feed = [token];
  }
}

/** Forget the sequence: the next generate() starts from an empty KV cache. */
export function resetGeneration(session) {
  if (session._generation) [session._generation.cached, session._generation.pending] = [0, []];
}

InferenceSession.prototype.generate = function (promptIds, options) {
  return generate(this, promptIds, options);
};
InferenceSession.prototype.resetGeneration = function () {
  resetGeneration(this);
};

/** What every step needs, found once per session (the roles checked as runtime/manifest.py does). */
function generationState(session) {
  const m = session.manifest;
  const g = m.generation;
  if (!g) throw new InputError('the artifact is not compiled for generation; compile the decoder with `onnx2wgsl compile MODEL.onnx -o DIR --max-length N`');
  if (!session._steps) throw new InputError('the session was released');
  const ins = Object.fromEntries(m.inputs.map((io) => [io.name, io]));
  const outs = Object.fromEntries(m.outputs.map((io) => [io.name, io]));
  const others = Object.keys(session.symbols).filter((k) => k != g.sequence_dim && k != g.past_dim && k != g.total_dim);
  if (others.length || ins[g.input_ids]?.shape[0] !== 1)
    throw new InputError(`generation runs one sequence: compile with --dim for ${others.length ? others.join(', ') : 'the batch dim'} (batch 1)`);
  const state = g.state.filter((p) => !p.shared).map((p) => [ins[p.past], outs[p.present]]);
  const same = (p, q) => p && q && p.buffer == q.buffer && p.offset == q.offset && p.size == q.size;
  // a present is copied into its past's slot, in a buffer that holds no output
  const held = new Set(m.outputs.map((o) => o.buffer));
  const token = outs[g.next_token];
  const sampled = outs[g.sampling?.token];
  if (!token || !session.symbols[g.total_dim ?? g.past_dim] || g.state.some((p) => p.shared && !same(ins[p.past], outs[p.present])) || state.some(([p, q]) => !p || !q || held.has(p.buffer) || p.storage != q.storage))
    throw new InputError('the manifest generation names inputs and outputs that do not fit its roles');
  const fed = new Set([g.input_ids, g.attention_mask, g.position_ids, g.sampling?.params, ...g.state.map((p) => p.past)]);
  const rest = m.inputs.filter((io) => !fed.has(io.name) && !io.default).map((io) => io.name);
  if (rest.length) throw new InputError(`generation feeds no value to the model's inputs ${rest.join(', ')}`);
  const start = dimsAt(g, 1, 0);
  return {
    g,
    ids: ins[g.input_ids],
    mask: ins[g.attention_mask],
    positions: ins[g.position_ids],
    params: ins[g.sampling?.params],
    // a token is read back through the session's read-back buffer, where run() puts that output
    read: [token, sampled].map((o) => o && [o, session._at[o.name]]),
    state,
    // at a sequence's first step the cache starts empty: slots not empty at past 0 are cleared
    cleared: state.map(([p]) => p).filter((p) => numel(p.shape.map((d) => evaluateDim(d, start)))),
    plans: new Map(),
    chunk: session.symbols[g.sequence_dim]?.max ?? 1, // the most tokens one step takes (a fixed dim: 1)
    cached: 0,
    pending: [],
  };
}

/** The dims' values at n new tokens after `past` (the mask's total length where the pasts hold max_length). */
const dimsAt = (g, n, past) => ({ [g.sequence_dim]: n, [g.past_dim]: past, ...(g.total_dim ? { [g.total_dim]: past + n } : {}) });

/** The dispatches (zero grids skipped) and the presents' byte counts at n new tokens after `past`, cached. */
function planAt(session, gen, n, past) {
  const { g } = gen;
  const key = `${n},${past}`;
  let plan = gen.plans.get(key);
  if (plan) return plan;
  const env = dimsAt(g, n, past);
  const most = session.device.limits.maxComputeWorkgroupsPerDimension;
  const steps = [];
  for (const [pipeline, group, grid] of session._steps) {
    const gr = grid.map((x) => evaluateDim(x, env));
    if (!gr.every((x) => x >= 0 && x <= most)) throw new InputError(`a grid at ${key} is beyond the artifact's bounds`);
    if (gr.every(Boolean)) steps.push([pipeline, group, gr]);
  }
  const values = Object.keys(session.symbols).map((k) => env[k]);
  // (bytes as stored: 4 an element, or 2 for f16 (--precision fp16), in whole 4-byte words)
  const copies = gen.state.map(([p, q]) => [p, q, 4 * Math.ceil(numel(q.shape.map((d) => evaluateDim(d, env))) / (q.storage == 'f16' ? 2 : 1))]);
  if (copies.some(([p, , size]) => size > p.size && past + n < g.max_length)) throw new InputError(`a present at ${key} does not fit its past`);
  if (gen.plans.size > 1023) gen.plans.clear();
  gen.plans.set(key, (plan = { steps, values, copies }));
  return plan;
}

async function generationStep(session, gen, feed, params, read) {
  if (!session._steps) throw new InputError('the session was released');
  if (session._lost) throw new DeviceError(`the GPU device was lost (${session._lost}); create the session again`);
  const { g } = gen;
  const [n, past] = [feed.length, gen.cached];
  const { steps, values, copies } = planAt(session, gen, n, past);
  const device = session.device;
  const q = device.queue;
  const buf = (io) => session._buffers[io.buffer];
  const at = values.join(',');
  if (session._dims && session._written != at) q.writeBuffer(session._dims, 0, new Uint32Array([...values, 0, 0, 0].slice(0, session._dims.size / 4)));
  session._written = at; // (the same key run() uses: 'name=value, ...' never equals this)
  q.writeBuffer(buf(gen.ids), gen.ids.offset, Int32Array.from(feed));
  if (gen.mask) q.writeBuffer(buf(gen.mask), gen.mask.offset, new Int32Array(past + n).fill(1));
  if (gen.positions) q.writeBuffer(buf(gen.positions), gen.positions.offset, Int32Array.from({ length: n }, (_, i) => past + i));
  if (gen.params) q.writeBuffer(buf(gen.params), gen.params.offset, params || new Float32Array([1, 1, 1, 1, 0]));
  const enc = device.createCommandEncoder();
  if (past == 0) for (const io of gen.cleared) enc.clearBuffer(buf(io), io.offset, io.size);
  session._encode(enc, steps);
  const [tok, offset] = gen.read[params ? 1 : 0];
  if (read) enc.copyBufferToBuffer(buf(tok), tok.offset, session._readback, offset, 4);
  if (past + n < g.max_length) for (const [p, present, size] of copies) if (size) enc.copyBufferToBuffer(buf(present), present.offset, buf(p), p.offset, size);
  q.submit([enc.finish()]);
  gen.cached = past + n;
  if (!read) return -1;
  // map the token's 4 bytes (from the multiple of 8 at or before them, where a mapped range starts)
  const [from, size] = [offset - (offset % 8), (offset % 8) + 4];
  await session._readback.mapAsync(1, from, size);
  const token = new Int32Array(session._readback.getMappedRange(from, size).slice(0))[size / 4 - 1];
  session._readback.unmap();
  return token;
}

/** Uniform draws in [0, 1) from a 32-bit seed (mulberry32), one per sampled token. */
function uniforms(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.min(Math.fround(((t ^ (t >>> 14)) >>> 0) / 2 ** 32), 0.99999994); // (f32 below 1)
  };
}

// onnx2wgsl's browser runtime: an interpreter of a compiled artifact's manifest.json on WebGPU.
//
// create() builds everything once: device, buffers, verified weights, pipelines (all with
// createComputePipelineAsync, in parallel) and one bind group per dispatch. run() only writes
// the inputs, encodes the recorded dispatches in one compute pass and reads the outputs.
// It mirrors runtime/session.py and runtime/manifest.py; it has no per-op logic and generates
// no code (no eval, no new Function), so it runs under a strict Content-Security-Policy, in a
// page or a Web Worker. Format version 3 adds symbols: dims chosen per run up to bounds, with
// shapes and grids as expression trees over them and slots sized at the bound.

export const FORMAT = 'onnx2wgsl-artifact';
export const VERSION = 3;
const VERSIONS = [2, 3];

const kind = (name) =>
  class extends Error {
    constructor(message) {
      super(message);
      this.name = name;
    }
  };
/** The artifact is damaged, missing or of another format version. */
export const ManifestError = kind('ManifestError');
/** No WebGPU, or the adapter/device lacks what the artifact needs, or the device was lost. */
export const DeviceError = kind('DeviceError');
/** A run was fed a wrong input name, type or shape, or asked for an unknown output. */
export const InputError = kind('InputError');

// WebGPU's numeric flags (its globals are absent where WebGPU is, so they are spelled out)
const MAP_READ = 1;
const COPY_SRC = 4;
const COPY_DST = 8;
const UNIFORM = 64;
const STORAGE = 128;
const COMPUTE = 4;

const F16 = globalThis.Float16Array;
// numpy dtype name -> the typed arrays a feed of it may be (the first is what outputs come back
// as); float16 also takes Uint16Array bits, bfloat16 only bits, bool is Uint8Array as in ORT
const TYPES = {
  float32: [Float32Array],
  float64: [Float64Array],
  int8: [Int8Array],
  int16: [Int16Array],
  int32: [Int32Array],
  int64: [BigInt64Array],
  uint8: [Uint8Array],
  uint16: [Uint16Array],
  uint32: [Uint32Array],
  uint64: [BigUint64Array],
  bool: [Uint8Array],
  float16: F16 ? [F16, Uint16Array] : [Uint16Array],
  bfloat16: [Uint16Array],
};
// the 32-bit form each tensor has on the GPU (manifest `storage`; f16, of --precision fp16, is
// converted from and to f32 at the boundary)
const STORAGE_TYPES = { f32: Float32Array, i32: Int32Array, u32: Uint32Array, f16: Float32Array };
// the WebGPU spec's defaults: only limits beyond them are requested
const DEFAULTS = {
  maxBindGroups: 4,
  maxBindingsPerBindGroup: 1000,
  maxStorageBuffersPerShaderStage: 8,
  maxUniformBuffersPerShaderStage: 12,
  maxStorageBufferBindingSize: 134217728,
  maxUniformBufferBindingSize: 65536,
  maxBufferSize: 268435456,
  minStorageBufferOffsetAlignment: 256,
  minUniformBufferOffsetAlignment: 256,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxComputeWorkgroupsPerDimension: 65535,
};

// ---- the manifest: the same structural check as runtime/manifest.py ----------------------
// a schema by example: '' a string, 0 a non-negative integer, [] a list ([x]: of x), {} an object
const IO = { name: '', dtype: '', storage: '', shape: [], buffer: '', offset: 0, size: 0 };
const SCHEMA = {
  format: '',
  version: 0,
  name: '',
  target: { name: '', limits: {}, features: [] },
  buffers: [{ name: '', kind: '', size: 0 }],
  weights: { file: '', size: 0, sha256: '', segments: [] },
  inputs: [IO],
  outputs: [IO],
  shaders: [{ name: '', file: '', sha256: '', entry: '', bindings: [] }],
  dispatches: [{ shader: 0, grid: [], bindings: [] }],
};

const SHADER_FILE = /^shaders\/[A-Za-z0-9_.-]{1,200}\.wgsl$/;
const WEIGHTS_FILE = /^[A-Za-z0-9_.-]{1,200}\.bin$/;
const SHA256 = /^[0-9a-f]{64}$/;
const ENTRY = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const hex = (bytes) => [...new Uint8Array(bytes)].map((x) => x.toString(16).padStart(2, '0')).join('');

const fail = (message) => {
  throw new ManifestError(message);
};
// symbolic dims: a symbol's name, or [op, args...] (runtime/manifest.py's evaluate, show_dim)
const isSym = (d) => typeof d == 'string' || Array.isArray(d);
const FNS = ['max', 'min', 'tdiv'];
// an expression's value at the symbols' values env; with `bad`, the tree is checked too (ops
// and their arity, ints, declared names, at most 256 entries in all its lists) and bad() called on a fault
function evaluate(e, env, bad) {
    if (typeof e == 'string') return e in env ? env[e] : bad();
  if (!Array.isArray(e)) return Number.isSafeInteger(e) ? e : bad();
  const [op, ...args] = e;
  if (bad && ((bad.n += e.length) > 256 || ![...'+*%', '//', ...FNS].includes(op) || ('+*'.includes(op) ? args.length < 2 : args.length != 2))) bad();
  const v = args.map((x) => evaluate(x, env, bad));
  if (op == '+') return v.reduce((a, b) => a + b);
  if (op == '*') return v.reduce((a, b) => a * b);
  const [a, b] = v;
  const f = Math.floor(a / b); // a zero divisor gives NaN or an infinity, which every check refuses
  return op == '//' ? f : op == 'tdiv' ? Math.trunc(a / b) : op == '%' ? a - b * f : Math[op](a, b);
}
function showDim(e) {
  if (!Array.isArray(e)) return String(e);
  const [op, ...args] = e;
  const parts = args.map((a) => (Array.isArray(a) && !FNS.includes(a[0]) ? `(${showDim(a)})` : showDim(a)));
  return FNS.includes(op) ? `${op}(${parts.join(', ')})` : parts.join(op == '*' ? op : ` ${op} `);
}
const showShape = (shape) => `[${shape.map(showDim).join(', ')}]`;
// names as Python prints a list of strings, so both runtimes word their errors alike
// (generate.js evaluates a run's shapes and grids as run does)
export { evaluate as evaluateDim };

const listing = (names) => `[${names.map((n) => `'${n}'`).join(', ')}]`;

function check(obj, schema, where) {
  const at = (key) => (where ? `${where}.` : '') + key;
  if (Array.isArray(schema)) {
    if (!Array.isArray(obj)) fail(`manifest ${where} must be a list`);
    if (schema.length) obj.forEach((item, i) => check(item, schema[0], `${where}[${i}]`));
  } else if (typeof schema == 'object') {
    if (!obj || typeof obj != 'object' || Array.isArray(obj)) fail(`manifest ${where || 'root'} must be an object`);
    for (const key in schema) {
      if (!(key in obj)) fail(`manifest ${at(key)} is missing`);
      check(obj[key], schema[key], at(key));
    }
  } else if (schema === 0) {
    if (!Number.isSafeInteger(obj) || obj < 0) fail(`manifest ${where} must be a non-negative integer (at most 2^53 - 1)`);
  } else if (typeof obj != 'string') fail(`manifest ${where} must be a str`);
}

/** Check a parsed manifest; return it, or throw a ManifestError naming the first problem. */
export function validateManifest(m) {
  if (!m || m.format !== FORMAT) fail('not an onnx2wgsl artifact (manifest format field is wrong)');
  if (!VERSIONS.includes(m.version))
    fail(`artifact format version ${m.version} is not ${VERSIONS.join(' or ')}; recompile the model with this onnx2wgsl version`);
  check(m, SCHEMA, '');
  const syms = m.symbols || [];
  check(syms, [{ name: '', min: 0, max: 0 }], 'symbols');
  const top = Object.create(null); // every symbol at its bound
  for (const { name, min, max } of syms) {
    if (!ENTRY.test(name) || name in top || min > max || max >= 2 ** 31)
      fail(`manifest symbol '${name}' must be a new identifier, with 0 <= min <= max < 2^31`);
    top[name] = max;
  }
  // a well-formed expression whose value at the bound is a non-negative safe integer
  const expr = (e, where) => {
    const bad = () => fail(`manifest ${where} has a bad expression`);
    bad.n = 0;
    const v = evaluate(e, top, bad);
    return Number.isSafeInteger(v) && v >= 0 ? v : bad();
  };
  const limits = { ...DEFAULTS };
  for (const k in m.target.limits) check((limits[k] = m.target.limits[k]), 0, `target.limits.${k}`);
  const align = limits.minStorageBufferOffsetAlignment;
  if (align < 4 || align & (align - 1)) fail(`manifest target.limits.minStorageBufferOffsetAlignment ${align} is not a power of two >= 4`);
  const sizes = {};
  let dims; // the one buffer of kind dims: the symbols' values as u32, 16 bytes per 4
  for (const b of m.buffers) {
    if (b.name in sizes) fail(`manifest names buffer '${b.name}' twice`);
    if (b.kind == 'dims') {
      if (dims || b.size != 16 * Math.ceil(syms.length / 4)) fail(`dims buffer '${b.name}' must be the only one, of 16 bytes per 4 symbols`);
      dims = b.name;
    }
    if (!(b.size > 0 && b.size <= limits.maxBufferSize) || b.size % 4)
      fail(`buffer '${b.name}' has size ${b.size}, not a multiple of 4 from 4 to maxBufferSize`);
    sizes[b.name] = b.size;
  }
  // a range of a buffer: it exists, and offset and size are 4-aligned and inside it
  const within = (r, where) => {
    check(r, { buffer: '', offset: 0, size: 0 }, where);
    const size = sizes[r.buffer];
    if (size === undefined || r.buffer == dims) fail(`manifest ${where} names unknown buffer '${r.buffer}'`);
    if (r.offset % 4 || r.size % 4 || r.offset + r.size > size)
      fail(`manifest ${where} lies outside buffer '${r.buffer}' (offset ${r.offset}, size ${r.size}, buffer size ${size})`);
  };
  for (const io of [...m.inputs, ...m.outputs]) {
    const where = `input/output '${io.name}'`;
    if (!STORAGE_TYPES[io.storage]) fail(`manifest ${where} has unknown storage '${io.storage}'`);
    if (!TYPES[io.dtype]) fail(`manifest ${where} has dtype '${io.dtype}', which this runtime cannot read`);
    let n = 1;
    for (const d of io.shape) {
      if (!isSym(d)) check(d, 0, `${where} shape`);
      n *= isSym(d) ? expr(d, `${where} shape`) : d;
    }
    // a symbolic slot holds the shape at the bound
    const fixed = !io.shape.some(isSym);
    n = stored(io, [n]);
    if (fixed ? io.size != n : io.size < n) fail(`manifest ${where} has size ${io.size} for shape ${showShape(io.shape)}`);
    if (io.size) within(io, where);
    if ('default' in io && !fixed) fail(`manifest input '${io.name}' has a default and a symbolic shape`);
  }
  for (const name in top)
    if (!m.inputs.some((io) => io.shape.includes(name))) fail(`manifest symbol '${name}' is no input's dim`);
  if (new Set(m.inputs.map((io) => io.name)).size != m.inputs.length) fail('manifest inputs repeat a name');
  const w = m.weights;
  if (!WEIGHTS_FILE.test(w.file) || !SHA256.test(w.sha256)) fail('manifest weights: file must be a plain NAME.bin beside the manifest, with its sha256');
  // bytes of the weights file (a segment's, an input's default), or one 32-bit word repeated
  const bytes = (r, where) => {
    if ('fill' in r) {
      if (!Number.isInteger(r.fill) || r.fill < 0 || r.fill >= 2 ** 32) fail(`manifest ${where}.fill must be a 32-bit word`);
    } else {
      check(r.file_offset, 0, `${where}.file_offset`);
      if (r.file_offset % 4 || r.file_offset + r.size > w.size) fail(`manifest ${where} is unaligned or reads past the end of ${w.file}`);
    }
  };
  for (const io of m.inputs) {
    const d = io.default;
    const where = `input '${io.name}' default`;
    if (d === undefined) continue;
    check(d, { size: 0 }, where);
    if (d.size != io.size) fail(`manifest ${where} has size ${d.size}, but the input has size ${io.size}`);
    bytes(d, where);
  }
  for (const io of m.outputs) if ('default' in io) fail(`manifest output '${io.name}' has a default, which only inputs have`);
  w.segments.forEach((seg, i) => {
    const where = `weights.segments[${i}]`;
    within(seg, where);
    bytes(seg, where);
  });
  for (const s of m.shaders) {
    if (!SHADER_FILE.test(s.file) || !SHA256.test(s.sha256)) fail(`shader '${s.name}': file must be shaders/NAME.wgsl, with its sha256`);
    if (!ENTRY.test(s.entry)) fail(`shader '${s.name}' has a bad entry point name`);
    if (s.bindings.some((t) => !['storage', 'read-only-storage', 'uniform'].includes(t))) fail(`shader '${s.name}' has an unknown binding type`);
  }
  const most = limits.maxComputeWorkgroupsPerDimension;
  m.dispatches.forEach((d, i) => {
    const s = m.shaders[d.shader];
    if (!s) fail(`dispatch ${i} names shader ${d.shader}, which does not exist`);
    // an expression may give 0 (at the bound too): that run skips the dispatch
    const at = d.grid.map((g) => (isSym(g) ? expr(g, `dispatch ${i} grid`) : g));
    if (d.grid.length != 3 || !at.every((g, k) => (isSym(d.grid[k]) || (Number.isInteger(g) && g >= 1)) && g <= most))
      fail(`dispatch ${i} grid must be 3 numbers from 1 to ${most}`);
    if (d.bindings.length != s.bindings.length) fail(`dispatch ${i} binds a different number of buffers than its shader declares`);
    for (const [k, b] of d.bindings.entries()) {
      check(b, { buffer: '', offset: 0, size: 0 }, `dispatches[${i}].bindings[]`);
      const uniform = s.bindings[k] == 'uniform';
      if ((b.buffer == dims) != uniform || (uniform && (b.offset || b.size != sizes[dims])))
        fail(`dispatch ${i} must bind the whole dims buffer to its uniform bindings only`);
      if (uniform) continue;
      within(b, `dispatch ${i} binding`);
      if (b.offset % limits.minStorageBufferOffsetAlignment || !(b.size > 0 && b.size <= limits.maxStorageBufferBindingSize))
        fail(`dispatch ${i} has a binding of bad offset or size`);
    }
    // No compiled kernel gives a workgroup less than one element of its largest binding to do
    // (plus the padding of a folded grid), so a larger grid is damage that would only spend GPU time.
    const groups = at[0] * at[1] * at[2];
    const room = Math.max(0, ...d.bindings.map((b) => Math.floor(b.size / 4))) + most;
    if (groups > room) fail(`dispatch ${i} asks for ${groups} workgroups, more than the ${room} its bindings' elements can give work to`);
  });
  return m;
}

// ---- where the artifact's files come from: a URL, or files the caller holds ---------------
function opener(src) {
  if (typeof src == 'string' || src instanceof URL) {
    const base = new URL(src, globalThis.location?.href);
    if (base.pathname.endsWith('.json')) base.pathname = base.pathname.replace(/[^/]*$/, '');
    else if (!base.pathname.endsWith('/')) base.pathname += '/';
    return async (path) => {
      const url = new URL(path, base);
      const r = await fetch(url);
      if (!r.ok) fail(`could not fetch ${url} (HTTP ${r.status})`);
      return r;
    };
  }
  // a Map or object path -> Blob | ArrayBuffer | view | string, or File objects (a FileList)
  const entries =
    src instanceof Map ? [...src] : Symbol.iterator in Object(src) ? [...src].map((f) => [f.webkitRelativePath || f.name, f]) : Object.entries(src);
  return async (path) => {
    const base = path.split('/').pop();
    const hit = entries.find(([k]) => k == path || k.endsWith('/' + path)) || entries.find(([k]) => k == base);
    if (!hit) fail(`the files given lack ${path}`);
    return new Response(hit[1]);
  };
}

async function readManifest(open) {
  const text = await (await open('manifest.json')).text();
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    fail(`manifest.json is not valid JSON (${e.message})`);
  }
  return validateManifest(m);
}

// ---- the device: limits and features the artifact was compiled against ----------------------
const NO_WEBGPU =
  'WebGPU is not available here (navigator.gpu is missing: the browser lacks WebGPU or has it ' +
  'disabled, or the page is not a secure context); run model.onnx, shipped beside the artifact, ' +
  "with onnxruntime-web's WASM backend instead";

// the limits to request (those beyond the spec defaults), or a DeviceError naming the first
// the adapter or device `have` cannot grant
function needs(have, target, who) {
  const req = {};
  for (const [key, value] of Object.entries(target.limits)) {
    if (!(key in have.limits)) continue;
    const got = have.limits[key];
    const min = key.startsWith('min');
    if (min ? value < got : value > got)
      throw new DeviceError(
        min
          ? `${who} needs ${key} >= ${got}, the artifact assumes ${value}`
          : `${who} grants ${key} = ${got}, the artifact needs ${value}; recompile for this device's limits`,
      );
    if (min ? value < DEFAULTS[key] : value > (DEFAULTS[key] ?? 0)) req[key] = value;
  }
  const missing = target.features.filter((f) => !have.features.has(f));
  if (missing.length) throw new DeviceError(`${who} lacks features ${listing(missing)} that the artifact needs`);
  return req;
}

async function adapterFor(target, powerPreference) {
  const gpu = globalThis.navigator?.gpu;
  if (!gpu) throw new DeviceError(NO_WEBGPU);
  const adapter = await gpu.requestAdapter({ powerPreference });
  if (!adapter)
    throw new DeviceError(
      'WebGPU is present but no adapter was granted (the GPU is blocklisted or WebGPU is disabled); ' +
        "run model.onnx with onnxruntime-web's WASM backend instead",
    );
  const info = adapter.info || {};
  const who = `the WebGPU adapter (${[info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed'})`;
  return [adapter, needs(adapter, target, who)];
}

/**
 * Whether this browser can run an artifact: WebGPU, an adapter, and the limits and features
 * the artifact needs (when `src` names one). Resolves to {supported, reason?}; never rejects.
 */
export async function isSupported(src, { powerPreference } = {}) {
  try {
    const target = src ? (await readManifest(opener(src))).target : { limits: {}, features: [] };
    await adapterFor(target, powerPreference);
    return { supported: true };
  } catch (e) {
    return { supported: false, reason: e.message };
  }
}

// ---- dtypes at the boundary: the caller's typed arrays <-> the GPU's 32-bit storage ---------
const numel = (shape) => shape.reduce((a, b) => a * b, 1);
// the bytes n elements take on the GPU: 4 each, or 2 each (f16) padded to whole 4-byte words
const stored = (io, shape) => 4 * Math.ceil(numel(shape) / (1 + (io.storage == 'f16')));

// float16 bits -> number
function h2f(h) {
  const e = (h >> 10) & 31;
  const m = h & 1023;
  return (h & 0x8000 ? -1 : 1) * (e == 31 ? (m ? NaN : Infinity) : e ? 2 ** (e - 15) * (1 + m / 1024) : 2 ** -14 * (m / 1024));
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);
// number -> float16 bits, rounded to nearest even (for f16 storage, and float16 where Float16Array is missing)
function f2h(x) {
  scratch[0] = x;
  const b = scratchBits[0];
  const f = (scratchBits[0] = b & 0x7fffffff);
  // (Giesen's float_to_half_fast3_rtne: a subnormal's rounding done by an f32 add of 0.5)
  return ((b >>> 16) & 0x8000) | (f > 0x7f800000 ? 0x7e00 : f > 0x477fffff ? 0x7c00 : f < 0x38800000 ? ((scratch[0] += 0.5), scratchBits[0] - 0x3f000000) : (f - 0x37fff001 + ((f >> 13) & 1)) >>> 13);
}

// float32 bits -> bfloat16 bits, rounded to nearest even, NaN kept quiet
const f2bf = (b) => ((b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16);

// (f16: f32 values as f16 bits, padded to whole 4-byte words)
const toStorage = (io, data, x = to32(io, data)) => (io.storage == 'f16' ? Uint16Array.from(x.length & 1 ? [...x, 0] : x, f2h) : x);

function to32(io, data) {
  const S = STORAGE_TYPES[io.storage];
  const t = io.dtype;
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) {
    return S.from(data, (v) => {
      v = Number(v);
      if (S.of(v)[0] !== v)
        throw new InputError(`input '${io.name}' has values outside the ${io.storage == 'i32' ? 'int32' : 'uint32'} range the GPU computes in`);
      return v;
    });
  }
  if (t == 'bfloat16') return new Float32Array(Uint32Array.from(data, (v) => v << 16).buffer);
  if (t == 'bool') return S.from(data, (v) => (v ? 1 : 0));
  if (t == 'float16' && !(F16 && data instanceof F16)) return S.from(data, h2f);
  return data.constructor == S ? data : S.from(data);
}

// an output's values as a new array of its dtype (always a copy: raw may be a mapped range)
function fromStorage(io, raw, at, n) {
  const S = STORAGE_TYPES[io.storage];
  const view = io.storage == 'f16' ? S.from(new Uint16Array(raw, at, n), h2f) : new S(raw, at, n);
  const t = io.dtype;
  const C = TYPES[t][0];
  if (t == 'bfloat16') return Uint16Array.from(new Uint32Array(raw, at, n), f2bf);
  if (t == 'float16' && !F16) return Uint16Array.from(view, f2h);
  if (t == 'bool') return Uint8Array.from(view, (v) => (v ? 1 : 0));
  if (t.endsWith('int64')) return C.from(view, BigInt);
  return C == S ? view.slice() : C.from(view);
}

// ---- tensors: the shape of onnxruntime-web's Tensor --------------------------------------
/**
 * A typed array with a type and dims (`new Tensor('float32', data, [1, 3])`, or
 * `new Tensor(data, dims)`), or a tensor living in a GPUBuffer (`Tensor.fromGpuBuffer`).
 */
export class Tensor {
  constructor(type, data, dims) {
    if (typeof type != 'string') [type, data, dims] = [Object.keys(TYPES).find((k) => TYPES[k][0] == type?.constructor), type, data];
    const C = TYPES[type];
    if (!C) throw new InputError(`tensor type ${type} is not one of ${Object.keys(TYPES).join(', ')}`);
    if (!ArrayBuffer.isView(data)) data = C[0].from(data, type.endsWith('int64') ? BigInt : undefined);
    this.type = type;
    this.dims = dims ?? [data.length];
    this.size = numel(this.dims);
    this.location = 'cpu';
    this.cpuData = data;
    if (this.size != data.length) throw new InputError(`tensor dims ${showShape(this.dims)} need ${this.size} elements, the data has ${data.length}`);
  }

  /**
   * A tensor whose data is a GPUBuffer (in the 32-bit storage form: one f32, i32 or u32 per
   * element). `download` reads it back, `dispose` frees it: the caller decides both.
   */
  static fromGpuBuffer(gpuBuffer, { dataType, dims, download, dispose }) {
    const t = Object.create(Tensor.prototype);
    return Object.assign(t, { type: dataType, dims, size: numel(dims), location: 'gpu-buffer', gpuBuffer, download, _dispose: dispose });
  }

  /** The data of a CPU tensor (a GPU tensor's must be awaited with getData()). */
  get data() {
    if (this.location != 'cpu') throw new Error('the tensor data is in a GPUBuffer: use await tensor.getData()');
    return this.cpuData;
  }

  /** The data as a typed array, read back from the GPU when it lives there. */
  async getData(releaseData) {
    if (this.location == 'cpu') return this.cpuData;
    if (!this.download) throw new Error('this GPU tensor has no download function');
    const data = await this.download();
    if (releaseData) this.dispose();
    return data;
  }

  /** Free the tensor's GPUBuffer if the tensor owns it (outputs made by run() do). */
  dispose() {
    this._dispose?.();
    this._dispose = this.download = this.gpuBuffer = this.cpuData = undefined;
  }
}

const isGpuBuffer = (v) => typeof v?.mapAsync == 'function';
const gpuBufferOf = (v) => (isGpuBuffer(v) ? v : v?.location == 'gpu-buffer' ? v.gpuBuffer : null);

async function readBuffer(device, buffer, offset, size) {
  const rb = device.createBuffer({ size: Math.max(size, 4), usage: MAP_READ | COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buffer, offset, rb, 0, size);
  device.queue.submit([enc.finish()]);
  await rb.mapAsync(1);
  const raw = rb.getMappedRange().slice(0);
  rb.destroy();
  return raw;
}

// ---- the session -------------------------------------------------------------------------
/** A compiled model on a WebGPU device: create() once, run() many times, release() at the end. */
export class InferenceSession {
  /**
   * Load an artifact from a URL (its folder or its manifest.json) or from files (a FileList,
   * File[], a Map or an object of path -> Blob/ArrayBuffer/string). Options: device (your own
   * GPUDevice, never destroyed by the session), powerPreference, preferredOutputLocation
   * ('cpu' or 'gpu-buffer'), onProgress({stage: 'weights'|'pipelines', loaded, total}).
   */
  static async create(src, options = {}) {
    const open = opener(src);
    const m = await readManifest(open);
    let device = options.device;
    if (device) needs(device, m.target, 'the GPUDevice given');
    else {
      const [adapter, requiredLimits] = await adapterFor(m.target, options.powerPreference);
      device = await adapter.requestDevice({ requiredLimits, requiredFeatures: m.target.features });
    }
    const s = new InferenceSession();
    s._owns = !options.device;
    try {
      await s._load(m, open, device, options);
    } catch (e) {
      s.release();
      throw e;
    }
    return s;
  }

  async _load(m, open, device, { onProgress, preferredOutputLocation = 'cpu' }) {
    this.manifest = m;
    this.device = device;
    this._where = preferredOutputLocation;
    this._busy = Promise.resolve();
    device.lost.then((info) => (this._lost = info.message || info.reason || 'unknown reason'));
    const meta = (io) => ({ name: io.name, isTensor: true, type: io.dtype, shape: io.shape.map((d) => (d.map ? showDim(d) : d)), storage: io.storage });
    // symbol name -> {name, min, max}: the dims a run may choose (an input's dim named so binds it)
    this.symbols = {};
    this._top = {};
    for (const s of m.symbols || []) [this.symbols[s.name], this._top[s.name]] = [s, s.max];
    this._plans = new Map();
    this.inputNames = m.inputs.map((io) => io.name);
    this.outputNames = m.outputs.map((io) => io.name);
    // an optional input has a default (its initializer), which a run that omits it uses
    this.inputMetadata = m.inputs.map((io) => ({ ...meta(io), optional: 'default' in io }));
    this.outputMetadata = m.outputs.map(meta);
    const progress = (stage, loaded, total) => onProgress?.({ stage, loaded, total });

    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let failed;
    try {
      await this._build(m, open, device, progress);
    } catch (e) {
      failed = e;
    }
    // pop both scopes whatever happened, so a caller's device is left as it was given
    for (const scope of ['validation', 'out-of-memory']) {
      const e = await device.popErrorScope();
      if (e && !failed) failed = new DeviceError(`loading the artifact failed on the device (${scope}): ${e.message}`);
    }
    if (failed) throw failed;
  }

  async _build(m, open, device, progress) {
    this._buffers = {};
    for (const b of m.buffers)
      this._buffers[b.name] = device.createBuffer({ label: b.name, size: b.size, usage: b.kind == 'dims' ? UNIFORM | COPY_DST : STORAGE | COPY_SRC | COPY_DST });
    this._dims = this._buffers[m.buffers.find((b) => b.kind == 'dims')?.name];
    this._at = {};
    let total = 0;
    for (const o of m.outputs) {
      this._at[o.name] = total;
      total += o.size; // (a multiple of 4)
    }
    this._readback = device.createBuffer({ label: 'readback', size: Math.max(total, 4), usage: MAP_READ | COPY_DST });

    // weights stream in while the shaders compile
    const weights = (async () => {
      const w = m.weights;
      const r = await open(w.file);
      const blob = new Uint8Array(w.size);
      let n = 0;
      const bad = () => fail(`${w.file} does not match the manifest (size or sha256); recompile`);
      const reader = r.body?.getReader();
      for (let chunk; reader && !(chunk = await reader.read()).done; ) {
        if (n + chunk.value.length > w.size) bad();
        blob.set(chunk.value, n);
        n += chunk.value.length;
        progress('weights', n, w.size);
      }
      if (n != w.size || hex(await crypto.subtle.digest('SHA-256', blob)) != w.sha256) bad();
      for (const seg of w.segments) {
        const buf = this._buffers[seg.buffer];
        if (!('fill' in seg)) device.queue.writeBuffer(buf, seg.offset, blob, seg.file_offset, seg.size);
        else if (seg.fill) device.queue.writeBuffer(buf, seg.offset, new Uint32Array(seg.size / 4).fill(seg.fill));
      }
      // inputs' defaults, copied out of the file's bytes: a run that omits such an input writes them
      this._defaults = {};
      for (const { name, default: d } of m.inputs)
        if (d) this._defaults[name] = 'fill' in d ? new Uint32Array(d.size / 4).fill(d.fill) : blob.slice(d.file_offset, d.file_offset + d.size);
    })();
    let built = 0;
    const pipelines = Promise.all(
      m.shaders.map(async (s) => {
        const bytes = await (await open(s.file)).arrayBuffer();
        if (bytes.byteLength > 16 << 20 || hex(await crypto.subtle.digest('SHA-256', bytes)) != s.sha256)
          fail(`${s.file} does not match the manifest (size or sha256); recompile`);
        const code = new TextDecoder().decode(bytes);
        const layout = device.createBindGroupLayout({
          label: s.name,
          entries: s.bindings.map((type, binding) => ({ binding, visibility: COMPUTE, buffer: { type } })),
        });
        const pipeline = await device
          .createComputePipelineAsync({
            label: s.name,
            layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
            compute: { module: device.createShaderModule({ label: s.name, code }), entryPoint: s.entry },
          })
          .catch((e) => {
            throw new DeviceError(`shader ${s.name} did not compile on this device: ${e.message}`);
          });
        progress('pipelines', ++built, m.shaders.length);
        return [pipeline, layout];
      }),
    );
    const [, pipes] = await Promise.all([weights, pipelines]);
    this._steps = m.dispatches.map((d) => {
      const [pipeline, layout] = pipes[d.shader];
      const entries = d.bindings.map((b, binding) => ({ binding, resource: { buffer: this._buffers[b.buffer], offset: b.offset, size: b.size } }));
      return [pipeline, device.createBindGroup({ label: d.label, layout, entries }), d.grid];
    });
  }

  /**
   * Run the model. feeds: name -> Tensor, typed array (shaped as the model says) or GPUBuffer
   * on this device (32-bit storage form); an optional input (one with a default) may be
   * omitted, and its default is used. options.fetches: the output names to compute, or
   * name -> null | GPUBuffer | Tensor.fromGpuBuffer(...) to write that output into your
   * buffer. Resolves to name -> Tensor. Runs of one session are queued, never interleaved.
   */
  run(feeds, options) {
    const result = this._busy.then(() => this._run(feeds, options || {}));
    this._busy = result.catch(() => {});
    return result;
  }

  async _run(feeds, { fetches, preferredOutputLocation = this._where }) {
    if (!this._steps) throw new InputError('the session was released');
    if (this._lost) throw new DeviceError(`the GPU device was lost (${this._lost}); create the session again`);
    const m = this.manifest;
    const device = this.device;
    const outs = m.outputs;
    const into = fetches && !Array.isArray(fetches) ? fetches : {};
    const names = Array.isArray(fetches) ? fetches : fetches ? Object.keys(fetches) : null;
    const bad = names?.filter((n) => !this.outputNames.includes(n)) || [];
    if (bad.length)
      throw new InputError(`unknown output names ${listing(bad)}; the model's outputs are ${listing(this.outputNames)}`);
    const wanted = names ? names.map((n) => outs.find((o) => o.name == n)) : outs;

    const unknown = Object.keys(feeds).filter((n) => !this.inputNames.includes(n));
    const missing = m.inputs.filter((io) => !(io.name in feeds || io.default)).map((io) => io.name);
    if (unknown.length || missing.length) {
      const expected = m.inputs.map((io) => `${io.name} (${io.dtype}${showShape(io.shape)}${io.default ? ', optional' : ''})`).join(', ');
      const what = unknown.length ? `unknown input names ${listing(unknown)}` : `missing inputs ${listing(missing)}`;
      throw new InputError(`${what}; the model expects: ${expected}`);
    }
    // check and convert every input before anything reaches the device
    const staged = m.inputs.map((io) => {
      if (!(io.name in feeds)) return [io, io.shape, null, io.size ? this._defaults[io.name] : null];
      const value = feeds[io.name];
      const gpu = gpuBufferOf(value);
      const isTensor = value instanceof Tensor;
      const dims = isTensor ? value.dims : io.shape;
      if (isTensor && value.type != io.dtype) throw new InputError(`input '${io.name}' must be ${io.dtype}, got ${value.type}`);
      // (symbolic dims come from a Tensor's dims)
      if (dims.length != io.shape.length || io.shape.some((d, k) => (isSym(d) ? !isTensor : d != dims[k])))
        throw new InputError(`input '${io.name}' must have shape ${showShape(io.shape)}, got ${isTensor ? showShape(dims) : 'no dims (feed a Tensor)'}`);
      const bytes = stored(io, dims);
      if (gpu) {
        if (gpu.size < bytes || !(gpu.usage & COPY_SRC))
          throw new InputError(`input '${io.name}' GPUBuffer must hold ${bytes} bytes (${io.storage} per element) and have COPY_SRC usage`);
        return [io, dims, gpu];
      }
      const data = isTensor ? value.data : value;
      if (!TYPES[io.dtype].some((C) => data instanceof C))
        throw new InputError(`input '${io.name}' must be ${io.dtype} (${TYPES[io.dtype].map((C) => C.name).join(' or ')}), got ${data?.constructor?.name}`);
      if (data.length != numel(dims)) throw new InputError(`input '${io.name}' must have ${numel(dims)} elements (shape ${showShape(dims)}), got ${data.length}`);
      return [io, dims, null, bytes ? toStorage(io, data) : null];
    });
  // the symbols' values from the fed dims, each dim checked; the dispatches (zero grids
  // skipped) and output shapes at those values, evaluated once per distinct values
    const env = {};
    const no = (message) => {
      throw new InputError(message);
    };
    for (const [io, dims] of staged)
      io.shape.forEach((d, k) => {
        const [n, r] = [dims[k], this.symbols[d]]; // (only a bare symbol names one)
        if (r && !(n >= r.min && n <= r.max)) no(`input '${io.name}' dim ${k} (${d}) is ${n}, outside ${d}'s range ${r.min}..${r.max}`);
        if (r) env[d] ??= n;
      });
    const symbols = Object.keys(this.symbols);
    const at = symbols.map((k) => `${k}=${env[k]}`).join(', ');
    for (const [io, dims] of staged)
      io.shape.forEach((d, k) => {
        const n = evaluate(d, env);
        if (n != dims[k]) no(`input '${io.name}' dim ${k} (${showDim(d)}) must be ${n} for ${at}, got ${dims[k]}`);
      });
    let plan = this._plans.get(at);
    if (!plan) {
      const most = device.limits.maxComputeWorkgroupsPerDimension;
      const shapes = {};
      const beyond = (what, ok) => ok || no(`${what} at ${at} is beyond the artifact's bounds`);
      const steps = this._steps.map(([pipeline, group, grid], k) => {
        const g = grid.map((x) => evaluate(x, env));
        beyond(`dispatch ${k} grid ${showShape(g)}`, g.every((x) => x >= 0 && x <= most));
        return [pipeline, group, g, k];
      });
      // a slot holds its tensor at the bound; a shape that is not monotone in the symbols may not fit
      for (const o of [...m.inputs, ...outs]) {
        const s = (shapes[o.name] = o.shape.map((d) => evaluate(d, env)));
        beyond(`input/output '${o.name}' shape ${showShape(s)}`, s.every((x) => x >= 0) && stored(o, s) <= o.size);
      }
      if (this._plans.size > 255) this._plans = new Map();
      this._plans.set(at, (plan = [steps.filter(([, , g]) => g.every(Boolean)), shapes, symbols.map((k) => env[k])]));
    }
    const [steps, shapes, values] = plan;
    const nbytes = (o) => stored(o, shapes[o.name]);
    const targets = wanted.map((o) => {
      const buf = gpuBufferOf(into[o.name]);
      if (buf && (buf.size < nbytes(o) || !(buf.usage & COPY_DST)))
        throw new InputError(`output '${o.name}' GPUBuffer must hold ${nbytes(o)} bytes and have COPY_DST usage`);
      return buf;
    });

    const results = {};
    const tensor = (o, data) => (results[o.name] = new Tensor(o.dtype, data, shapes[o.name]));
    // zero-sized outputs need no GPU work; when nothing else is asked for, none is done
    for (const o of wanted) if (!nbytes(o)) tensor(o, new (TYPES[o.dtype][0])(0));
    if (!wanted.some(nbytes)) return results;

    const arena = (name) => this._buffers[name];
    // the symbols' values, written only when they changed since the last run
    if (this._dims && this._written != at) device.queue.writeBuffer(this._dims, 0, new Uint32Array([...values, 0, 0, 0].slice(0, this._dims.size / 4)));
    this._written = at;
    const enc = device.createCommandEncoder();
    for (const [io, dims, gpu, data] of staged) {
      if (gpu && numel(dims)) enc.copyBufferToBuffer(gpu, 0, arena(io.buffer), io.offset, stored(io, dims));
      else if (data) device.queue.writeBuffer(arena(io.buffer), io.offset, data);
    }
    this._encode(enc, steps);
    const reads = [];
    wanted.forEach((o, i) => {
      const size = nbytes(o);
      if (!size) return;
      const mine = !targets[i] && preferredOutputLocation == 'gpu-buffer';
      if (targets[i] || mine) {
        const buf = targets[i] || device.createBuffer({ label: o.name, size, usage: STORAGE | COPY_SRC | COPY_DST });
        enc.copyBufferToBuffer(arena(o.buffer), o.offset, buf, 0, size);
        results[o.name] = Tensor.fromGpuBuffer(buf, {
          dataType: o.dtype,
          dims: shapes[o.name],
          download: async () => fromStorage(o, await readBuffer(device, buf, 0, size), 0, numel(shapes[o.name])),
          dispose: mine ? () => buf.destroy() : undefined,
        });
      } else {
        enc.copyBufferToBuffer(arena(o.buffer), o.offset, this._readback, this._at[o.name], size);
        reads.push(o);
      }
    });
    device.queue.submit([enc.finish()]);
    if (reads.length) {
      // converted straight out of the mapped range (fromStorage always copies): one copy
      await this._readback.mapAsync(1);
      try {
        const raw = this._readback.getMappedRange();
        for (const o of reads) tensor(o, fromStorage(o, raw, this._at[o.name], numel(shapes[o.name])));
      } finally {
        this._readback.unmap();
      }
    }
    return Object.fromEntries(wanted.map((o) => [o.name, results[o.name]]));
  }

  /** Encode a run's dispatches, [pipeline, bind group, grid, index in manifest.dispatches] each (profile.js times each one). */
  _encode(enc, steps) {
    const pass = enc.beginComputePass();
    for (const [pipeline, group, grid] of steps) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...grid);
    }
    pass.end();
  }

  /** Run `times` times on zero inputs, optional ones at their defaults (compiles lazily built GPU state); resolves to the last run's ms. */
  async warmup(times = 1) {
    const feeds = {};
    for (const io of this.manifest.inputs) {
      const dims = io.shape.map((d) => evaluate(d, this._top));
      if (!io.default) feeds[io.name] = new Tensor(io.dtype, new (TYPES[io.dtype][0])(numel(dims)), dims);
    }
    let ms = 0;
    for (let i = 0; i < times; i++) {
      const t = performance.now();
      await this.run(feeds);
      ms = performance.now() - t;
    }
    return ms;
  }

  /**
   * Free the session's GPU buffers now, and its device if the session created it (a device
   * passed in by the caller stays alive). Output tensors in GPU buffers die with that device.
   */
  async release() {
    for (const b of [...Object.values(this._buffers || {}), this._readback]) b?.destroy();
    this._buffers = this._steps = this._readback = undefined;
    if (this._owns) this.device.destroy();
  }
}

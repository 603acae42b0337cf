// Types of onnx2wgsl's browser runtime (onnx2wgsl.js). GPU types come from @webgpu/types.
/// <reference types="@webgpu/types" />

export declare const FORMAT: 'onnx2wgsl-artifact';
export declare const VERSION: 3;

/** The artifact is damaged, missing or of another format version. */
export declare class ManifestError extends Error {}
/** No WebGPU, the adapter or device lacks what the artifact needs, or the device was lost. */
export declare class DeviceError extends Error {}
/** A run was fed a wrong input name, type or shape, or asked for an unknown output. */
export declare class InputError extends Error {}

/** Element types, named as numpy and onnxruntime-web name them. */
export type DataType =
  | 'float32' | 'float64' | 'float16' | 'bfloat16'
  | 'int8' | 'int16' | 'int32' | 'int64'
  | 'uint8' | 'uint16' | 'uint32' | 'uint64' | 'bool';

/** The typed array a tensor of each type holds (float16 is Uint16Array bits where Float16Array is missing). */
export interface DataTypeMap {
  float32: Float32Array;
  float64: Float64Array;
  /** A Float16Array where the browser has one, else Uint16Array holding the bits. */
  float16: Uint16Array | (ArrayLike<number> & ArrayBufferView);
  bfloat16: Uint16Array;
  int8: Int8Array;
  int16: Int16Array;
  int32: Int32Array;
  int64: BigInt64Array;
  uint8: Uint8Array;
  uint16: Uint16Array;
  uint32: Uint32Array;
  uint64: BigUint64Array;
  bool: Uint8Array;
}
export type TypedArray = DataTypeMap[DataType];

/** Where a tensor's data lives. */
export type DataLocation = 'cpu' | 'gpu-buffer';

export interface GpuBufferTensorOptions<T extends DataType = DataType> {
  dataType: T;
  dims: readonly number[];
  /** Reads the buffer back (in the tensor's own type). */
  download?: () => Promise<DataTypeMap[T]>;
  /** Frees the buffer; called by Tensor.dispose(). */
  dispose?: () => void;
}

/** A typed array with a type and dims, or a tensor whose data is a GPUBuffer. */
export declare class Tensor<T extends DataType = DataType> {
  constructor(type: T, data: DataTypeMap[T] | readonly number[] | readonly bigint[], dims?: readonly number[]);
  constructor(data: TypedArray, dims?: readonly number[]);
  /**
   * A tensor in a GPUBuffer on the session's device, in the storage form (one f32, i32 or u32
   * per element, or f16 for a float input or output of a --precision fp16 compile, as the
   * model's metadata `storage` says). The caller owns the buffer.
   */
  static fromGpuBuffer<T extends DataType>(buffer: GPUBuffer, options: GpuBufferTensorOptions<T>): Tensor<T>;
  readonly type: T;
  readonly dims: readonly number[];
  readonly size: number;
  readonly location: DataLocation;
  /** The GPUBuffer of a 'gpu-buffer' tensor. */
  readonly gpuBuffer?: GPUBuffer;
  /** The data of a 'cpu' tensor; throws for a 'gpu-buffer' tensor (use getData()). */
  readonly data: DataTypeMap[T];
  /** The data, read back from the GPU if it lives there; releaseData disposes the tensor after. */
  getData(releaseData?: boolean): Promise<DataTypeMap[T]>;
  /** Destroys the GPUBuffer if the tensor owns it (outputs that run() placed in new buffers). */
  dispose(): void;
}

/** A model input or output, as onnxruntime-web's ValueMetadata plus the GPU storage type. */
export interface TensorMetadata {
  readonly name: string;
  readonly isTensor: true;
  readonly type: DataType;
  /**
   * Ints, and for dims chosen at run time the symbol's name ("seq") or an expression of the
   * symbols ("2*seq", "(seq + 1) // 2", "max(seq, 4)"); see InferenceSession.symbols.
   */
  readonly shape: readonly (number | string)[];
  /**
   * The type each element has on the GPU (what GPUBuffer feeds and outputs hold): 32-bit, or
   * f16 (2 bytes, padded to a 4-byte multiple) for a float input or output of a --precision fp16
   * compile. Typed-array feeds and results keep the model's dtype either way.
   */
  readonly storage: 'f32' | 'i32' | 'u32' | 'f16';
  /**
   * Inputs only: the input has a default (its initializer, in the artifact's weights), which
   * run() uses when the feeds omit it; a feed overrides it.
   */
  readonly optional?: boolean;
}

/** A dim chosen at run time: any value from min to max (the artifact is sized for max). */
export interface SymbolRange {
  readonly name: string;
  readonly min: number;
  readonly max: number;
}

export interface Progress {
  stage: 'weights' | 'pipelines';
  /** Bytes of weights, or pipelines built. */
  loaded: number;
  total: number;
}

export interface SessionOptions {
  /** Your own GPUDevice: the session checks its limits and features and never destroys it. */
  device?: GPUDevice;
  powerPreference?: GPUPowerPreference;
  /** Where run() puts outputs by default (default 'cpu'). */
  preferredOutputLocation?: DataLocation;
  onProgress?: (progress: Progress) => void;
}

/** A file of the artifact, by its path inside the artifact folder (e.g. "shaders/000_map.wgsl"). */
export type ArtifactFile = Blob | ArrayBuffer | ArrayBufferView | string;
/** A URL (the artifact folder or its manifest.json), or the artifact's files. */
export type ArtifactSource = string | URL | FileList | readonly File[] | Map<string, ArtifactFile> | Record<string, ArtifactFile>;

export type FeedValue = Tensor | TypedArray | GPUBuffer;
export interface RunOptions {
  /** Output names to compute, or name -> null (the default place) or a GPUBuffer / GPU tensor to write into. */
  fetches?: readonly string[] | Record<string, null | GPUBuffer | Tensor>;
  preferredOutputLocation?: DataLocation;
}

export declare class InferenceSession {
  /** Load an artifact: fetch and verify, build buffers, pipelines and bind groups once. */
  static create(source: ArtifactSource, options?: SessionOptions): Promise<InferenceSession>;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly TensorMetadata[];
  readonly outputMetadata: readonly TensorMetadata[];
  /**
   * The artifact's symbols by name (empty for a static one). A run binds each from the dims
   * of the input Tensors whose shape names it: inputs with symbolic dims are fed as Tensors.
   */
  readonly symbols: Readonly<Record<string, SymbolRange>>;
  /** The session's GPUDevice (yours when you passed one): create GPUBuffer feeds on it. */
  readonly device: GPUDevice;
  /** The parsed manifest.json. */
  readonly manifest: Record<string, unknown>;
  /** Run the model (optional inputs may be omitted: their defaults are used); resolves to output name -> Tensor. Runs of one session are queued. */
  run(feeds: Record<string, FeedValue>, options?: RunOptions): Promise<Record<string, Tensor>>;
  /** Runs on zero inputs (optional ones keep their defaults) `times` times; resolves to the last run's milliseconds. */
  warmup(times?: number): Promise<number>;
  /** Destroys the session's buffers, and its device if the session created it. */
  release(): Promise<void>;
}

export interface Support {
  supported: boolean;
  /** Why not, when not. */
  reason?: string;
}
/** Whether WebGPU, an adapter and (given an artifact) its limits and features are here. Never rejects. */
export declare function isSupported(source?: ArtifactSource, options?: { powerPreference?: GPUPowerPreference }): Promise<Support>;

/** A manifest shape or grid entry's value at the symbols' values (generate.js evaluates with it). */
export declare function evaluateDim(entry: number | string | unknown[], values: Record<string, number>): number;

/** Check a parsed manifest.json; returns it or throws ManifestError. */
export declare function validateManifest(manifest: unknown): Record<string, unknown>;

"""The Python runtime: an interpreter of manifest.json on wgpu-py.

Load builds everything once: device, buffers, weights, shader modules, pipelines, bind
groups and the read-back buffer. ``run`` only writes inputs, encodes the recorded
dispatches into one command encoder, copies outputs out and reads them back.

An artifact with symbols (dims chosen at run time, up to bounds) is sized at the bound, so the
same objects serve every run: ``run`` binds the symbols from the fed shapes, writes them to
the dims buffer when they changed, and evaluates the grids and output shapes once per
distinct set of values (cached).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx2wgsl.errors import DeviceError, InputError, first_line

from . import ffi_types
from . import manifest as mf

_ONNX_TYPE = {
    "float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)",
    "bfloat16": "tensor(bfloat16)", "int8": "tensor(int8)", "int16": "tensor(int16)",
    "int32": "tensor(int32)", "int64": "tensor(int64)", "uint8": "tensor(uint8)",
    "uint16": "tensor(uint16)", "uint32": "tensor(uint32)", "uint64": "tensor(uint64)",
    "bool": "tensor(bool)",
}  # fmt: skip


@dataclass(frozen=True)
class IOInfo:
    """A model input or output: the names onnxruntime's NodeArg has, plus numpy's dtype."""

    name: str
    dtype: str
    shape: list[int | str]  # a symbolic dim as its name or expression, as onnxruntime shows dim_params
    optional: bool = False  # an input with a default (its initializer), used when a run omits it

    @property
    def type(self) -> str:
        return _ONNX_TYPE.get(self.dtype, f"tensor({self.dtype})")


_STORAGE = {
    "f32": np.dtype(np.float32), "i32": np.dtype(np.int32), "u32": np.dtype(np.uint32), "f16": np.dtype(np.float16),
}  # fmt: skip


@dataclass
class GpuTensor:
    """A tensor in a GPU buffer, in the form the kernels store (``storage``: f32 for floats,
    i32 for signed ints, u32 for unsigned ints and bools; f16 for a float input or output an
    artifact compiled with --precision fp16 stores as f16s, 2 bytes each, padded to a 4-byte
    multiple), ``nbytes`` from ``offset``.

    ``run(..., output_location="gpu")`` returns these, and ``run`` takes them (or a plain
    wgpu buffer, for an input whose shape is fixed) as inputs: sessions on one device chain
    without a round trip through the host, as onnxruntime's IOBinding does. ``numpy()`` reads
    one back; ``release()`` frees a buffer the session made for it (never one you gave)."""

    buffer: Any
    shape: tuple[int, ...]
    dtype: str  # numpy's name of the model's dtype (float32, int64, bool, ...)
    storage: str
    device: Any
    offset: int = 0
    owned: bool = False

    @property
    def nbytes(self) -> int:
        return mf.stored_nbytes(self.storage, math.prod(self.shape))

    def numpy(self) -> np.ndarray:
        """The values, read back through a staging buffer (made for this call)."""
        import wgpu

        if not self.nbytes:
            return np.zeros(self.shape, numpy_dtype(self.dtype))
        staging = self.device.create_buffer(
            size=self.nbytes, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
        )
        try:
            enc = self.device.create_command_encoder()
            enc.copy_buffer_to_buffer(self.buffer, self.offset, staging, 0, self.nbytes)
            self.device.queue.submit([enc.finish()])
            raw = InferenceSession._read_mapped(staging)
        finally:
            staging.destroy()
        data = np.frombuffer(raw, dtype=_STORAGE[self.storage], count=math.prod(self.shape))
        return data.astype(numpy_dtype(self.dtype)).reshape(self.shape)

    def release(self) -> None:
        if self.owned and self.buffer is not None:
            self.buffer.destroy()
        self.buffer = None


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


# The backends wgpu-native's instance starts with on each platform, when onnx2wgsl creates it:
# starting every backend also starts OpenGL (EGL and its driver) in every process on Linux,
# for an adapter that is not picked where Vulkan has one
PRIMARY_BACKENDS = {"linux": ("Vulkan",), "darwin": ("Metal",), "win32": ("DX12", "Vulkan")}


def _primary_instance() -> Callable[[], None] | None:
    """Create wgpu-native's instance with this platform's primary backends, if nothing has
    created it yet (a caller's own use of wgpu keeps its instance) and ``WGPU_BACKEND_TYPE``
    does not ask for a backend. Returns how to replace it by one with every backend (for a
    machine whose primary backends have no adapter, such as OpenGL only), or None."""
    backends = PRIMARY_BACKENDS.get(sys.platform)
    if not backends or os.environ.get("WGPU_BACKEND_TYPE"):
        return None
    try:
        from wgpu.backends.wgpu_native import _helpers, extras

        if _helpers._the_instance is not None:
            return None
        extras.set_instance_extras(backends=list(backends))
    except Exception:  # another wgpu-py than the one this was written for: its own instance
        return None

    def every_backend() -> None:
        _helpers.lib.wgpuInstanceRelease(_helpers._the_instance)
        _helpers._the_instance = None

    return every_backend


def request_adapter(power_preference: str = "high-performance"):
    """wgpu's adapter for ``power_preference``, or a DeviceError saying how to get one."""
    import wgpu

    ffi_types.prime()
    os.environ.setdefault("XDG_RUNTIME_DIR", _runtime_dir())
    widen = _primary_instance()
    adapter = None
    if widen is not None:
        try:
            adapter = wgpu.gpu.request_adapter_sync(power_preference=power_preference)
        except Exception:
            adapter = None
        if adapter is None:
            widen()  # (no adapter came of the first instance: nothing holds it)
    if adapter is None:
        adapter = wgpu.gpu.request_adapter_sync(power_preference=power_preference)
    if adapter is None:
        raise DeviceError(
            "no WebGPU adapter found; install a GPU driver, or Mesa's lavapipe for a software GPU "
            "(apt-get install mesa-vulkan-drivers)"
        )
    return adapter


def request_device(
    required_limits: Mapping[str, int] | None = None,
    features: Iterable[str] = (),
    power_preference: str = "high-performance",
    adapter: Any = None,
):
    """A wgpu device that grants the limits and features an artifact was compiled against
    (from ``adapter``, or the one ``power_preference`` picks)."""

    if adapter is None:
        adapter = request_adapter(power_preference)
    have = dict(adapter.limits)
    need = {}
    for key, value in (required_limits or {}).items():
        k = _kebab(key)
        if k not in have:
            continue
        if key.startswith("min"):
            if value < have[k]:
                raise DeviceError(
                    f"adapter {adapter.info['device']!r} needs {key} >= {have[k]}, the artifact assumes {value}"
                )
        elif value > have[k]:
            raise DeviceError(
                f"adapter {adapter.info['device']!r} grants {key} = {have[k]}, the artifact needs {value}; "
                "recompile for this device's limits"
            )
        elif value > mf.DEFAULT_LIMITS.get(key, 0):
            need[k] = value
    missing = [f for f in features if f not in _standard(adapter.features)]
    if missing:
        why = (
            "; it stores tensors as f16 (compiled with --precision fp16, the default for a float16 "
            "model): recompile with --precision fp16,fp32 (a fallback schedule the runtime picks) or "
            "--precision fp32 for this adapter"
            if mf.F16_FEATURE in missing
            else ""
        ) + (
            "; its kernels use subgroup operations (compiled with --subgroups): recompile without "
            "--subgroups for this adapter"
            if mf.SUBGROUPS_FEATURE in missing
            else ""
        )
        raise DeviceError(
            f"adapter {adapter.info['device']!r} lacks features {missing} that the artifact needs{why}"
        )
    return adapter.request_device_sync(required_limits=need, required_features=_native(features))


def _native(features: Iterable[str]) -> list[str]:
    """Features by wgpu-native's names, as its request_device takes them."""
    return [mf.NATIVE_FEATURES.get(f, f) for f in features]


def _standard(features: Iterable[str]) -> set[str]:
    """A device's or adapter's features by WebGPU's names (wgpu-native spells some otherwise)."""
    have = set(features)
    return have | {f for f, native in mf.NATIVE_FEATURES.items() if native in have}


def _check_device(device, limits: Mapping[str, int], features: Iterable[str]) -> None:
    """A caller's device must grant what the artifact was compiled for."""
    have = dict(device.limits)
    for key, value in limits.items():
        k = _kebab(key)
        if (
            k in have
            and not key.startswith("min")
            and value > have[k]
            and value > mf.DEFAULT_LIMITS.get(key, 0)
        ):
            needed = {kk: v for kk, v in limits.items() if v > mf.DEFAULT_LIMITS.get(kk, 0)}
            raise DeviceError(
                f"the device grants {key} = {have[k]}, the artifact needs {value}; create the device "
                f"with required_limits {needed} or let onnx2wgsl.load create it"
            )
    missing = [f for f in features if f not in _standard(device.features)]
    if missing:
        raise DeviceError(
            f"the device lacks features {missing} that the artifact needs; create it with "
            f"required_features {_native(features)} or let onnx2wgsl.load create it"
            + (
                " (an artifact compiled with --precision fp16 stores f16s)"
                if mf.F16_FEATURE in missing
                else ""
            )
        )


def _runtime_dir() -> str:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"onnx2wgsl-xdg-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return str(path)


def encode_pass(enc, steps) -> None:
    """One compute pass of ``steps`` (pipeline, bind group, grid, ...), in order."""
    cpass = enc.begin_compute_pass()
    for pipeline, group, grid, *_ in steps:
        cpass.set_pipeline(pipeline)
        cpass.set_bind_group(0, group)
        cpass.dispatch_workgroups(*grid)
    cpass.end()


class InferenceSession:
    """A compiled model on a WebGPU device; ``run`` has onnxruntime's call shape."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        device: Any = None,
        power_preference: str = "high-performance",
        profile: bool = False,
    ):
        import wgpu

        ffi_types.prime()
        self.path = Path(directory)
        self._released = False
        m = mf.read_any(self.path)
        adapter = None
        # ``precision``: the variant picked from an artifact compiled for several (``--precision
        # fp16,fp32``): the first whose features the device (or adapter) has; None for one
        # compiled for a single precision
        self.precision: str | None = None
        if mf.is_index(m):
            if device is None:
                adapter = request_adapter(power_preference)
            have = _standard((device if device is not None else adapter).features)
            v = mf.choose(m, have)
            if v is None:
                who = "the device given" if device is not None else f"adapter {adapter.info['device']!r}"
                needs = "; ".join(
                    f"{v['precision']} needs {sorted(set(v['features']) - set(have))}" for v in m["variants"]
                )
                raise DeviceError(f"{who} runs none of the artifact's precision variants ({needs})")
            self.path, self.precision = self.path / v["path"], v["precision"]
            m = mf.read(self.path)
        self.manifest = m
        self._inputs = {io["name"]: io for io in m["inputs"]}
        self._outputs = [io for io in m["outputs"]]
        self.symbols = {s["name"]: (s["min"], s["max"]) for s in m.get("symbols", [])}
        self._plans: dict[tuple[int, ...], tuple[list, dict]] = {}  # symbol values -> (steps, shapes)
        self._dims_written: tuple[int, ...] | None = None
        # ``profile``: the device takes GPU timestamps around each dispatch (``run_profiled``)
        features = list(m["target"]["features"]) + (["timestamp-query"] if profile else [])
        # weights.bin is mapped, not read (no copy of hundreds of MB, nor a wait for one), and
        # hashed on a thread while the device is requested, the weights uploaded from the mapping
        # and the pipelines made (all mostly native code that releases the GIL); a mismatch
        # surfaces at result(), before the session is returned
        w = m["weights"]
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx2wgsl-weights")
        blob = mf.mapped_artifact_file(self.path, w["file"], w["size"])
        hashed = reader.submit(mf.check_sha256, w["file"], blob, w["sha256"])
        reader.shutdown(wait=False)
        if device is None:
            device = request_device(m["target"]["limits"], features, power_preference, adapter)
        else:
            _check_device(device, m["target"]["limits"], features)
        self._profiling: tuple | None = None  # query sets and buffers, made on first use
        self.device = device
        dev = self.device
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
        uniform = wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST
        # the buffers the weights are written into are mapped at creation: one staging copy
        # each, written in place, rather than one per segment (write_buffer's)
        written = {seg["buffer"] for seg in m["weights"]["segments"] if seg["size"]}
        self.buffers = {
            b["name"]: dev.create_buffer(
                size=b["size"],
                usage=uniform if b["kind"] == "dims" else usage,
                label=b["name"],
                mapped_at_creation=b["name"] in written,
            )
            for b in m["buffers"]
        }
        self._dims = next((self.buffers[b["name"]] for b in m["buffers"] if b["kind"] == "dims"), None)
        # the pipelines are made on threads (naga's translation and the driver's pipeline
        # creation release the GIL, and wgpu-native's device takes them from any thread) while
        # this one uploads the weights; in the artifact's order, the first failure raised
        workers = max(1, min(len(m["shaders"]), os.cpu_count() or 1, 8))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnx2wgsl-pipelines") as pool:
            made = [pool.submit(self._pipeline, s) for s in m["shaders"]]
            try:
                self._upload_weights(blob, written)
                # the copies out of the staging memory run now, while the pipelines are still
                # being made, rather than before the first run's work (a software GPU runs
                # them on the submitting thread)
                dev.queue.submit([])
            except BaseException:
                for f in made:
                    f.cancel()
                raise
            self.pipelines = [f.result() for f in made]
        self.steps = []
        for d in m["dispatches"]:
            pipeline, layout = self.pipelines[d["shader"]]
            group = dev.create_bind_group(
                layout=layout,
                entries=[
                    {
                        "binding": i,
                        "resource": {
                            "buffer": self.buffers[b["buffer"]],
                            "offset": b["offset"],
                            "size": b["size"],
                        },
                    }
                    for i, b in enumerate(d["bindings"])
                ],
            )
            self.steps.append((pipeline, group, d["grid"]))
        self._readback_at = {}
        total = 0
        for o in self._outputs:
            self._readback_at[o["name"]] = total
            total += -(-o["size"] // 4) * 4
        self._readback = dev.create_buffer(
            size=max(total, 4), usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST, label="readback"
        )
        hashed.result()
        blob.close()

    def release(self) -> None:
        """Free the session's GPU buffers now (a device passed in by the caller stays alive)."""
        for buf in (
            list(self.buffers.values())
            + [self._readback]
            + list(self._profiling[1:] if self._profiling else [])
        ):
            buf.destroy()
        self._profiling = None
        self.buffers = {}
        self.steps = []
        self.pipelines = []
        self._released = True

    def __enter__(self) -> InferenceSession:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _pipeline(self, s: dict) -> tuple:
        """(compute pipeline, bind group layout) of one of the manifest's shaders."""
        import wgpu

        dev = self.device
        raw = mf.artifact_file(self.path, s["file"], None, mf.MAX_SHADER_BYTES, s["sha256"])
        try:
            code = raw.decode("utf-8")
            # naga (wgpu-native) takes subgroup operations without WGSL's enable, refuses the
            # enable, and knows no subgroup_uniformity diagnostic (it prints an error for it)
            code = code.replace(mf.SUBGROUPS_HEADER, "", 1)
            module = dev.create_shader_module(code=code, label=s["name"])
            layout = dev.create_bind_group_layout(
                entries=[
                    {"binding": i, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": t}}
                    for i, t in enumerate(s["bindings"])
                ]
            )
            pipeline = dev.create_compute_pipeline(
                layout=dev.create_pipeline_layout(bind_group_layouts=[layout]),
                compute={"module": module, "entry_point": s["entry"]},
                label=s["name"],
            )
        except Exception as e:  # wgpu's validation errors are long and multi-line
            raise DeviceError(
                f"shader {s['name']} ({s['file']}) did not load on this device: {first_line(e, 400, lines=3) or type(e).__name__}"
            ) from e
        return pipeline, layout

    def _upload_weights(self, blob, written: set[str]) -> None:
        """Write the weights' segments into their buffers (``written``, mapped since their
        creation), then unmap those."""
        w = self.manifest["weights"]
        view = memoryview(blob)  # (a slice of it is a view, not a copy)
        # a segment at an offset of 4 past a multiple of 8 (the manifest allows any multiple of
        # 4; a mapped range starts at a multiple of 8) is written through the queue once the
        # buffer is unmapped, from a copy: the mapping of the file closes once hashed
        late = []
        for seg in w["segments"]:
            if not seg["size"]:
                continue
            buf = self.buffers[seg["buffer"]]
            if "fill" in seg:
                if not seg["fill"]:  # buffers mapped at creation hold zeros
                    continue
                data = np.full(seg["size"] // 4, seg["fill"], dtype=np.uint32)
            else:
                data = view[seg["file_offset"] : seg["file_offset"] + seg["size"]]
            if seg["offset"] % 8:
                late.append((buf, seg["offset"], bytes(data)))
            else:
                buf.write_mapped(data, seg["offset"])
        view.release()
        for name in sorted(written):
            self.buffers[name].unmap()
        for buf, offset, data in late:
            self.device.queue.write_buffer(buf, offset, data)
        # inputs' defaults, kept in memory: a run that omits such an input writes these bytes
        self._defaults = {}
        for io in self.manifest["inputs"]:
            d = io.get("default")
            if d is not None:
                self._defaults[io["name"]] = (
                    np.full(d["size"] // 4, d["fill"], dtype=np.uint32)
                    if "fill" in d
                    else np.frombuffer(blob, np.uint8, d["size"], d["file_offset"]).copy()  # not a view
                )

    # -- onnxruntime-shaped API -----------------------------------------------------------
    def get_inputs(self) -> list[IOInfo]:
        """The inputs every run feeds; as in onnxruntime, those with a default are not among
        them (``get_overridable_initializers``), so feeds made from this list keep defaults."""
        return [io for io in self._declared_inputs() if not io.optional]

    def get_overridable_initializers(self) -> list[IOInfo]:
        """The inputs with a default (``optional``), as onnxruntime names them: a run that
        omits one uses the default, a feed overrides it."""
        return [io for io in self._declared_inputs() if io.optional]

    def _declared_inputs(self) -> list[IOInfo]:
        return [
            IOInfo(io["name"], io["dtype"], _shown(io["shape"]), "default" in io)
            for io in self.manifest["inputs"]
        ]

    def get_outputs(self) -> list[IOInfo]:
        return [IOInfo(io["name"], io["dtype"], _shown(io["shape"])) for io in self.manifest["outputs"]]

    def run(
        self,
        output_names: list[str] | None,
        input_feed: Mapping[str, Any],
        run_options: Any = None,
        *,
        output_location: str = "cpu",
        output_buffers: Mapping[str, Any] | None = None,
    ) -> list:
        """Write the inputs, run every dispatch in one command encoder, read the outputs.

        Inputs are arrays, or GpuTensors / wgpu buffers on this session's device (copied on the
        GPU). ``output_location="gpu"`` leaves the outputs on the GPU as GpuTensors in new
        buffers (one per output per run, owned by the tensor); ``output_buffers`` names your
        own buffers (STORAGE | COPY_DST, at least the output's bytes) to write outputs into,
        returned as GpuTensors over them. Nothing is read back unless an output goes to the CPU."""
        if output_location not in ("cpu", "gpu"):
            raise InputError(f"output_location must be 'cpu' or 'gpu', not {output_location!r}")
        return self._run(output_names, input_feed, where=output_location, into=output_buffers)[0]

    def run_profiled(
        self, output_names: list[str] | None, input_feed: Mapping[str, Any]
    ) -> tuple[list[np.ndarray], list[tuple[int, float]]]:
        """``run`` with a GPU timestamp before and after every dispatch (each in a compute pass
        of its own): the outputs, and for each dispatch that ran (zero grids are skipped) its
        index in the manifest's ``dispatches`` and its GPU time in seconds. The session must be
        made with ``profile=True`` (the device needs the timestamp-query feature)."""
        if "timestamp-query" not in self.device.features:
            raise DeviceError(
                "profiling needs a device with the timestamp-query feature: load the artifact with "
                "profile=True (onnx2wgsl.load(path, profile=True))"
            )
        return self._run(output_names, input_feed, timed=True)

    def _run(
        self,
        output_names: list[str] | None,
        input_feed: Mapping[str, Any],
        timed: bool = False,
        where: str = "cpu",
        into: Mapping[str, Any] | None = None,
    ) -> tuple[list, list[tuple[int, float]]]:
        into = into or {}
        if self._released:
            raise InputError("this session was released; load the artifact again to run it")
        if not isinstance(input_feed, Mapping):
            raise InputError(
                f"input_feed must map input names to arrays, not a {type(input_feed).__name__} "
                f"(the model's inputs are {list(self._inputs)})"
            )
        wanted = self._select(output_names)
        staged = [
            (io, self._staged(io, input_feed[io["name"]]) if io["name"] in input_feed else self._defaults[io["name"]])
            for io in self._check_feed(input_feed)
        ]  # fmt: skip
        bad = [n for n in into if n not in {o["name"] for o in wanted}]
        if bad:
            raise InputError(f"output_buffers names {bad}, which this run does not compute")
        values = self._bind(staged)
        steps, shapes = self._plan(values)
        q = self.device.queue
        if self._dims is not None and values != self._dims_written:
            q.write_buffer(self._dims, 0, np.array(values + (0,) * (-len(values) % 4), dtype=np.uint32))
            self._dims_written = values
        for io, data in staged:
            if data.nbytes and not isinstance(data, GpuTensor):
                if data.nbytes % 4:  # an odd count of f16s: writes are whole 4-byte words
                    data = data.tobytes() + bytes(2)
                q.write_buffer(self.buffers[io["buffer"]], io["offset"], data)
        enc = self.device.create_command_encoder()
        for io, data in staged:
            if data.nbytes and isinstance(data, GpuTensor):
                enc.copy_buffer_to_buffer(
                    data.buffer, data.offset, self.buffers[io["buffer"]], io["offset"], data.nbytes
                )
        if timed:
            stamps = self._timed_passes(enc, steps)
        else:
            encode_pass(enc, steps)
        gpu = {o["name"]: self._gpu_output(o, shapes[o["name"]], into.get(o["name"]))
               for o in wanted if where == "gpu" or o["name"] in into}  # fmt: skip
        for o in wanted:
            nbytes = mf.stored_nbytes(o["storage"], math.prod(shapes[o["name"]]))
            if not nbytes:
                continue
            t = gpu.get(o["name"])
            if t is not None:
                enc.copy_buffer_to_buffer(self.buffers[o["buffer"]], o["offset"], t.buffer, t.offset, nbytes)
            else:
                enc.copy_buffer_to_buffer(
                    self.buffers[o["buffer"]],
                    o["offset"],
                    self._readback,
                    self._readback_at[o["name"]],
                    nbytes,
                )
        q.submit([enc.finish()])
        if len(gpu) == len(wanted) and not timed:
            return [gpu[o["name"]] for o in wanted], []
        out = self._read_mapped(self._readback, lambda raw: self._outputs_from(raw, wanted, shapes, gpu))
        if not timed:
            return out, []
        ticks = np.frombuffer(self._read_mapped(stamps), dtype=np.uint64)
        times = [
            (k, max(0, int(ticks[2 * j + 1]) - int(ticks[2 * j])) * 1e-9) for j, (*_, k) in enumerate(steps)
        ]
        return out, times

    _QUERIES = 4096  # the most queries a WebGPU query set may hold

    def _timed_passes(self, enc, steps: list):
        """Encode each dispatch in a compute pass of its own, timestamped at its start and end,
        and the resolve of every timestamp into a buffer (returned, to read after submit)."""
        import wgpu

        n = 2 * max(len(self.steps), 1)
        if self._profiling is None:
            sets = [
                self.device.create_query_set(type=wgpu.QueryType.timestamp, count=min(self._QUERIES, n - i))
                for i in range(0, n, self._QUERIES)
            ]
            resolved = self.device.create_buffer(
                size=8 * n,
                usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC,
                label="timestamps",
            )
            readable = self.device.create_buffer(
                size=8 * n,
                usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
                label="timestamps read",
            )
            self._profiling = (sets, resolved, readable)
        sets, resolved, readable = self._profiling
        for j, (pipeline, group, grid, _) in enumerate(steps):
            q = 2 * j
            cpass = enc.begin_compute_pass(
                timestamp_writes={
                    "query_set": sets[q // self._QUERIES],
                    "beginning_of_pass_write_index": q % self._QUERIES,
                    "end_of_pass_write_index": q % self._QUERIES + 1,
                }
            )
            cpass.set_pipeline(pipeline)
            cpass.set_bind_group(0, group)
            cpass.dispatch_workgroups(*grid)
            cpass.end()
        used = 2 * len(steps)
        for i, qs in enumerate(sets):
            first = i * self._QUERIES
            count = min(self._QUERIES, used - first)
            if count > 0:
                enc.resolve_query_set(qs, 0, count, resolved, 8 * first)
        if used:
            enc.copy_buffer_to_buffer(resolved, 0, readable, 0, 8 * used)
        return readable

    def _outputs_from(self, raw: memoryview, wanted: list[dict], shapes: dict, gpu: dict) -> list:
        """The run's outputs: those in ``gpu`` as they are, the others converted out of ``raw``
        (the mapped readback buffer) into arrays of their own: one copy of their bytes, and no
        view of the mapped memory outlives this call (unmapping frees it)."""
        out = []
        for o in wanted:
            if o["name"] in gpu:
                out.append(gpu[o["name"]])
                continue
            shape = shapes[o["name"]]
            data = np.frombuffer(
                raw, dtype=_STORAGE[o["storage"]], count=math.prod(shape), offset=self._readback_at[o["name"]]
            )
            out.append(_from_storage(data, o, shape))
        return out

    @staticmethod
    def _read_mapped(readable, convert: Callable[[memoryview], Any] | None = None) -> Any:
        """The bytes of a MAP_READ buffer, after the work writing it is submitted; or, with
        ``convert``, what it makes of the mapped memory itself (a copy of its own: the memory is
        unmapped after it, one copy of the bytes rather than two)."""
        readable.map_sync(1)  # wgpu.MapMode.READ
        try:
            return convert(readable.read_mapped(copy=False)) if convert else readable.read_mapped(copy=True)
        finally:
            readable.unmap()

    def symbol_values(self, input_feed: Mapping[str, Any]) -> dict[str, int]:
        """The symbols' values that a run of ``input_feed`` binds (checked as ``run`` checks
        them); empty for a static artifact."""
        staged = [(io, self._staged(io, input_feed[io["name"]])) for io in self._check_feed(input_feed)
                  if io["name"] in input_feed]  # fmt: skip
        return dict(zip(self.symbols, self._bind(staged)))

    def _bind(self, staged: list[tuple[dict, np.ndarray]]) -> tuple[int, ...]:
        """The symbols' values, in manifest order, from the fed inputs' shapes: a dim that is a
        bare symbol binds it (the first such dim; each in its range), then every symbolic dim
        must equal its value."""
        if not self.symbols:
            return ()
        env: dict[str, int] = {}
        for io, data in staged:
            for i, d in enumerate(io["shape"]):
                if isinstance(d, str):
                    n, (lo, hi) = data.shape[i], self.symbols[d]
                    if not lo <= n <= hi:
                        raise InputError(
                            f"input {io['name']!r} dim {i} ({d}) is {n}, outside {d}'s range {lo}..{hi}"
                        )
                    env.setdefault(d, n)
        values = tuple(env[k] for k in self.symbols)
        for io, data in staged:
            for i, d in enumerate(io["shape"]):
                if isinstance(d, (str, list)) and data.shape[i] != (want := _value(d, env)):
                    raise InputError(
                        f"input {io['name']!r} dim {i} ({mf.show_dim(d)}) must be {want} for "
                        f"{_show_env(self.symbols, values)}, got {data.shape[i]}"
                    )
        return values

    def _plan(self, values: tuple[int, ...]) -> tuple[list, dict[str, list[int]]]:
        """The dispatches (zero grids skipped) and the inputs' and outputs' shapes at these
        symbol values, evaluated once per distinct values (cached)."""
        plan = self._plans.get(values)
        if plan is not None:
            return plan
        env = dict(zip(self.symbols, values))
        at = _show_env(self.symbols, values)
        per_dim = self.device.limits["max-compute-workgroups-per-dimension"]
        steps = []
        for k, (pipeline, group, grid) in enumerate(self.steps):
            g = tuple(_value(x, env) for x in grid)
            if not all(0 <= x <= per_dim for x in g):
                raise InputError(f"dispatch {k} grid {list(g)} at {at} is beyond the artifact's bounds")
            if all(g):
                steps.append((pipeline, group, g, k))
        shapes = {}
        # a slot holds its tensor at the bound; a shape not monotone in the symbols may not fit
        for o in self.manifest["inputs"] + self._outputs:
            shapes[o["name"]] = shape = [_value(d, env) for d in o["shape"]]
            if min(shape, default=0) < 0 or mf.stored_nbytes(o["storage"], math.prod(shape)) > o["size"]:
                raise InputError(
                    f"input/output {o['name']!r} shape {mf.show_shape(shape)} at {at} is beyond the artifact's bounds"
                )
        if len(self._plans) >= 256:  # distinct values seen: keep the cache bounded
            self._plans.clear()
        self._plans[values] = (steps, shapes)
        return steps, shapes

    def _select(self, names: list[str] | None) -> list[dict]:
        if names is None:
            return self._outputs
        by_name = {o["name"]: o for o in self._outputs}
        bad = [n for n in names if n not in by_name]
        if bad:
            raise InputError(f"unknown output names {bad}; the model's outputs are {list(by_name)}")
        return [by_name[n] for n in names]

    def _check_feed(self, feed: Mapping[str, Any]) -> list[dict]:
        unknown = [n for n in feed if n not in self._inputs]
        missing = [n for n, io in self._inputs.items() if n not in feed and "default" not in io]
        if unknown or missing:
            expected = ", ".join(
                f"{n} ({io['dtype']}{mf.show_shape(io['shape'])}{', optional' if 'default' in io else ''})"
                for n, io in self._inputs.items()
            )
            what = f"unknown input names {unknown}" if unknown else f"missing inputs {missing}"
            raise InputError(f"{what}; the model expects: {expected}")
        return list(self._inputs.values())

    def _staged(self, io: dict, value: Any) -> np.ndarray | GpuTensor:
        """An input as the run writes it: its storage-form array, or a GpuTensor checked to
        fit the input (a plain wgpu buffer is taken at the input's fixed shape)."""
        import wgpu

        if isinstance(value, wgpu.GPUBuffer):
            if any(not isinstance(d, int) for d in io["shape"]):
                raise InputError(
                    f"input {io['name']!r} has dims chosen at run time; feed its buffer as "
                    "GpuTensor(buffer, shape, dtype, storage, device) so the run knows its shape"
                )
            value = GpuTensor(value, tuple(io["shape"]), io["dtype"], io["storage"], self.device)
        if not isinstance(value, GpuTensor):
            return self._to_storage(io, value)
        if value.buffer is None:
            raise InputError(f"input {io['name']!r} is a released GpuTensor")
        if value.dtype != io["dtype"] or value.storage != io["storage"]:
            raise InputError(
                f"input {io['name']!r} must be {io['dtype']} (stored as {io['storage']}), got a GpuTensor of "
                f"{value.dtype} ({value.storage})"
                + (
                    "; f16 storage (--precision fp16) differs between the two artifacts: feed its .numpy() "
                    "instead, or compile both at one precision"
                    if "f16" in (value.storage, io["storage"]) and value.dtype == io["dtype"]
                    else ""
                )
            )
        _check_shape(io, value.shape)
        if (
            value.offset % 4
            or value.offset + value.nbytes > value.buffer.size
            or not (value.buffer.usage & wgpu.BufferUsage.COPY_SRC)
        ):
            raise InputError(
                f"input {io['name']!r}: its buffer must hold {value.nbytes} bytes from offset {value.offset} "
                "(a multiple of 4) and have COPY_SRC usage"
            )
        return value

    def _gpu_output(self, o: dict, shape: list[int], given: Any) -> GpuTensor:
        import wgpu

        nbytes = mf.stored_nbytes(o["storage"], math.prod(shape))
        if given is None:
            usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
            buf = self.device.create_buffer(size=max(nbytes, 4), usage=usage, label=o["name"])
            return GpuTensor(buf, tuple(shape), o["dtype"], o["storage"], self.device, owned=True)
        if isinstance(given, GpuTensor):
            buf, offset = given.buffer, given.offset
        else:
            buf, offset = given, 0
        if offset % 4 or offset + nbytes > buf.size or not (buf.usage & wgpu.BufferUsage.COPY_DST):
            raise InputError(
                f"output_buffers[{o['name']!r}] must hold {nbytes} bytes from offset {offset} (a multiple of 4) "
                "and have COPY_DST usage"
            )
        return GpuTensor(buf, tuple(shape), o["dtype"], o["storage"], self.device, offset)

    @staticmethod
    def _to_storage(io: dict, value: Any) -> np.ndarray:
        arr = np.asarray(value)
        if arr.dtype != numpy_dtype(io["dtype"]):
            raise InputError(f"input {io['name']!r} must be {io['dtype']}, got {arr.dtype}")
        _check_shape(io, arr.shape)
        st = _STORAGE[io["storage"]]
        if arr.dtype.kind in "iu" and arr.dtype.itemsize > 4 and arr.size:
            info = np.iinfo(st)
            if arr.min() < info.min or arr.max() > info.max:
                raise InputError(
                    f"input {io['name']!r} has values outside the {st} range the GPU computes in"
                )
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, as documented
            return np.ascontiguousarray(arr, dtype=st)


# dtypes numpy lacks, from ml_dtypes (onnx's own dependency). Looked up first: numpy would
# read "int4" and "int2" as its own aliases of int32 and int16.
_ML_DTYPES = (
    "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
    "float8_e8m0fnu", "float4_e2m1fn", "int4", "uint4", "int2", "uint2",
)  # fmt: skip


def numpy_dtype(name: str) -> np.dtype:
    """numpy's dtype for a manifest dtype name."""
    if name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def _check_shape(io: dict, shape) -> None:
    """A fed shape has the input's rank and its fixed dims (symbolic ones are bound later)."""
    want = io["shape"]
    if len(shape) != len(want) or any(isinstance(d, int) and n != d for n, d in zip(shape, want)):
        raise InputError(f"input {io['name']!r} must have shape {mf.show_shape(want)}, got {list(shape)}")


def _show_env(names: Iterable[str], values: Iterable[int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(names, values))


def _value(e: Any, env: Mapping[str, int]) -> int:
    """An expression's value; -1 (which every check refuses) for a zero divisor."""
    try:
        return mf.evaluate(e, env)
    except ZeroDivisionError:
        return -1


def _shown(shape: list) -> list[int | str]:
    return [d if isinstance(d, int) else mf.show_dim(d) for d in shape]


def _from_storage(data: np.ndarray, io: dict, shape: list[int]) -> np.ndarray:
    # float16/bfloat16/float64 were computed in f32: rounded here (to nearest even) to the declared
    # type; always a copy (``data`` may be a view of mapped memory)
    return data.astype(numpy_dtype(io["dtype"]), copy=True).reshape(shape)

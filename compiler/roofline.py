"""The adapter's roofline: its peak f32 multiply-add rate and copy bandwidth, measured with two
WGSL microkernels (GPU timestamps), so a benchmark or a kernel's profile reads as a fraction of
what the device can do (`onnx2wgsl bench --roofline`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# FMA: each invocation runs CHAINS independent vec4 multiply-add chains, UNROLL steps per loop
# iteration, ITERS iterations (well within a driver's per-invocation loop budget).
WG, CHAINS, UNROLL, ITERS = 256, 4, 16, 256
_FMA = f"""
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {{
  let s = f32(id.x) * 1e-9;
{"".join(f"  var a{c} = vec4<f32>(s + {c}.0, s, s, s);" + chr(10) for c in range(CHAINS))}  let m = vec4<f32>(0.999999, 0.999998, 0.999997, 0.999996);
  let k = vec4<f32>(1e-7, 2e-7, 3e-7, 4e-7);
  for (var i = 0u; i < {ITERS}u; i++) {{
{"".join(f"    a{c} = fma(a{c}, m, k);" + chr(10) for _ in range(UNROLL) for c in range(CHAINS))}  }}
  out[id.x] = {" + ".join(f"a{c}" for c in range(CHAINS))};
}}
"""
_COPY = """
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * 65535u + wid.x) * 256u + lid;
  if (i < arrayLength(&dst)) {
    dst[i] = src[i];
  }
}
"""


@dataclass
class Roofline:
    device: str
    gflops: float  # f32 operations per second (a multiply-add counts two), in G
    gbps: float  # bytes read plus bytes written per second, in G

    def summary(self) -> str:
        return (
            f"roofline of {self.device}: {self.gflops:.1f} GFLOP/s f32 (multiply-add), "
            f"{self.gbps:.1f} GB/s copy (read + write); ridge at {self.gflops / self.gbps:.1f} FLOP/byte"
        )


def measure(device=None, repeats: int = 5, copy_mib: int = 64) -> Roofline:
    """The best of ``repeats`` timings of each microkernel on ``device`` (a new one with
    timestamp-query by default)."""
    import wgpu

    from onnx2wgsl.runtime.session import request_device

    dev = device or request_device({}, ["timestamp-query"])
    groups = 256  # FMA invocations: enough workgroups to fill every core
    fma_ops = groups * WG * CHAINS * UNROLL * ITERS * 4 * 2
    out = dev.create_buffer(size=groups * WG * 16, usage=wgpu.BufferUsage.STORAGE)
    n = copy_mib * 2**20
    src = dev.create_buffer(size=n, usage=wgpu.BufferUsage.STORAGE)
    dst = dev.create_buffer(size=n, usage=wgpu.BufferUsage.STORAGE)
    vecs = n // 16
    copy_groups = -(-vecs // 256)
    gy = -(-copy_groups // 65535)
    gx = -(-copy_groups // gy)
    runs = [
        (_FMA, [out], (groups, 1, 1)),
        (_COPY, [src, dst], (gx, gy, 1)),
    ]
    best = []
    qs = dev.create_query_set(type=wgpu.QueryType.timestamp, count=2)
    resolved = dev.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
    read = dev.create_buffer(size=16, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
    for code, buffers, grid in runs:
        pipeline = dev.create_compute_pipeline(
            layout="auto", compute={"module": dev.create_shader_module(code=code), "entry_point": "main"}
        )
        group = dev.create_bind_group(
            layout=pipeline.get_bind_group_layout(0),
            entries=[
                {"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}}
                for i, b in enumerate(buffers)
            ],
        )
        times = []
        for _ in range(repeats + 1):  # the first run warms up
            enc = dev.create_command_encoder()
            p = enc.begin_compute_pass(
                timestamp_writes={
                    "query_set": qs,
                    "beginning_of_pass_write_index": 0,
                    "end_of_pass_write_index": 1,
                }
            )
            p.set_pipeline(pipeline)
            p.set_bind_group(0, group)
            p.dispatch_workgroups(*grid)
            p.end()
            enc.resolve_query_set(qs, 0, 2, resolved, 0)
            enc.copy_buffer_to_buffer(resolved, 0, read, 0, 16)
            dev.queue.submit([enc.finish()])
            read.map_sync(1)
            t = np.frombuffer(read.read_mapped(copy=True), dtype=np.uint64)
            read.unmap()
            times.append(max(int(t[1]) - int(t[0]), 1) * 1e-9)
        best.append(min(times[1:]))
    for b in (out, src, dst, resolved, read):
        b.destroy()
    try:
        name = dev.adapter.info["device"]
    except Exception:
        name = "WebGPU device"
    return Roofline(name, fma_ops / best[0] / 1e9, 2 * n / best[1] / 1e9)

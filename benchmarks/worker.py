"""One engine, one model, one fresh process: benchmarks/run.py starts this script once per
measurement, with the python of the engine's environment (the project's venv for onnx2wgsl
and ort-cpu, .cache/bench/ort-webgpu for ort-webgpu), so it imports only numpy and the engine.

    worker.py compile MODEL.onnx ARTIFACT_DIR RESULT.json [--dims JSON] [--precision fp16] [--tune]
    worker.py run ENGINE MODEL_OR_ARTIFACT FEEDS.npz RESULT.json [--outputs OUT.npz]
              [--warmup N] [--iters N]
    worker.py roofline RESULT.json       (the adapter's peak f32 multiply-add rate and copy rate)

ENGINE ``numpy`` runs a model of one MatMul by a constant (the matmul microbenchmark) as numpy's
``a @ b``, its BLAS sgemm on the same CPU cores: what a CPU library reaches on this machine.

Times are wall clock (time.perf_counter) around the engine's own calls, after its imports:
  compile   onnx2wgsl.compile(model, dir, dims=..., precision=...) (with the artifact's weight
            and arena bytes)
  first     load (session creation: weights, shaders, pipelines) + the first inference
  warm      --iters inferences after --warmup untimed ones
The result is a JSON file; outputs of the first run go to OUT.npz for run.py to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _compile(args) -> dict:
    import onnx2wgsl

    dims = json.loads(args.dims) if args.dims else None
    subgroups = args.subgroups == "on" or (args.subgroups == "auto" and _adapter_has_subgroups())
    target = args.limits if args.limits != "auto" else "cpu" if _adapter_is_cpu() else "webgpu"
    t0 = time.perf_counter()
    report = onnx2wgsl.compile(
        args.model, args.artifact, dims=dims, force=True, precision=args.precision, subgroups=subgroups,
        tune=args.tune, target=target,
    )  # fmt: skip
    return {
        "compile_s": time.perf_counter() - t0,
        "subgroups": subgroups,
        "target": target,
        "weight_bytes": report.weight_file_bytes,
        "arena_bytes": report.arena_bytes,
    }


def _adapter_has_subgroups() -> bool:
    """The adapter offers subgroup operations (wgpu-native names the feature "subgroup")."""
    from onnx2wgsl.runtime.manifest import SUBGROUPS_FEATURE
    from onnx2wgsl.runtime.session import _standard, request_adapter

    return SUBGROUPS_FEATURE in _standard(request_adapter("high-performance").features)


def _adapter_is_cpu() -> bool:
    """The adapter is a CPU's (lavapipe, SwiftShader): compiled for the cpu target."""
    from onnx2wgsl.compiler.target import is_cpu_adapter
    from onnx2wgsl.runtime.session import request_adapter

    return is_cpu_adapter(request_adapter("high-performance"))


def _roofline(args) -> dict:
    from onnx2wgsl.compiler.roofline import measure

    r = measure()
    return {"device": r.device, "gflops": r.gflops, "gbps": r.gbps}


def _session(engine: str, path: str):
    """(run(feeds) -> list of arrays, facts about the session) for an engine."""
    if engine == "numpy":
        import numpy as np
        import onnx
        from onnx import numpy_helper

        g = onnx.load(path).graph
        (node,) = g.node
        if node.op_type != "MatMul" or len(g.initializer) != 1 or node.input[1] != g.initializer[0].name:
            raise SystemExit("worker: the numpy engine runs a model of one MatMul by a constant")
        b = numpy_helper.to_array(g.initializer[0])
        config = np.show_config(mode="dicts") or {}
        blas = config.get("Build Dependencies", {}).get("blas", {})
        facts = {
            "outputs": [g.output[0].name],
            "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
        }
        return (lambda feeds: [feeds[node.input[0]] @ b]), facts
    if engine.startswith("onnx2wgsl"):
        import onnx2wgsl

        sess = onnx2wgsl.load(path)
        names = [o.name for o in sess.get_outputs()]
        info = sess.device.adapter.info
        facts = {
            "adapter": f"{info['device']} / {info['backend_type']} / {info.get('description', '')}",
            "outputs": names,
        }
        return (lambda feeds: sess.run(None, feeds)), facts
    import onnxruntime as ort

    provider = {"ort-webgpu": "WebGpuExecutionProvider", "ort-cpu": "CPUExecutionProvider"}[engine]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=[provider])
    got = sess.get_providers()
    if got[0] != provider:
        # onnxruntime falls back to the CPU silently when Dawn finds no adapter it accepts
        raise SystemExit(f"worker: {engine} asked for {provider} but the session runs on {got}")
    facts = {
        "providers": got,
        "ort_version": ort.__version__,
        "outputs": [o.name for o in sess.get_outputs()],
    }
    return (lambda feeds: sess.run(None, feeds)), facts


def _run(args) -> dict:
    import numpy as np

    with np.load(args.feeds) as z:
        feeds = {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    run, facts = _session(args.engine, args.path)
    t_load = time.perf_counter() - t0
    outs = run(feeds)
    t_first = time.perf_counter() - t0
    for _ in range(args.warmup):
        run(feeds)
    warm = []
    for _ in range(args.iters):
        t = time.perf_counter()
        run(feeds)
        warm.append(time.perf_counter() - t)
    if args.outputs:
        np.savez(args.outputs, **{n: np.asarray(o) for n, o in zip(facts["outputs"], outs)})
    return {"load_s": t_load, "first_s": t_first, "warm_s": warm, **facts}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile")
    c.add_argument("model")
    c.add_argument("artifact")
    c.add_argument("result")
    c.add_argument("--dims", default=None, help="JSON object of dim values")
    c.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    c.add_argument("--limits", default="auto", choices=["auto", "webgpu", "cpu"],
                   help="the compile target: auto = cpu for a CPU adapter, else webgpu")  # fmt: skip
    c.add_argument("--subgroups", default="auto", choices=["auto", "on", "off"],
                   help="compile with --subgroups: auto = when the adapter offers them (default)")  # fmt: skip
    c.add_argument(
        "--tune", action="store_true", help="compile with --tune (kernel forms measured on the device)"
    )
    c.set_defaults(fn=_compile)
    r = sub.add_parser("run")
    r.add_argument("engine", choices=["onnx2wgsl", "onnx2wgsl-fp16", "ort-webgpu", "ort-cpu", "numpy"])
    r.add_argument("path", help="ONNX model (ort-*) or artifact directory (onnx2wgsl)")
    r.add_argument("feeds")
    r.add_argument("result")
    r.add_argument("--outputs", default=None)
    r.add_argument("--warmup", type=int, default=1)
    r.add_argument("--iters", type=int, default=5)
    r.set_defaults(fn=_run)
    f = sub.add_parser("roofline")
    f.add_argument("result")
    f.set_defaults(fn=_roofline)
    args = p.parse_args(argv)
    res = args.fn(args)
    with open(args.result, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

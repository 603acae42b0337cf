"""Decode time per token at two positions of the sequence, onnx2wgsl side by side with
onnxruntime's WebGPU provider (IO binding: the KV cache stays on the GPU) and its CPU provider.

    bash benchmarks/setup.sh    # Mesa 25 lavapipe and the peer's venv with onnxruntime's WebGPU provider
    .venv/bin/python tools/bench_decode.py [--model tests/models/llama_tiny_kv.onnx] [--max-length 512]
    .venv/bin/python tools/bench_decode.py --model GENAI.onnx --dim kv_cache_dim=16  # onnxruntime-genai's form

Each engine runs in a process of its own, on Mesa 25's lavapipe (VK_ICD_FILENAMES) when
.cache/bench has it. For each position p: a prompt of p tokens, then --steps greedy tokens one
at a time, each timed (the median is shown). onnx2wgsl reads back the chosen id (4 bytes);
onnxruntime reads back the last position's logits and picks on the host, as a Python loop over
it does. onnx2wgsl writes each step's keys and values into a cache of the max length in place
and its attention walks the valid keys alone (the manifest's ``shared`` pairs), so the growth
from the first position to the second is the attention's longer walk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
PEER_PY = CACHE / "ort-webgpu" / "bin" / "python"
ICD = CACHE / "mesa25" / "lvp_icd.json"


def prompt(p: int, vocab: int = 1000) -> list[int]:
    return [(7 * i + 3) % vocab for i in range(p)]


def vocab_of(model: str) -> int:
    """The logits' vocabulary size (the prompt's ids stay below it)."""
    import onnx

    m = onnx.load(model, load_external_data=False)
    logits = next(o for o in m.graph.output if o.name == "logits")
    return logits.type.tensor_type.shape.dim[-1].dim_value or 1000


def onnx2wgsl_worker(model: str, max_length: int, positions: list[int], steps: int, dims: dict) -> dict:
    import onnx2wgsl
    from onnx2wgsl.compiler import compile_model
    from onnx2wgsl.compiler.generation import Generation

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        compile_model(model, tmp, generation=Generation(max_length, max_prompt=64), dims=dims, force=True)
        gen = onnx2wgsl.Generator(tmp)
        for p in positions:
            gen.reset()
            it = gen.generate(prompt(p, vocab_of(model)), max_new_tokens=steps + 1)
            ids = [next(it)]  # the prompt
            times = []
            t = time.perf_counter()
            for token in it:
                times.append(time.perf_counter() - t)
                ids.append(token)
                t = time.perf_counter()
            out[p] = float(np.median(times)) * 1000
            out[f"ids{p}"] = ids
        out["device"] = gen.session.device.adapter.info["device"]
    return out


def ort_worker(model: str, provider: str, positions: list[int], steps: int, dims: dict) -> dict:
    """onnxruntime's loop with IO binding: each present stays where the provider made it and is
    bound as the next step's past; the logits come to the host."""
    import onnxruntime as ort

    name = {"webgpu": "WebGpuExecutionProvider", "cpu": "CPUExecutionProvider"}[provider]
    s = ort.InferenceSession(model, providers=[name])
    ins = {i.name: i for i in s.get_inputs()}
    pasts = [n for n in ins if n.startswith("past_key_values.")]
    logits = next(o for o in s.get_outputs() if o.name == "logits")
    vocab = logits.shape[-1] if isinstance(logits.shape[-1], int) else 1000
    out = {}
    # two bindings in turn: a step's outputs (the next past) live until the binding that made
    # them is cleared, two steps on
    bindings = [s.io_binding(), s.io_binding()]
    for p in positions:
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
        state = {
            n: np.zeros(
                (1, ins[n].shape[1], 0, dims.get(ins[n].shape[3], ins[n].shape[3])), types[ins[n].type]
            )
            for n in pasts
        }
        ids, total, times, chosen = np.array([prompt(p, vocab)], np.int64), 0, [], []
        for step in range(steps + 1):
            t = time.perf_counter()
            io = bindings[step % 2]
            io.clear_binding_inputs()
            io.clear_binding_outputs()
            n = ids.shape[1]
            io.bind_cpu_input("input_ids", ids)
            io.bind_cpu_input("attention_mask", np.ones((1, total + n), np.int64))
            if "position_ids" in ins:
                io.bind_cpu_input("position_ids", np.arange(total, total + n)[None])
            for k, v in state.items():
                if isinstance(v, np.ndarray):
                    io.bind_cpu_input(k, v)
                else:
                    io.bind_ortvalue_input(k, v)
            io.bind_output("logits", "cpu")
            for k in pasts:
                io.bind_output(
                    k.replace("past_key_values", "present"), provider if provider != "cpu" else "cpu"
                )
            s.run_with_iobinding(io)
            values = io.get_outputs()
            logits = values[0].numpy()
            token = int(np.argmax(logits[0, -1]))
            chosen.append(token)
            names = [o.name for o in s.get_outputs()]
            state = {k: values[names.index(k.replace("past_key_values", "present"))] for k in pasts}
            if step:
                times.append(time.perf_counter() - t)
            total += n
            ids = np.array([[token]], np.int64)
        out[p] = float(np.median(times)) * 1000
        out[f"ids{p}"] = chosen
    _KEEP.append((s, bindings, state))  # (see main: the worker exits without tearing them down)
    return out


_KEEP: list = []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "tests" / "models" / "llama_tiny_kv.onnx"))
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--at", type=int, nargs="+", default=[16, 480], metavar="POSITION")
    ap.add_argument("--steps", type=int, default=16, help="timed tokens per position (default 16)")
    ap.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=N",
        help="bind a dim the model names (an onnxruntime-genai model's kv_cache_dim=16)",
    )
    ap.add_argument("--worker", choices=["onnx2wgsl", "ort-webgpu", "ort-cpu"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    dims = {k: int(v) for k, v in (d.split("=", 1) for d in args.dim)}
    if args.worker:
        if args.worker == "onnx2wgsl":
            res = onnx2wgsl_worker(args.model, args.max_length, args.at, args.steps, dims)
        else:
            res = ort_worker(args.model, args.worker.split("-")[1], args.at, args.steps, dims)
        print(json.dumps(res), flush=True)
        os._exit(0)  # onnxruntime 1.27's WebGPU provider crashes when torn down at exit
    env = dict(os.environ)
    adapter = "the system's lavapipe"
    if ICD.exists():
        env["VK_ICD_FILENAMES"] = str(ICD)
        adapter = "Mesa 25 lavapipe"
    engines = [("onnx2wgsl", sys.executable), ("ort-cpu", sys.executable)]
    if PEER_PY.exists() and ICD.exists():
        engines.insert(1, ("ort-webgpu", str(PEER_PY)))
    else:
        print("ort-webgpu skipped: run `bash benchmarks/setup.sh` (Mesa 25 and the peer's venv)")
    results = {}
    for engine, python in engines:
        cmd = [python, __file__, "--worker", engine, "--model", args.model, "--max-length", str(args.max_length),
               "--steps", str(args.steps), "--at", *map(str, args.at), *(f"--dim={d}" for d in args.dim)]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode:
            print(
                f"{engine} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
            )
            continue
        results[engine] = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"decode ms/token, {Path(args.model).name}, max length {args.max_length}, on {adapter} "
          f"(median of {args.steps} tokens)")  # fmt: skip
    print(f"  {'engine':12s}" + "".join(f" {'at ' + str(p):>10s}" for p in args.at) + "   growth")
    first = next(iter(results.values()), {})
    status = 0
    for engine, res in results.items():
        row = [res[str(p)] for p in args.at]
        same = all(res[f"ids{p}"] == first[f"ids{p}"] for p in args.at)  # the greedy ids agree
        status |= not same
        print(f"  {engine:12s}" + "".join(f" {x:10.2f}" for x in row) + f"   x{row[-1] / row[0]:.2f}"
              + ("" if same else "   MISMATCH (greedy ids differ)"))  # fmt: skip
    mine = results.get("onnx2wgsl")
    for peer in ("ort-webgpu", "ort-cpu"):
        if mine and peer in results:
            ratios = ", ".join(f"at {p}: {results[peer][str(p)] / mine[str(p)]:.2f}" for p in args.at)
            print(f"  {peer} / onnx2wgsl time: {ratios}")
    return status


if __name__ == "__main__":
    sys.exit(main())

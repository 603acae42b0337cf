"""GPU time of the kernel forms a GPU target picks, against what the cpu target (or another lane
count) makes of the same model: the figures docs/internals.md ("Lanes to fill") quotes.

    python benchmarks/gpu_forms.py [--only attention_chunks,attention_gated,matmuls] [--iters N]

- attention_chunks: benchmarks/run.py's attn_decode4096 (32 heads of 128 over 4096 cached keys)
  compiled for the cpu target (no lanes form) and for GPU targets of 32768 down to 2048 lanes,
  whose lanes form takes 32 to 512 keys a chunk (16384, the default, takes 64);
- attention_gated: the same attention with the query's positions kept symbolic (1..64), one
  artifact for a prompt and the decode steps, run at 1 and 16 positions, for the default target
  (the lanes form for short runs) and the cpu one (the flash form for every run);
- matmuls: MatMuls by constant weights of 1024³, 512 x 768 x 3072, 128 x 4096 x 4096 and 4096³.

Each artifact is compiled with --subgroups where the adapter has them and timed with
`onnx2wgsl bench --profile` (the median GPU time over the runs, summed over the dispatches).
Run it on the GPU being measured (with benchmarks/offline.sh's wheels on a machine without a
registry); on lavapipe it runs too, slowly.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (the benchmarks' model builders)

from onnx2wgsl.compiler import compile_model  # noqa: E402
from onnx2wgsl.compiler.target import WEBGPU_DEFAULT_LIMITS, Target  # noqa: E402


def gpu_ms(artifact: Path, iters: int, dims: dict[str, int] | None = None) -> float:
    """The GPU total of `onnx2wgsl bench --profile`, in ms."""
    cmd = [sys.executable, "-m", "onnx2wgsl", "bench", str(artifact), "--iters", str(iters), "--profile"]
    for k, v in (dims or {}).items():
        cmd += ["--dim", f"{k}={v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()).stdout
    return float(re.search(r"GPU total ([0-9.]+) ms", out).group(1))


def subgroups() -> bool:
    from onnx2wgsl.runtime.manifest import SUBGROUPS_FEATURE
    from onnx2wgsl.runtime.session import _standard, request_adapter

    return SUBGROUPS_FEATURE in _standard(request_adapter("high-performance").features)


def attention_chunks(work: Path, iters: int, sg: bool) -> dict:
    model = bench._attention_decode()
    out = {}
    for lanes in (None, 32768, 16384, 8192, 4096, 2048):
        target = "cpu" if lanes is None else Target(f"lanes{lanes}", dict(WEBGPU_DEFAULT_LIMITS), lanes=lanes)
        d = work / f"attn_{lanes or 'cpu'}"
        compile_model(model, d, target=target, subgroups=sg)
        text = "".join(f.read_text() for f in (d / "shaders").iterdir())
        chunk = re.search(r"on a GPU: one workgroup per query row and chunk of (\d+)", text)
        out[f"{'cpu target' if lanes is None else f'{lanes} lanes'}"] = {
            "keys a chunk": int(chunk.group(1)) if chunk else None,
            "GPU ms": gpu_ms(d, iters),
        }
    return out


def attention_gated(work: Path, iters: int, sg: bool) -> dict:
    m = bench._attention_decode()
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[1].dim_param = "S"
    out = {}
    for target in ("webgpu", "cpu"):
        d = work / f"gated_{target}"
        compile_model(m, d, dims={"S": (1, 64)}, target=target, subgroups=sg)
        for s in (1, 16):
            out[f"{target} target, {s} positions"] = {"GPU ms": gpu_ms(d, iters, {"S": s})}
    return out


def matmuls(work: Path, iters: int, sg: bool) -> dict:
    out = {}
    for m, k, n in ((1024, 1024, 1024), (512, 768, 3072), (128, 4096, 4096), (4096, 4096, 4096)):
        name = f"{m}x{k}x{n}"
        d = work / f"mm_{name}"
        compile_model(bench._const_matmul(name, m, k, n), d, subgroups=sg)
        ms = gpu_ms(d, iters)
        out[name] = {"GPU ms": ms, "TFLOP/s": round(2 * m * k * n / ms / 1e9, 2)}
    return out


CASES = {"attention_chunks": attention_chunks, "attention_gated": attention_gated, "matmuls": matmuls}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(CASES), help=f"comma-separated of {', '.join(CASES)}")
    p.add_argument("--iters", type=int, default=30)
    args = p.parse_args(argv)
    sg = subgroups()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            res = CASES[name](Path(tmp), args.iters, sg)
            print(name, json.dumps(res, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

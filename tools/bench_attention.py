"""Attention's two kernels side by side: the flash form (key tiles in workgroup memory, one
workgroup per block of rows sharing keys) and the per-row kernel (one invocation per query row),
on one Attention op at the sizes of real encoders and prefills.

    .venv/bin/python tools/bench_attention.py [CASE ...] [--iters N]

Runs on Mesa 25's lavapipe when .cache/bench has it (bash benchmarks/setup.sh), else on the
default adapter. Each case is compiled twice (the flash form allowed, then not), both outputs
are compared, and the median wall time of --iters runs of each is printed with their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESA25 = ROOT / ".cache" / "bench" / "mesa25"

CASES = {
    "bert_base_s128": dict(B=1, Hq=12, Hkv=12, Sq=128, Skv=128, D=64, Dv=64),
    "bert_base_s384": dict(B=1, Hq=12, Hkv=12, Sq=384, Skv=384, D=64, Dv=64),
    "whisper_encoder_1500": dict(B=1, Hq=6, Hkv=6, Sq=1500, Skv=1500, D=64, Dv=64),
    "llama_gqa_prefill_256": dict(B=1, Hq=32, Hkv=8, Sq=256, Skv=256, D=64, Dv=64, is_causal=1),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="*", help=f"default all: {', '.join(CASES)}")
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    args.cases = args.cases or list(CASES)
    if (MESA25 / "lvp_icd.json").exists() and "VK_ICD_FILENAMES" not in os.environ:
        os.environ["VK_ICD_FILENAMES"] = str(MESA25 / "lvp_icd.json")
        lib = str(MESA25 / "usr" / "lib" / "x86_64-linux-gnu")
        os.environ["LD_LIBRARY_PATH"] = lib + ":" + os.environ.get("LD_LIBRARY_PATH", "")
        os.execv(sys.executable, [sys.executable, *sys.argv])  # the loader reads LD_LIBRARY_PATH at start
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from test_ops_nn import _attention_case

    import onnx2wgsl
    from onnx2wgsl.compiler.lowering import attention

    tile_rows = attention.TILE_MIN_ROWS
    print(f"{'case':24} {'flash ms':>9} {'per-row ms':>11} {'ratio':>6}  max |diff|")
    for name in args.cases:
        model, feeds = _attention_case(**CASES[name])
        sessions, outs, times = {}, {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for form in ("flash", "per-row"):
                attention.TILE_MIN_ROWS = tile_rows if form == "flash" else 1 << 62
                onnx2wgsl.compile(model, f"{tmp}/{form}")
                sessions[form] = onnx2wgsl.load(f"{tmp}/{form}")
                outs[form] = sessions[form].run(None, feeds)[0]
                times[form] = []
            for _ in range(args.iters):  # the forms take turns
                for form, s in sessions.items():
                    t = time.perf_counter()
                    s.run(None, feeds)
                    times[form].append(time.perf_counter() - t)
            for s in sessions.values():
                s.release()
        flash, rows = (statistics.median(times[f]) * 1000 for f in ("flash", "per-row"))
        diff = float(np.abs(outs["flash"] - outs["per-row"]).max())
        print(f"{name:24} {flash:9.1f} {rows:11.1f} {flash / rows:6.2f}  {diff:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

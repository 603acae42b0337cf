"""fp16 storage against fp32, model by model: weights.bin and arena bytes of both compiles, and
each output's error against onnxruntime (CPU, fp32) relative to that output's largest magnitude.

    python tools/precision_report.py resnet50 squeezenet bert_tiny_torchscript
    python tools/precision_report.py --all              # the nine light CNNs and the transformers
    python tools/precision_report.py bert_tiny_torchscript --dims batch=1..4 --dims seq=1..128

Light CNNs run with the tests' random weights (tests/light_models.py: randomized) on a random
image and also report whether the top-1 class of each output is unchanged; transformers
(tests/models/) run at batch 2, seq 17 (seq where the model has one); ``--dims`` compiles such a
dim symbolic over a range instead (the arena is then planned at the bounds), still run at 2 x 17.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from light_models import LIGHT_MODELS, random_input, randomized  # noqa: E402

TRANSFORMERS = [
    "bert_tiny_torchscript", "bert_tiny_dynamo", "bert_tiny_torchscript_opt", "bert_tiny_dynamo_opt",
    "distilbert_tiny_torchscript", "gpt2_tiny_dynamo", "llama_tiny_torchscript", "vit_tiny_torchscript",
    "whisper_encoder_tiny_torchscript",
]  # fmt: skip
DIMS = {"batch": 2, "seq": 17}


def _case(name: str, ranges: dict | None = None):
    """(model, feeds, dims)"""
    if name in LIGHT_MODELS:
        iname, x = random_input(name)
        return randomized(name), {iname: x}, {}
    from test_transformers import _feeds, bert_feeds

    model = onnx.load(ROOT / "tests" / "models" / f"{name}.onnx")
    params = {d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim}
    dims = {k: v for k, v in DIMS.items() if k in params}
    feeds = bert_feeds(dims["batch"], dims["seq"]) if name.startswith("bert") else _feeds(model, dims)
    return model, feeds, {**dims, **{k: v for k, v in (ranges or {}).items() if k in params}}


def measure(name: str, device, ranges: dict | None = None) -> str:
    import onnxruntime as ort

    import onnx2wgsl
    from onnx2wgsl.compiler import compile_model

    model, feeds, dims = _case(name, ranges)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    want = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    sizes, errors, top1 = {}, [], True
    for precision in ("fp32", "fp16"):
        with tempfile.TemporaryDirectory() as out:
            rep = compile_model(model, out, dims=dims, precision=precision).report
            got = onnx2wgsl.load(out, device=device).run(None, feeds)
        sizes[precision] = (rep.weight_file_bytes, rep.arena_bytes)
        if precision == "fp16":
            for g, w in zip(got, want):
                scale = float(np.abs(w).max()) or 1.0
                errors.append(float(np.abs(g.astype(np.float64) - w).max()) / scale)
                top1 = (
                    top1
                    and (g.reshape(-1, g.shape[-1]).argmax(-1) == w.reshape(-1, w.shape[-1]).argmax(-1)).all()
                )
    (w32, a32), (w16, a16) = sizes["fp32"], sizes["fp16"]
    top = ("yes" if top1 else "NO") if name in LIGHT_MODELS else "—"
    return (
        f"| {name} | {w32:,} | {w16:,} | {w16 / w32:.3f} | {a32:,} | {a16:,} | {a16 / a32:.3f} | "
        f"{max(errors):.2e} | {top} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--all", action="store_true", help="the nine light CNNs and the transformers")
    ap.add_argument(
        "--dims", action="append", default=[], metavar="NAME=LO..HI", help="keep a dim symbolic over a range"
    )
    args = ap.parse_args()
    ranges = {}
    for d in args.dims:
        k, _, r = d.partition("=")
        lo, _, hi = r.partition("..")
        ranges[k] = (int(lo), int(hi))
    models = LIGHT_MODELS + TRANSFORMERS if args.all else args.models
    if not models:
        ap.error("name models, or --all")
    from onnx2wgsl.runtime import request_device

    device = request_device(features=["shader-f16"])
    print(
        "| model | weights fp32 | weights fp16 | ratio | arena fp32 | arena fp16 | ratio | fp16 error / scale | top-1 same |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in models:
        print(measure(name, device, ranges), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

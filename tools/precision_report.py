"""fp16 storage against fp32, model by model: weights.bin and arena bytes of both compiles, and
each output's error against onnxruntime (CPU, fp32) relative to that output's largest magnitude.

    python tools/precision_report.py resnet50 squeezenet bert_tiny_torchscript
    python tools/precision_report.py --all --out benchmarks/PRECISION.md   # every model below
    python tools/precision_report.py bert_tiny_torchscript --dims batch=1..4 --dims seq=1..128

The bundled digits example runs on its 397 test images and light CNNs with the tests' random
weights (tests/light_models.py: randomized) on a random image; both also report whether the
top-1 class of every row is unchanged from onnxruntime's. Transformers
(tests/models/) run at batch 2, seq 17 (seq where the model has one); ``--dims`` compiles such a
dim symbolic over a range instead (the arena is then planned at the bounds), still run at 2 x 17.
Decoders with a KV cache run one step of 5 new tokens after a past of 7 random keys and values
(batch 2), all their outputs compared (logits and presents); onnxruntime-genai's int4 model is
compared with its MatMulNBits at accuracy_level 0, as the tests do (tests/test_gqa.py).
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
    "whisper_encoder_tiny_torchscript", "t5_encoder_tiny_torchscript", "phi3_tiny_dynamo", "qwen2_tiny_dynamo",
    "qwen2_tiny_torchscript", "gpt2_tiny_dynamo_opt", "vit_tiny_torchscript_opt", "bert_tiny_torchscript_q4",
    "llama_tiny_torchscript_q4",
]  # fmt: skip
DECODERS = [
    "whisper_decoder_tiny_dynamo", "gpt2_tiny_kv", "gpt2_tiny_kv_optimum", "llama_tiny_kv", "llama_genai_fp32",
    "llama_genai_int4",
]  # fmt: skip
DIMS = {"batch": 2, "seq": 17}
STEP = {"batch": 2, "seq": 5, "frames": 10, "batch_size": 2, "sequence_length": 5, "past_sequence_length": 7,
        "total_sequence_length": 12, "kv_cache_dim": 16}  # fmt: skip


def _dim(d, dims: dict) -> int:
    """A dim of an ONNX input at ``dims``: a number, a symbol, or a sum of symbols as exporters
    write them ("past_sequence_length + sequence_length")."""
    if d.dim_value or not d.dim_param:
        return d.dim_value
    return sum(dims[t.strip()] for t in d.dim_param.split("+"))


def _step_case(model: onnx.ModelProto):
    """(feeds, dims) of one decoder step: ids below 100, masks of ones, float inputs random
    (a past of STEP's length)."""
    rng = np.random.default_rng(0)
    params = {
        t.strip()
        for i in model.graph.input
        for d in i.type.tensor_type.shape.dim
        for t in d.dim_param.split("+")
    }
    dims = {k: v for k, v in STEP.items() if k in params}
    if any(n.op_type == "GroupQueryAttention" for n in model.graph.node):
        dims["batch_size"] = 1  # (onnxruntime's GroupQueryAttention continues a past one sequence at a time)
    feeds = {}
    for vi in model.graph.input:
        shape = [_dim(d, dims) for d in vi.type.tensor_type.shape.dim]
        dt = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if dt == np.int64 and "mask" in vi.name:
            feeds[vi.name] = np.ones(shape, np.int64)
        elif dt == np.int64:
            feeds[vi.name] = rng.integers(0, 100, shape).astype(np.int64)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dt)
    return feeds, dims


def _case(name: str, ranges: dict | None = None):
    """(model, feeds, dims)"""
    if name == "digits":  # the bundled example's classifier on its 397 test images
        data = np.load(ROOT / "examples" / "digits" / "digits_test.npz")
        return (
            onnx.load(ROOT / "examples" / "digits" / "model.onnx"),
            {"image": data["images"]},
            {"batch": 397},
        )
    if name in LIGHT_MODELS:
        iname, x = random_input(name)
        return randomized(name), {iname: x}, {}
    if name in DECODERS:
        model = onnx.load(ROOT / "tests" / "models" / f"{name}.onnx")
        feeds, dims = _step_case(model)
        return model, feeds, {**dims, **{k: v for k, v in (ranges or {}).items() if k in dims}}
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
    from test_gqa import accuracy_level_0

    want = ort.InferenceSession(
        accuracy_level_0(model).SerializeToString(), opts, providers=["CPUExecutionProvider"]
    ).run(None, feeds)
    sizes, errors, top1 = {}, [], True
    for precision in ("fp32", "fp16"):
        with tempfile.TemporaryDirectory() as out:
            rep = compile_model(model, out, dims=dims, precision=precision).report
            got = onnx2wgsl.load(out, device=device).run(None, feeds)
        sizes[precision] = (rep.weight_file_bytes, rep.arena_bytes)
        if precision == "fp16":
            for g, w in zip(got, want):
                w = w.astype(np.float64)
                scale = float(np.abs(w).max()) or 1.0
                errors.append(float(np.abs(g.astype(np.float64) - w).max()) / scale)
                top1 = (
                    top1
                    and (g.reshape(-1, g.shape[-1]).argmax(-1) == w.reshape(-1, w.shape[-1]).argmax(-1)).all()
                )
    (w32, a32), (w16, a16) = sizes["fp32"], sizes["fp16"]
    top = ("yes" if top1 else "NO") if name in LIGHT_MODELS or name == "digits" else "—"
    return (
        f"| {name} | {w32:,} | {w16:,} | {w16 / w32:.3f} | {a32:,} | {a16:,} | {a16 / a32:.3f} | "
        f"{max(errors):.2e} | {top} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument(
        "--all", action="store_true", help="the nine light CNNs, the transformers and the decoders"
    )
    ap.add_argument("--out", metavar="FILE.md", help="also write the table, with the machine, to FILE.md")
    ap.add_argument(
        "--dims", action="append", default=[], metavar="NAME=LO..HI", help="keep a dim symbolic over a range"
    )
    args = ap.parse_args()
    ranges = {}
    for d in args.dims:
        k, _, r = d.partition("=")
        lo, _, hi = r.partition("..")
        ranges[k] = (int(lo), int(hi))
    models = ["digits"] + LIGHT_MODELS + TRANSFORMERS + DECODERS if args.all else args.models
    if not models:
        ap.error("name models, or --all")
    from onnx2wgsl.runtime import request_device

    device = request_device(features=["shader-f16"])
    rows = [
        "| model | weights fp32 | weights fp16 | ratio | arena fp32 | arena fp16 | ratio | fp16 error / scale | top-1 same |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(rows))
    for name in models:
        rows.append(measure(name, device, ranges))
        print(rows[-1], flush=True)
    if args.out:
        Path(args.out).write_text(_page(rows, sys.argv[1:], device))
    return 0


def _page(rows: list[str], argv: list[str], device) -> str:
    """The table as a page of its own, with the command, the adapter and the versions."""
    import datetime
    import subprocess

    import onnxruntime as ort

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    info = device.adapter.info
    return "\n".join(
        [
            "# fp16 storage against fp32",
            "",
            "Written by `python tools/precision_report.py " + " ".join(argv) + "` (do not edit by hand).",
            "Bytes of weights.bin and of the arena at `--precision fp32` and `--precision fp16`, the fp16",
            "figure over the fp32 one, and the fp16 compile's largest error against onnxruntime CPU",
            "(float32; MatMulNBits at accuracy_level 0) relative to each output's largest magnitude",
            "(the bar of issue 17: 1e-2). See the tool's docstring for the inputs of each model.",
            "",
            *rows,
            "",
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- adapter: {info.get('device')} / {info.get('backend_type')} / {info.get('description')}",
            f"- onnx2wgsl: git {rev.stdout.strip() or '?'}; onnxruntime {ort.__version__}; onnx {onnx.__version__}",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())

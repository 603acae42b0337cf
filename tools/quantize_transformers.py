"""Make the 4-bit and optimizer-fused variants of the transformer test models (run by hand,
outputs committed).

onnxruntime's MatMulNBitsQuantizer turns each MatMul with a constant weight into a
com.microsoft MatMulNBits node (4-bit blocks), as people quantize models for onnxruntime's
WebGPU provider: BERT asymmetric (a packed zero point per block), the Llama symmetric (no zero
points: onnxruntime-genai's model builder quantizes LLMs so by default) with its embedding
Gather turned into GatherBlockQuantized (4-bit blocks along the hidden axis). It needs onnxruntime and onnx-ir,
which the test environment does not carry:

    python3 -m venv /tmp/quant && /tmp/quant/bin/pip install onnxruntime onnx onnx-ir
    /tmp/quant/bin/python tools/quantize_transformers.py

It also runs onnxruntime's transformer optimizer (``optimize_model``, as people prepare BERT for
onnxruntime) on the BERT, GPT-2 and ViT exports: SkipLayerNormalization, BiasGelu, FastGelu and what else
it fuses.

Writes tests/models/NAME_q4.onnx and NAME_opt.onnx beside each source model. Round-to-nearest quantization is
deterministic, so the files only change when the sources or onnxruntime's quantizer do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from onnx import version_converter
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from onnxruntime.transformers.optimizer import optimize_model

MODELS = Path(__file__).resolve().parent.parent / "tests" / "models"
# the ops each source has quantized: the Llama's token embeddings too (a Gather of a constant
# table becomes GatherBlockQuantized, quantized along the hidden axis), as people quantize LLMs
# for onnxruntime's WebGPU provider (its lm_head is a MatMul of its own, not tied to the table)
SOURCES = {  # the ops quantized, symmetric
    "llama_tiny_torchscript": (("MatMul", "Gather"), True),
    "bert_tiny_torchscript": (("MatMul",), False),
}  # (GPT-2 dynamo: Gemm, no MatMul to quantize)
OPTIMIZED = {  # model type, heads, hidden size
    "bert_tiny_torchscript": ("bert", 2, 32),
    "bert_tiny_dynamo": ("bert", 2, 32),
    "gpt2_tiny_dynamo": ("gpt2", 2, 32),
    "vit_tiny_torchscript": ("vit", 2, 32),
}
BLOCK = 32  # the tiny models' hidden size; onnxruntime's default, 128, is larger than a row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--block-size", type=int, default=BLOCK)
    args = ap.parse_args()
    for name, (ops, symmetric) in SOURCES.items():
        model = onnx.load(MODELS / f"{name}.onnx")
        if "Gather" in ops:
            # uint4 tables need opset 21; converted first, since the quantizer only relabels the
            # import (leaving opset-17 forms such as ReduceMean's axes attribute invalid)
            model = version_converter.convert_version(model, 21)
            del model.graph.value_info[:]  # (the shapes it inferred: the source carries none)
        q = MatMulNBitsQuantizer(
            model, block_size=args.block_size, is_symmetric=symmetric,
            op_types_to_quantize=ops, quant_axes=(("MatMul", 0), ("Gather", 1)),
        )  # fmt: skip
        q.process()
        out = MODELS / f"{name}_q4.onnx"
        onnx.save(q.model.model, out)
        kinds = [n.op_type for n in q.model.model.graph.node]
        print(f"{out.relative_to(MODELS.parent.parent)}: {out.stat().st_size:,} bytes, "
              f"{kinds.count('MatMulNBits')} MatMulNBits, {kinds.count('GatherBlockQuantized')} "
              f"GatherBlockQuantized, {kinds.count('MatMul')} MatMul left")  # fmt: skip
    for name, (kind, heads, hidden) in OPTIMIZED.items():
        m = optimize_model(str(MODELS / f"{name}.onnx"), model_type=kind, num_heads=heads, hidden_size=hidden)
        out = MODELS / f"{name}_opt.onnx"
        m.save_model_to_file(str(out))
        fused = sorted({n.op_type for n in m.model.graph.node if n.domain == "com.microsoft"})
        print(
            f"{out.relative_to(MODELS.parent.parent)}: {out.stat().st_size:,} bytes, fused: {', '.join(fused)}"
        )


if __name__ == "__main__":
    main()

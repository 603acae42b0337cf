"""Make the onnxruntime-genai test models in tests/models/ (run by hand, outputs committed).

Needs torch, transformers, tokenizers and onnxruntime-genai (its model builder), which the test
environment does not carry; the shared export venv has them:

    /work/export-venv/bin/python tools/export_genai.py

A tiny random Llama (fixed seed; vocab 128, hidden 64, 2 layers, 4 query heads sharing 2
key/value heads of 16) and a word-level tokenizer (the builder saves one) go through the model
builder twice, as people make LLMs for onnxruntime:

- ``llama_genai_fp32.onnx``: ``-p fp32 -e cpu``;
- ``llama_genai_int4.onnx``: ``-p int4 -e webgpu`` (float16, MatMulNBits weights).

Both attend with com.microsoft GroupQueryAttention (packed QKV, rotary caches, past_key_values.N
-> present.N, seqlens_k and total_sequence_length from the attention mask). The builder writes
external data; each model is saved back as one self-contained file.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

OUT = Path(__file__).resolve().parent.parent / "tests" / "models"
VOCAB = 128


def hf_model(folder: Path) -> None:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t2"
    )
    fast.save_pretrained(folder)


def build(hf: Path, work: Path, precision: str, provider: str, name: str) -> None:
    out, cache = work / f"{precision}_{provider}", work / "cache"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
           "-p", precision, "-e", provider, "-c", str(cache)]  # fmt: skip
    subprocess.run(cmd, check=True)
    model = onnx.load(out / "model.onnx")  # external data read in
    onnx.save(model, OUT / name)
    print(f"{name}: {(OUT / name).stat().st_size} bytes")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hf_model(work / "hf")
        build(work / "hf", work, "fp32", "cpu", "llama_genai_fp32.onnx")
        build(work / "hf", work, "int4", "webgpu", "llama_genai_int4.onnx")


if __name__ == "__main__":
    main()

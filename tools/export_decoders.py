"""Export the tiny decoders with a KV cache in tests/models/ (run by hand, outputs committed).

    /work/export-venv/bin/python tools/export_decoders.py

Each is a causal LM from a tiny config with random weights (fixed seed, biases and norms
perturbed so that a dropped one shows), exported by torch's TorchScript exporter in the form
optimum's ``text-generation-with-past`` export has, which is what generation loops feed:

- inputs ``input_ids`` [batch_size, sequence_length], ``attention_mask`` [batch_size,
  past_sequence_length + sequence_length], ``position_ids`` [batch_size, sequence_length]
  (Llama only; GPT-2 derives its positions from the past's length) and
  ``past_key_values.N.key`` / ``.value`` [batch_size, kv_heads, past_sequence_length, head_dim];
- outputs ``logits`` [batch_size, sequence_length, vocab] and ``present.N.key`` / ``.value``
  [batch_size, kv_heads, past_sequence_length + sequence_length, head_dim].

A prompt runs with an empty past (past_sequence_length 0), then one token per step with the
previous step's present fed back as past.

``--optimum`` exports GPT-2 (with position_ids, opset 18) by optimum's own exporter instead,
the form ``optimum-cli export onnx --task text-generation-with-past`` gives; it needs optimum
and optimum-onnx, which the export venv does not carry:

    python3 -m venv /work/venv-optimum && /work/venv-optimum/bin/pip install optimum optimum-onnx torch
    /work/venv-optimum/bin/python tools/export_decoders.py --optimum
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
import torch
import transformers

OUT = Path(__file__).resolve().parent.parent / "tests" / "models"
TOTAL = "past_sequence_length + sequence_length"


def _perturb(model: torch.nn.Module) -> None:
    """Biases and norms away from their 0/1 start, so that a dropped one shows."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n or ".ln_" in n:
                p.add_(0.1 * torch.randn_like(p))


class _WithPast(torch.nn.Module):
    """A causal LM with its cache as flat tensors in and out (the exporter takes no Cache)."""

    def __init__(self, model: torch.nn.Module, layers: int, positions: bool):
        super().__init__()
        self.model, self.layers, self.positions = model, layers, positions

    def forward(self, input_ids, attention_mask, *rest):
        position_ids, rest = (rest[0], rest[1:]) if self.positions else (None, rest)
        pairs = [(rest[2 * i], rest[2 * i + 1]) for i in range(self.layers)]
        cache = transformers.DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        present = out.past_key_values
        flat = []
        for i in range(self.layers):
            layer = present.layers[i]
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def _export(
    name: str, model: torch.nn.Module, layers: int, kv_heads: int, head_dim: int, positions: bool
) -> Path:
    model.eval()
    past, seq = 3, 2
    ids = torch.randint(0, model.config.vocab_size, (1, seq))
    mask = torch.ones(1, past + seq, dtype=torch.int64)
    args = [ids, mask]
    names = ["input_ids", "attention_mask"]
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: TOTAL},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    if positions:
        args.append(torch.arange(past, past + seq).unsqueeze(0))
        names.append("position_ids")
        axes["position_ids"] = {0: "batch_size", 1: "sequence_length"}
    outputs = ["logits"]
    for i in range(layers):
        for kind in ("key", "value"):
            args.append(torch.randn(1, kv_heads, past, head_dim))
            names.append(f"past_key_values.{i}.{kind}")
            outputs.append(f"present.{i}.{kind}")
            axes[names[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            axes[outputs[-1]] = {0: "batch_size", 2: TOTAL}
    path = OUT / f"{name}.onnx"
    torch.onnx.export(
        _WithPast(model, layers, positions), tuple(args), str(path), input_names=names, output_names=outputs,
        dynamic_axes=axes, opset_version=17, dynamo=False,
    )  # fmt: skip
    m = onnx.load(str(path))
    onnx.save(m, str(path))  # one file, no external data
    return path


def export() -> list[Path]:
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512,
        )
    )  # fmt: skip
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=1000, n_embd=32, n_layer=2, n_head=4, n_positions=512, initializer_range=0.4
        )
    )
    _perturb(llama)
    _perturb(gpt2)
    return [
        _export("llama_tiny_kv", llama, 2, 2, 8, positions=True),
        _export("gpt2_tiny_kv", gpt2, 2, 4, 8, positions=False),
    ]


def export_optimum() -> list[Path]:
    """GPT-2 through optimum's exporter (its ONNX config names the inputs and dims)."""
    from optimum.exporters.onnx import main_export

    torch.manual_seed(2)
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=1000, n_embd=32, n_layer=2, n_head=4, n_positions=512, initializer_range=0.4
        )
    )
    _perturb(gpt2)
    path = OUT / "gpt2_tiny_kv_optimum.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        gpt2.save_pretrained(f"{tmp}/hf")
        main_export(f"{tmp}/hf", f"{tmp}/onnx", task="text-generation-with-past", do_validation=False)
        onnx.save(onnx.load(f"{tmp}/onnx/model.onnx"), str(path))  # one file, no external data
    return [path]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--optimum", action="store_true", help="export GPT-2 by optimum's exporter instead")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for path in export_optimum() if args.optimum else export():
        print(f"{path.relative_to(OUT.parent.parent)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

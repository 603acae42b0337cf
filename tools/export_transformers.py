"""Export the small transformer test models in tests/models/ (run by hand, outputs committed).

Needs torch and transformers, which the test environment does not carry:

    python3 -m venv /tmp/export && /tmp/export/bin/pip install torch==2.13.0 transformers onnx onnxscript
    /tmp/export/bin/python tools/export_transformers.py

Each model comes from a tiny config with random weights (fixed seed), so the files stay small
and nothing is downloaded: BERT (both exporters), GPT-2, Llama with grouped-query attention,
ViT, the Whisper encoder and DistilBERT, and (``--only more``) Qwen2 (both exporters), Phi-3, the
T5 encoder and the Whisper decoder. Both torch exporters are used, since models in the wild come from
both: the TorchScript one (``dynamo=False``) and the dynamo one. Batch and sequence stay
symbolic (``batch``, ``seq``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

OUT = Path(__file__).resolve().parent.parent / "tests" / "models"


def bert() -> torch.nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=1000,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
    )
    return transformers.BertModel(cfg, add_pooling_layer=True)


class _Outputs(torch.nn.Module):
    """A model's tensors out, as a tuple (the exporters take no ModelOutput objects)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state, out.pooler_output


def export_bert(dynamo: bool) -> Path:
    torch.manual_seed(0)
    model = _Outputs(bert().eval())
    batch, seq = 2, 16
    args = (
        torch.randint(0, 1000, (batch, seq)),
        torch.ones(batch, seq, dtype=torch.int64),
        torch.zeros(batch, seq, dtype=torch.int64),
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    path = OUT / f"bert_tiny_{'dynamo' if dynamo else 'torchscript'}.onnx"
    if dynamo:
        b, s = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=1, max=128)
        torch.onnx.export(
            model, args, str(path), input_names=names, output_names=["last_hidden_state", "pooler_output"],
            dynamo=True, dynamic_shapes={n: {0: b, 1: s} for n in ("input_ids", "attention_mask", "token_type_ids")},
            opset_version=18, external_data=False,
        )  # fmt: skip
    else:
        axes = {n: {0: "batch", 1: "seq"} for n in names}
        axes["last_hidden_state"] = {0: "batch", 1: "seq"}
        axes["pooler_output"] = {0: "batch"}
        torch.onnx.export(
            model, args, str(path), input_names=names, output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    return path


class _Logits(torch.nn.Module):
    """A model's one tensor out, by attribute name, with keyword inputs in a fixed order."""

    def __init__(self, model: torch.nn.Module, names: list[str], out: str, **fixed):
        super().__init__()
        self.model, self.names, self.out, self.fixed = model, names, out, fixed

    def forward(self, *args):
        return getattr(self.model(**dict(zip(self.names, args)), **self.fixed), self.out)


def _export(
    name: str, model: torch.nn.Module, args: tuple, names: list[str], out: str, axes: dict, dynamo: bool
) -> Path:
    """Export with ``axes`` ({input: {dim: symbol}}) kept symbolic; ``out`` is the output's name."""
    model.eval()
    path = OUT / f"{name}.onnx"
    if dynamo:
        dims = {s: torch.export.Dim(s, min=1, max=128) for a in axes.values() for s in a.values()}
        shapes = {n: {d: dims[s] for d, s in a.items()} for n, a in axes.items()}
        torch.onnx.export(
            model, args, str(path), input_names=names, output_names=[out], dynamo=True,
            dynamic_shapes=(tuple(shapes.get(n) for n in names),), opset_version=18, external_data=False,
        )  # fmt: skip
    else:
        torch.onnx.export(
            model, args, str(path), input_names=names, output_names=[out], dynamo=False,
            dynamic_axes=axes, opset_version=17,
        )  # fmt: skip
    return path


def _whisper(**extra) -> torch.nn.Module:
    return transformers.WhisperModel(
        transformers.WhisperConfig(
            vocab_size=1000, d_model=32, encoder_layers=2, encoder_attention_heads=4, decoder_layers=2,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
            max_source_positions=50, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
            **extra,
        )
    )  # fmt: skip


def _perturb(*models: torch.nn.Module) -> None:
    """Biases and norms away from their 0/1 start, so that a dropped one shows."""
    with torch.no_grad():
        for m in models:
            for n, p in m.named_parameters():
                if n.endswith("bias") or "norm" in n:
                    p.add_(0.1 * torch.randn_like(p))


def export_others() -> list[Path]:
    """GPT-2 (dynamo: the TorchScript exporter has no aten::diff), Llama with grouped-query
    attention, ViT, the Whisper encoder and DistilBERT (TorchScript)."""
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 1000, (1, 12)), torch.ones(1, 12, dtype=torch.int64)
    text = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=1000, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    )
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128,
        )
    )  # fmt: skip
    vit = transformers.ViTModel(
        transformers.ViTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
            patch_size=8,
        )
    )  # fmt: skip
    whisper = _whisper().encoder
    distil = transformers.DistilBertModel(
        transformers.DistilBertConfig(vocab_size=1000, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
    )
    _perturb(gpt2, llama, vit, whisper, distil)
    return [
        _export("gpt2_tiny_dynamo", _Logits(gpt2, ["input_ids"], "logits", use_cache=False), (ids,), ["input_ids"],
                "logits", {"input_ids": text["input_ids"]}, dynamo=True),
        _export("llama_tiny_torchscript", _Logits(llama, ["input_ids", "attention_mask"], "logits", use_cache=False),
                (ids, mask), ["input_ids", "attention_mask"], "logits", text, dynamo=False),
        _export("vit_tiny_torchscript", _Logits(vit, ["pixel_values"], "last_hidden_state"),
                (torch.randn(1, 3, 32, 32),), ["pixel_values"], "last_hidden_state",
                {"pixel_values": {0: "batch"}}, dynamo=False),
        _export("whisper_encoder_tiny_torchscript", _Logits(whisper, ["input_features"], "last_hidden_state"),
                (torch.randn(1, 16, 100),), ["input_features"], "last_hidden_state",
                {"input_features": {0: "batch"}}, dynamo=False),
        _export("distilbert_tiny_torchscript", _Logits(distil, ["input_ids", "attention_mask"], "last_hidden_state"),
                (ids, mask), ["input_ids", "attention_mask"], "last_hidden_state", text, dynamo=False),
    ]  # fmt: skip


def export_more() -> list[Path]:
    """Qwen2 (grouped-query attention with Q/K/V biases) by both exporters, Phi-3, the T5
    encoder (relative position buckets) and the Whisper decoder (cross-attention over encoder
    states of their own length)."""
    torch.manual_seed(1)
    ids, mask = torch.randint(0, 1000, (1, 12)), torch.ones(1, 12, dtype=torch.int64)
    text = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    small = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=128)  # fmt: skip
    qwen2 = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**small, num_key_value_heads=2))
    phi3 = transformers.Phi3ForCausalLM(
        transformers.Phi3Config(**small, num_key_value_heads=4, pad_token_id=0)
    )
    t5 = transformers.T5EncoderModel(
        transformers.T5Config(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                              relative_attention_num_buckets=8, relative_attention_max_distance=32)
    )  # fmt: skip
    decoder = _whisper(max_target_positions=64).decoder
    _perturb(qwen2, phi3, t5, decoder)
    states = torch.randn(1, 10, 32)
    causal = (["input_ids", "attention_mask"], "logits")
    return [
        _export("qwen2_tiny_torchscript", _Logits(qwen2, *causal, use_cache=False), (ids, mask), *causal, text,
                dynamo=False),
        _export("qwen2_tiny_dynamo", _Logits(qwen2, *causal, use_cache=False), (ids, mask), *causal, text,
                dynamo=True),
        _export("phi3_tiny_dynamo", _Logits(phi3, *causal, use_cache=False), (ids, mask), *causal, text,
                dynamo=True),  # (the TorchScript exporter has no aten::diff)
        _export("t5_encoder_tiny_torchscript", _Logits(t5, ["input_ids", "attention_mask"], "last_hidden_state"),
                (ids, mask), ["input_ids", "attention_mask"], "last_hidden_state", text, dynamo=False),
        _export("whisper_decoder_tiny_dynamo",
                _Logits(decoder, ["input_ids", "encoder_hidden_states"], "last_hidden_state", use_cache=False),
                (ids[:, :8], states), ["input_ids", "encoder_hidden_states"], "last_hidden_state",
                {"input_ids": {0: "batch", 1: "seq"}, "encoder_hidden_states": {0: "batch", 1: "frames"}},
                dynamo=True),  # (the TorchScript exporter has no aten::diff)
    ]  # fmt: skip


GROUPS = {
    "bert": lambda: [export_bert(False), export_bert(True)],
    "others": export_others,
    "more": export_more,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(GROUPS), action="append",
                    help="export only these groups (default all; files of other groups stay as they are)")  # fmt: skip
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for group in args.only or list(GROUPS):
        for path in GROUPS[group]():
            print(f"{path.relative_to(OUT.parent.parent)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

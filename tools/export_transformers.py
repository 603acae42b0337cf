"""Export the small transformer test models in tests/models/ (run by hand, outputs committed).

Needs torch and transformers, which the test environment does not carry:

    python3 -m venv /tmp/export && /tmp/export/bin/pip install torch==2.13.0 transformers onnx onnxscript
    /tmp/export/bin/python tools/export_transformers.py

Each model comes from a tiny config with random weights (fixed seed), so the files stay small
and nothing is downloaded. Both torch exporters are used, since models in the wild come from
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for dynamo in (False, True):
        path = export_bert(dynamo)
        print(f"{path.relative_to(OUT.parent.parent)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

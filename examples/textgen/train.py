"""Train the example's decoder on corpus.txt and export it with its KV cache (run by hand;
model.onnx and vocab.json are committed):

    python examples/textgen/train.py            # about 4-6 minutes on 2 CPU threads
    python examples/textgen/train.py --quick --out /tmp/textgen   # seconds

(with torch, transformers and onnx installed). The model is transformers' GPT-2 with a small
config (4 layers, 64 wide, 4 heads, 64 positions), one token per word or punctuation mark of
the corpus with the space before it, or a newline (PATTERN below; the text is its tokens
joined: `In`, ` the`, ` beginning`, `,`...). Characters would need several times the training
that a few minutes on a CPU give: a character-level model of this size trained as long writes
"the the the". It is exported by torch's TorchScript exporter in the form optimum's
``text-generation-with-past`` export has (as tools/export_decoders.py does): inputs
``input_ids``, ``attention_mask`` and ``past_key_values.N.key`` / ``.value``; outputs
``logits`` and ``present.N.key`` / ``.value``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import onnx
import torch
import transformers

HERE = Path(__file__).resolve().parent
TOTAL = "past_sequence_length + sequence_length"
LAYERS, WIDTH, HEADS, POSITIONS = 4, 64, 4, 64
PATTERN = r" ?[A-Za-z']+| ?[^\sA-Za-z']|\n"  # a token: a word or mark with its space, or a newline


class WithPast(torch.nn.Module):
    """The LM with its cache as flat tensors in and out (the exporter takes no Cache)."""

    def __init__(self, model: transformers.GPT2LMHeadModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(LAYERS)]
        cache = transformers.DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True
        )
        flat = []
        for layer in out.past_key_values.layers[:LAYERS]:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def export(model: transformers.GPT2LMHeadModel, path: Path) -> None:
    model.eval()
    past, seq, head_dim = 3, 2, WIDTH // HEADS
    args = [torch.zeros(1, seq, dtype=torch.int64), torch.ones(1, past + seq, dtype=torch.int64)]
    names, outputs = ["input_ids", "attention_mask"], ["logits"]
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: TOTAL},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for i in range(LAYERS):
        for kind in ("key", "value"):
            args.append(torch.zeros(1, HEADS, past, head_dim))
            names.append(f"past_key_values.{i}.{kind}")
            outputs.append(f"present.{i}.{kind}")
            axes[names[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            axes[outputs[-1]] = {0: "batch_size", 2: TOTAL}
    torch.onnx.export(
        WithPast(model), tuple(args), str(path), input_names=names, output_names=outputs,
        dynamic_axes=axes, opset_version=17, dynamo=False,
    )  # fmt: skip
    onnx.save(onnx.load(str(path)), str(path))  # one file, no external data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE), help="where model.onnx and vocab.json go (default: here)")
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps (default 400)")
    ap.add_argument("--quick", action="store_true", help="20 steps: checks the script, learns little")
    args = ap.parse_args()
    steps = 20 if args.quick else args.steps
    torch.manual_seed(0)
    torch.set_num_threads(2)

    text = (HERE / "corpus.txt").read_text()
    pieces = re.findall(PATTERN, text)
    assert "".join(pieces) == text
    tokens = sorted(set(pieces))
    index = {c: i for i, c in enumerate(tokens)}
    data = torch.tensor([index[c] for c in pieces], dtype=torch.int64)
    split = int(0.95 * len(data))
    train, held = data[:split], data[split:]

    config = transformers.GPT2Config(
        vocab_size=len(tokens), n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=index["\n"], eos_token_id=index["\n"],
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    print(
        f"{len(pieces):,} tokens, vocab {len(tokens)}, {sum(p.numel() for p in model.parameters()):,} parameters"
    )

    batch, block, lr = 16, POSITIONS, 3e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)

    def sample(source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        at = torch.randint(0, len(source) - block - 1, (batch,), generator=gen)
        x = torch.stack([source[i : i + block + 1] for i in at.tolist()])
        return x[:, :-1], x[:, 1:]

    def loss_on(x, y) -> torch.Tensor:
        logits = model(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, len(tokens)), y.reshape(-1))

    start = time.perf_counter()
    model.train()
    for step in range(steps):
        warm = min(1.0, (step + 1) / 20)
        for g in opt.param_groups:
            g["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = loss_on(*sample(train))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            model.eval()
            with torch.no_grad():
                val = loss_on(*sample(held))
            model.train()
            print(
                f"step {step:5d}  loss {loss.item():.3f}  held-out {val.item():.3f}  {time.perf_counter() - start:.0f} s"
            )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export(model, out / "model.onnx")
    (out / "vocab.json").write_text(json.dumps({"pattern": PATTERN, "tokens": tokens}, indent=1) + "\n")
    print(f"{out / 'model.onnx'}: {(out / 'model.onnx').stat().st_size:,} bytes")

    model.eval()
    ids = torch.tensor([[index[c] for c in re.findall(PATTERN, "In the beginning")]])
    with torch.no_grad():
        for _ in range(40):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    print("greedy:", repr("".join(tokens[i] for i in ids[0].tolist())))


if __name__ == "__main__":
    main()

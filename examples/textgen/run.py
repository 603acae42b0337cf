"""A small text generator on WebGPU: compile the decoder trained on Genesis (train.py) for
generation and stream what it writes, one word or punctuation mark per step, the KV cache kept
on the GPU.

    python examples/textgen/run.py [--prompt "In the beginning"] [--max-new-tokens N]
                                   [--temperature T --top-k K --seed S] [--out DIR]

Greedy unless --temperature or --top-k is given (sampled on the GPU among the 16 likeliest
tokens, from a seeded draw). The prompt's words must be the corpus's (vocab.json).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import onnx2wgsl
from onnx2wgsl.compiler.generation import Generation

HERE = Path(__file__).resolve().parent
MAX_LENGTH = 64  # the model's positions: the prompt's tokens and those it writes together
CANDIDATES = 16  # the likeliest tokens sampling chooses among


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--prompt", default="In the beginning", help='text to go on from (default "In the beginning")'
    )
    ap.add_argument(
        "--max-new-tokens", type=int, default=48, metavar="N", help="tokens to write (default 48)"
    )
    ap.add_argument("--temperature", type=float, metavar="T", help="sample at this temperature (0: greedy)")
    ap.add_argument(
        "--top-k", type=int, metavar="K", help=f"sample among the K likeliest (K <= {CANDIDATES})"
    )
    ap.add_argument("--seed", type=int, metavar="S", help="seed of the sampling draws")
    ap.add_argument(
        "--out", default=str(HERE / "out"), help="artifact directory (default: examples/textgen/out)"
    )
    args = ap.parse_args()

    vocab = json.loads((HERE / "vocab.json").read_text())
    tokens = vocab["tokens"]
    index = {t: i for i, t in enumerate(tokens)}
    pieces = re.findall(vocab["pattern"], args.prompt)
    unknown = [p for p in pieces if p not in index]
    if unknown:
        ap.error(f"{unknown} are not among the corpus's words and marks (examples/textgen/vocab.json)")
    if not pieces or "".join(pieces) != args.prompt:
        ap.error("the prompt must be words and marks with one space between words, no space at its end")
    if len(pieces) >= MAX_LENGTH:
        ap.error(f"the prompt has {len(pieces)} tokens; the model takes at most {MAX_LENGTH - 1}")
    if args.top_k is not None and not 0 < args.top_k <= CANDIDATES:
        ap.error(f"--top-k must be 1..{CANDIDATES}")

    t = time.perf_counter()
    onnx2wgsl.compile(
        HERE / "model.onnx", args.out, generation=Generation(MAX_LENGTH, sample_candidates=CANDIDATES)
    )
    print(f"compiled model.onnx for generation (max length {MAX_LENGTH}) in {time.perf_counter() - t:.1f} s")

    sampling = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k)) if v is not None}
    if sampling:
        sampling["seed"] = args.seed
    with onnx2wgsl.Generator(args.out) as gen:
        print(f"\n{args.prompt}", end="", flush=True)
        t, count = time.perf_counter(), 0
        for token in gen.generate([index[p] for p in pieces], args.max_new_tokens, **sampling):
            print(tokens[token], end="", flush=True)
            count += 1
        seconds = time.perf_counter() - t
    print(
        f"\n\n{count} tokens in {seconds:.2f} s: {count / seconds:.1f} tokens/s (the prompt's step included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

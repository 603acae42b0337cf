"""examples/textgen: run.py streams the greedy text of onnxruntime's step-by-step loop over the
same ONNX model, and what it writes reads like the corpus."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_generate import ort_greedy

ROOT = Path(__file__).resolve().parent.parent
TEXTGEN = ROOT / "examples" / "textgen"
PROMPT = "In the beginning"


def greedy_pieces(prompt: str, n: int) -> list[str]:
    """The model's greedy continuation of ``prompt`` (n tokens, as text) by onnxruntime on the CPU."""
    vocab = json.loads((TEXTGEN / "vocab.json").read_text())
    tokens = vocab["tokens"]
    ids = ort_greedy(
        TEXTGEN / "model.onnx", [tokens.index(p) for p in re.findall(vocab["pattern"], prompt)], n
    )
    return [tokens[i] for i in ids]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TEXTGEN / "run.py"), *args], capture_output=True, text=True)


@pytest.mark.gpu
def test_run_streams_the_greedy_text_of_onnxruntime(tmp_path):
    n = 48
    r = run("--prompt", PROMPT, "--max-new-tokens", str(n), "--out", str(tmp_path / "textgen"))
    assert r.returncode == 0, r.stdout + r.stderr
    want = "".join(greedy_pieces(PROMPT, n))
    assert f"\n{PROMPT}{want}\n\n{n} tokens in" in r.stdout, (want, r.stdout)
    assert "tokens/s" in r.stdout
    # (a weak extra check) it reads like the corpus: its lines are the corpus's word sequences
    corpus = (TEXTGEN / "corpus.txt").read_text()
    words = (PROMPT + want).split()
    pairs = [" ".join(words[i : i + 2]) for i in range(len(words) - 1)]
    assert sum(p in corpus for p in pairs) >= 0.8 * len(pairs), want


@pytest.mark.gpu
def test_run_samples_with_a_seed(tmp_path):
    texts = []
    for _ in range(2):
        args = ("--max-new-tokens", "16", "--temperature", "0.8", "--top-k", "8", "--seed", "3")
        r = run(*args, "--out", str(tmp_path / "textgen"))
        assert r.returncode == 0, r.stdout + r.stderr
        texts.append(r.stdout.split(f"\n{PROMPT}")[1].split("\n\n16 tokens in")[0])
    assert texts[0] == texts[1] and texts[0]


def test_run_refuses_words_not_in_the_corpus():
    r = run("--prompt", "In the beginning was the computer")
    assert r.returncode == 2 and "[' computer'] are not among the corpus's words" in r.stderr
    r = run("--prompt", "In the  beginning")
    assert r.returncode == 2 and "one space between words" in r.stderr


def test_the_corpus_and_the_vocab_agree():
    text = (TEXTGEN / "corpus.txt").read_text()
    vocab = json.loads((TEXTGEN / "vocab.json").read_text())
    pieces = re.findall(vocab["pattern"], text)
    assert "".join(pieces) == text and vocab["tokens"] == sorted(set(pieces))
    assert text.startswith("In the beginning God created the heaven and the earth.\n")

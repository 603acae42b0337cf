"""Transformer models as torch exports them (tests/models/, made by tools/export_transformers.py),
run against onnxruntime (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_close, gpu_run, ort_run

MODELS = Path(__file__).resolve().parent / "models"
BERTS = ["bert_tiny_torchscript", "bert_tiny_dynamo"]


def bert_feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids, a mask with padding at the end of the first sequence, and segment ids."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq // 2 + 1 :] = 0
    return {
        "input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64),
        "attention_mask": mask,
        "token_type_ids": rng.integers(0, 2, (batch, seq)).astype(np.int64),
    }


@pytest.mark.parametrize("shape", [(1, 1), (2, 17), (4, 128)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", BERTS)
def test_bert_export_matches_onnxruntime_with_dims_bound(name, shape, device):
    model = onnx.load(MODELS / f"{name}.onnx")
    batch, seq = shape
    feeds = bert_feeds(batch, seq)
    got = gpu_run(model, feeds, device, dims={"batch": batch, "seq": seq})
    assert_close(got, ort_run(model, feeds), rtol=1e-4, atol=2e-5)

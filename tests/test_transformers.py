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


def _feeds(model: onnx.ModelProto, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for a model's inputs at ``dims``: token ids below 1000, a mask of ones
    but for the end of the first sequence, floats elsewhere."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value or dims[d.dim_param] for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type != onnx.TensorProto.INT64:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
        elif "mask" in vi.name:
            feeds[vi.name] = np.ones(shape, np.int64)
            feeds[vi.name][0, shape[1] // 2 + 1 :] = 0
        else:
            feeds[vi.name] = rng.integers(0, 1000, shape).astype(np.int64)
    return feeds


@pytest.mark.parametrize(
    "name,dims",
    [
        ("gpt2_tiny_dynamo", {"batch": 2, "seq": 9}),
        ("llama_tiny_torchscript", {"batch": 2, "seq": 9}),
        ("vit_tiny_torchscript", {"batch": 2}),
        ("whisper_encoder_tiny_torchscript", {"batch": 2}),
        ("distilbert_tiny_torchscript", {"batch": 2, "seq": 9}),
    ],
)
def test_exported_transformer_matches_onnxruntime(name, dims, device):
    model = onnx.load(MODELS / f"{name}.onnx")
    feeds = _feeds(model, dims)
    assert_close(gpu_run(model, feeds, device, dims=dims), ort_run(model, feeds), rtol=1e-4, atol=2e-5)

"""GroupQueryAttention's dispatches: each layer of onnxruntime-genai's Llama runs one kernel
writing the past and the rotated new rows into Q and the presents, and the attention kernel; the forms that take other paths through that kernel (separate Q, K and V
with position_ids: Q and K/V in two dispatches; batch rows placed by seqlens_k; long caches;
dims kept symbolic) against onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import ort_run
from test_gqa import MODELS, compare, gqa_feeds, gqa_model, run_static

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.runtime.manifest import evaluate

GENAI_DIMS = {
    "static_decode": {"batch_size": 1, "sequence_length": 1, "past_sequence_length": 7,
                      "total_sequence_length": 8, "kv_cache_dim": 16},
    "static_prefill": {"batch_size": 1, "sequence_length": 7, "past_sequence_length": 0,
                       "total_sequence_length": 7, "kv_cache_dim": 16},
    "symbolic": {"batch_size": 1, "sequence_length": (1, 64), "past_sequence_length": (0, 63),
                 "total_sequence_length": (1, 64), "kv_cache_dim": 16},
    "symbolic_batch": {"batch_size": (1, 2), "sequence_length": (1, 64), "past_sequence_length": (0, 63),
                       "total_sequence_length": (1, 64), "kv_cache_dim": 16},
}  # fmt: skip


def node_dispatches(out, node: str, dims: dict | None = None) -> list[str]:
    """The labels of the artifact's dispatches that run ``node`` (at these values of the dims
    kept symbolic: those with workgroups to run)."""
    manifest = json.loads((out / "manifest.json").read_text())
    return [
        d["label"]
        for d in manifest["dispatches"]
        if node in d["label"].split() and (dims is None or all(evaluate(n, dims) for n in d["grid"]))
    ]


@pytest.mark.parametrize("name", ["llama_genai_fp32", "llama_genai_int4"])
@pytest.mark.parametrize("dims", sorted(GENAI_DIMS))
def test_genai_layer_attention_dispatches(name, dims, tmp_path):
    """One kernel writing Q and the presents (past and rotated new keys), then attention: 2
    dispatches per layer, none shared between layers."""
    model = onnx.load(MODELS / f"{name}.onnx")
    nodes = [n.name for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(nodes) == 2
    compile_model(model, tmp_path, dims=GENAI_DIMS[dims])
    want = 2
    labels = json.loads((tmp_path / "manifest.json").read_text())["dispatches"]
    if "symbolic" not in dims:
        for node in nodes:
            assert len(node_dispatches(tmp_path, node)) == want, node_dispatches(tmp_path, node)
        assert sum("GroupQueryAttention" in d["label"] for d in labels) == want * len(nodes)
        return
    # over a symbolic sequence attention takes the flash form for a prefill and, on a GPU
    # target, the lanes form and its combine pass for a decode step (runs under 8 rows a kv
    # head: up to 3 positions for 2 query heads a kv head): a run's length gives the others
    # empty grids
    for seq in (1, 2, 63):
        values = {"batch_size": 1, "sequence_length": seq, "past_sequence_length": 64 - seq,
                  "total_sequence_length": 64, "kv_cache_dim": 16}  # fmt: skip
        for node in nodes:
            got = node_dispatches(tmp_path, node, values)
            assert len(got) == (want + 1 if seq < 4 else want), got


CASES = {
    # name: (B, S, P, lengths, model kwargs)
    # separate Q, K and V, rotary caches and position_ids: more operands than one dispatch binds
    "separate_position_ids": (2, 1, 6, [7, 4], {"packed": False, "rotary": True, "extra": ["position_ids"]}),
    "separate_position_ids_chunk": (1, 3, 4, [7], {"packed": False, "rotary": True, "interleaved": True,
                                                   "extra": ["position_ids"]}),
    "separate_rotary_batch": (3, 1, 5, [6, 2, 4], {"packed": False, "rotary": True, "Hq": 6, "Hkv": 3}),
    "partial_rotary_batch": (2, 1, 4, [5, 3], {"rotary": True, "D": 48, "rotary_dim": 16}),
    "partial_interleaved_prefill": (2, 5, 0, [5, 3], {"rotary": True, "interleaved": True, "D": 32,
                                                      "rotary_dim": 16}),
    # keys split into chunks by the attention kernel, rows of their own lengths
    "long_cache_batch_rotary": (2, 1, 1100, [1101, 600], {"rotary": True, "max_pos": 1200}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_gqa_paths_match_onnxruntime(case, device):
    B, S, P, lengths, kw = CASES[case]
    model = gqa_model(B, S, P, **kw)
    feeds = gqa_feeds(model, lengths, seed=len(case))
    compare(run_static(model, feeds, device), ort_run(model, feeds), feeds, S, P)


@pytest.mark.parametrize("case", ["separate_position_ids", "partial_rotary_batch"])
def test_gqa_paths_float16(case, device):
    B, S, P, lengths, kw = CASES[case]
    model = gqa_model(B, S, P, dtype=np.float16, **kw)
    feeds = gqa_feeds(model, lengths, seed=5)
    compare(run_static(model, feeds, device), ort_run(model, feeds), feeds, S, P, rtol=2e-3, atol=2e-3)


def test_separate_qkv_with_position_ids_takes_two_new_row_dispatches(tmp_path):
    model = gqa_model(2, 1, 6, packed=False, rotary=True, extra=["position_ids"])
    compile_model(model, tmp_path)
    labels = [
        d["label"].split()[0] for d in json.loads((tmp_path / "manifest.json").read_text())["dispatches"]
    ]
    assert labels == ["GQAScatter"] * 3 + ["Attention"]  # past, Q, K and V


def test_gqa_separate_rotary_symbolic_batch(device, tmp_path):
    """Separate Q, K and V, batch, sequence and past kept symbolic: prompts, decode steps and a
    chunk, each with rows of their own lengths."""
    model = gqa_model(2, 2, 3, packed=False, rotary=True, interleaved=True)
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name in ("query", "key", "value"):
            dims[0].dim_param, dims[1].dim_param = "batch", "seq"
        elif vi.name.startswith("past_"):
            dims[0].dim_param, dims[2].dim_param = "batch", "past"
        elif vi.name == "seqlens_k":
            dims[0].dim_param = "batch"
    compile_model(
        model, tmp_path / "a", dims={"batch": (1, 3), "seq": (1, 8), "past": (0, 40)}, verify_ir=True
    )
    rng = np.random.default_rng(1)
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        for B, S, P, lengths in [
            (3, 1, 9, [10, 4, 7]),
            (2, 6, 0, [6, 2]),
            (1, 3, 5, [8]),
            (2, 1, 40, [41, 20]),
        ]:
            feeds = {
                "query": rng.standard_normal((B, S, 4 * 16)).astype(np.float32),
                "key": rng.standard_normal((B, S, 2 * 16)).astype(np.float32),
                "value": rng.standard_normal((B, S, 2 * 16)).astype(np.float32),
                "past_key": rng.standard_normal((B, 2, P, 16)).astype(np.float32),
                "past_value": rng.standard_normal((B, 2, P, 16)).astype(np.float32),
                "seqlens_k": np.asarray(lengths, np.int32) - 1,
                "total_sequence_length": np.asarray(P + S, np.int32),
            }
            compare(sess.run(None, feeds), ort_run(model, feeds), feeds, S, P)


@pytest.mark.parametrize("B, lengths", [(1, [8]), (2, [8, 5])])
def test_gqa_rotary_caches_fed_at_run_time(B, lengths, device, tmp_path):
    """cos_cache and sin_cache as graph inputs (bound apart, not packed into one constant)."""
    model = gqa_model(B, 1, 7, rotary=True, interleaved=True)
    caches = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert sorted(caches) == ["cos_cache", "sin_cache"]
    del model.graph.initializer[:]
    for name, data in caches.items():
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, data.shape))
    feeds = {**gqa_feeds(model, lengths, seed=B), **caches}
    compare(run_static(model, feeds, device), ort_run(model, feeds), feeds, 1, 7)
    compile_model(model, tmp_path)
    labels = [
        d["label"].split()[0] for d in json.loads((tmp_path / "manifest.json").read_text())["dispatches"]
    ]
    assert labels == ["GQAScatter"] * 2 + ["Attention"]  # past, new rows (9 operands: too many for one)

"""The KV cache written in place for decoders exported by torch / optimum, whose presents are
Concat(past, new) (compiler/passes/kv_share.py): compiled for generation, each past is a
buffer of the max length that is its present too, a step writes only its new keys and values
there and the attention reads the valid keys alone, so the runtime copies nothing between
steps, checked against onnxruntime's step-by-step loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from test_generate import MAX_LENGTH, PROMPT, StepRecorder, compiled_for_generation, ort_greedy
from test_kv_share import assert_pairs_share_one_buffer
from test_runtime import count_gpu_creations

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.generation import Generation
from onnx2wgsl.compiler.memory import check_plan
from onnx2wgsl.runtime import manifest as mf

MODELS = Path(__file__).parent / "models"
SHARED = ["llama_tiny_kv", "gpt2_tiny_kv_optimum"]  # (TorchScript's Llama, optimum's GPT-2)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return compiled_for_generation(tmp_path_factory, SHARED)


# -- compile (no device) ---------------------------------------------------------------------
@pytest.mark.parametrize("name, heads", [("llama_tiny_kv", 2), ("gpt2_tiny_kv_optimum", 4)])
def test_manifest_records_each_pair_in_one_buffer(name, heads, shared):
    m = mf.read(shared[name])
    # the total length is the attention mask's own dim; the past's is total - sequence
    assert_pairs_share_one_buffer(m, [1, heads, MAX_LENGTH, 8])
    ios = {io["name"]: io for io in m["inputs"]}
    assert ios["attention_mask"]["shape"] == [1, "total_sequence_length"]


def test_the_writes_bind_each_cache_once_and_the_attention_reads_the_valid_keys():
    writes, attentions = [], []

    def stage(name, g):
        if name == "share-kv-cache":
            # (the head splits and GPT-2's Q, K, V Split read past: the packed rows are read)
            assert not [op for op in g.ops if op.kind in ("Concat", "Transpose", "Split")]
        if name != "plan":
            return
        check_plan(g)
        for op in g.kernels():
            if op.attrs["op"] == "KVCacheWrite":  # a layer's keys and values, in one dispatch
                writes.append(op)
                assert op.attrs["in_place"] == [[0, 0], [1, 1]]
                assert [v.placement for v in op.outputs] == [v.placement for v in op.inputs[:2]]
                (d,) = op.dispatches  # the pasts are not bound apart: their bytes are the presents'
                assert [b.value for b in d.bindings] == [op.inputs[2]] + op.outputs  # (packed K, V)
            elif op.attrs["op"] == "Attention":
                attentions.append(op)

    compile_model(MODELS / "gpt2_tiny_kv.onnx", None, generation=Generation(MAX_LENGTH), on_stage=stage)
    # (two layers; a GPU target's attention has two kernels, a decode step's lanes form apart)
    assert len(writes) == len({op.name for op in attentions}) == 2
    for op in attentions:  # the buffer's length, and each row's valid keys from the dims
        k, v = op.inputs[1], op.inputs[2]
        assert k.shape[2] == v.shape[2] == MAX_LENGTH
        (seqlens,) = [x for x in op.inputs if x.producer is not None and x.producer.attrs.get("op") == "DimValue"]
        assert seqlens.shape == (1,)


@pytest.mark.gpu
def test_a_present_read_otherwise_keeps_the_copy(tmp_path, device):
    """A present that something beside the attention reads (here a graph output of its own)
    keeps the copy, and so does every other (one copied past has the past's own length), and
    the model still generates as onnxruntime."""
    model = onnx.load(MODELS / "llama_tiny_kv.onnx")
    g = model.graph
    g.node.append(onnx.helper.make_node("Identity", ["present.0.key"], ["key_copy"]))
    g.output.append(onnx.helper.make_tensor_value_info("key_copy", onnx.TensorProto.FLOAT, None))
    compile_model(model, tmp_path, generation=Generation(16))
    gen = mf.read(tmp_path)["generation"]
    assert "total_dim" not in gen and not any(s.get("shared") for s in gen["state"])
    with onnx2wgsl.Generator(tmp_path, device=device) as run:
        assert list(run.generate(PROMPT, max_new_tokens=8)) == ort_greedy(
            model.SerializeToString(), PROMPT, 8
        )


# -- runs ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", SHARED)
def test_greedy_64_ids_as_onnxruntime_copying_and_making_nothing(name, shared, device, monkeypatch):
    want = ort_greedy(MODELS / f"{name}.onnx", PROMPT, 64)
    gen = onnx2wgsl.Generator(shared[name], device=device)
    calls = count_gpu_creations(device, monkeypatch)
    device.create_bind_group_layout(entries=[])  # the counter sees creations
    assert calls["create_bind_group_layout"] == 1
    calls["create_bind_group_layout"] = 0
    got, steps = StepRecorder(monkeypatch).generate(gen, PROMPT, 64)
    assert got == want
    assert len(set(got)) > 16  # (not one token repeated)
    assert calls == {name: 0 for name in calls}
    # each step copies the chosen id (4 bytes) into the read-back buffer and reads it back: no
    # cache copied, none cleared
    assert all([c[1:] for c in s["copies"]] == [(gen._readback, 4)] and 0 < s["read"] <= 16 for s in steps)
    assert not any(s["clears"] for s in steps)
    # again after reset: the stale rows past the valid length are never read
    gen.reset()
    assert list(gen.generate(PROMPT, max_new_tokens=16)) == want[:16]
    gen.release()


@pytest.mark.gpu
def test_a_batch_of_two_and_prompts_in_pieces_as_onnxruntime(tmp_path, device):
    """GPT-2 (TorchScript's form) for a batch of two, its prompts in pieces of 3 tokens."""
    model = MODELS / "gpt2_tiny_kv.onnx"
    prompts = np.array([PROMPT + [11, 12, 13], [3, 8, 2, 6, 1, 0, 9]])
    compile_model(model, tmp_path, generation=Generation(32, max_prompt=3), dims={"batch_size": 2})
    assert all(s["shared"] for s in mf.read(tmp_path)["generation"]["state"])
    want = [ort_greedy(model, list(p), 16) for p in prompts]
    with onnx2wgsl.Generator(tmp_path, device=device) as gen:
        got = np.array(list(gen.generate(prompts, max_new_tokens=16)))
    assert got.T.tolist() == want

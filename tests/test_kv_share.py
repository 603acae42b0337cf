"""The KV cache written in place: a GroupQueryAttention decoder (onnxruntime-genai's form)
compiled for generation keeps each past in a buffer of the max length that is its present too
(onnxruntime-genai's past_present_share_buffer). Each step writes only its new keys and values
there (compiler/lowering/gqa.py), and the runtime copies nothing between steps
(runtime/generate.py), checked against onnxruntime's step-by-step loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from test_generate import MAX_LENGTH, PROMPT, StepRecorder, compiled_for_generation, ort_greedy
from test_gqa import accuracy_level_0
from test_runtime import count_gpu_creations

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.generation import Generation
from onnx2wgsl.compiler.memory import check_plan
from onnx2wgsl.errors import ManifestError
from onnx2wgsl.runtime import manifest as mf

MODELS = Path(__file__).parent / "models"
DIMS = {"kv_cache_dim": 16}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return compiled_for_generation(tmp_path_factory, ("llama_genai_fp32", "llama_genai_int4"), dims=DIMS)


# -- compile (no device) ---------------------------------------------------------------------
def assert_pairs_share_one_buffer(m: dict, cache_shape: list) -> None:
    """Every state pair of manifest ``m`` is recorded shared over the total length: the past
    holds ``cache_shape`` (max_length positions), the present is those very bytes, and no other
    output is placed there."""
    gen = m["generation"]
    assert len(gen["state"]) == 4 and all(s["shared"] is True for s in gen["state"])
    assert gen["total_dim"] == "total_sequence_length"
    assert {s["name"]: (s["min"], s["max"]) for s in m["symbols"]} == {
        "sequence_length": (1, MAX_LENGTH),
        "total_sequence_length": (1, MAX_LENGTH),
    }
    ios = {io["name"]: io for io in m["inputs"] + m["outputs"]}
    outputs = {io["buffer"] for io in m["outputs"] if not io["name"].startswith("present.")}
    for s in gen["state"]:
        past, present = ios[s["past"]], ios[s["present"]]
        assert past["shape"] == present["shape"] == cache_shape
        assert [past[k] for k in ("buffer", "offset", "size")] == [
            present[k] for k in ("buffer", "offset", "size")
        ]
        assert past["buffer"] not in outputs


def test_manifest_records_each_pair_in_one_buffer(shared):
    assert_pairs_share_one_buffer(mf.read(shared["llama_genai_fp32"]), [1, 2, MAX_LENGTH, 16])


def test_a_shared_pair_in_two_places_is_refused(shared):
    m = mf.read(shared["llama_genai_fp32"])
    ios = {io["name"]: io for io in m["outputs"]}
    ios[m["generation"]["state"][0]["present"]]["offset"] += 256
    with pytest.raises(ManifestError, match="must lie in the same bytes"):
        mf.validate(m)


def test_the_memory_checker_passes_and_each_scatter_binds_its_cache_once():
    seen = []

    def stage(name, g):
        if name != "plan":
            return
        check_plan(g)
        for op in g.kernels():
            if op.attrs.get("op") == "GQAScatter":
                assert len(op.attrs["in_place"]) == 2
                seen.append(op)
                for d in op.dispatches:
                    buffers = [(b.value.placement.buffer, b.value.placement.offset) for b in d.bindings]
                    assert len(buffers) == len(set(buffers))  # no bytes bound twice
                    for o, i in op.attrs["in_place"]:
                        assert all(b.value is not op.inputs[i] for b in d.bindings)  # the past: not apart
                        assert op.outputs[o].placement == op.inputs[i].placement

    compile_model(
        MODELS / "llama_genai_fp32.onnx", None, generation=Generation(MAX_LENGTH), dims=DIMS, on_stage=stage
    )
    assert len(seen) == 2  # (one per layer)


def test_models_of_other_caches_keep_the_copy(tmp_path):
    # (at -O0 the Llama's attention stays unfused: its Concat presents are copied)
    compile_model(MODELS / "llama_tiny_kv.onnx", tmp_path, generation=Generation(MAX_LENGTH), opt_level=0)
    gen = mf.read(tmp_path)["generation"]
    assert "total_dim" not in gen and not any(s.get("shared") for s in gen["state"])


# -- runs ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name, n", [("llama_genai_fp32", 64), ("llama_genai_int4", 24)])
def test_greedy_ids_as_onnxruntime_with_no_copy_and_nothing_made(name, n, shared, device, monkeypatch):
    model = onnx.load(MODELS / f"{name}.onnx")
    want = ort_greedy(accuracy_level_0(model).SerializeToString(), PROMPT, n, head_size=16)
    gen = onnx2wgsl.Generator(shared[name], device=device)
    calls = count_gpu_creations(device, monkeypatch)
    device.create_bind_group_layout(entries=[])  # the counter sees creations
    assert calls["create_bind_group_layout"] == 1
    calls["create_bind_group_layout"] = 0
    got, steps = StepRecorder(monkeypatch).generate(gen, PROMPT, n)
    assert got == want
    assert len(set(got)) > 5  # (not one token repeated)
    assert calls == {name: 0 for name in calls}
    # each step copies only the chosen id (4 bytes) into the read-back buffer: no cache copy
    assert all([c[1:] for c in step["copies"]] == [(gen._readback, 4)] for step in steps)
    assert not any(step["clears"] for step in steps)
    # again after reset: the mask gives the valid length, so the stale cache is never read
    gen.reset()
    assert list(gen.generate(PROMPT, max_new_tokens=n)) == want
    gen.release()


@pytest.mark.gpu
def test_a_conversation_goes_on_over_the_shared_cache(shared, device):
    """Two generate calls in a row equal one run over the whole sequence."""
    model = onnx.load(MODELS / "llama_genai_fp32.onnx")
    with onnx2wgsl.Generator(shared["llama_genai_fp32"], device=device) as gen:
        first = list(gen.generate(PROMPT, max_new_tokens=8))
        more = list(gen.generate([3, 4], max_new_tokens=8))
    whole = PROMPT + first + [3, 4]
    want = ort_greedy(model.SerializeToString(), whole, 8, head_size=16)
    assert more == want
    assert np.all(np.array(first) < 128)


@pytest.mark.gpu
def test_sampling_keeps_its_seen_tokens_copied_beside_the_shared_cache(tmp_path, shared, device):
    """With --sample-candidates, the tokens seen stay a copied pair (a buffer apart from the
    shared caches); greedy through the sampler equals the greedy ids."""
    compile_model(
        MODELS / "llama_genai_fp32.onnx",
        tmp_path,
        generation=Generation(MAX_LENGTH, sample_candidates=8),
        dims=DIMS,
    )
    m = mf.read(tmp_path)
    state = m["generation"]["state"]
    assert [bool(s.get("shared")) for s in state] == [True] * 4 + [False]
    ios = {io["name"]: io for io in m["inputs"]}
    assert ios[state[-1]["past"]]["buffer"] not in {ios[s["past"]]["buffer"] for s in state[:4]}
    with onnx2wgsl.Generator(tmp_path, device=device) as gen:
        greedy = list(gen.generate(PROMPT, max_new_tokens=16))
        gen.reset()
        assert list(gen.generate(PROMPT, max_new_tokens=16, temperature=0)) == greedy
        gen.reset()
        a = list(gen.generate(PROMPT, max_new_tokens=16, temperature=0.8, top_k=4, seed=3))
        gen.reset()
        b = list(gen.generate(PROMPT, max_new_tokens=16, temperature=0.8, top_k=4, seed=3))
    with onnx2wgsl.Generator(shared["llama_genai_fp32"], device=device) as plain:
        assert list(plain.generate(PROMPT, max_new_tokens=16)) == greedy
    assert a == b


@pytest.mark.gpu
def test_a_batch_of_two_shares_its_caches_as_onnxruntime(tmp_path, device):
    prompts = np.array([PROMPT, [3, 8, 2, 6]])
    compile_model(
        MODELS / "llama_genai_fp32.onnx", tmp_path, generation=Generation(MAX_LENGTH),
        dims={**DIMS, "batch_size": 2},
    )  # fmt: skip
    model = onnx.load(MODELS / "llama_genai_fp32.onnx").SerializeToString()
    want = [ort_greedy(model, list(p), 12, head_size=16) for p in prompts]
    with onnx2wgsl.Generator(tmp_path, device=device) as gen:
        got = np.array(list(gen.generate(prompts, max_new_tokens=12)))
    assert got.T.tolist() == want

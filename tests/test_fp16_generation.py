"""The KV cache of a decoder compiled for generation at ``--precision fp16`` (compiler/precision.py):
each state pair (past input, present output) is stored as f16, half the bytes, written and read
through the kernels' widening loads and narrowing stores (Concat, Attention, KVCacheWrite,
GQAScatter), and copied between steps as stored (runtime/generate.py); logits, ids, mask,
positions and tokens stay 32-bit. The greedy ids are onnxruntime's float32 loop's, for the
Concat caches written in place (torch's Llama, GPT-2's two exports), GroupQueryAttention's
shared buffer (onnxruntime-genai's) and a cache copied between steps (-O0)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import ort_run
from test_generate import MAX_LENGTH, PROMPT, StepRecorder, ort_greedy
from test_gqa import accuracy_level_0

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.generation import Generation
from onnx2wgsl.runtime import manifest as mf

MODELS = Path(__file__).parent / "models"
# artifact -> (model, compile options, cache shape at the bounds [B, H, positions, D])
CASES = {
    "llama_tiny_kv": ("llama_tiny_kv", {}, [1, 2, MAX_LENGTH, 8]),
    "gpt2_tiny_kv": ("gpt2_tiny_kv", {}, [1, 4, MAX_LENGTH, 8]),
    "gpt2_tiny_kv_optimum": ("gpt2_tiny_kv_optimum", {}, [1, 4, MAX_LENGTH, 8]),
    "llama_genai_fp32": ("llama_genai_fp32", {"dims": {"kv_cache_dim": 16}}, [1, 2, MAX_LENGTH, 16]),
    "llama_tiny_kv_copied": ("llama_tiny_kv", {"opt_level": 0}, [1, 2, MAX_LENGTH - 1, 8]),  # (a past)
}
N = 64  # greedy tokens
KEYS = ("dtype", "storage", "shape", "size")


@pytest.fixture(scope="module")
def fp16(tmp_path_factory):
    out = {}
    for key, (name, options, _) in CASES.items():
        out[key] = tmp_path_factory.mktemp(key)
        compile_model(MODELS / f"{name}.onnx", out[key], generation=Generation(MAX_LENGTH), precision="fp16",
                      **options)  # fmt: skip
    return out


# -- compile (no device) ---------------------------------------------------------------------
@pytest.mark.parametrize("key", list(CASES))
def test_the_state_pairs_alone_are_f16_in_half_the_bytes(key, fp16, tmp_path):
    name, options, cache = CASES[key]
    compile_model(MODELS / f"{name}.onnx", tmp_path, generation=Generation(MAX_LENGTH), **options)
    m16, m32 = mf.read(fp16[key]), mf.read(tmp_path)
    gen = m16["generation"]
    state = {n for s in gen["state"] for n in (s["past"], s["present"])}
    assert len(state) == 8 and all(s.get("shared", False) == ("copied" not in key) for s in gen["state"])
    ios32 = {io["name"]: io for io in m32["inputs"] + m32["outputs"]}
    for io in m16["inputs"] + m16["outputs"]:
        if io["name"] in state:
            assert io["storage"] == "f16" and ios32[io["name"]]["storage"] == "f32"
            assert io["size"] * 2 == ios32[io["name"]]["size"]
        else:  # logits, ids, mask, positions and the token as at fp32
            assert [io[k] for k in KEYS] == [ios32[io["name"]][k] for k in KEYS]
    assert mf.F16_FEATURE in m16["target"]["features"]
    pasts = [io for io in m16["inputs"] if io["name"] in state]
    assert [io["size"] for io in pasts] == [mf.stored_nbytes("f16", math.prod(cache))] * 4


def test_sampling_keeps_its_seen_tokens_32_bit(tmp_path):
    compile_model(MODELS / "gpt2_tiny_kv.onnx", tmp_path, generation=Generation(16, sample_candidates=4),
                  precision="fp16")  # fmt: skip
    m = mf.read(tmp_path)
    storage = {io["name"]: io["storage"] for io in m["inputs"] + m["outputs"]}
    *cache, seen = m["generation"]["state"]
    assert {storage[s[k]] for s in cache for k in ("past", "present")} == {"f16"}
    assert storage[seen["past"]] == storage[seen["present"]] == storage["sampling_params"] == "f32"
    assert storage["sampled_token"] == storage["next_token"] == "i32"


# -- runs ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("key", list(CASES))
def test_greedy_ids_as_onnxruntime_float32_copying_f16_bytes(key, fp16, device16, monkeypatch):
    name, _, cache = CASES[key]
    model = MODELS / f"{name}.onnx"
    if "genai" in name:
        want = ort_greedy(accuracy_level_0(onnx.load(model)).SerializeToString(), PROMPT, N, head_size=16)
    else:
        want = ort_greedy(model, PROMPT, N)
    gen = onnx2wgsl.Generator(fp16[key], device=device16)
    got, steps = StepRecorder(monkeypatch).generate(gen, PROMPT, N)
    per_step = [[size for _, dst, size in step["copies"] if dst is not gen._readback] for step in steps]
    assert got == want and len(set(got)) > 5
    if "copied" not in key:
        assert per_step == [[]] * N  # (written in place)
    else:  # each present [1, H, positions so far, D] as stored: 2 bytes an element
        B, H, _, D = cache
        assert per_step == [[2 * B * H * (len(PROMPT) + i) * D] * 4 for i in range(N)]


@pytest.mark.gpu
def test_a_plain_run_converts_the_f16_cache_at_the_boundary(fp16, device16):
    """Fed and read by ``session.run``, the f16 caches keep the model's float32 dtype (rounded
    to f16 on the way in), within f16's rounding of onnxruntime."""
    rng = np.random.default_rng(0)
    past = {f"past_key_values.{i}.{k}": rng.standard_normal((1, 2, 3, 8)).astype(np.float32)
            for i in range(2) for k in ("key", "value")}  # fmt: skip
    feeds = {"input_ids": np.array([PROMPT], np.int64), "attention_mask": np.ones((1, 7), np.int64),
             "position_ids": np.arange(3, 7)[None], **past}  # fmt: skip
    with onnx2wgsl.load(fp16["llama_tiny_kv_copied"], device=device16) as s:
        names = [o["name"] for o in s.manifest["outputs"]]
        got = dict(zip(names, s.run(None, feeds)))
    model = onnx.load(MODELS / "llama_tiny_kv.onnx")
    want = dict(zip([o.name for o in model.graph.output], ort_run(model, feeds)))
    for n, w in want.items():
        assert got[n].dtype == np.float32 and got[n].shape == w.shape, n
        np.testing.assert_allclose(got[n], w, rtol=0, atol=1e-2 * float(np.abs(w).max()), err_msg=n)
    np.testing.assert_array_equal(
        got["present.0.key"][:, :, :3], past["past_key_values.0.key"].astype(np.float16)
    )


@pytest.mark.gpu
def test_gqa_reads_and_writes_f16_pasts_and_presents_outside_generation(device16, tmp_path):
    """GroupQueryAttention compiled without generation at fp16: its pasts and presents are f16
    too (GQAScatter widens the past rows it copies and narrows what it writes), a prompt and then
    a step fed the present back within f16's rounding of onnxruntime."""
    from test_gqa import GENAI_DIMS

    model = onnx.load(MODELS / "llama_genai_fp32.onnx")
    compile_model(model, tmp_path, dims={"batch_size": 1, **GENAI_DIMS}, precision="fp16")
    assert {io["storage"] for io in mf.read(tmp_path)["inputs"] if io["name"].startswith("past")} == {"f16"}
    names = [o.name for o in model.graph.output]
    past = {
        f"past_key_values.{i}.{kv}": np.zeros((1, 2, 0, 16), np.float32)
        for i in range(2)
        for kv in ("key", "value")
    }
    ids = np.array([PROMPT], np.int64)
    with onnx2wgsl.load(tmp_path, device=device16) as s:
        for _ in range(2):
            P = past["past_key_values.0.key"].shape[2]
            feeds = {"input_ids": ids, "attention_mask": np.ones((1, P + ids.shape[1]), np.int64), **past}
            got, want = s.run(None, feeds), ort_run(model, feeds)
            for n, g, w in zip(names, got, want):
                assert g.dtype == np.float32 and g.shape == w.shape, n
                np.testing.assert_allclose(
                    g, w, rtol=0, atol=3e-3 * float(np.abs(w).max()), err_msg=f"{n} past {P}"
                )
            past = {n.replace("present", "past_key_values"): w for n, w in zip(names[1:], want[1:])}
            ids = np.array([[11]], np.int64)

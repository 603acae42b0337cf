"""Attention's lanes form (attention.wgsl.j2 stage "lanes", attention._lane_chunk): a decode
step has a query row per head, a few dozen invocations that would each walk thousands of keys,
so on a GPU target a workgroup of LANE_GROUP lanes takes each row and chunk of keys, its lanes
splitting the head, with chunks enough to fill the target's lanes, and the combine pass folds
them. Each case is compared with onnxruntime or onnx's reference, in the lanes form (the
default target) and in one pass (the cpu target), at several lane counts; GroupQueryAttention's
decode cases over long caches (sinks, smooth softmax, windows) take it in tests/test_gqa.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_close, ort_run, reference_run, with_dim_params
from test_ops_nn import _attention_case

import onnx2wgsl
from onnx2wgsl.compiler import compile_model, lowering
from onnx2wgsl.compiler.lowering import attention
from onnx2wgsl.compiler.target import WEBGPU_DEFAULT_LIMITS, Target
from onnx2wgsl.runtime.manifest import evaluate

COMBINE = "Attention, second pass"  # attention.wgsl.j2's comment on the combine pass
LANES = "Attention, first of two passes on a GPU"  # ... on the lanes form
CHUNK = "per query row and chunk of"  # ... on the lanes form and the per-row chunks


def _target(lanes: int) -> Target:
    return Target(f"lanes{lanes}", dict(WEBGPU_DEFAULT_LIMITS), lanes=lanes)


def _run(model, feeds, device, path, target=None, dims=None, runs=None):
    """Outputs of each feed set in ``runs`` (or ``feeds``), and the shaders' text."""
    compile_model(model, path, verify_ir=True, target=target, dims=dims)
    shaders = [f.read_text() for f in sorted((path / "shaders").iterdir())]
    with onnx2wgsl.load(path, device=device) as sess:
        return [sess.run(None, f) for f in (runs or [feeds])], shaders


def _chunk(shaders) -> int | None:
    """Keys a chunk of the compiled lanes form (None: another form)."""
    for s in shaders:
        if LANES in s:
            return int(s.split(CHUNK)[1].split()[0])
    return None


DECODE = {
    # one query row per head over a past cache (GQA: 4 query heads over 2), the present out
    "gqa_past": {"B": 1, "Hq": 4, "Hkv": 2, "Sq": 1, "Skv": 1, "past": 299, "n_outputs": 3},
    # rank 3, causal, a bool mask over the keys, two batch rows
    "rank3_causal_mask": {
        "rank": 3, "B": 2, "Hq": 2, "Hkv": 1, "Sq": 1, "Skv": 1, "past": 180, "is_causal": 1,
        "mask": ("bool", (2, 1, 1, "L")), "n_outputs": 3,
    },
    # a float mask whose -inf hides part of two steps of keys and the whole of another
    "float_mask": {"B": 1, "Hq": 2, "Hkv": 2, "Sq": 1, "Skv": 200, "mask": ("float", (1, "L"))},
    # two query rows a head (GSq under the flash form's 8), head sizes not vec4s
    "two_rows_odd_heads": {"B": 1, "Hq": 2, "Hkv": 1, "Sq": 2, "Skv": 2, "past": 150, "D": 6, "Dv": 10, "n_outputs": 3},
}  # fmt: skip


@pytest.mark.parametrize("name", DECODE)
def test_decode_rows_split_across_lanes_match_onnxruntime(name, device, tmp_path):
    model, feeds = _attention_case(**DECODE[name])
    if DECODE[name].get("mask", ("",))[0] == "float":
        feeds["mask"][:, 40:72] = -np.inf
        feeds["mask"][:, 96:128] = -np.inf
    want = ort_run(model, feeds)
    (got,), shaders = _run(model, feeds, device, tmp_path / "gpu")
    assert _chunk(shaders) == attention.LANE_GROUP and any(COMBINE in s for s in shaders)
    assert_close(got, want, rtol=1e-4, atol=1e-5)
    (got,), shaders = _run(model, feeds, device, tmp_path / "cpu", target="cpu")
    assert _chunk(shaders) is None and not any(COMBINE in s for s in shaders), "the cpu target keeps one pass"
    assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lanes", [16, 64, 4096])
def test_the_lanes_size_the_chunks(lanes, device, tmp_path):
    """4 query rows over 300 keys: 4 x lanes / (32 x 4) chunks a row (one at least, and no more
    than lanes / 4), of whole steps of 32 keys (16 lanes: one chunk of 320 keys; 64: two of 160;
    4096: ten of 32)."""
    model, feeds = _attention_case(B=1, Hq=4, Hkv=2, Sq=1, Skv=1, past=299, is_causal=1, n_outputs=3)
    (got,), shaders = _run(model, feeds, device, tmp_path, target=_target(lanes))
    assert _chunk(shaders) == {16: 320, 64: 160, 4096: 32}[lanes]
    assert_close(got, ort_run(model, feeds), rtol=1e-4, atol=1e-5)


def test_the_compile_report_counts_the_lanes_form(tmp_path):
    """The report's note on a GPU target's lane splits counts the lanes form's shader."""
    model, _ = _attention_case(B=1, Hq=4, Hkv=2, Sq=1, Skv=1, past=299, n_outputs=3)
    notes = compile_model(model, tmp_path).report.notes
    assert any("1 of " in n and "split reductions across a workgroup's lanes" in n for n in notes), notes


def test_too_few_lanes_or_keys_keep_one_pass(device, tmp_path):
    model, feeds = _attention_case(B=1, Hq=4, Hkv=2, Sq=1, Skv=1, past=299)
    # 8 lanes: the 4 rows unsplit fill more than a quarter of them
    _, shaders = _run(model, feeds, device, tmp_path / "few_lanes", target=_target(8))
    assert _chunk(shaders) is None
    model, feeds = _attention_case(B=1, Hq=4, Hkv=2, Sq=1, Skv=1, past=30)
    _, shaders = _run(model, feeds, device, tmp_path / "few_keys")
    assert _chunk(shaders) is None  # 31 keys: under two steps of the lanes form


def test_symbolic_cache_length_walks_the_run_s_chunks(device, tmp_path):
    """A cache length kept symbolic (a generation's decode steps): chunks are planned for its
    bound and a run walks ceil(L / chunk) of them; rows with the reference at three lengths."""
    model, _ = _attention_case(B=1, Hq=4, Hkv=2, Sq=1, Skv=1, past=8, is_causal=1)
    model = with_dim_params(model, {"pk": [1, 2, "past", 8], "pv": [1, 2, "past", 8]})
    rng = np.random.default_rng(5)
    runs = [
        {
            "q": rng.uniform(-1, 1, (1, 4, 1, 8)).astype(np.float32),
            "k": rng.uniform(-1, 1, (1, 2, 1, 8)).astype(np.float32),
            "v": rng.uniform(-1, 1, (1, 2, 1, 8)).astype(np.float32),
            "pk": rng.uniform(-1, 1, (1, 2, p, 8)).astype(np.float32),
            "pv": rng.uniform(-1, 1, (1, 2, p, 8)).astype(np.float32),
        }
        for p in (3, 40, 511)
    ]
    got, shaders = _run(model, runs[0], device, tmp_path, dims={"past": (1, 511)}, runs=runs)
    assert _chunk(shaders) == attention.LANE_GROUP
    for g, feeds in zip(got, runs):
        assert_close(g, reference_run(model, feeds), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("budget", [None, 500], ids=["flash_one_pass", "flash_chunks"])
def test_one_artifact_takes_the_flash_form_for_prompts_and_the_lanes_form_for_decode_steps(
    budget, device, monkeypatch, tmp_path
):
    """A symbolic sequence (prefill and decode from one artifact, 2 query heads a kv head): runs
    of 4 positions or more (8 rows a kv head) take the flash form, shorter ones the lanes form,
    whose grid and partial sums are sized for 3 positions at most; each run against onnx's
    reference, and the profile's work counted once a run. A small loop budget has the flash
    form split its keys into chunks too, with a combine pass of its own beside the lanes
    form's."""
    if budget:
        monkeypatch.setattr(lowering, "LOOP_BUDGET", lowering.LOOP_SLACK + budget)
    model, _ = _attention_case(B=1, Hq=4, Hkv=2, Sq=1, Skv=1, past=8, is_causal=1)
    model = with_dim_params(
        model,
        {
            **{n: [1, 4 if n == "q" else 2, "seq", 8] for n in ("q", "k", "v")},
            **{n: [1, 2, "past", 8] for n in ("pk", "pv")},
            "y0": [1, 4, "seq", 8],
        },
    )
    rng = np.random.default_rng(7)

    def feeds(s, p):
        f = {
            n: rng.uniform(-1, 1, (1, 4 if n == "q" else 2, s, 8)).astype(np.float32) for n in ("q", "k", "v")
        }
        return f | {n: rng.uniform(-1, 1, (1, 2, p, 8)).astype(np.float32) for n in ("pk", "pv")}

    runs = [feeds(1, 200), feeds(3, 50), feeds(12, 100), feeds(1, 5)]
    got, shaders = _run(model, runs[0], device, tmp_path, dims={"seq": (1, 16), "past": (1, 300)}, runs=runs)
    assert _chunk(shaders) == attention.LANE_GROUP
    assert any("flash form" in s for s in shaders)
    assert sum(COMBINE in s for s in shaders) == (2 if budget else 1)
    for g, f in zip(got, runs):
        assert_close(g, reference_run(model, f), rtol=1e-4, atol=1e-5)
    # the op's work (per query head, position and key, a multiply-add per value of the head for
    # QK and for PV: 2 x 2 x 8) on the dispatch of the form that runs: lanes at 1 position,
    # flash at 4
    m = json.loads((tmp_path / "manifest.json").read_text())
    text = [(tmp_path / s["file"]).read_text() for s in m["shaders"]]
    ours = [d for d in m["dispatches"] if "Attention," in text[d["shader"]]]
    for seq, form in ((1, "lanes"), (4, "flash")):
        values = {"seq": seq, "past": 200}
        counted = {
            "lanes"
            if LANES in text[d["shader"]]
            else "flash"
            if "flash form" in text[d["shader"]]
            else "combine": evaluate(d["flops"], values)
            for d in ours
            if evaluate(d["flops"], values)
        }
        assert counted == {form: 4 * 8 * 2 * 2 * seq * (200 + seq)}, counted

"""Attention's flash form (attention.wgsl.j2 stage "tiles"): when enough query rows read the
same keys, one workgroup per block of them walks the keys a tile at a time through workgroup
memory. Cases hit every edge of it: GQA groups sharing a tile, blocks with idle lanes, ragged
last tiles, causal and sliding-window spans, float and bool masks, past caches, per-batch key
counts, softcap, large heads (smaller tiles), rows with no allowed key, and the chunked form a
small loop budget forces (partials folded by the combine pass); each with and without
--subgroups (a subgroup's lanes share each tile's loads by broadcast where the heads are vec4s)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, ort_run, reference_run
from test_ops_nn import _attention_case

import onnx2wgsl
from onnx2wgsl.compiler import compile_model, lowering

FLASH = "flash form"  # attention.wgsl.j2's comment on the tiles stage
COMBINE = "folds the"  # its combine pass


@pytest.fixture(params=[False, True], ids=["plain", "subgroups"])
def sg(request):
    return request.param


def _run(model, feeds, device, tmp_path, sg=False):
    compile_model(model, tmp_path, verify_ir=True, subgroups=sg)
    shaders = [f.read_text() for f in sorted((tmp_path / "shaders").iterdir())]
    flash = [s for s in shaders if FLASH in s]
    assert flash, "the flash form was not chosen"
    vec4 = all(i.type.tensor_type.shape.dim[-1].dim_value % 4 == 0 for i in model.graph.input[1:3])
    rank4 = len(model.graph.input[0].type.tensor_type.shape.dim) == 4
    if sg and vec4 and rank4:  # (rank 3 packs the heads: the test reads only rank 4's head size)
        assert all("subgroupBroadcast(ko0" in s and "subgroupBroadcast(vo0" in s for s in flash)
    elif not sg:
        assert not any("subgroup" in s for s in flash)
    with onnx2wgsl.load(tmp_path, device=device) as sess:
        return sess.run(None, feeds), shaders


ORT_CASES = {
    "gqa_ragged_tile": {"Sq": 20, "Skv": 37, "Hkv": 2},
    "two_blocks_causal": {"Sq": 40, "Skv": 40, "Hkv": 2, "is_causal": 1},
    "rank3_float_mask": {"rank": 3, "Sq": 16, "Skv": 16, "Hkv": 1, "Dv": 6, "mask": ("float", (16, "L"))},
    "past_bool_mask": {"Sq": 12, "Skv": 12, "past": 9, "is_causal": 1, "mask": ("bool", (2, 1, 12, "L")), "n_outputs": 3},
    "softcap": {"Sq": 10, "Hkv": 2, "softcap": 1.5},
    "large_heads": {"Sq": 9, "Skv": 40, "Hq": 2, "Hkv": 1, "D": 128, "Dv": 96},
    # 10 and 5 vec4s a head: a subgroup's second load of each key row is partly clamped
    "odd_vec4_heads": {"Sq": 12, "Skv": 45, "Hkv": 2, "D": 40, "Dv": 20, "is_causal": 1},
}  # fmt: skip

REFERENCE_CASES = {
    "nonpad_causal": {"opset": 24, "nonpad": [7, 19], "is_causal": 1, "Sq": 10, "Skv": 20, "Hkv": 2},
    "window_both": {"opset": 25, "left_window_size": 3, "right_window_size": 2, "Sq": 24, "Skv": 24},
    "window_past": {"opset": 25, "left_window_size": 5, "is_causal": 1, "Sq": 20, "past": 12, "n_outputs": 3},
}


@pytest.mark.parametrize("name", ORT_CASES)
def test_flash_attention_matches_onnxruntime(name, sg, device_sg, tmp_path):
    model, feeds = _attention_case(**ORT_CASES[name])
    got, _ = _run(model, feeds, device_sg, tmp_path, sg)
    assert_close(got, ort_run(model, feeds), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_flash_attention_matches_the_reference(name, sg, device_sg, tmp_path):
    # what onnxruntime does not implement: nonpad_kv_seqlen, sliding windows
    model, feeds = _attention_case(**REFERENCE_CASES[name])
    got, _ = _run(model, feeds, device_sg, tmp_path, sg)
    assert_close(got, reference_run(model, feeds), rtol=1e-4, atol=1e-5)


def test_a_row_with_no_allowed_key_is_zeros(sg, device_sg, tmp_path):
    model, feeds = _attention_case(Sq=16, Skv=16, mask=("bool", (2, 1, 16, "L")))
    feeds["mask"][1, 0, 5, :] = False
    (got,), _ = _run(model, feeds, device_sg, tmp_path, sg)
    assert np.all(got[1, :, 5, :] == 0)
    assert_close([got], reference_run(model, feeds), rtol=1e-4, atol=1e-5)


def test_keys_past_the_loop_budget_are_split_in_chunks_and_folded(sg, device_sg, monkeypatch, tmp_path):
    monkeypatch.setattr(lowering, "LOOP_BUDGET", lowering.LOOP_SLACK + 500)
    model, feeds = _attention_case(Sq=24, Skv=150, Hkv=2, past=30, is_causal=1, n_outputs=3)
    got, shaders = _run(model, feeds, device_sg, tmp_path, sg)
    assert any(COMBINE in s for s in shaders)
    assert_close(got, ort_run(model, feeds), rtol=1e-4, atol=1e-5)

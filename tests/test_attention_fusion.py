"""fuse-attention (compiler/passes/attention_fusion.py): scaled-dot-product attention written out
in primitive ops becomes the Attention op reading Q, K and V in place, and the Q/K/V
projections one MatMul. Each form is checked for what the fused graph holds and against
onnxruntime; near misses stay unfused and still match."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_close, check_against_ort, check_symbolic, graph_model, ort_run
from onnx import helper, numpy_helper
from test_transformers import RANGES, check_points

MODELS = Path(__file__).resolve().parent / "models"


def _dce_graph(model, **kwargs):
    from onnx2wgsl.compiler.driver import run_to_stage

    return run_to_stage(model, "dce", **kwargs)


def _kinds(g) -> collections.Counter:
    return collections.Counter(op.kind for op in g.ops)


def _no_transpose_around_attention(g) -> None:
    for op in g.ops:
        if op.kind != "Attention":
            continue
        for v in op.inputs[:3]:
            assert v.producer is None or v.producer.kind != "Transpose", op.label
        for v in op.outputs:
            assert all(u.kind != "Transpose" for u in v.uses), op.label


# -- hand-built graphs ---------------------------------------------------------------------------
E, H = 8, 2
D = E // H


def _projections(nodes: list, inits: dict, seed: int = 0) -> None:
    """x [B, S, E] -> q, k, v [B, H, S, D] (k as K^T [B, H, D, S] in ``kt``)."""
    rng = np.random.default_rng(seed)
    inits["heads"] = np.array([0, 0, H, D], np.int64)
    for n in "qkv":
        inits[f"w{n}"] = rng.standard_normal((E, E)).astype(np.float32) * 0.5
        inits[f"b{n}"] = rng.standard_normal(E).astype(np.float32) * 0.1
        nodes += [
            helper.make_node("MatMul", ["x", f"w{n}"], [f"{n}0"]),
            helper.make_node("Add", [f"{n}0", f"b{n}"], [f"{n}1"]),
            helper.make_node("Reshape", [f"{n}1", "heads"], [f"{n}2"]),
        ]
    nodes += [
        helper.make_node("Transpose", ["q2"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k2"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v2"], ["v"], perm=[0, 2, 1, 3]),
    ]


def _merge_heads(nodes: list, inits: dict, p: str, flat: bool = True) -> None:
    """p [B, H, S, S] -> y [B, S, E] (or [B, S, H, D] unless ``flat``): P @ V, heads merged."""
    inits["merged"] = np.array([0, 0, E], np.int64)
    nodes += [
        helper.make_node("MatMul", [p, "v"], ["o"]),
        helper.make_node("Transpose", ["o"], ["ot" if flat else "y"], perm=[0, 2, 1, 3]),
    ]
    if flat:
        nodes.append(helper.make_node("Reshape", ["ot", "merged"], ["y"]))


def _guarded_softmax(nodes: list, inits: dict, s: str, axis: int = -1) -> str:
    inits["zero"] = np.float32(0.0)
    nodes += [
        helper.make_node("Softmax", [s], ["p"], axis=axis),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "p"], ["pg"]),
    ]
    return "pg"


def eager_model(B: int, S: int, softmax_axis: int = -1) -> tuple[onnx.ModelProto, dict]:
    """transformers' eager form: (Q K^T) / sqrt(D) + additive float mask [B, 1, 1, S], Softmax, @ V."""
    nodes, inits = [], {}
    _projections(nodes, inits)
    inits["sqrt_d"] = np.float32(math.sqrt(D))
    nodes += [
        helper.make_node("MatMul", ["q", "kt"], ["s0"]),
        helper.make_node("Div", ["s0", "sqrt_d"], ["s1"]),
        helper.make_node("Add", ["s1", "mask"], ["s2"]),
        helper.make_node("Softmax", ["s2"], ["p"], axis=softmax_axis),
    ]
    _merge_heads(nodes, inits, "p")
    rng = np.random.default_rng(1)
    mask = np.zeros((B, 1, 1, S), np.float32)
    low = np.finfo(np.float32).min  # as transformers' eager attention masks
    mask[0, ..., S // 2 + 1 :] = low
    if B > 1:
        mask[1] = low  # every key masked: a uniform row, fused or not
    feeds = {"x": rng.standard_normal((B, S, E)).astype(np.float32), "mask": mask}
    graph = helper.make_graph(
        nodes, "eager",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "seq", E]),
         helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, ["batch", 1, 1, "seq"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, feeds


def _bool_mask(B: int, S: int, seed: int = 2) -> np.ndarray:
    mask = np.random.default_rng(seed).random((B, 1, S, S)) > 0.3
    mask[0, 0, 0, :] = False  # a row with no allowed key: zeros through the NaN guard
    return mask


def sdpa_model(
    B: int,
    S: int,
    where_scores: bool = False,
    q_scale=None,
    score_scale=None,
    flat: bool = True,
    fill: float = -np.inf,
) -> tuple[onnx.ModelProto, dict]:
    """torch SDPA as exported: Q and K^T each scaled by D^-1/4, a bool mask as Add of
    Where(mask, 0, -inf) (or ``where_scores``: Where(mask, scores, -inf)), the NaN guard."""
    nodes, inits = [], {}
    _projections(nodes, inits)
    c = np.float32(D**-0.25)
    inits.update(c=c, ninf=np.float32(fill), zero_m=np.float32(0.0))
    inits["cq"] = np.asarray(q_scale if q_scale is not None else c, np.float32)
    nodes += [
        helper.make_node("Mul", ["q", "cq"], ["qs"]),
        helper.make_node("Mul", ["kt", "c"], ["ks"]),
        helper.make_node("MatMul", ["qs", "ks"], ["s0"]),
    ]
    if score_scale is not None:
        inits["cs"] = np.asarray(score_scale, np.float32)
        nodes[-1].output[0] = "s0raw"
        nodes.append(helper.make_node("Mul", ["s0raw", "cs"], ["s0"]))
    if where_scores:
        nodes.append(helper.make_node("Where", ["mask", "s0", "ninf"], ["s1"]))
    else:
        nodes += [
            helper.make_node("Where", ["mask", "zero_m", "ninf"], ["m"]),
            helper.make_node("Add", ["s0", "m"], ["s1"]),
        ]
    p = _guarded_softmax(nodes, inits, "s1")
    _merge_heads(nodes, inits, p, flat)
    x = np.random.default_rng(1).standard_normal((B, S, E)).astype(np.float32)
    model = graph_model(nodes, {"x": x, "mask": _bool_mask(B, S)}, ["y"], inits, opset=17)
    return model, {"x": x, "mask": _bool_mask(B, S)}


def causal_model(B: int, S: int) -> tuple[onnx.ModelProto, dict]:
    """A constant causal mask (additive 0 / -inf, lower triangle) on scaled scores."""
    nodes, inits = [], {}
    _projections(nodes, inits)
    tri = np.where(np.tril(np.ones((S, S), bool)), 0.0, -np.inf).astype(np.float32)
    inits.update(scale=np.float32(D**-0.5), causal=tri)
    nodes += [
        helper.make_node("MatMul", ["q", "kt"], ["s0"]),
        helper.make_node("Mul", ["s0", "scale"], ["s1"]),
        helper.make_node("Add", ["causal", "s1"], ["s2"]),
        helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
    ]
    _merge_heads(nodes, inits, "p")
    x = np.random.default_rng(3).standard_normal((B, S, E)).astype(np.float32)
    model = graph_model(nodes, {"x": x}, ["y"], inits, opset=17)
    return model, {"x": x}


def gqa_model(B: int, S: int, Hq: int = 4, Hkv: int = 2) -> tuple[onnx.ModelProto, dict]:
    """Grouped-query attention as repeat_kv exports it: K and V [B, Hkv, S, D] unsqueezed,
    expanded to [B, Hkv, Hq / Hkv, S, D] and reshaped to Hq heads; 4-D in, 4-D out."""
    rep = Hq // Hkv
    nodes = [
        helper.make_node("Unsqueeze", ["k", "ax2"], ["k5"]),
        helper.make_node("Expand", ["k5", "rep_shape"], ["ke"]),
        helper.make_node("Reshape", ["ke", "heads4"], ["kr"]),
        helper.make_node("Unsqueeze", ["v", "ax2"], ["v5"]),
        helper.make_node("Expand", ["v5", "rep_shape"], ["ve"]),
        helper.make_node("Reshape", ["ve", "heads4"], ["vr"]),
        helper.make_node("Transpose", ["kr"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]),
        helper.make_node("Mul", ["s0", "scale"], ["s1"]),
        helper.make_node("Softmax", ["s1"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "vr"], ["y"]),
    ]
    inits = {
        "ax2": np.array([2], np.int64),
        "rep_shape": np.array([B, Hkv, rep, S, D], np.int64),
        "heads4": np.array([B, Hq, S, D], np.int64),
        "scale": np.float32(D**-0.5),
    }
    rng = np.random.default_rng(4)
    feeds = {
        "q": rng.standard_normal((B, Hq, S, D)).astype(np.float32),
        "k": rng.standard_normal((B, Hkv, S, D)).astype(np.float32),
        "v": rng.standard_normal((B, Hkv, S, D)).astype(np.float32),
    }
    return graph_model(nodes, feeds, ["y"], inits, opset=17), feeds


def test_eager_div_additive_mask_fuses_and_matches(device):
    model, feeds = eager_model(2, 7)
    g = _dce_graph(model, dims={"batch": 2, "seq": 7})
    kinds = _kinds(g)
    assert kinds["Attention"] == 1 and kinds["Softmax"] == 0 and kinds["Transpose"] == 0
    assert kinds["MatMul"] == 1  # Q, K and V projected by one MatMul
    check_against_ort(model, feeds, device, rtol=1e-4, atol=1e-5, dims={"batch": 2, "seq": 7})


def test_eager_form_compiled_once_with_symbolic_dims_matches_at_every_size(device):
    model = eager_model(1, 1)[0]
    g = _dce_graph(model, dims=RANGES)
    assert _kinds(g)["Attention"] == 1 and _kinds(g)["Softmax"] == 0
    check_symbolic(model, RANGES, [eager_model(b, s)[1] for b, s in [(1, 1), (2, 17), (4, 128)]], device)


@pytest.mark.parametrize("where_scores", [False, True], ids=["add_where_mask", "where_scores"])
def test_sdpa_bool_mask_with_nan_guard_fuses_and_matches(where_scores, device):
    model, feeds = sdpa_model(2, 6, where_scores=where_scores)
    g = _dce_graph(model)
    kinds = _kinds(g)
    assert kinds["Attention"] == 1 and kinds["Softmax"] == 0 and kinds["IsNaN"] == 0 and kinds["Where"] == 0
    (att,) = [op for op in g.ops if op.kind == "Attention"]
    assert att.inputs[3].dtype.value == "bool" and "mask_fill" not in att.attrs
    assert att.attrs["scale"] == pytest.approx(D**-0.5, rel=1e-6)
    _no_transpose_around_attention(g)
    check_against_ort(model, feeds, device)


def test_a_bool_mask_with_a_finite_fill_adds_it_to_the_scores(device):
    """Where(mask, 0, finfo.min) added to the scores (the dynamo export): a row with every key
    masked is uniform, fused or not, so the kernel adds the fill instead of skipping keys."""
    low = float(np.finfo(np.float32).min)
    model, feeds = sdpa_model(2, 6, fill=low)
    g = _dce_graph(model)
    (att,) = [op for op in g.ops if op.kind == "Attention"]
    assert att.attrs["mask_fill"] == pytest.approx(low) and att.inputs[3].dtype.value == "bool"
    check_against_ort(model, feeds, device)


def test_a_finite_fill_in_place_of_masked_scores_is_left_alone(device):
    """Where(mask, scores, finfo.min) replaces masked scores rather than adding to them."""
    model, feeds = sdpa_model(2, 6, where_scores=True, fill=float(np.finfo(np.float32).min))
    kinds = _kinds(_dce_graph(model))
    assert kinds["Attention"] == 0 and kinds["Softmax"] == 1
    check_against_ort(model, feeds, device)


def test_heads_merged_without_a_reshape_are_written_3d_and_viewed_4d(device):
    model, feeds = sdpa_model(2, 5, flat=False)
    g = _dce_graph(model)
    (att,) = [op for op in g.ops if op.kind == "Attention"]
    assert att.outputs[0].type.rank == 3 and [u.kind for u in att.outputs[0].uses] == ["Reshape"]
    check_against_ort(model, feeds, device)


@pytest.mark.parametrize("fill", [-np.inf, float(np.finfo(np.float32).min)], ids=["neg_inf", "finite"])
def test_packed_rows_read_by_the_chunked_kernel_under_a_small_loop_budget(
    fill, device, monkeypatch, tmp_path
):
    """With the loop budget cut, a row's keys are split in chunks (attention.wgsl.j2's two
    passes): they read Q, K and V from the packed projection rows and the mask as well."""
    import onnx2wgsl
    from onnx2wgsl.compiler import compile_model, lowering

    monkeypatch.setattr(lowering, "LOOP_BUDGET", lowering.LOOP_SLACK + 64)
    model, feeds = sdpa_model(2, 9, fill=fill)
    compile_model(model, tmp_path, verify_ir=True)
    shaders = [f.read_text() for f in (tmp_path / "shaders").iterdir()]
    assert any("first of two passes" in text for text in shaders)
    with onnx2wgsl.load(tmp_path, device=device) as sess:
        assert_close(sess.run(None, feeds), ort_run(model, feeds), rtol=1e-4, atol=1e-5)


def test_causal_constant_mask_fuses_and_matches(device):
    model, feeds = causal_model(2, 9)
    kinds = _kinds(_dce_graph(model))
    assert kinds["Attention"] == 1 and kinds["Softmax"] == 0
    check_against_ort(model, feeds, device)


def test_grouped_query_attention_through_expand_fuses_and_matches(device):
    model, feeds = gqa_model(2, 5)
    g = _dce_graph(model)
    kinds = _kinds(g)
    assert kinds["Attention"] == 1 and kinds["Expand"] == 0 and kinds["Transpose"] == 0
    (att,) = [op for op in g.ops if op.kind == "Attention"]
    assert (att.attrs["q_heads"], att.attrs["kv_heads"]) == (4, 2)
    assert att.attrs["q_3d"] == 0 and att.attrs["kv_3d"] == 0
    check_against_ort(model, feeds, device)


def test_softmax_over_another_axis_is_left_alone(device):
    model, feeds = eager_model(2, 5, softmax_axis=2)
    kinds = _kinds(_dce_graph(model, dims={"batch": 2, "seq": 5}))
    assert kinds["Attention"] == 0 and kinds["Softmax"] == 1
    check_against_ort(model, feeds, device, dims={"batch": 2, "seq": 5})


def test_a_per_key_scale_on_the_scores_is_left_alone(device):
    """Scores scaled by a different value per key are no attention scale."""
    model, feeds = sdpa_model(2, 6, score_scale=np.linspace(0.5, 2.0, 6).reshape(1, 1, 1, 6))
    kinds = _kinds(_dce_graph(model))
    assert kinds["Attention"] == 0 and kinds["Softmax"] == 1
    check_against_ort(model, feeds, device)


def test_a_per_head_scale_on_q_stays_a_kernel_whose_result_attention_reads(device):
    """Q scaled by a different value per head is no single attention scale: the Mul stays and
    the Attention op reads its result as a 4-D Q; K's scalar scale is the attention scale."""
    model, feeds = sdpa_model(2, 6, q_scale=np.array([0.5, 2.0], np.float32).reshape(1, H, 1, 1))
    g = _dce_graph(model)
    (att,) = [op for op in g.ops if op.kind == "Attention"]
    assert att.inputs[0].producer.kind == "Mul" and att.attrs["q_3d"] == 0
    assert att.attrs["scale"] == pytest.approx(D**-0.25, rel=1e-6)
    check_against_ort(model, feeds, device)


def test_unequal_scales_on_q_and_k_fold_into_their_product(device):
    """Scalar scales are equivalent wherever they sit: Q * 2 and K^T * D^-1/4 / 2 ... is
    their product on the scores."""
    model, feeds = sdpa_model(1, 4, q_scale=np.float32(2.0))
    g = _dce_graph(model)
    (att,) = [op for op in g.ops if op.kind == "Attention"]
    assert att.attrs["scale"] == pytest.approx(2.0 * D**-0.25, rel=1e-6)
    check_against_ort(model, feeds, device)


def test_an_intermediate_read_elsewhere_is_left_alone(device):
    """The probabilities are also a graph output: fusing would compute them twice."""
    model, feeds = eager_model(1, 5)
    model.graph.output.append(helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, None))
    kinds = _kinds(_dce_graph(model, dims={"batch": 1, "seq": 5}))
    assert kinds["Attention"] == 0
    check_against_ort(model, feeds, device, dims={"batch": 1, "seq": 5})


# -- the exported transformers -------------------------------------------------------------------
# name, dims kept symbolic, sizes run, attention layers
EXPORTS = [
    ("bert_tiny_torchscript", RANGES, [(1, 1), (2, 17), (4, 128)]),
    ("bert_tiny_dynamo", RANGES, [(1, 1), (2, 17), (4, 128)]),
    ("bert_tiny_torchscript_q4", RANGES, [(1, 1), (4, 128)]),
    ("bert_tiny_torchscript_opt", RANGES, [(1, 1), (4, 128)]),
    ("bert_tiny_dynamo_opt", RANGES, [(1, 1), (4, 128)]),
    ("distilbert_tiny_torchscript", RANGES, [(1, 1), (2, 17), (4, 128)]),
    ("gpt2_tiny_dynamo", {"seq": (1, 128)}, [(None, 1), (None, 17), (None, 128)]),
    ("gpt2_tiny_dynamo_opt", {"seq": (1, 128)}, [(None, 1), (None, 128)]),
    ("llama_tiny_torchscript", RANGES, [(1, 1), (2, 17), (4, 128)]),
    ("llama_tiny_torchscript_q4", RANGES, [(1, 1), (4, 128)]),
    ("vit_tiny_torchscript", {"batch": (1, 4)}, [(1, None), (3, None)]),
    ("vit_tiny_torchscript_opt", {"batch": (1, 4)}, [(1, None), (4, None)]),
    ("whisper_encoder_tiny_torchscript", {"batch": (1, 4)}, [(1, None), (4, None)]),
    ("qwen2_tiny_torchscript", RANGES, [(1, 1), (4, 128)]),
    ("qwen2_tiny_dynamo", RANGES, [(1, 1), (4, 128)]),
    ("phi3_tiny_dynamo", RANGES, [(1, 1), (4, 128)]),
    ("t5_encoder_tiny_torchscript", RANGES, [(1, 1), (2, 17), (4, 128)]),
]
# the models whose Q, K and V projections are plain MatMuls of one input: one packed MatMul
PACKED = {"bert_tiny_torchscript", "bert_tiny_dynamo", "bert_tiny_torchscript_opt", "bert_tiny_dynamo_opt",
          "distilbert_tiny_torchscript", "gpt2_tiny_dynamo", "gpt2_tiny_dynamo_opt", "vit_tiny_torchscript",
          "vit_tiny_torchscript_opt", "whisper_encoder_tiny_torchscript"}  # fmt: skip


@pytest.mark.parametrize("name,ranges,points", EXPORTS, ids=[e[0] for e in EXPORTS])
def test_exported_attention_fused_per_layer_and_matches_onnxruntime(name, ranges, points, device, tmp_path):
    from onnx2wgsl.compiler import compile_model

    model = onnx.load(MODELS / f"{name}.onnx")
    seen = {}

    def keep(stage, g):
        if stage == "dce":
            seen["kinds"] = _kinds(g)
            seen["attention"] = [op for op in g.ops if op.kind == "Attention"]
            _no_transpose_around_attention(g)

    compile_model(model, tmp_path / "a", dims=ranges, verify_ir=True, on_stage=keep)
    assert seen["kinds"]["Attention"] == 2, "one Attention op per layer (2 layers)"
    assert seen["kinds"]["Softmax"] == 0 and seen["kinds"]["IsNaN"] == 0
    if name in PACKED:
        assert all(len({id(v) for v in op.inputs[:3]}) == 1 for op in seen["attention"])
    check_points(tmp_path / "a", model, name, points, device)


def test_bert_encoder_layer_runs_in_seven_dispatches_at_O2(tmp_path):
    """bert_tiny_torchscript at batch=1, seq=128, -O2: each encoder layer is the packed QKV
    MatMul, Attention, the output projection (+ residual), LayerNorm, FFN up (+ Gelu), FFN
    down (+ residual), LayerNorm = 7 dispatches (17 before attention fusion). The rest of the
    22 dispatches are the embeddings and the padding mask (6: attention reads the [B, 1, 1, L]
    mask, not its And with an always-true arange test broadcast to [B, 1, S, L]) and the pooler
    (2): 6 + 2 * 7 + 2."""
    from onnx2wgsl.compiler import compile_model

    compile_model(onnx.load(MODELS / "bert_tiny_torchscript.onnx"), tmp_path, dims={"batch": 1, "seq": 128},
                  opt_level=2)  # fmt: skip
    labels = [d["label"] for d in json.loads((tmp_path / "manifest.json").read_text())["dispatches"]]
    per_layer = collections.Counter(
        label.split("/encoder/")[1].split("/")[0] for label in labels if "/encoder/layer." in label
    )
    assert per_layer == {"layer.0": 7, "layer.1": 7}
    rest = [label for label in labels if "/encoder/layer." not in label]
    assert len(rest) == 8 and sum(1 for label in rest if "/pooler/" in label) == 2
    assert not any(label.split()[0] in ("And", "Expand") for label in rest)
    assert len(labels) == 8 + 2 * 7
    assert not any(label.startswith(("Transpose", "Softmax")) for label in labels)


# -- ONNX's own Attention function body, as the backend suite's expanded cases write it ----------
SPEC_CASES = [
    "test_attention_4d_expanded",
    "test_attention_3d_gqa_causal_expanded",
    "test_attention_4d_causal_with_past_and_present_expanded",
    "test_attention_4d_diff_heads_sizes_scaled_expanded",
    "test_attention_local_window_expanded",
]


@pytest.mark.parametrize("name", SPEC_CASES)
def test_onnx_attention_function_body_fuses_and_matches_its_reference(name, device):
    """The expanded cases of ONNX's backend suite (Attention through its function body:
    Unsqueeze / Expand / Reshape of K and V, K^T, scales on Q and K^T, an additive bias, the
    Softmax and a guard that passes it through) fuse into one Attention op and still match
    the suite's reference outputs (tools/conformance.py runs them all)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import conformance

    (case,) = [c for c in conformance.collect(["node"]) if c.name == name]
    kinds = _kinds(_dce_graph(onnx.load(case.model_path)))
    assert kinds["Attention"] == 1 and kinds["Softmax"] == 0
    result = conformance.run_case(case, device)
    assert result.ok, result.message


# -- masks read before what only broadcasts them -------------------------------------------------
def _arange_and_padding_mask_model(bound: int) -> tuple[onnx.ModelProto, dict]:
    """ONNX Attention whose mask is transformers' builder form: And(arange(S)[1, 1, S, 1] >=
    bound, padding[B, 1, 1, S]), Expanded to [B, 1, S, S]."""
    B, H, S, D = 2, 2, 12, 8
    rng = np.random.default_rng(4)
    feeds = {n: rng.uniform(-1, 1, (B, H, S, D)).astype(np.float32) for n in "qkv"}
    pad = np.ones((B, 1, 1, S), bool)
    pad[1, ..., 9:] = False
    feeds["pad"] = pad
    consts = {"start": np.array(0, np.int64), "limit": np.array(S, np.int64), "delta": np.array(1, np.int64),
              "rows": np.array([1, 1, S, 1], np.int64), "bound": np.array(bound, np.int64),
              "full": np.array([B, 1, S, S], np.int64)}  # fmt: skip
    nodes = [
        helper.make_node("Range", ["start", "limit", "delta"], ["ar"]),
        helper.make_node("Reshape", ["ar", "rows"], ["ar4"]),
        helper.make_node("GreaterOrEqual", ["ar4", "bound"], ["ok"]),
        helper.make_node("And", ["ok", "pad"], ["both"]),
        helper.make_node("Expand", ["both", "full"], ["mask"]),
        helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"]),
    ]
    return graph_model(nodes, feeds, ["y"], consts, opset=23), feeds


@pytest.mark.parametrize("bound,narrowed", [(0, True), (1, False)], ids=["always_true", "masks_row_0"])
def test_attention_reads_the_mask_before_an_always_true_and_and_its_expand(bound, narrowed, device):
    model, feeds = _arange_and_padding_mask_model(bound)
    (att,) = [op for op in _dce_graph(model).ops if op.kind == "Attention"]
    mask = att.input(3)
    assert (mask.shape == (2, 1, 1, 12)) == narrowed, mask.type
    if not narrowed:  # the And stays (row 0 attends nothing: zeros), only its Expand goes
        assert mask.producer.kind == "And"
    check_against_ort(model, feeds, device)

"""Transformer models as torch exports them (tests/models/, made by tools/export_transformers.py),
run against onnxruntime (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_close, gpu_run, ort_run

MODELS = Path(__file__).resolve().parent / "models"
# the exports, their 4-bit and optimizer-fused forms (tools/quantize_transformers.py)
BERTS = ["bert_tiny_torchscript", "bert_tiny_dynamo", "bert_tiny_torchscript_q4", "bert_tiny_torchscript_opt",
         "bert_tiny_dynamo_opt"]  # fmt: skip


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
@pytest.mark.parametrize("subgroups", [False, True], ids=["plain", "subgroups"])
def test_exported_transformer_matches_onnxruntime(name, dims, subgroups, device, device_sg):
    """Also with --subgroups: the matmuls' and attention tiles' shared loads, the reductions'
    subgroup per row."""
    model = onnx.load(MODELS / f"{name}.onnx")
    feeds = _feeds(model, dims)
    got = gpu_run(model, feeds, device_sg if subgroups else device, dims=dims, subgroups=subgroups)
    assert_close(got, ort_run(model, feeds), rtol=1e-4, atol=2e-5)


# -- one compile, any size: dims kept symbolic ---------------------------------------------------
RANGES = {"batch": (1, 4), "seq": (1, 128)}


@pytest.fixture(scope="module")
def bert_symbolic(tmp_path_factory):
    """bert_tiny_torchscript compiled once with batch=1..4, seq=1..128 (and its report)."""
    from onnx2wgsl.compiler import compile_model

    out = tmp_path_factory.mktemp("bert_symbolic")
    res = compile_model(onnx.load(MODELS / "bert_tiny_torchscript.onnx"), out, dims=RANGES, verify_ir=True)
    return out, res.report


def test_bert_compiled_once_runs_every_size_in_one_session_creating_nothing(
    bert_symbolic, device, monkeypatch
):
    from test_runtime import COUNTED, count_gpu_creations

    import onnx2wgsl

    model = onnx.load(MODELS / "bert_tiny_torchscript.onnx")
    with onnx2wgsl.load(bert_symbolic[0], device=device) as sess:
        calls = count_gpu_creations(sess.device, monkeypatch)
        for batch, seq in [(1, 1), (1, 17), (2, 64), (4, 128), (1, 17)]:
            feeds = bert_feeds(batch, seq, seed=seq)
            got = sess.run(None, feeds)
            assert_close(got, ort_run(model, feeds), rtol=1e-4, atol=2e-5)
            assert got[0].shape == (batch, seq, 32)
        assert calls == {name: 0 for name in COUNTED}


def test_bert_arena_at_the_bounds_equals_the_static_plan_at_4x128(bert_symbolic, tmp_path):
    """For the cpu target the symbolic artifact's kernels are the static one's, and so is its
    arena; a GPU target's adds the partial sums of the attention's lanes form, which serves the
    runs too short for the flash form (under 8 positions) and is sized for them alone."""
    from onnx2wgsl.compiler import compile_model

    model = onnx.load(MODELS / "bert_tiny_torchscript.onnx")
    report = bert_symbolic[1]
    static = compile_model(model, tmp_path / "s", dims={"batch": 4, "seq": 128})
    assert "dims            batch=1..4, seq=1..128" in report.summary()
    assert "memory planned at batch=4, seq=128" in report.summary()
    cpu = compile_model(model, tmp_path / "c", dims=RANGES, target="cpu").report
    cpu_static = compile_model(model, tmp_path / "cs", dims={"batch": 4, "seq": 128}, target="cpu").report
    assert cpu.arena_bytes == cpu_static.arena_bytes == static.report.arena_bytes
    # (4 batch rows x 2 heads x 7 positions) x 4 chunks of 32 keys x (64 values, max, sum) f32
    assert static.report.arena_bytes < report.arena_bytes <= static.report.arena_bytes + 56 * 4 * 66 * 4


@pytest.mark.parametrize(
    "name,ranges,points",
    [
        ("bert_tiny_dynamo", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("distilbert_tiny_torchscript", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("gpt2_tiny_dynamo", {"seq": (1, 128)}, [(None, 1), (None, 17), (None, 128)]),
        ("gpt2_tiny_dynamo_opt", {"seq": (1, 128)}, [(None, 1), (None, 17), (None, 128)]),
        ("llama_tiny_torchscript", RANGES, [(1, 1), (2, 17), (4, 128)]),
        # 4-bit weights (tools/quantize_transformers.py), against onnxruntime on the same 4-bit model
        ("llama_tiny_torchscript_q4", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("bert_tiny_torchscript_q4", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("bert_tiny_torchscript_opt", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("bert_tiny_dynamo_opt", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("vit_tiny_torchscript", {"batch": (1, 4)}, [(1, None), (3, None), (4, None)]),
        ("vit_tiny_torchscript_opt", {"batch": (1, 4)}, [(1, None), (4, None)]),
        ("whisper_encoder_tiny_torchscript", {"batch": (1, 4)}, [(1, None), (4, None)]),
        ("qwen2_tiny_torchscript", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("qwen2_tiny_dynamo", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("phi3_tiny_dynamo", RANGES, [(1, 1), (2, 17), (4, 128)]),
        ("t5_encoder_tiny_torchscript", RANGES, [(1, 1), (2, 17), (4, 128)]),
    ],
)
def test_exported_transformer_compiled_once_matches_onnxruntime_at_every_size(
    name, ranges, points, device, tmp_path
):
    from onnx2wgsl.compiler import compile_model

    model = onnx.load(MODELS / f"{name}.onnx")
    compile_model(model, tmp_path / "a", dims=ranges, verify_ir=True)
    check_points(tmp_path / "a", model, name, points, device)


def check_points(artifact, model, name: str, points, device) -> None:
    """One session of ``artifact`` runs every (batch, seq) point (None: a dim the model lacks)
    against onnxruntime."""
    import onnx2wgsl

    with onnx2wgsl.load(artifact, device=device) as sess:
        for batch, seq in points:
            dims = {k: v for k, v in (("batch", batch), ("seq", seq)) if v is not None}
            seed = sum(dims.values())
            feeds = bert_feeds(batch, seq, seed) if name in BERTS else _feeds(model, dims, seed=seed)
            assert_close(sess.run(None, feeds), ort_run(model, feeds), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", ["llama_tiny_torchscript_q4", "bert_tiny_torchscript_q4"])
def test_4bit_weights_stay_packed_on_the_gpu(name, tmp_path):
    """Every MatMulNBits and GatherBlockQuantized (the Llama's token embeddings) runs on its
    packed words: its weights cost about a sixth of the f32 model's in weights.bin (BERT's
    embedding tables, not quantized, stay f32)."""
    from onnx2wgsl.compiler import compile_model

    q4 = onnx.load(MODELS / f"{name}.onnx")
    f32 = onnx.load(MODELS / f"{name.removesuffix('_q4')}.onnx")
    compile_model(q4, tmp_path / "q", dims=RANGES)
    compile_model(f32, tmp_path / "f", dims=RANGES)
    size = {k: (tmp_path / k / "weights.bin").stat().st_size for k in "qf"}
    attrs = [{a.name: a.i for a in n.attribute} for n in q4.graph.node if n.op_type == "MatMulNBits"]
    projections = sum(4 * a["K"] * a["N"] for a in attrs)  # their bytes as f32
    assert attrs and projections > size["f"] / 4
    inits = {t.name: t for t in q4.graph.initializer}
    tables = [inits[n.input[0]] for n in q4.graph.node if n.op_type == "GatherBlockQuantized"]
    assert bool(tables) == name.startswith("llama")
    quantized = projections + sum(4 * int(np.prod(t.dims)) for t in tables)
    # 4 bits, and a 32-bit scale and a 4-bit zero point per block of 32: 0.16 of f32
    assert size["q"] <= size["f"] - (1 - 0.165) * quantized, (size, quantized)
    if name.startswith("llama"):  # every large weight quantized (symmetric: no zero points)
        assert size["q"] <= 0.16 * size["f"], size
    text = (tmp_path / "q" / "manifest.json").read_text()
    assert text.count("matmul_nbits") >= 1


def test_whisper_decoder_compiled_once_matches_onnxruntime_at_every_size(device, tmp_path):
    """Cross-attention over encoder states of a length of their own (``frames``), and a Tile whose
    repeats are computed from the batch dim."""
    import onnx2wgsl
    from onnx2wgsl.compiler import compile_model

    model = onnx.load(MODELS / "whisper_decoder_tiny_dynamo.onnx")
    kinds = []
    compile_model(model, tmp_path / "a", dims={"batch": (1, 4), "seq": (1, 64), "frames": (1, 50)}, verify_ir=True,
                  on_stage=lambda stage, g: kinds.extend(op.kind for op in g.ops) if stage == "dce" else None)  # fmt: skip
    assert kinds.count("Attention") == 4 and "Softmax" not in kinds  # self- and cross-attention, 2 layers
    rng = np.random.default_rng(0)
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        for batch, seq, frames in ((1, 1, 1), (2, 17, 10), (4, 64, 50)):
            feeds = {
                "input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64),
                "encoder_hidden_states": rng.standard_normal((batch, frames, 32)).astype(np.float32),
            }
            assert_close(sess.run(None, feeds), ort_run(model, feeds), rtol=1e-4, atol=2e-5)

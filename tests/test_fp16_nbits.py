"""Half-precision storage (``--precision fp16``) through the 4-bit kernels: MatMulNBits and
GatherBlockQuantized's packed table (GatherNBits) load f16 activations, scales and zero points
and store f16 results, accumulating in f32; and through GroupQueryAttention's scatter, the
resampling and the scatter kernels; against onnxruntime's CPU kernels in fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import ort_run, rand
from onnx import TensorProto, helper, numpy_helper
from test_fp16 import _assert_scaled_close

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.ir import DType

MS = "com.microsoft"
MODELS = Path(__file__).resolve().parent / "models"


def _kernel_ops(res, op: str):
    return [k for k in res.graph.kernels() if k.attrs.get("op") == op]


def _all_f16(res, op: str) -> None:
    """Every ``op`` kernel stores its result and reads its float operands as f16."""
    kernels = _kernel_ops(res, op)
    assert kernels, f"no {op} kernel"
    for k in kernels:
        floats = [v for v in list(k.inputs) + list(k.outputs) if v is not None and v.dtype.is_float]
        assert all(v.storage is DType.f16 for v in floats), [(v.name, v.storage) for v in floats]


@pytest.mark.parametrize("name", ["llama_tiny_torchscript_q4", "bert_tiny_torchscript_q4"])
def test_q4_transformer_at_fp16_matches_onnxruntime_in_half_the_arena(name, device16, tmp_path):
    from test_transformers import _feeds, bert_feeds

    model = onnx.load(MODELS / f"{name}.onnx")
    dims = {"batch": 2, "seq": 17}
    feeds = bert_feeds(2, 17) if name.startswith("bert") else _feeds(model, dims)
    r16 = compile_model(model, tmp_path / "a", dims=dims, precision="fp16", verify_ir=True)
    with onnx2wgsl.load(tmp_path / "a", device=device16) as sess:
        got = sess.run(None, feeds)
    _assert_scaled_close(got, ort_run(model, feeds))
    _all_f16(r16, "MatMulNBits")
    if name.startswith("llama"):  # its embeddings: a GatherBlockQuantized table
        _all_f16(r16, "GatherNBits")
    r32 = compile_model(model, dims=dims, precision="fp32")
    assert r16.report.arena_bytes <= 0.6 * r32.report.arena_bytes, (
        r16.report.arena_bytes,
        r32.report.arena_bytes,
    )


def test_genai_int4_llama_at_fp16_prefill_then_decode(device16, tmp_path):
    """onnxruntime-genai's builder output (float16 I/O, GroupQueryAttention, MatMulNBits) at fp16,
    a 7-token prompt and a decode step against onnxruntime at MatMulNBits accuracy_level 0."""
    from test_gqa import GENAI_DIMS, accuracy_level_0

    model = onnx.load(MODELS / "llama_genai_int4.onnx")
    res = compile_model(model, tmp_path / "a", dims={"batch_size": 1, **GENAI_DIMS}, precision="fp16")
    _all_f16(res, "GQAScatter")
    r32 = compile_model(model, dims={"batch_size": 1, **GENAI_DIMS}, precision="fp32")
    assert res.report.arena_bytes <= 0.55 * r32.report.arena_bytes, (
        res.report.arena_bytes,
        r32.report.arena_bytes,
    )
    reference, names = accuracy_level_0(model), [o.name for o in model.graph.output]
    rng = np.random.default_rng(0)
    past = {
        f"past_key_values.{i}.{kv}": np.zeros((1, 2, 0, 16), np.float16)
        for i in range(2)
        for kv in ("key", "value")
    }
    ids = rng.integers(0, 128, (1, 7)).astype(np.int64)
    with onnx2wgsl.load(tmp_path / "a", device=device16) as sess:
        for _ in range(2):
            P = past["past_key_values.0.key"].shape[2]
            feeds = {"input_ids": ids, "attention_mask": np.ones((1, P + ids.shape[1]), np.int64), **past}
            got, want = sess.run(None, feeds), ort_run(reference, feeds)
            _assert_scaled_close([g.astype(np.float32) for g in got], [w.astype(np.float32) for w in want])
            assert all(g.dtype == np.float16 for g in got)
            past = {n.replace("present", "past_key_values"): w for n, w in zip(names[1:], want[1:])}
            ids = rng.integers(0, 128, (1, 1)).astype(np.int64)


@pytest.mark.parametrize(
    "case, bindings", [("separate_position_ids", None), ("separate_position_ids_chunk", None),
                       ("partial_rotary_batch", 5)],
)  # fmt: skip
def test_group_query_attention_at_fp16(case, bindings, device16, tmp_path):
    """GroupQueryAttention's rotations and present writes (GQAScatter) on f16 storage: separate
    Q, K and V with position ids (Q apart from K and V), interleaved rotary over a chunk, and a
    partial rotary dim with the present slots in a dispatch of their own (5 bindings)."""
    from test_gqa import compare, gqa_feeds, gqa_model
    from test_gqa_lean import CASES

    B, S, P, lengths, kw = CASES[case]
    model = gqa_model(B, S, P, **kw)
    feeds = gqa_feeds(model, lengths, seed=7)
    target = None
    if bindings:
        target = tmp_path / "limits.json"
        target.write_text(
            json.dumps({"name": "few", "limits": {"maxStorageBuffersPerShaderStage": bindings}})
        )
        target = str(target)
    res = compile_model(model, tmp_path / "a", precision="fp16", target=target, verify_ir=True)
    _all_f16(res, "GQAScatter")
    (kernel,) = _kernel_ops(res, "GQAScatter")
    assert len(kernel.dispatches) >= 2
    with onnx2wgsl.load(tmp_path / "a", device=device16) as sess:
        got = sess.run(None, feeds)
    compare(got, ort_run(model, feeds), feeds, S, P, rtol=0, atol=1e-2)


def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """Values < 2^bits along the last axis -> uint8 bytes, low bits first (onnxruntime's layout)."""
    per = 8 // bits
    q = q.astype(np.uint8).reshape(*q.shape[:-1], -1, per)
    return np.bitwise_or.reduce(q << (np.arange(per, dtype=np.uint8) * bits), axis=-1).astype(np.uint8)


def _nbits(
    rng, prefix: str, K: int, N: int, block: int, bits: int, zero_points: str
) -> dict[str, np.ndarray]:
    """B, scales and zero points (packed uint8 or floats) of a MatMulNBits [K -> N]."""
    blocks = -(-K // block)
    q = rng.integers(0, 1 << bits, (N, blocks * block))
    inits = {
        f"{prefix}B": _pack(q, bits).reshape(N, blocks, block * bits // 8),
        f"{prefix}s": rng.uniform(0.01, 0.1, (N, blocks)).astype(np.float32),
    }
    if zero_points == "float":
        inits[f"{prefix}z"] = rng.uniform(0, (1 << bits) - 1, (N, blocks)).astype(np.float32)
    else:
        per_row = -(-blocks * bits // 8)
        zq = np.zeros((N, per_row * 8 // bits), np.uint8)
        zq[:, :blocks] = rng.integers(0, 1 << bits, (N, blocks))
        inits[f"{prefix}z"] = _pack(zq, bits)
    return inits


def test_matmul_nbits_chain_at_fp16(device16, tmp_path):
    """Two projections: the first with float zero points, a bias, a K that ends in a part of a
    word, and a residual Add + Relu run at its store (an epilogue reading an f16 input); the
    second 8-bit with packed zero points over several rows an invocation."""
    rng = np.random.default_rng(0)
    K, H, N = 84, 40, 24
    inits = {**_nbits(rng, "p", K, H, 16, 4, "float"), **_nbits(rng, "q", H, N, 32, 8, "packed")}
    inits["bias"] = rng.uniform(-1, 1, H).astype(np.float32)
    nodes = [
        helper.make_node("MatMulNBits", ["a", "pB", "ps", "pz", "", "bias"], ["m"], domain=MS, K=K, N=H,
                         block_size=16, bits=4),
        helper.make_node("Add", ["m", "r"], ["res"]),
        helper.make_node("Relu", ["res"], ["h"]),
        helper.make_node("MatMulNBits", ["h", "qB", "qs", "qz"], ["y"], domain=MS, K=H, N=N, block_size=32, bits=8),
    ]  # fmt: skip
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "nbits_fp16",
        [helper.make_tensor_value_info("a", f, [9, K]), helper.make_tensor_value_info("r", f, [9, H])],
        [helper.make_tensor_value_info("y", f, [9, N])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    feeds = {"a": rand(9, K, seed=1), "r": rand(9, H, seed=2)}
    res = compile_model(model, tmp_path / "a", precision="fp16", verify_ir=True)
    with onnx2wgsl.load(tmp_path / "a", device=device16) as sess:
        got = sess.run(None, feeds)
    _assert_scaled_close(got, ort_run(model, feeds))
    _all_f16(res, "MatMulNBits")
    assert len(_kernel_ops(res, "MatMulNBits")) == len(res.graph.kernels()) == 2  # (Add + Relu at the store)


def test_gather_block_quantized_table_in_parts_at_fp16(device16, tmp_path):
    """An int4 table with zero points over the binding limit, gathered in parts into f16."""
    from test_gather_nbits import _model, _table

    limits = tmp_path / "small.json"
    limits.write_text(json.dumps({"name": "small", "limits": {"maxStorageBufferBindingSize": 4096}}))
    inits, attrs = _table("int4", (400, 64), 32, True, seed=3)
    i = np.array([[0, 127, 128, 399], [168, 335, 336, -1]], np.int64)
    model = _model(inits, attrs, i)
    res = compile_model(model, tmp_path / "a", target=str(limits), precision="fp16", verify_ir=True)
    (kernel,) = _kernel_ops(res, "GatherNBits")
    assert len(kernel.dispatches) >= 2
    _all_f16(res, "GatherNBits")
    with onnx2wgsl.load(tmp_path / "a", device=device16) as sess:
        got = sess.run(None, {"indices": i})
    _assert_scaled_close(got, ort_run(model, {"indices": i}))


def test_resampling_and_scatter_ops_at_fp16(device16, tmp_path):
    """ConvTranspose (with a Relu at its store), Resize (linear, nearest, and cropping with
    extrapolation), Trilu, ScatterND (add: the in-order reduction), ScatterElements (the last
    update wins) and GatherND, chained on f16 storage."""
    rng = np.random.default_rng(4)
    f = TensorProto.FLOAT

    def const(name, v):
        return numpy_helper.from_array(np.asarray(v), name)

    inits = [
        const("w", rng.uniform(-0.5, 0.5, (3, 4, 3, 3)).astype(np.float32)),
        const("wb", rng.uniform(-0.2, 0.2, 4).astype(np.float32)),
        const("up", np.array([1, 1, 1.5, 1.5], np.float32)),
        const("crop", np.array([0, 0, -0.2, -0.2, 1, 1, 1.2, 1.2], np.float32)),
        const("small", np.array([1, 4, 8, 8], np.int64)),
        const("k", np.array(1, np.int64)),
        const("nd", np.array([[0, 1], [0, 3], [0, 1]], np.int64)),
        const("el", rng.integers(-16, 16, (1, 4, 16, 2)).astype(np.int64)),
        const("pick", np.array([[0, 2, 5], [0, 1, 7]], np.int64)),
    ]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w", "wb"], ["ct"], strides=[2, 2]),
        helper.make_node("Relu", ["ct"], ["c"]),  # [1, 4, 11, 11]
        helper.make_node("Resize", ["c", "", "up"], ["r"], mode="linear"),  # [1, 4, 16, 16]
        helper.make_node("Resize", ["c", "", "up"], ["near"], mode="nearest"),
        helper.make_node("Resize", ["c", "crop", "", "small"], ["cropped"], mode="linear",
                         coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.5),
        helper.make_node("Trilu", ["r", "k"], ["t"], upper=1),
        helper.make_node("ScatterND", ["t", "nd", "u"], ["s"], reduction="add"),
        helper.make_node("ScatterElements", ["s", "el", "v"], ["e"], axis=3),
        helper.make_node("GatherND", ["e", "pick"], ["g"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "resample_scatter_fp16",
        [helper.make_tensor_value_info("x", f, [1, 3, 5, 5]), helper.make_tensor_value_info("u", f, [3, 16, 16]),
         helper.make_tensor_value_info("v", f, [1, 4, 16, 2])],
        [helper.make_tensor_value_info(n, f, None) for n in ("e", "g", "near", "cropped")],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": rand(1, 3, 5, 5, seed=1), "u": rand(3, 16, 16, seed=2), "v": rand(1, 4, 16, 2, seed=3)}
    res = compile_model(model, tmp_path / "a", precision="fp16", verify_ir=True)
    with onnx2wgsl.load(tmp_path / "a", device=device16) as sess:
        got = sess.run(None, feeds)
    _assert_scaled_close(got, ort_run(model, feeds))
    for op in ("ConvTranspose", "Resize", "Trilu", "ScatterND", "ScatterElements", "GatherND"):
        _all_f16(res, op)

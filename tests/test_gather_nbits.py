"""com.microsoft GatherBlockQuantized with its table kept packed on the GPU (GatherNBits: rows
gathered along axis 0, quantized along the last axis, as LLMs quantize their embeddings),
against onnxruntime's CPU kernel."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import assert_close, check_symbolic, gpu_run, node_model, ort_run, with_dim_params

import onnx2wgsl
from onnx2wgsl.compiler import compile_model

pytestmark = pytest.mark.gpu

MS = "com.microsoft"


def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """Values < 2^bits along the last axis -> uint8 bytes, low-order bits first (onnxruntime's
    layout), the last byte padded with zeros."""
    per = 8 // bits
    pad = -q.shape[-1] % per
    q = np.concatenate([q, np.zeros((*q.shape[:-1], pad), q.dtype)], -1) if pad else q
    q = q.astype(np.uint8).reshape(*q.shape[:-1], -1, per)
    return np.bitwise_or.reduce(q << (np.arange(per, dtype=np.uint8) * bits), axis=-1).astype(np.uint8)


def _table(form: str, shape, block: int, zero_points: bool, seed=0, scale_dtype=np.float32):
    """Initializers (data, scales, zero points) and attributes of a table of ``shape`` (unpacked)
    quantized along its last axis in blocks of ``block``; ``form`` is int4, uint4 or uint8-B (B
    bits packed in uint8)."""
    rng = np.random.default_rng(seed)
    blocks = (*shape[:-1], -(-shape[-1] // block))
    if form.startswith("uint8"):
        bits = int(form.split("-")[1])
        q, zq = rng.integers(0, 1 << bits, shape), rng.integers(0, 1 << bits, blocks)
        data = _pack(q, bits) if bits < 8 else q.astype(np.uint8)
        zp = _pack(zq, bits) if bits < 8 else zq.astype(np.uint8)
    else:
        bits = 4
        low, high = (-8, 8) if form == "int4" else (0, 16)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(
            onnx.TensorProto.INT4 if form == "int4" else onnx.TensorProto.UINT4
        )
        data, zp = rng.integers(low, high, shape).astype(dtype), rng.integers(low, high, blocks).astype(dtype)
    scales = rng.uniform(0.05, 0.5, blocks).astype(scale_dtype)
    inits = {"data": data, "scales": scales, **({"zp": zp} if zero_points else {})}
    attrs = {"quantize_axis": len(shape) - 1, "gather_axis": 0, "block_size": block, "bits": bits}
    return inits, attrs


def _model(inits, attrs, indices: np.ndarray) -> onnx.ModelProto:
    order = ["data", "indices", "scales", *(["zp"] if "zp" in inits else [])]
    return node_model(
        "GatherBlockQuantized", {"indices": indices}, attrs, initializers=inits, domain=MS, input_order=order
    )


def _kernels(res, op: str):
    return [k for k in res.graph.kernels() if k.attrs.get("op") == op]


@pytest.mark.parametrize(
    "form, shape, block",
    [
        ("uint4", (50, 64), 32),
        ("int4", (50, 64), 16),
        ("uint4", (40, 100), 32),  # a ragged last block, and a part of a word at each row's end
        ("int4", (30, 72), 64),
        ("uint4", (20, 256), 128),
        ("int4", (20, 300), 256),
        ("uint8-8", (30, 50), 16),  # 4 values to a word: a tail of 2
        ("uint8-4", (30, 96), 32),
        ("uint8-4", (30, 48), 32),  # a ragged block; packed zero points with a pad nibble
        ("uint8-2", (30, 64), 16),
        ("uint8-2", (30, 40), 16),
    ],
)
@pytest.mark.parametrize("zero_points", [False, True])
def test_gather_nbits_matches_onnxruntime(form, shape, block, zero_points, device):
    inits, attrs = _table(form, shape, block, zero_points, seed=shape[1] + block)
    n = shape[0]
    indices = np.array([[0, n - 1, 7], [-1, -n, 3]], np.int64)
    model = _model(inits, attrs, indices)
    res = compile_model(model)
    assert len(_kernels(res, "GatherNBits")) == 1 and not _kernels(res, "Gather")
    want = ort_run(model, {"indices": indices})
    assert_close(gpu_run(model, {"indices": indices}, device), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "idx_dtype, indices",
    [
        (np.int32, 5),  # a scalar index: one row
        (np.int32, [3, -2, 0, 9]),
        (np.int64, [[[1, -10], [4, 4]], [[9, 0], [-3, 2]]]),
    ],
    ids=["scalar", "rank1", "rank3"],
)
def test_gather_nbits_index_dtypes_and_ranks(idx_dtype, indices, device):
    inits, attrs = _table("uint4", (10, 48), 16, True, seed=3)
    i = np.array(indices, idx_dtype)
    model = _model(inits, attrs, i)
    assert_close(gpu_run(model, {"indices": i}, device), ort_run(model, {"indices": i}), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["int4", "uint8-4"])
def test_gather_nbits_three_dim_table(form, device):
    """A [rows, M, K] table quantized along K: each row's M sub-rows are packed on their own."""
    inits, attrs = _table(form, (12, 3, 40), 16, True, seed=5)
    i = np.array([[2, -1], [11, 0]], np.int64)
    model = _model(inits, attrs, i)
    assert_close(gpu_run(model, {"indices": i}, device), ort_run(model, {"indices": i}), rtol=1e-5, atol=1e-6)


def test_gather_nbits_float16_scales(device):
    """float16 scales give a float16 output (computed in f32: within float16's rounding)."""
    inits, attrs = _table("uint4", (20, 64), 32, True, seed=6, scale_dtype=np.float16)
    i = np.array([[0, 19, -4]], np.int64)
    model = _model(inits, attrs, i)
    assert_close(gpu_run(model, {"indices": i}, device), ort_run(model, {"indices": i}), rtol=2e-3, atol=2e-3)


def test_gather_nbits_over_symbolic_indices(device):
    inits, attrs = _table("uint4", (100, 64), 32, True, seed=7)
    model = _model(inits, attrs, np.zeros((2, 3), np.int64))
    model = with_dim_params(model, {"indices": ["batch", "seq"], "y0": ["batch", "seq", 64]})
    model.graph.output[
        0
    ].type.tensor_type.elem_type = onnx.TensorProto.FLOAT  # (no schema types a contrib op)
    rng = np.random.default_rng(8)
    feeds = [
        {"indices": rng.integers(-100, 100, (b, s)).astype(np.int64)} for b, s in [(1, 1), (2, 17), (4, 64)]
    ]
    res = check_symbolic(model, {"batch": (1, 4), "seq": (1, 64)}, feeds, device, rtol=1e-5, atol=1e-6)
    assert len(_kernels(res, "GatherNBits")) == 1


@pytest.mark.parametrize(
    "form, shape, block, zero_points",
    [
        ("uint4", (400, 64), 32, True),  # 32 bytes of words a row: 4 parts of 128 rows
        ("uint8-4", (400, 48), 16, True),  # 3 zero points a row: parts of 168 rows (a multiple of 8)
        ("int4", (400, 40), 16, False),
    ],
)
def test_gather_nbits_table_over_the_binding_limit_is_split(
    form, shape, block, zero_points, device, tmp_path
):
    """Each part (whole rows, each operand within maxStorageBufferBindingSize) gets a dispatch
    that writes the points whose index falls in it; the first also writes the zeros of
    indices out of range."""
    limits = tmp_path / "small.json"
    limits.write_text(json.dumps({"name": "small", "limits": {"maxStorageBufferBindingSize": 4096}}))
    inits, attrs = _table(form, shape, block, zero_points, seed=9)
    n = shape[0]
    i = np.array([[0, 127, 128, 167], [168, 399, -1, -400], [335, 336, 256, 500]], np.int64)
    model = _model(inits, attrs, i)
    res = compile_model(model, target=str(limits))
    (kernel,) = _kernels(res, "GatherNBits")
    assert len(kernel.dispatches) >= 2
    assert all(b.nbytes <= 4096 for d in kernel.dispatches for b in d.bindings)
    (got,) = gpu_run(model, {"indices": i}, device, target=str(limits))
    ok = (i >= -n) & (i < n)
    (want,) = ort_run(model, {"indices": np.where(ok, i, 0)})  # onnxruntime refuses indices out of range
    assert_close([got], [np.where(ok[..., None], want, np.float32(0))], rtol=1e-5, atol=1e-6)


def test_gather_nbits_row_over_the_binding_limit_is_a_clear_error(tmp_path):
    limits = tmp_path / "tiny.json"
    limits.write_text(json.dumps({"name": "tiny", "limits": {"maxStorageBufferBindingSize": 64}}))
    inits, attrs = _table("uint4", (10, 256), 32, False)
    with pytest.raises(onnx2wgsl.errors.CompileError, match="maxStorageBufferBindingSize"):
        compile_model(_model(inits, attrs, np.array([1], np.int64)), target=str(limits))


@pytest.mark.parametrize("zero_points", [False, True])
def test_gather_nbits_table_stays_packed(zero_points, tmp_path):
    """A 4-bit table costs about an eighth of its f32 form in weights.bin (plus a scale and a
    zero point per block), whatever the fold limit."""
    V, H, block = 4096, 256, 64
    inits, attrs = _table("uint4", (V, H), block, zero_points, seed=10)
    onnx2wgsl.compile(_model(inits, attrs, np.array([[1, 2, 3]], np.int64)), tmp_path / "a", fold_limit=1024)
    size = (tmp_path / "a" / "weights.bin").stat().st_size
    words, scales, zeros = V * H // 2, V * H // block * 4, V * H // block // 2 if zero_points else 0
    assert words + scales + zeros <= size <= 1.02 * (words + scales + zeros), size
    assert size <= 0.145 * V * H * 4


@pytest.mark.parametrize("qa, ga, shape", [(0, 1, (32, 10)), (1, 1, (3, 8, 32)), (0, 0, (64, 8))])
def test_other_axes_are_dequantized_at_compile_time(qa, ga, shape, device):
    """Quantized along the gathered axis or a middle one, or gathered along another axis: a
    float table (compile time), then Gather."""
    rng = np.random.default_rng(12)
    block = 16
    blocks = list(shape)
    blocks[qa] = -(-shape[qa] // block)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.UINT4)
    inits = {
        "data": rng.integers(0, 16, shape).astype(dtype),
        "scales": rng.uniform(0.5, 2.0, blocks).astype(np.float32),
        "zp": rng.integers(0, 16, blocks).astype(dtype),
    }
    attrs = {"quantize_axis": qa, "gather_axis": ga, "block_size": block}
    i = np.array([[0, -1], [2, 1]], np.int64)
    model = _model(inits, attrs, i)
    res = compile_model(model)
    assert _kernels(res, "Gather") and not _kernels(res, "GatherNBits")
    assert_close(gpu_run(model, {"indices": i}, device), ort_run(model, {"indices": i}))


def test_tied_embeddings_share_the_lm_head_words(device, tmp_path):
    """onnxruntime-genai's tied form: GatherBlockQuantized over the lm_head MatMulNBits's B
    (reshaped to [vocab, hidden / 2] bytes) with its scales and zero points. The packed words,
    scales and zero points are stored once, read by both kernels."""
    from helpers import graph_model

    V, H, block = 200, 64, 32
    rng = np.random.default_rng(13)
    blocks = H // block
    B = _pack(rng.integers(0, 16, (V, H)), 4).reshape(V, blocks, block // 2)
    inits = {
        "B": B,
        "scales": rng.uniform(0.05, 0.5, (V, blocks)).astype(np.float32),
        "zp": _pack(rng.integers(0, 16, (V, blocks)), 4),
        "flat": np.array([V, H // 2], np.int64),
    }
    nodes = [
        onnx.helper.make_node(
            "MatMulNBits", ["h", "B", "scales", "zp"], ["logits"], domain=MS, K=H, N=V, bits=4, block_size=block
        ),
        onnx.helper.make_node("Reshape", ["B", "flat"], ["table"]),
        onnx.helper.make_node(
            "GatherBlockQuantized", ["table", "ids", "scales", "zp"], ["emb"], domain=MS, bits=4,
            block_size=block, gather_axis=0, quantize_axis=1,
        ),
    ]  # fmt: skip
    feeds = {"h": np.random.default_rng(14).uniform(-1, 1, (1, 3, H)).astype(np.float32),
             "ids": np.array([[5, -1, 199]], np.int64)}  # fmt: skip
    model = graph_model(nodes, feeds, ["logits", "emb"], inits, opsets={MS: 1})
    for out in model.graph.output:
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT  # (no schema types a contrib op)
    assert_close(gpu_run(model, feeds, device), ort_run(model, feeds), rtol=1e-4, atol=1e-5)
    onnx2wgsl.compile(model, tmp_path / "a")
    size = (tmp_path / "a" / "weights.bin").stat().st_size
    one_copy = V * H // 2 + V * blocks * 4 + V * blocks // 2
    assert one_copy <= size <= one_copy + 256, size

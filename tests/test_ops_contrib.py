"""onnxruntime's contrib ops (com.microsoft, and SimplifiedLayerNormalization of its default
domain), legalized into IR ops, compiled and run on the GPU against onnxruntime's CPU kernels."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import assert_close, check_symbolic, gpu_run, node_model, ort_run, rand, with_dim_params

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import CompileError, ConstantRequiredError, UnsupportedError

pytestmark = pytest.mark.gpu

MS = "com.microsoft"


def _check(op, feeds, attrs=None, *, inits=None, device, domain=MS, rtol=1e-4, atol=1e-5, **kw):
    model = node_model(op, feeds, attrs or {}, initializers=inits, domain=domain, **kw)
    want = ort_run(model, feeds)
    got = gpu_run(model, feeds, device)
    assert_close(got, want, rtol, atol)
    return got, want


# -- activations ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 16), (5, 7)])
@pytest.mark.parametrize(
    "op, n_in, attrs",
    [
        ("Gelu", 1, {}),
        ("BiasGelu", 2, {}),
        ("FastGelu", 1, {}),
        ("FastGelu", 2, {}),
        ("QuickGelu", 1, {}),
        ("QuickGelu", 1, {"alpha": 1.1}),
        ("QuickGelu", 1, {"alpha": 1.0}),
    ],
)
def test_gelu_family(op, n_in, attrs, shape, device):
    feeds = {"x": rand(*shape, low=-3, high=3)}
    if n_in == 2:
        feeds["bias"] = rand(shape[-1], seed=1, low=-1, high=1)
    _check(op, feeds, attrs, device=device)


@pytest.mark.parametrize("bias", ["input", "const"])
def test_bias_gelu_bias_is_not_dropped(bias, device):
    x = rand(2, 4, 8, low=-2, high=2)
    b = np.linspace(-1.5, 1.5, 8, dtype=np.float32)
    if bias == "const":
        got, want = _check("BiasGelu", {"x": x}, inits={"b": b}, device=device)
    else:
        got, want = _check("BiasGelu", {"x": x, "b": b}, device=device)
    unbiased = ort_run(node_model("Gelu", {"x": x}, domain=MS), {"x": x})[0]
    assert not np.allclose(got[0], unbiased, atol=1e-2)


def test_bias_add(device):
    # onnxruntime implements BiasAdd on CUDA only: the spec's X + bias + skip in numpy
    feeds = {"x": rand(2, 6, 8), "bias": rand(8, seed=1), "skip": rand(2, 6, 8, seed=2)}
    got = gpu_run(node_model("BiasAdd", feeds, domain=MS), feeds, device)
    assert_close(got, [feeds["x"] + feeds["bias"] + feeds["skip"]])


# -- normalizations ---------------------------------------------------------------------------
def _norm_params(hidden, seed=3):
    rng = np.random.default_rng(seed)
    return {
        "gamma": rng.uniform(0.5, 1.5, hidden).astype(np.float32),
        "beta": rng.normal(0, 1, hidden).astype(np.float32),
        "bias": rng.normal(0, 1, hidden).astype(np.float32),
    }


@pytest.mark.parametrize(
    "shape, skip_shape",
    [((2, 3, 16), (2, 3, 16)), ((2, 3, 16), (1, 3, 16)), ((2, 3, 16), (3, 16)), ((5, 32), (5, 32))],
)
@pytest.mark.parametrize("params", ["gamma", "gamma,beta", "gamma,bias", "gamma,beta,bias"])
@pytest.mark.parametrize(
    "outputs", [("y",), ("y", "mean", "inv", "sum"), ("y", "", "", "sum"), ("y", "", "inv")]
)
def test_skip_layer_norm(shape, skip_shape, params, outputs, device):
    feeds = {"x": rand(*shape, low=-2, high=2), "skip": rand(*skip_shape, seed=1)}
    p = _norm_params(shape[-1])
    wanted = params.split(",")
    order = ["x", "skip"] + [n if n in wanted else "" for n in ("gamma", "beta", "bias")]
    while not order[-1]:
        order.pop()
    inits = {n: p[n] for n in wanted}
    _check(
        "SkipLayerNormalization", feeds, {"epsilon": 1e-5}, inits=inits, input_order=order, outputs=outputs,
        device=device,
    )  # fmt: skip


@pytest.mark.parametrize(
    "shape, skip_shape", [((2, 3, 16), (2, 3, 16)), ((4, 24), (4, 24)), ((2, 3, 8), (3, 8))]
)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("outputs", [("y",), ("y", "", "inv", "sum"), ("y", "", "", "sum")])
def test_skip_simplified_layer_norm(shape, skip_shape, bias, outputs, device):
    feeds = {"x": rand(*shape, low=-2, high=2), "skip": rand(*skip_shape, seed=1)}
    p = _norm_params(shape[-1])
    inits = {"gamma": p["gamma"], **({"bias": p["bias"]} if bias else {})}
    _check(
        "SkipSimplifiedLayerNormalization", feeds, {"epsilon": 1e-6}, inits=inits,
        input_order=["x", "skip", *inits], outputs=outputs, device=device,
    )  # fmt: skip


@pytest.mark.parametrize(
    "shape, axis, scale_shape",
    [((2, 3, 16), -1, (16,)), ((2, 3, 16), 1, (3, 16)), ((4, 32), -1, (32,)), ((2, 3, 4, 8), 2, (1, 8))],
)
@pytest.mark.parametrize("outputs", [("y",), ("y", "inv")])
@pytest.mark.parametrize("scale", ["const", "input"])
def test_simplified_layer_norm(shape, axis, scale_shape, outputs, scale, device):
    x = rand(*shape, low=-2, high=2)
    s = np.random.default_rng(4).uniform(0.5, 1.5, scale_shape).astype(np.float32)
    attrs = {"axis": axis, "epsilon": 1e-6}
    if scale == "const":
        _check(
            "SimplifiedLayerNormalization",
            {"x": x},
            attrs,
            inits={"s": s},
            outputs=outputs,
            domain="",
            device=device,
        )
    else:
        feeds = {"x": x, "s": s}
        _check("SimplifiedLayerNormalization", feeds, attrs, outputs=outputs, domain="", device=device)


def test_rms_norm_becomes_one_norm_kernel():
    x = rand(2, 3, 16)
    model = node_model(
        "SkipSimplifiedLayerNormalization", {"x": x, "skip": x}, {}, initializers={"g": _norm_params(16)["gamma"]},
        domain=MS,
    )  # fmt: skip
    ops = [op.attrs.get("op") for op in compile_model(model).graph.ops if op.kind == "kernel"]
    assert "RMSNormalization" in ops, ops


# -- errors -------------------------------------------------------------------------------------
def test_unsupported_combinations_are_one_line_errors():
    x = rand(2, 3, 16)
    model = node_model(
        "SkipSimplifiedLayerNormalization", {"x": x, "skip": x}, {}, initializers={"g": _norm_params(16)["gamma"]},
        outputs=("y", "mean"), domain=MS,
    )  # fmt: skip
    with pytest.raises(UnsupportedError) as e:
        compile_model(model)
    text = str(e.value)
    assert "\n" not in text.strip() and "SkipSimplifiedLayerNormalization" in text and "mean output" in text
    model = node_model("SimplifiedLayerNormalization", {"x": x, "s": x[0, 0]}, {"stash_type": 11}, domain="")
    with pytest.raises(UnsupportedError, match="stash_type 11"):
        compile_model(model)


def test_unknown_contrib_op_is_still_refused():
    model = node_model("NoSuchContribOp", {"x": rand(2, 3)}, domain=MS)
    with pytest.raises(UnsupportedError, match="com.microsoft.NoSuchContribOp"):
        compile_model(model)


# -- MatMulNBits -----------------------------------------------------------------------------
def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """Values < 2^bits along the last axis -> uint8 bytes, low-order bits first (onnxruntime's
    layout; the last axis must hold a multiple of 8 / bits values)."""
    per = 8 // bits
    q = q.astype(np.uint8).reshape(*q.shape[:-1], -1, per)
    return np.bitwise_or.reduce(q << (np.arange(per, dtype=np.uint8) * bits), axis=-1).astype(np.uint8)


def _quantized_weights(K, N, block, bits, zero_points, seed=0):
    """B, scales, zero_points (None, "packed" uint8 or "float") and the dequantized W [N, K]."""
    rng = np.random.default_rng(seed)
    blocks = -(-K // block)
    q = rng.integers(0, 1 << bits, (N, blocks * block)).astype(np.uint8)
    scales = rng.uniform(0.01, 0.1, (N, blocks)).astype(np.float32)
    if zero_points is None:
        z = np.full((N, blocks), 1 << (bits - 1), np.float32)
        zp = None
    elif zero_points == "packed":
        zq = rng.integers(0, 1 << bits, (N, blocks)).astype(np.uint8)
        per_row = -(-blocks * bits // 8)
        padded = np.zeros((N, per_row * 8 // bits), np.uint8)
        padded[:, :blocks] = zq
        zp, z = _pack(padded, bits), zq.astype(np.float32)
    else:
        z = rng.uniform(0, (1 << bits) - 1, (N, blocks)).astype(np.float32)
        zp = z
    B = _pack(q, bits).reshape(N, blocks, block * bits // 8)
    group = np.arange(K) // block
    W = (q[:, :K].astype(np.float32) - z[:, group]) * scales[:, group]
    return B, scales, zp, W


@pytest.mark.parametrize(
    "K, N, block, bits, zero_points",
    [
        (64, 24, 32, 4, None),
        (64, 24, 16, 4, "packed"),
        (96, 8, 64, 4, "packed"),  # 2 blocks: a packed zero-point row with a pad nibble
        (80, 8, 32, 4, "float"),  # K not a multiple of block_size
        (128, 16, 128, 8, None),
        (256, 16, 256, 8, "packed"),
        (64, 8, 16, 2, "packed"),
        (48, 12, 16, 4, "float"),
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_matmul_nbits(K, N, block, bits, zero_points, bias, device):
    B, scales, zp, W = _quantized_weights(K, N, block, bits, zero_points)
    a = rand(2, 3, K, seed=5)
    inits = {"B": B, "scales": scales}
    order = ["a", "B", "scales"]
    if zp is not None:
        inits["zp"] = zp
        order.append("zp")
    if bias:
        inits["bias"] = rand(N, seed=6, low=-2, high=2)
        order += [""] * (5 - len(order)) + ["bias"]
    attrs = {
        "K": K,
        "N": N,
        "block_size": block,
        "bits": bits,
        "accuracy_level": 1,
    }  # 4 would round A to int8
    model = node_model("MatMulNBits", {"a": a}, attrs, initializers=inits, input_order=order, domain=MS)
    want = ort_run(model, {"a": a})
    # our packing is onnxruntime's: its result is A @ W^T (+ bias) with W dequantized in numpy
    ref = a @ W.T + (inits["bias"] if bias else 0)
    np.testing.assert_allclose(want[0], ref, rtol=1e-3, atol=1e-3)
    assert_close(gpu_run(model, {"a": a}, device), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("zero_points", [None, "packed", "float"])
@pytest.mark.parametrize("rows", [1, 3])
def test_matmul_nbits_decode_rows_split_the_words_over_a_workgroup(zero_points, rows, device, tmp_path):
    """A decode step's few rows: a workgroup per column, its lanes taking every 64th word of the
    row (K = 1100: 137 whole words, then 4 values of a last one), summed in a tree; the cpu
    target keeps an invocation per column."""
    K, N, block = 1100, 24, 32
    B, scales, zp, _ = _quantized_weights(K, N, block, 4, zero_points, seed=3)
    inits = {"B": B, "scales": scales, "bias": rand(N, seed=6)}
    order = ["a", "B", "scales", "zp" if zp is not None else "", "", "bias"]
    if zp is not None:
        inits["zp"] = zp
    a = rand(rows, K, seed=5)
    model = node_model("MatMulNBits", {"a": a}, {"K": K, "N": N, "block_size": block, "bits": 4},
                       initializers=inits, input_order=order, domain=MS)  # fmt: skip
    want = ort_run(model, {"a": a})
    for target, split in (("webgpu", True), ("cpu", False)):
        out = tmp_path / target
        compile_model(model, out, verify_ir=True, target=target)
        assert any("sum in a tree" in f.read_text() for f in (out / "shaders").iterdir()) == split
        with onnx2wgsl.load(out, device=device) as sess:
            assert_close(sess.run(None, {"a": a}), want, rtol=1e-4, atol=1e-4)


def test_matmul_nbits_decode_split_at_fp16(device16, tmp_path):
    """The split form with f16 storage: A, the scales and the output f16, the sums f32."""
    from test_fp16 import _assert_scaled_close

    K, N, block = 2048, 40, 32
    B, scales, _, _ = _quantized_weights(K, N, block, 4, None, seed=4)
    a = rand(1, K, seed=5)
    model = node_model("MatMulNBits", {"a": a}, {"K": K, "N": N, "block_size": block, "bits": 4},
                       initializers={"B": B, "scales": scales}, input_order=["a", "B", "scales"], domain=MS)  # fmt: skip
    compile_model(model, tmp_path, verify_ir=True, precision="fp16")
    assert any(
        "sum in a tree" in t and "enable f16;" in t
        for t in (f.read_text() for f in (tmp_path / "shaders").iterdir())
    )
    with onnx2wgsl.load(tmp_path, device=device16) as sess:
        _assert_scaled_close(sess.run(None, {"a": a}), ort_run(model, {"a": a}))


def test_matmul_nbits_over_symbolic_rows_takes_both_forms(device, tmp_path):
    """Rows kept symbolic (one artifact for a prompt and its decode steps): the split form is
    dispatched for runs of up to lanes / (4 N) rows (8 here), the plain one for longer runs,
    each gated to an empty grid in the other's runs."""
    K, N, block = 1024, 512, 32
    B, scales, _, _ = _quantized_weights(K, N, block, 4, "float", seed=2)
    _, _, zp, _ = _quantized_weights(K, N, block, 4, "float", seed=2)
    a = rand(3, K, seed=5)
    model = node_model("MatMulNBits", {"a": a}, {"K": K, "N": N, "block_size": block, "bits": 4},
                       initializers={"B": B, "scales": scales, "zp": zp}, input_order=["a", "B", "scales", "zp"],
                       domain=MS)  # fmt: skip
    model = with_dim_params(model, {"a": ["seq", K]})
    compile_model(model, tmp_path, dims={"seq": (1, 64)}, verify_ir=True)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert len(m["dispatches"]) == 2
    texts = [(tmp_path / m["shaders"][d["shader"]]["file"]).read_text() for d in m["dispatches"]]
    assert ["sum in a tree" in t for t in texts] == [True, False]
    with onnx2wgsl.load(tmp_path, device=device) as sess:
        for rows in (1, 8, 9, 64):
            feeds = {"a": rand(rows, K, seed=rows)}
            assert_close(sess.run(None, feeds), ort_run(model, feeds), rtol=1e-4, atol=1e-4)


def test_matmul_nbits_needs_constant_weights():
    K, N = 32, 8
    B, scales, _, _ = _quantized_weights(K, N, 16, 4, None)
    feeds = {"a": rand(2, K), "B": B}
    model = node_model(
        "MatMulNBits", feeds, {"K": K, "N": N, "block_size": 16}, initializers={"s": scales}, domain=MS,
        input_order=["a", "B", "s"],
    )  # fmt: skip
    with pytest.raises(ConstantRequiredError) as e:
        compile_model(model)
    assert "MatMulNBits" in str(e.value) and "'B'" in str(e.value) and "\n" not in str(e.value).strip()


def test_matmul_nbits_unsupported_bits_is_a_clear_error():
    model = node_model(
        "MatMulNBits", {"a": rand(2, 32)}, {"K": 32, "N": 8, "block_size": 16, "bits": 3},
        initializers={"B": np.zeros((8, 2, 6), np.uint8), "s": np.ones((8, 2), np.float32)}, domain=MS,
    )  # fmt: skip
    with pytest.raises(UnsupportedError, match="bits=3 is not supported"):
        compile_model(model)


@pytest.mark.parametrize("zero_points", [None, "float"])
def test_matmul_nbits_g_idx(zero_points, device):
    """g_idx maps each k to its block (act-order quantization): permuted groups."""
    K, N, block = 64, 8, 16
    rng = np.random.default_rng(7)
    B, scales, zp, _ = _quantized_weights(K, N, block, 4, zero_points, seed=7)
    g_idx = rng.permutation(np.arange(K) // block).astype(np.int32)
    inits = {"B": B, "scales": scales, "zp": zp, "g_idx": g_idx}
    order = ["a", "B", "scales", "zp" if zp is not None else "", "g_idx"]
    inits = {k: v for k, v in inits.items() if v is not None}
    a = rand(3, K, seed=8)
    model = node_model("MatMulNBits", {"a": a}, {"K": K, "N": N, "block_size": block}, initializers=inits,
                       input_order=order, domain=MS)  # fmt: skip
    want = ort_run(model, {"a": a})
    plain = ort_run(node_model("MatMulNBits", {"a": a}, {"K": K, "N": N, "block_size": block},
                               initializers={k: inits[k] for k in order[1:4] if k}, domain=MS), {"a": a})  # fmt: skip
    assert not np.allclose(want[0], plain[0], atol=1e-2)  # g_idx matters here
    assert_close(gpu_run(model, {"a": a}, device), want, rtol=1e-4, atol=1e-4)


# -- GatherBlockQuantized ----------------------------------------------------------------------
def _int4(values: np.ndarray, signed: bool) -> np.ndarray:
    from onnx import helper

    dtype = helper.tensor_dtype_to_np_dtype(onnx.TensorProto.INT4 if signed else onnx.TensorProto.UINT4)
    return values.astype(dtype)


@pytest.mark.parametrize(
    "dtype, shape, qa, ga, block, bits, zero_points",
    [
        ("int4", (10, 64), 1, 0, 32, 4, False),
        ("int4", (10, 64), 1, 0, 16, 4, True),
        ("uint4", (12, 48), -1, 0, 32, 4, True),  # 48 is not a multiple of 32
        ("uint4", (32, 10), 0, 1, 16, 4, True),  # quantized along the gathered axis's neighbour
        ("int4", (3, 8, 32), 2, 1, 16, 4, True),
        ("uint8", (10, 32), 1, 0, 16, 8, False),
        ("uint8", (10, 32), 1, 0, 16, 8, True),
        ("uint8", (10, 64), 1, 0, 32, 4, True),  # 4-bit values packed in uint8 along the last axis
        ("uint8", (10, 64), 1, 0, 16, 4, False),
    ],
)
def test_gather_block_quantized(dtype, shape, qa, ga, block, bits, zero_points, device):
    rng = np.random.default_rng(11)
    rank = len(shape)
    blocks = list(shape)
    blocks[qa % rank] = -(-shape[qa % rank] // block)
    if dtype == "uint8":
        q = rng.integers(0, 1 << bits, shape)
        data = _pack(q, bits) if bits < 8 else q.astype(np.uint8)
        zq = rng.integers(0, 1 << bits, blocks)
        if bits < 8 and blocks[-1] % (8 // bits):
            zq = np.concatenate([zq, np.zeros((*blocks[:-1], 8 // bits - blocks[-1] % (8 // bits)), int)], -1)
        zp = _pack(zq, bits) if bits < 8 else zq.astype(np.uint8)
    else:
        low, high = (-8, 8) if dtype == "int4" else (0, 16)
        data = _int4(rng.integers(low, high, shape), dtype == "int4")
        zp = _int4(rng.integers(low, high, blocks), dtype == "int4")
    scales = rng.uniform(0.5, 2.0, blocks).astype(np.float32)
    n = shape[ga]
    indices = np.array([[0, n - 1, 2], [1, -1, -n]], np.int64)
    inits = {"data": data, "scales": scales, **({"zp": zp} if zero_points else {})}
    attrs = {"quantize_axis": qa, "gather_axis": ga, "block_size": block, "bits": bits}
    model = node_model(
        "GatherBlockQuantized", {"indices": indices}, attrs, initializers=inits, domain=MS,
        input_order=["data", "indices", "scales", *(["zp"] if zero_points else [])],
    )  # fmt: skip
    want = ort_run(model, {"indices": indices})
    assert_close(gpu_run(model, {"indices": indices}, device), want)


def test_dequantized_weights_respect_the_fold_limit():
    """Weights whose blocks come in another order (g_idx) are dequantized at compile time."""
    K, N = 64, 16
    B, scales, _, _ = _quantized_weights(K, N, 32, 4, None)
    g_idx = (np.arange(K)[::-1] // 32).astype(np.int32)
    model = node_model(
        "MatMulNBits", {"a": rand(2, K)}, {"K": K, "N": N, "block_size": 32},
        initializers={"B": B, "s": scales, "g": g_idx}, input_order=["a", "B", "s", "", "g"], domain=MS,
    )  # fmt: skip
    model.graph.node[0].name = "proj"
    with pytest.raises(CompileError, match="fold limit") as e:
        compile_model(model, fold_limit=1024)
    assert "proj" in str(e.value) and "MatMulNBits" in str(e.value)
    compile_model(model, fold_limit=K * N * 4)


@pytest.mark.parametrize(
    "K, N, block, bits, zero_points, rows",
    [
        (52, 12, 16, 4, "packed", (3,)),  # K not a multiple of a word's 8 values: a tail
        (40, 8, 16, 2, None, (5,)),  # 16 values a word, a tail of 8
        (50, 8, 16, 8, "packed", (2, 2)),  # 4 a word, a tail of 2
        (256, 40, 64, 4, "packed", (70,)),  # 4 rows an invocation, ragged
        (128, 16, 128, 4, "float", (1,)),  # a decode step: one row
    ],
)
def test_matmul_nbits_packed_kernel_edges(K, N, block, bits, zero_points, rows, device):
    B, scales, zp, W = _quantized_weights(K, N, block, bits, zero_points, seed=K)
    a = rand(*rows, K, seed=9)
    inits = {"B": B, "scales": scales, **({"zp": zp} if zp is not None else {})}
    order = ["a", "B", "scales", *(["zp"] if zp is not None else [])]
    model = node_model("MatMulNBits", {"a": a}, {"K": K, "N": N, "block_size": block, "bits": bits},
                       initializers=inits, input_order=order, domain=MS)  # fmt: skip
    ref = a @ W.T
    np.testing.assert_allclose(ort_run(model, {"a": a})[0], ref, rtol=1e-3, atol=1e-3)
    assert_close(gpu_run(model, {"a": a}, device), [ref], rtol=1e-4, atol=1e-4)


def test_matmul_nbits_weights_stay_packed(tmp_path):
    """4-bit weights cost about a seventh of f32 in weights.bin, whatever the fold limit."""
    K, N, block = 512, 256, 64
    B, scales, zp, _ = _quantized_weights(K, N, block, 4, "packed")
    model = node_model("MatMulNBits", {"a": rand(2, K)}, {"K": K, "N": N, "block_size": block},
                       initializers={"B": B, "s": scales, "zp": zp}, domain=MS)  # fmt: skip
    onnx2wgsl.compile(model, tmp_path / "a", fold_limit=1024)
    size = (tmp_path / "a" / "weights.bin").stat().st_size
    assert size <= 0.145 * K * N * 4, size  # 4 bits + a 32-bit scale and a 4-bit zero point per 64


def test_matmul_nbits_over_a_symbolic_sequence(device):
    K, N, block = 64, 24, 16
    B, scales, zp, W = _quantized_weights(K, N, block, 4, "packed", seed=3)
    a = rand(1, 5, K, seed=4)
    model = node_model("MatMulNBits", {"a": a}, {"K": K, "N": N, "block_size": block},
                       initializers={"B": B, "s": scales, "zp": zp}, domain=MS)  # fmt: skip
    model = with_dim_params(model, {"a": [1, "seq", K], "y0": [1, "seq", N]})
    model.graph.output[
        0
    ].type.tensor_type.elem_type = onnx.TensorProto.FLOAT  # (no schema types a contrib op)
    check_symbolic(model, {"seq": (1, 70)}, [{"a": rand(1, n, K, seed=n)} for n in (1, 17, 70)], device)


# -- RotaryEmbedding ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, heads, dim",
    [((2, 5, 32), 0, 0), ((2, 5, 32), 4, 0), ((2, 5, 32), 2, 8), ((2, 4, 5, 8), 0, 0), ((1, 3, 24), 3, 0)],
)
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("positions", ["start", "start_input", "ids"])
def test_rotary_embedding(shape, heads, dim, interleaved, positions, device):
    rank = len(shape)
    S = shape[1] if rank == 3 else shape[2]
    # without num_heads a 3-D input's head size comes from the caches: 32 = 4 heads of 8
    head = shape[-1] if rank == 4 else shape[2] // heads if heads else 8
    half = (dim or head) // 2
    rng = np.random.default_rng(12)
    angles = rng.uniform(0, 6.3, (16, half))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    x = rand(*shape, seed=13)
    if positions == "ids":
        pos = rng.integers(0, 16, (shape[0], S)).astype(np.int64)
    else:
        pos = np.array([16 - S], np.int64)
    attrs = {"interleaved": interleaved, **({"num_heads": heads} if heads else {})}
    if dim:
        attrs["rotary_embedding_dim"] = dim
    order = ["x", "pos", "cos", "sin"]
    if positions == "start_input" or positions == "ids":
        feeds = {"x": x, "pos": pos}
        inits = {"cos": cos, "sin": sin}
    else:
        feeds = {"x": x}
        inits = {"pos": pos, "cos": cos, "sin": sin}
    model = node_model("RotaryEmbedding", feeds, attrs, initializers=inits, input_order=order, domain=MS)
    assert_close(gpu_run(model, feeds, device), ort_run(model, feeds))


# -- MultiHeadAttention ------------------------------------------------------------------------
_MHA_SHAPES = [(2, 5, 5, 16, 16, 2), (1, 3, 7, 24, 12, 3), (2, 4, 4, 32, 32, 4)]


@pytest.mark.parametrize(
    "B, S, L, hidden, v_hidden, heads, variant",
    [
        (*shape, variant)
        for variant in ["plain", "causal", "scale", "attn_bias", "presents"]
        for shape in _MHA_SHAPES
        if variant != "causal" or shape[1] == shape[2]  # unidirectional is self-attention
    ],
)
def test_multi_head_attention(B, S, L, hidden, v_hidden, heads, variant, device):
    feeds = {
        "q": rand(B, S, hidden, seed=20),
        "k": rand(B, L, hidden, seed=21),
        "v": rand(B, L, v_hidden, seed=22),
    }
    attrs = {"num_heads": heads}
    order, outputs = ["q", "k", "v"], ["y"]
    if variant == "causal":
        attrs["unidirectional"] = 1
    if variant == "scale":
        attrs["scale"] = 0.3
    if variant == "attn_bias":
        feeds["ab"] = rand(1, heads, S, L, seed=23, low=-2, high=2)
        order += ["", "", "ab"]
    if variant == "presents":
        outputs += ["pk", "pv"]
    model = node_model("MultiHeadAttention", feeds, attrs, input_order=order, outputs=outputs, domain=MS)
    assert_close(gpu_run(model, feeds, device), ort_run(model, feeds), rtol=1e-4, atol=1e-5)


def test_multi_head_attention_unsupported_inputs_are_clear_errors():
    feeds = {"q": rand(1, 4, 16), "k": rand(1, 4, 16), "v": rand(1, 4, 16), "b": rand(48)}
    model = node_model("MultiHeadAttention", feeds, {"num_heads": 2}, domain=MS)
    with pytest.raises(UnsupportedError, match="projection bias input is not supported"):
        compile_model(model)


# -- Attention (packed QKV weights) and EmbedLayerNormalization ----------------------------------
def _attention_model(
    B, S, hidden, heads, mask=None, bias=True, sizes=None, attrs=None, attn_bias=None, seed=0
):
    rng = np.random.default_rng(seed)
    sizes = sizes or [hidden] * 3
    x = rand(B, S, hidden, seed=seed)
    inits = {"w": (rng.standard_normal((hidden, sum(sizes))) * 0.3).astype(np.float32)}
    order = ["x", "w"]
    if bias:
        inits["b"] = (rng.standard_normal(sum(sizes)) * 0.3).astype(np.float32)
        order.append("b")
    feeds = {"x": x}
    if mask is not None:
        order += [""] * (3 - len(order)) + ["mask"]
        feeds["mask"] = mask
    if attn_bias is not None:
        order += [""] * (5 - len(order)) + ["ab"]
        feeds["ab"] = attn_bias
    a = {
        "num_heads": heads,
        **({"qkv_hidden_sizes": sizes} if sizes != [hidden] * 3 else {}),
        **(attrs or {}),
    }
    return node_model("Attention", feeds, a, initializers=inits, input_order=order, domain=MS), feeds


@pytest.mark.parametrize(
    "case",
    ["plain", "no_bias", "ends", "raw2d", "raw3d", "causal", "sizes", "scale", "bias_input", "filter"],
)
def test_contrib_attention(case, device):
    B, S, hidden, heads = 2, 7, 16, 2
    rng = np.random.default_rng(3)
    raw = (rng.random((B, S)) > 0.3).astype(np.int32)
    raw[:, 0] = 1
    kw = {
        "plain": {},
        "no_bias": {"bias": False},
        "ends": {"mask": np.array([4, 7], np.int32)},
        "raw2d": {"mask": raw},
        "raw3d": {"mask": np.tril(np.ones((S, S), np.int32))[None].repeat(B, 0)},
        "causal": {"attrs": {"unidirectional": 1}, "mask": raw},
        "sizes": {"sizes": [16, 16, 8]},
        "scale": {"attrs": {"scale": 0.5}},
        "bias_input": {"attn_bias": rand(1, heads, S, S, seed=4)},
        "filter": {"mask": raw, "attrs": {"mask_filter_value": -50.0}},
    }[case]
    model, feeds = _attention_model(B, S, hidden, heads, **kw)
    assert_close(gpu_run(model, feeds, device), ort_run(model, feeds), rtol=1e-4, atol=1e-5)


def test_contrib_attention_over_symbolic_dims(device):
    hidden, heads = 16, 4
    model, _ = _attention_model(1, 5, hidden, heads, mask=np.ones((1, 5), np.int32))
    model = with_dim_params(
        model, {"x": ["batch", "seq", hidden], "mask": ["batch", "seq"], "y0": ["batch", "seq", hidden]}
    )
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    rng = np.random.default_rng(0)
    feeds = []
    for b, s in ((1, 1), (2, 9), (3, 24)):
        m = (rng.random((b, s)) > 0.3).astype(np.int32)
        m[:, 0] = 1
        feeds.append({"x": rand(b, s, hidden, seed=s), "mask": m})
    check_symbolic(model, {"batch": (1, 3), "seq": (1, 24)}, feeds, device)


def test_contrib_attention_unsupported_forms_are_clear_errors():
    model, _ = _attention_model(2, 4, 8, 2, mask=np.array([1, 4, 0, 0], np.int32))  # [2B]: ends and starts
    with pytest.raises(UnsupportedError, match="mask_index of shape"):
        compile_model(model)
    model, _ = _attention_model(2, 4, 8, 3)
    with pytest.raises(CompileError, match="num_heads"):
        compile_model(model)


def _embed_model(B, S, H, vocab=30, positions=16, segments=True, mask=True, pos_ids=False, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {"ids": rng.integers(0, vocab, (B, S)).astype(np.int32)}
    inits = {
        "word": rng.standard_normal((vocab, H)).astype(np.float32),
        "pos": rng.standard_normal((positions, H)).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, H).astype(np.float32),
        "beta": rng.standard_normal(H).astype(np.float32),
    }
    order = ["ids", "seg" if segments else "", "word", "pos", "segtab" if segments else "", "gamma", "beta"]
    if segments:
        feeds["seg"] = rng.integers(0, 2, (B, S)).astype(np.int32)
        inits["segtab"] = rng.standard_normal((2, H)).astype(np.float32)
    if mask:
        m = np.ones((B, S), np.int32)
        m[0, S // 2 :] = 0
        feeds["mask"] = m
        order.append("mask")
    if pos_ids:
        order += [""] * (8 - len(order)) + ["pids"]
        feeds["pids"] = rng.integers(0, positions, (B, S)).astype(np.int32)
    model = node_model("EmbedLayerNormalization", feeds, {"epsilon": 1e-5}, initializers=inits, input_order=order,
                       n_outputs=outputs, domain=MS)  # fmt: skip
    return model, feeds


@pytest.mark.parametrize(
    "kw",
    [{}, {"segments": False}, {"mask": False}, {"pos_ids": True}, {"outputs": 2}],
    ids=["all", "no_segments", "no_mask", "position_ids", "two_outputs"],
)
def test_embed_layer_normalization(kw, device):
    model, feeds = _embed_model(2, 6, 8, **kw)
    assert_close(gpu_run(model, feeds, device), ort_run(model, feeds), rtol=1e-4, atol=1e-5)


def test_embed_layer_normalization_feeds_attention_over_symbolic_dims(device):
    """The optimizer's BERT pairing: EmbedLayerNormalization's mask index (key end positions)
    masks Attention's keys, compiled once for a range of batch and sequence."""
    from onnx import TensorProto, helper

    H, heads, vocab, positions = 16, 2, 40, 32
    rng = np.random.default_rng(1)
    inits = {
        "word": rng.standard_normal((vocab, H)).astype(np.float32),
        "pos": rng.standard_normal((positions, H)).astype(np.float32),
        "gamma": np.ones(H, np.float32),
        "beta": np.zeros(H, np.float32),
        "w": (rng.standard_normal((H, 3 * H)) * 0.3).astype(np.float32),
        "b": (rng.standard_normal(3 * H) * 0.3).astype(np.float32),
    }
    nodes = [
        helper.make_node("EmbedLayerNormalization", ["ids", "", "word", "pos", "", "gamma", "beta", "mask"],
                         ["emb", "index"], domain=MS, epsilon=1e-12),
        helper.make_node("Attention", ["emb", "w", "b", "index"], ["y"], domain=MS, num_heads=heads),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "bert_embed_attention",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "seq"]),
         helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", H])],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    feeds = []
    for b, s in ((1, 1), (2, 11), (3, 32)):
        mask = np.ones((b, s), np.int32)
        mask[0, s // 2 + 1 :] = 0  # right padding, as the end positions assume
        feeds.append({"ids": rng.integers(0, vocab, (b, s)).astype(np.int32), "mask": mask})
    check_symbolic(model, {"batch": (1, 3), "seq": (1, 32)}, feeds, device)


def test_matmul_nbits_takes_bias_scale_and_epilogue(device, tmp_path):
    """A per-column Mul and Add after MatMulNBits fold into its scales and bias, and an
    elementwise consumer runs at its store: one dispatch, as onnxruntime computes it."""
    from onnx import TensorProto, helper

    K, N, block = 64, 24, 16
    B, scales, zp, _ = _quantized_weights(K, N, block, 4, "packed", seed=5)
    rng = np.random.default_rng(6)
    inits = {"B": B, "s": scales, "zp": zp, "k": rng.uniform(0.5, 2, N).astype(np.float32),
             "t": rng.standard_normal(N).astype(np.float32), "r": rand(3, N, seed=7)}  # fmt: skip
    nodes = [
        helper.make_node(
            "MatMulNBits", ["a", "B", "s", "zp"], ["m"], domain=MS, K=K, N=N, block_size=block, bits=4
        ),
        helper.make_node("Mul", ["m", "k"], ["ms"]),
        helper.make_node("Add", ["ms", "t"], ["mt"]),
        helper.make_node("Add", ["mt", "r"], ["res"]),
        helper.make_node("Relu", ["res"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "nbits_epilogue", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, N])],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    a = rand(3, K, seed=8)
    onnx2wgsl.compile(model, tmp_path / "o2")
    import json

    manifest = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert len(manifest["dispatches"]) == 1, [d["label"] for d in manifest["dispatches"]]
    with onnx2wgsl.load(tmp_path / "o2", device=device) as sess:
        assert_close(sess.run(None, {"a": a}), ort_run(model, {"a": a}), rtol=1e-4, atol=1e-5)

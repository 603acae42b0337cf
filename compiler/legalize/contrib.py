"""Legalize rules: onnxruntime's contrib ops (domain ``com.microsoft``).

Transformer models rewritten by onnxruntime's optimizer, or exported by optimum and
onnxruntime-genai, use these fused ops. Each becomes the default-domain IR ops it stands for
(Add + Gelu, Add + LayerNormalization, RMSNormalization, MatMul, Gather, ...), so constant
folding, fusion and the norm kernels apply to them as to any exporter's output. Semantics
follow onnxruntime's ContribOperators.md and its CPU kernels, which the tests compare with.

Quantized weights (MatMulNBits, GatherBlockQuantized) must be constants. MatMulNBits keeps
them packed on the GPU (32-bit words of 2-, 4- or 8-bit values, scales and zero points beside
them) for a kernel that dequantizes as it multiplies, and GatherBlockQuantized tables
quantized along their rows (embeddings) stay packed for a kernel that dequantizes the rows it
gathers; weights whose blocks come in another order (g_idx), and tables quantized along
another axis, are dequantized at compile time into float constants (within the fold limit).

Any attribute or input combination not handled here is an UnsupportedError naming it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from onnx2wgsl.errors import UnsupportedError
from onnx2wgsl.ir import DType, TensorType, Value
from onnx2wgsl.ir.symbolic import Expr, SymbolicError, simplify
from onnx2wgsl.ir.types import dim_bound

from .. import host_eval
from ..symbolic_fold import broadcast
from . import emit, legalize, rule
from .elementwise import _broadcasts_to

MS = "com.microsoft"
# onnxruntime registers these in the default domain, where ONNX itself defines no such op.
DEFAULT_DOMAIN = ("SimplifiedLayerNormalization",)
# The ops of this module, as (domain, op type), for `onnx2wgsl ops` and the frontend.
OPS: list[tuple[str, str]] = []
# onnx's default-domain schemas the IR forms below follow (rules read ``info.opset``).
_STANDARD_OPSET = 23


def contrib(*op_types: str, domain: str = MS):
    def register(fn):
        OPS.extend((domain, t) for t in op_types)
        return rule(*op_types, domain=domain)(fn)

    return register


# -- helpers ----------------------------------------------------------------------------------
def _unsupported(info, what: str, hint: str | None = None):
    return info.error(f"{what} is not supported", hint=hint, cls=UnsupportedError)


def _inputs(info, n_min: int, n_max: int) -> list[Value | None]:
    """The node's inputs padded with None to ``n_max``; the required ones present (onnx has no
    schema to check these ops against)."""
    ins = list(info.inputs)
    if len(ins) > n_max:
        raise info.error(
            f"it has {len(ins)} inputs; {info.op_type} takes at most {n_max}", hint="fix the model"
        )
    ins += [None] * (n_max - len(ins))
    missing = [i for i in range(n_min) if ins[i] is None]
    if missing:
        raise info.error(
            f"its input {missing[0]} is required, but the node leaves it empty", hint="fix the model"
        )
    return ins


def _outputs(info, n_max: int) -> list[TensorType | None]:
    types = list(info.out_types)
    if len(types) > n_max:
        raise info.error(
            f"it has {len(types)} outputs; {info.op_type} gives at most {n_max}", hint="fix the model"
        )
    return types + [None] * (n_max - len(types))


def _float_input(info, v: Value, what: str) -> None:
    if not v.dtype.is_float:
        raise info.error(
            f"{what} is {v.dtype.name}; {info.op_type} takes float tensors", hint="fix the model"
        )


def _standard(g, info, op_type: str, inputs, attrs, out_types, out_names) -> list[Value | None]:
    """Legalize the default-domain op ``op_type`` on these operands: its IR form, by its own rule."""
    std = dataclasses.replace(
        info, op_type=op_type, domain="", opset=_STANDARD_OPSET, inputs=list(inputs), attrs=dict(attrs),
        out_types=list(out_types), out_names=list(out_names), schema=None,
    )  # fmt: skip
    return legalize(g, std)


def _binary(g, info, kind: str, a: Value, b: Value, name: str, dtype: DType | None = None) -> Value:
    """``kind`` of a and b broadcast; the result is ``dtype`` (default a's: comparisons pass bool)."""
    try:  # (dims kept symbolic broadcast by their ranges)
        shape = broadcast(tuple(a.shape), tuple(b.shape))
    except (ValueError, SymbolicError):
        raise info.error(
            f"{a.name!r} {list(a.shape)} and {b.name!r} {list(b.shape)} do not broadcast",
            hint="fix the model",
        ) from None
    (y,) = emit(g, info, kind, [a, b], {}, [TensorType(dtype or a.dtype, tuple(shape))], [name], domain="")
    return y


def _last_dim_param(info, x: Value, v: Value | None, what: str) -> None:
    """An optional per-feature operand: shape [hidden] (the input's last dim)."""
    if v is not None and tuple(v.shape) != (x.shape[-1],):
        raise info.error(
            f"{what} has shape {list(v.shape)}; it must be [{x.shape[-1]}]", hint="fix the model"
        )


# -- activations ------------------------------------------------------------------------------
@contrib("Gelu", "BiasGelu", "FastGelu")
def _gelu(g, info):
    """Gelu (erf), BiasGelu (erf of A + B) and FastGelu (the tanh form, optional bias)."""
    n_min, n_max = {"Gelu": (1, 1), "BiasGelu": (2, 2), "FastGelu": (1, 2)}[info.op_type]
    x, bias = (_inputs(info, n_min, n_max) + [None])[:2]
    _outputs(info, 1)
    _float_input(info, x, "its input")
    if bias is not None:
        if bias.type.rank != 1 or bias.shape[0] != (x.shape[-1] if x.type.rank else -1):
            raise info.error(
                f"bias has shape {list(bias.shape)}; it must be [{x.shape[-1] if x.type.rank else '?'}] "
                "(the input's last dim)",
                hint="fix the model",
            )
        x = _binary(g, info, "Add", x, bias, info.out_names[0] + ".biased")
    approximate = "tanh" if info.op_type == "FastGelu" else "none"
    return _standard(g, info, "Gelu", [x], {"approximate": approximate}, info.out_types, info.out_names)


@contrib("QuickGelu")
def _quick_gelu(g, info):
    """x * Sigmoid(alpha * x)."""
    (x,) = _inputs(info, 1, 1)
    _outputs(info, 1)
    _float_input(info, x, "its input")
    alpha = float(info.attrs.get("alpha", 1.702))
    name = info.out_names[0]
    scaled = x
    if alpha != 1.0:
        scaled = _binary(
            g, info, "Mul", x, g.const(np.asarray(alpha, x.dtype.numpy), name + ".alpha"), name + ".ax"
        )
    (gate,) = emit(g, info, "Sigmoid", [scaled], {}, [x.type], [name + ".gate"], domain="")
    return emit(g, info, "Mul", [x, gate], {}, domain="")


@contrib("BiasAdd")
def _bias_add(g, info):
    """X + bias + skip; X and skip are (N, S, C), bias (C)."""
    x, bias, skip = _inputs(info, 3, 3)
    _outputs(info, 1)
    if x.type.rank != 3 or tuple(skip.shape) != tuple(x.shape):
        raise info.error(
            f"X {list(x.shape)} and skip {list(skip.shape)} must have one shape (N, S, C)",
            hint="fix the model",
        )
    _last_dim_param(info, x, bias, "bias")
    s = _binary(g, info, "Add", x, bias, info.out_names[0] + ".biased")
    return emit(g, info, "Add", [s, skip], {}, domain="")


# -- normalizations ---------------------------------------------------------------------------
def _stat_type(x: Value, axis: int) -> TensorType:
    """Mean / inv_std_var: the input's dims before ``axis``, ones after (always float32)."""
    return TensorType(DType.f32, tuple(x.shape[:axis]) + (1,) * (x.type.rank - axis))


@contrib("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")
def _skip_norm(g, info):
    """LayerNormalization (or RMS) over the last dim of input + skip (+ bias); outputs output,
    mean, inv_std_var, input_skip_bias_sum."""
    simplified = info.op_type == "SkipSimplifiedLayerNormalization"
    if simplified:
        x, skip, gamma, bias = _inputs(info, 3, 4)
        beta = None
    else:
        x, skip, gamma, beta, bias = _inputs(info, 3, 5)
    types = _outputs(info, 4)
    _float_input(info, x, "its input")
    if x.type.rank not in (2, 3):
        raise info.error(
            f"input has rank {x.type.rank}; {info.op_type} takes 2-D or 3-D input", hint="fix the model"
        )
    hidden = x.shape[-1]
    if not _broadcasts_to(tuple(skip.shape), tuple(x.shape)) or skip.shape[-1] != hidden:
        raise info.error(
            f"skip {list(skip.shape)} does not broadcast to input {list(x.shape)}", hint="fix the model"
        )
    for what, v in (("gamma", gamma), ("beta", beta), ("bias", bias)):
        _last_dim_param(info, x, v, what)
    if simplified and types[1] is not None:
        raise _unsupported(
            info, "its mean output (onnxruntime leaves it undefined for RMS normalization)",
            hint="leave output 1 empty",
        )  # fmt: skip
    names = list(info.out_names) + [""] * (4 - len(info.out_names))
    total = _binary(g, info, "Add", x, skip, names[3] + ".skip" if bias is not None else names[3])
    if bias is not None:
        total = _binary(g, info, "Add", total, bias, names[3])
    eps = float(info.attrs.get("epsilon", 1e-12))
    axis = x.type.rank - 1
    if simplified:
        stat = types[2] and _stat_type(x, axis)
        y, inv = _rms(g, info, total, gamma, axis, eps, [types[0], stat], [names[0], names[2]])
        mean = None
    else:
        stat = [types[0], types[1] and _stat_type(x, axis), types[2] and _stat_type(x, axis)]
        y, mean, inv = _standard(
            g, info, "LayerNormalization", [total, gamma, beta], {"axis": axis, "epsilon": eps},
            stat, names[:3],
        )  # fmt: skip
    outs = [y, mean, inv, total if types[3] is not None else None]
    return outs[: len(info.out_types)]


def _rms(g, info, x, scale, axis, eps, out_types, out_names) -> list[Value | None]:
    """RMSNormalization of x over the dims from ``axis``; its optional second output is the
    inverse RMS per row (IR outputs 0 and 2, the places LayerNormalization gives them)."""
    norm = tuple(x.shape[axis:])
    if not _broadcasts_to(tuple(scale.shape), norm):
        raise info.error(
            f"scale {list(scale.shape)} does not broadcast to {list(norm)}", hint="fix the model"
        )
    types = [out_types[0], None, out_types[1]]
    live = [i for i, t in enumerate(types) if t is not None]
    (y, _, inv) = emit(
        g, info, "RMSNormalization", [x, scale], {"axis": axis, "epsilon": eps, "outputs": live},
        types, [out_names[0], "", out_names[1]], domain="",
    )  # fmt: skip
    return [y, inv]


@contrib("SimplifiedLayerNormalization", domain="")
def _simplified_norm(g, info):
    """RMS normalization over the dims from ``axis`` on: X / sqrt(mean(X^2) + epsilon) * scale,
    computed in float32 (``stash_type`` 1, the default)."""
    x, scale = _inputs(info, 2, 2)
    types = _outputs(info, 2)
    _float_input(info, x, "X")
    rank = x.type.rank
    axis = int(info.attrs.get("axis", -1))
    if not -rank <= axis < rank:
        raise info.error(f"axis {axis} is out of range for rank {rank}", hint="fix the model")
    axis %= rank
    stash = int(info.attrs.get("stash_type", 1))
    if stash != 1:
        raise _unsupported(
            info, f"stash_type {stash}", hint="the statistics are computed in float32 (stash_type 1)"
        )
    eps = float(info.attrs.get("epsilon", 1e-5))
    names = list(info.out_names) + [""]
    outs = _rms(g, info, x, scale, axis, eps, [types[0], types[1] and _stat_type(x, axis)], names[:2])
    return outs[: len(info.out_types)]


# -- block-quantized weights, dequantized at compile time -------------------------------------
def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 bytes holding 8/bits values each, low-order bits first -> one value per element
    along the last axis."""
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    vals = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return vals.reshape(*packed.shape[:-1], packed.shape[-1] * (8 // bits))


def _constant(info, i: int, what: str) -> np.ndarray | None:
    """Input i, which must be a compile-time constant (the weights are dequantized then)."""
    return info.const_input(i, what)  # raises, naming the node and the input, for a run-time one


def _check_fold(info, shape, dtype: DType, what: str) -> None:
    host_eval.check_fold_size(
        shape,
        max(dtype.itemsize, 4),
        info.fold_limit,
        what,
        node=info.name,
        op=info.op_type,
        opset=info.opset,
    )


@contrib("MatMulNBits")
def _matmul_nbits(g, info):
    """Y = A @ dequantize(B)^T (+ bias). B (N, k_blocks, blob) holds ``bits``-bit values packed
    along K, block by block; each (row, block) has a scale and a zero point (default
    2^(bits-1); packed uint8 or unpacked floats); g_idx maps each k to its block."""
    a_, _, _, _, _, bias = _inputs(info, 3, 6)
    _outputs(info, 1)
    _float_input(info, a_, "A")
    attrs = info.attrs
    for name in ("K", "N", "block_size"):
        if name not in attrs:
            raise info.error(f"it lacks the required attribute {name!r}", hint="fix the model")
    K, N, block, bits = int(attrs["K"]), int(attrs["N"]), int(attrs["block_size"]), int(attrs.get("bits", 4))
    if int(attrs.get("weight_prepacked", 0)):
        raise _unsupported(info, f"weight_prepacked={attrs['weight_prepacked']} (a GPU vendor's layout)")
    if bits not in (2, 4, 8):
        raise _unsupported(info, f"bits={bits}", hint="bits 2, 4 and 8 are")
    if block < 16 or block & (block - 1):
        raise info.error(f"block_size {block} must be a power of two, at least 16", hint="fix the model")
    if K <= 0 or N <= 0:
        raise info.error(f"K={K} and N={N} must be positive", hint="fix the model")
    if a_.type.rank < 1 or a_.shape[-1] != K:
        raise info.error(f"A {list(a_.shape)} must have K={K} as its last dim", hint="fix the model")
    if bias is not None and tuple(bias.shape) != (N,):
        raise info.error(f"bias has shape {list(bias.shape)}; it must be [{N}]", hint="fix the model")
    blocks = -(-K // block)
    B = _constant(info, 1, "B (quantized weights)")
    scales = _constant(info, 2, "scales")
    zp = _constant(info, 3, "zero_points")
    g_idx = _constant(info, 4, "g_idx")
    if g_idx is not None and zp is not None and zp.dtype == np.uint8:
        # onnxruntime's CPU kernel reads such zero points in a layout its docs do not describe
        raise _unsupported(
            info, "g_idx together with packed (uint8) zero_points", hint="unpacked (float) zero points are"
        )
    q = s = z = None
    if B.size:
        blob = block * bits // 8
        if B.dtype != np.uint8 or B.size != N * blocks * blob:
            raise info.error(
                f"B is {B.dtype} of shape {list(B.shape)}; K={K}, N={N}, block_size={block}, bits={bits} "
                f"need uint8 [{N}, {blocks}, {blob}]",
                hint="fix the model",
            )
        q = _unpack(B.reshape(N, blocks * blob), bits)[:, :K]
        if scales.size != N * blocks:
            raise info.error(
                f"scales has shape {list(scales.shape)}; it must be [{N}, {blocks}]", hint="fix the model"
            )
        s = scales.reshape(N, blocks).astype(np.float32)
        if zp is None:
            z = None  # 2^(bits-1)
        elif zp.dtype == np.uint8:
            per_row = -(-blocks * bits // 8)
            if zp.size != N * per_row:
                raise info.error(
                    f"packed zero_points has shape {list(zp.shape)}; it must be [{N}, {per_row}]",
                    hint="fix the model",
                )
            z = _unpack(zp.reshape(N, per_row), bits)[:, :blocks]  # uint8 values
        else:
            if zp.size != N * blocks:
                raise info.error(
                    f"zero_points has shape {list(zp.shape)}; unpacked it must be [{N}, {blocks}]",
                    hint="fix the model",
                )
            z = zp.reshape(N, blocks).astype(np.float32)
    group = np.arange(K) // block
    if g_idx is not None:
        given = g_idx.reshape(-1).astype(np.int64)
        if given.size != K or given.min(initial=0) < 0 or given.max(initial=0) >= blocks:
            raise info.error(f"g_idx must hold K={K} block indices in [0, {blocks})", hint="fix the model")
        if np.array_equal(given, group):
            g_idx = None  # the plain order, spelled out
        group = given
    if q is not None and g_idx is None and a_.dtype in (DType.f32, DType.f16):
        return _matmul_nbits_packed(g, info, a_, q, s, z, bias, K, N, block, bits)
    # zeros (an omitted projection), or groups in another order: dequantized at compile time
    _check_fold(info, (K, N), a_.dtype, "the dequantized weight")
    if q is None:
        W = np.zeros((N, K), np.float32)
    else:
        zf = np.full((N, blocks), 1 << (bits - 1), np.float32) if z is None else z.astype(np.float32)
        W = (q.astype(np.float32) - zf[:, group]) * s[:, group]
    w = g.const(np.ascontiguousarray(W.T).astype(a_.dtype.numpy), info.inputs[1].name + ".dequantized")
    name = info.out_names[0]
    if bias is None:
        return emit(g, info, "MatMul", [a_, w], {}, domain="")
    out = info.out_types[0]
    (y,) = emit(g, info, "MatMul", [a_, w], {}, [out], [name + ".matmul"], domain="")
    return emit(g, info, "Add", [y, bias], {}, domain="")


def pack_words(values: np.ndarray, bits: int) -> np.ndarray:
    """Values < 2^bits along the last axis -> uint32 words holding 32/bits each, low-order
    bits first; the last axis is padded with zeros to whole words."""
    per = 32 // bits
    n = values.shape[-1]
    padded = np.zeros((*values.shape[:-1], -(-n // per) * per), np.uint32)
    padded[..., :n] = values
    parts = padded.reshape(*values.shape[:-1], -1, per) << (np.arange(per, dtype=np.uint32) * np.uint32(bits))
    return np.bitwise_or.reduce(parts, axis=-1).astype(np.uint32)


def _packed_const(g, data: np.ndarray, name: str, dtype: DType) -> Value:
    """A constant of packed weights: the one an earlier MatMulNBits or GatherNBits already
    reads if its bytes are these, else a new one. A model whose embedding table is its lm_head's
    quantized weights (tied embeddings, as onnxruntime-genai's builder writes them: a
    GatherBlockQuantized over the MatMulNBits's B) keeps one copy of the words, scales and zero
    points."""
    data = np.ascontiguousarray(data, dtype=dtype.numpy)
    flat = data.reshape(-1)
    step = max(1, flat.size // 64)  # a sample first: weights that differ differ there

    def same(v: Value | None) -> bool:
        if v is None or not v.is_const or v.dtype != dtype or tuple(v.shape) != data.shape:
            return False
        return np.array_equal(v.data.reshape(-1)[::step], flat[::step]) and np.array_equal(v.data, data)

    for op in g.ops:
        if op.kind in ("MatMulNBits", "GatherNBits") and op.domain == "":
            for v in op.inputs:
                if same(v):
                    return v
    return g.const(data, name, dtype=dtype)


def _matmul_nbits_packed(g, info, a_, q, s, z, bias, K, N, block, bits):
    """The weights stay packed on the GPU (compiler/lowering/matmul_nbits.py dequantizes in the
    kernel): each row of B re-packed as 32-bit words of K values (no block padding), scales as
    f32, zero points packed into words in row-major (row, block) order (or f32 when the model
    gives floats). Under --precision fp16 the precision pass stores the float ones as f16 (the
    kernel widens them as it reads them)."""
    words = _packed_const(g, pack_words(q, bits), info.inputs[1].name + ".packed", DType.u32)
    scales = _packed_const(g, s, info.inputs[2].name + ".f32", DType.f32)
    # fixed operand slots (A, words, scales, zero points, bias; None where absent): a fused
    # epilogue's operands follow them
    inputs: list[Value | None] = [a_, words, scales, None, bias]
    mode = "default"
    if z is not None:
        mode = "float" if z.dtype == np.float32 else "packed"
        # packed zero points run on across rows: 4 bits a block, whatever the blocks per row
        data = np.ascontiguousarray(z) if mode == "float" else pack_words(z.reshape(-1), bits)
        inputs[3] = _packed_const(
            g, data, info.inputs[3].name + f".{mode}", DType.f32 if mode == "float" else DType.u32
        )
    attrs = {"K": K, "N": N, "bits": bits, "block_size": block, "zero_points": mode}
    return emit(g, info, "MatMulNBits", inputs, attrs, domain="")


@contrib("GatherBlockQuantized")
def _gather_block_quantized(g, info):
    """Gather from a table quantized block-wise along ``quantize_axis``: int4 / uint4 data
    (zero point default 0), or uint8 holding 2-, 4- or 8-bit values packed along the last axis
    (default 2^(bits-1)).

    The common form, rows gathered along axis 0 of a table quantized along its last axis (an
    LLM's token embeddings), keeps the table packed on the GPU (``_gather_nbits_packed``; the
    kernel dequantizes the rows it gathers). Other axis pairs (quantized along the gathered
    axis or a middle one, or gathered along another axis: rare) are dequantized at compile
    time into a float table (within the fold limit), then gathered."""
    data_v, indices, scales_v, _ = _inputs(info, 3, 4)
    _outputs(info, 1)
    attrs = info.attrs
    bits, block = int(attrs.get("bits", 4)), int(attrs.get("block_size", 128))
    if indices.dtype not in (DType.i32, DType.i64):
        raise info.error(
            f"indices are {indices.dtype.name}; they must be int32 or int64", hint="fix the model"
        )
    if not scales_v.dtype.is_float:
        raise info.error(f"scales are {scales_v.dtype.name}; they must be floats", hint="fix the model")
    if data_v.dtype not in (DType.i4, DType.u4, DType.u8):
        raise _unsupported(info, f"{data_v.dtype.name} data", hint="int4, uint4 and uint8 data are")
    packed = data_v.dtype == DType.u8 and bits < 8
    if data_v.dtype == DType.u8 and bits not in (2, 4, 8):
        raise _unsupported(info, f"bits={bits}", hint="bits 2, 4 and 8 are")
    if block < 16 or block & (block - 1):
        raise info.error(f"block_size {block} must be a power of two, at least 16", hint="fix the model")
    data = _constant(info, 0, "data (quantized table)")
    scales = _constant(info, 2, "scales")
    zp = _constant(info, 3, "zero_points")
    q = (_unpack(data, bits) if packed else data).astype(np.int64)
    rank = q.ndim
    qa, ga = (int(attrs.get(k, d)) for k, d in (("quantize_axis", 1), ("gather_axis", 0)))
    for what, axis in (("quantize_axis", qa), ("gather_axis", ga)):
        if not -rank <= axis < rank:
            raise info.error(f"{what} {axis} is out of range for rank {rank}", hint="fix the model")
    qa, ga = qa % rank, ga % rank
    if data_v.dtype == DType.u8 and (ga != 0 or (packed and qa == ga)):
        raise info.error(
            f"uint8 data needs gather_axis 0{' and another quantize_axis' if packed else ''} "
            f"(got gather_axis {ga}, quantize_axis {qa})",
            hint="fix the model",
        )
    blocks = list(q.shape)
    blocks[qa] = -(-q.shape[qa] // block)
    if tuple(scales.shape) != tuple(blocks):
        raise info.error(f"scales has shape {list(scales.shape)}; it must be {blocks}", hint="fix the model")
    default = 1 << (bits - 1) if data_v.dtype == DType.u8 else 0
    zq = None
    if zp is not None:
        zq = (_unpack(zp, bits)[..., : blocks[-1]] if packed else zp).astype(np.int64)
        if zq.shape != tuple(blocks):
            raise info.error(
                f"zero_points has shape {list(zp.shape)}; it must hold {blocks} values", hint="fix the model"
            )
    if rank >= 2 and ga == 0 and qa == rank - 1 and q.size:
        # int4 values (-8..7) and their zero points, shifted by 8 into unsigned 4-bit values
        shift = 8 if data_v.dtype == DType.i4 else 0
        z = None if zq is None else zq + shift
        vbits = 4 if data_v.dtype in (DType.i4, DType.u4) else bits
        return _gather_nbits_packed(g, info, q + shift, indices, scales, z, default + shift, vbits, block)
    if zq is None:
        z = np.float32(default)
    else:
        z = np.repeat(zq.astype(np.float32), block, axis=qa).take(range(q.shape[qa]), axis=qa)
    _check_fold(info, q.shape, scales_v.dtype, "the dequantized table")
    s = np.repeat(scales.astype(np.float32), block, axis=qa).take(range(q.shape[qa]), axis=qa)
    table = g.const(
        ((q.astype(np.float32) - z) * s).astype(scales_v.dtype.numpy), data_v.name + ".dequantized"
    )
    return _standard(g, info, "Gather", [table, indices], {"axis": ga}, info.out_types, info.out_names)


def _gather_nbits_packed(g, info, q, indices, scales, z, zero: int, bits: int, block: int):
    """The table stays packed on the GPU (compiler/lowering/gather_nbits.py gathers and
    dequantizes): q (unsigned values < 2^bits) [rows, ..., K] as [rows, M * words] 32-bit
    words, each of the M = prod(middle dims) sub-rows of K values packed on its own (no block
    padding, a partial word at the end of each sub-row), scales [rows, M * blocks] f32, and zero
    points (absent: ``zero``) packed into words in one run over all (sub-row, block) pairs. Under
    --precision fp16 the precision pass stores the scales as f16."""
    R, K = q.shape[0], q.shape[-1]
    M = int(np.prod(q.shape[1:-1], dtype=np.int64))
    data_name, scales_name = info.inputs[0].name, info.inputs[2].name
    words = pack_words(q.reshape(R * M, K), bits).reshape(R, -1)
    inputs: list[Value | None] = [
        _packed_const(g, words, data_name + ".packed", DType.u32),
        indices,
        _packed_const(g, scales.astype(np.float32).reshape(R, -1), scales_name + ".f32", DType.f32),
        None,
    ]
    if z is not None:
        inputs[3] = _packed_const(
            g, pack_words(z.reshape(-1), bits), info.inputs[3].name + ".packed", DType.u32
        )
    attrs = {"K": K, "bits": bits, "block_size": block, "zero": zero}
    return emit(g, info, "GatherNBits", inputs, attrs, domain="")


# -- attention building blocks ----------------------------------------------------------------
@contrib("RotaryEmbedding")
def _rotary(g, info):
    """onnxruntime's RoPE as ONNX's RotaryEmbedding (opset 23): position_ids of shape (1) (the
    first position; the others follow it) become the (batch, sequence) ids ONNX takes."""
    x, pos, cos, sin = _inputs(info, 4, 4)
    _outputs(info, 1)
    _float_input(info, x, "input")
    a = info.attrs
    if int(a.get("is_packed_batching", 0)):
        raise _unsupported(info, "is_packed_batching=1 (ragged batches)")
    if float(a.get("scale", 1.0)) != 1.0:
        raise _unsupported(info, f"scale={a['scale']}", hint="scale 1.0 (the default) is")
    if x.type.rank not in (3, 4) or cos.type.rank != 2 or tuple(sin.shape) != tuple(cos.shape):
        raise info.error(
            f"input {list(x.shape)}, cos_cache {list(cos.shape)} and sin_cache {list(sin.shape)} do not fit: "
            "input is 3-D or 4-D, the caches 2-D of one shape",
            hint="fix the model",
        )
    B, S = x.shape[0], x.shape[1] if x.type.rank == 3 else x.shape[2]
    heads, dim = int(a.get("num_heads", 0)), int(a.get("rotary_embedding_dim", 0))
    if x.type.rank == 3 and not heads:
        if dim:
            raise info.error("rotary_embedding_dim needs num_heads with 3-D input", hint="fix the model")
        heads = x.shape[2] // (2 * cos.shape[1]) if cos.shape[1] else 0
        if heads <= 0 or heads * 2 * cos.shape[1] != x.shape[2]:
            raise info.error(
                f"hidden size {x.shape[2]} is not a multiple of the head size {2 * cos.shape[1]} the caches give",
                hint="fix the model",
            )
    if pos.dtype != DType.i64:
        raise info.error(f"position_ids are {pos.dtype.name}; they must be int64", hint="fix the model")
    if tuple(pos.shape) == (1,):
        steps = np.broadcast_to(np.arange(S, dtype=np.int64), (B, S))
        if pos.is_const:
            pos = g.const(steps + pos.data.reshape(()), pos.name + ".positions")
        else:
            pos = _binary(
                g,
                info,
                "Add",
                pos,
                g.const(np.ascontiguousarray(steps), pos.name + ".steps"),
                pos.name + ".positions",
            )
    elif tuple(pos.shape) != (B, S):
        raise info.error(
            f"position_ids has shape {list(pos.shape)}; it must be [1] or [{B}, {S}]", hint="fix the model"
        )
    attrs = {"interleaved": int(a.get("interleaved", 0)), "num_heads": heads}
    if dim:
        attrs["rotary_embedding_dim"] = dim
    return _standard(g, info, "RotaryEmbedding", [x, cos, sin, pos], attrs, info.out_types, info.out_names)


def _dim_low(d) -> int:
    """A dim's smallest value over its symbols' ranges."""
    return d.bounds[0] if isinstance(d, Expr) else d


@contrib("GroupQueryAttention")
def _group_query_attention(g, info):
    """Causal self-attention over a KV cache with fewer key/value heads than query heads, as
    onnxruntime-genai's model builder writes LLMs: query [B, S, Hq * D] (Q, K and V packed in it
    when key and value are left empty), past_key / past_value [B, Hkv, P, D], seqlens_k [B]
    (each batch row's total length - 1), rotary embedding of Q and K when do_rotary is set.

    present_key / present_value hold each row's past then its new keys, zeros after
    ([B, Hkv, P + S, D]: total_sequence_length is taken to be P + S, the form whose present is
    not the past's own buffer; a constant total_sequence_length gives onnxruntime's max(total,
    P), and a present as long as its past is that past with the new keys placed: the buffer a
    generation shares between them, written in place). Query i of row b stands at past_b + i,
    past_b = seqlens_k[b] + 1 - S (0 for a right-padded first prompt) and attends keys 0 ..
    past_b + i (the last
    local_window_size of them when that is set). The attention itself is the Attention IR op:
    one kernel reads the present cache in place, each row's key count from seqlens_k.

    One batch row's past fills its buffer, so its present is Concat(past, new); a batch of rows
    with pasts of their own lengths (right-padded in the buffer) places each row's new keys
    after its own past (GatherElements over the Concat)."""
    ins = _inputs(info, 1, 12)
    q, k, v, past_k, past_v, seqlens, total, cos, sin, pos_ids, attn_bias, sink = ins
    for i, what in ((5, "seqlens_k"), (6, "total_sequence_length")):
        if ins[i] is None:
            raise info.error(f"its input {i} ({what}) is required, but the node leaves it empty", hint="fix the model")  # fmt: skip
    types = _outputs(info, 4)
    names = list(info.out_names) + [""] * (4 - len(info.out_names))
    a = info.attrs
    if types[3] is not None:
        raise _unsupported(info, "its output_qk output", hint="leave output 3 empty")
    _float_input(info, q, "query")
    Hq, Hkv = int(a.get("num_heads", 0)), int(a.get("kv_num_heads", 0))
    if Hq <= 0 or Hkv <= 0 or Hq % Hkv:
        raise info.error(
            f"num_heads {Hq} and kv_num_heads {Hkv} must be positive, num_heads a multiple of kv_num_heads",
            hint="fix the model",
        )
    if (k is None) != (v is None) or (past_k is None) != (past_v is None):
        raise info.error("key and value, and past_key and past_value, come in pairs", hint="fix the model")
    if q.type.rank != 3:
        raise info.error(f"query has shape {list(q.shape)}; it must be [batch, sequence, hidden]", hint="fix the model")  # fmt: skip
    B, S, W = q.shape
    packed = k is None
    heads = Hq + 2 * Hkv if packed else Hq
    if not isinstance(W, int) or W % heads:
        raise info.error(
            f"query's hidden size {W} is not a multiple of {heads} heads"
            + (" (num_heads + 2 * kv_num_heads, Q, K and V packed)" if packed else ""),
            hint="fix the model",
        )
    D = W // heads
    base = names[0]
    dt = q.dtype
    qkv = q
    if not packed:
        for what, x in (("key", k), ("value", v)):
            if tuple(x.shape) != (B, S, Hkv * D):
                raise info.error(
                    f"{what} has shape {list(x.shape)}; it must be [{B}, {S}, {Hkv * D}] (kv_num_heads x head size)",
                    hint="fix the model",
                )
    P = 0
    if past_k is not None:
        P = past_k.shape[2] if past_k.type.rank == 4 else None
        for what, x in (("past_key", past_k), ("past_value", past_v)):
            if x.type.rank != 4 or tuple(x.shape) != (B, Hkv, P, D):
                raise info.error(
                    f"{what} has shape {list(x.shape)}; it must be [{B}, {Hkv}, past length, {D}] (BNSH)",
                    hint="fix the model",
                )
    if seqlens.dtype != DType.i32 or tuple(seqlens.shape) != (B,):
        raise info.error(
            f"seqlens_k is {seqlens.dtype.name} {list(seqlens.shape)}; it must be int32 [{B}]",
            hint="fix the model",
        )

    # the present: past + S positions, or a constant total_sequence_length's max(total, past):
    # a past of the max length whose buffer is the present's (see compiling for generation)
    from ..shape_rules import gqa_present_len

    L = S if past_k is None else gqa_present_len(S, past_k, total)
    shared = past_k is not None and L == P
    rotary = bool(int(a.get("do_rotary", 0)))
    pos = None
    if rotary:
        if cos is None or sin is None:
            raise info.error("do_rotary=1 needs cos_cache and sin_cache", hint="fix the model")
        if cos.type.rank != 2 or tuple(sin.shape) != tuple(cos.shape) or 2 * cos.shape[1] > D:
            raise info.error(
                f"cos_cache {list(cos.shape)} and sin_cache {list(sin.shape)} must be one shape [positions, "
                f"rotary dim / 2], the rotary dim at most the head size {D}",
                hint="fix the model",
            )
        if pos_ids is not None:
            if tuple(pos_ids.shape) != (B, S) or not pos_ids.dtype.is_int:
                raise info.error(
                    f"position_ids is {pos_ids.dtype.name} {list(pos_ids.shape)}; it must be int64 [{B}, {S}]",
                    hint="fix the model",
                )
            pos = pos_ids
        elif (_dim_low(L) if shared else _dim_low(S) + _dim_low(P)) > cos.shape[0]:
            # (dims kept symbolic may reach past the caches at their bounds, while a run never
            # does: a generator keeps past + sequence within its max length, which compiling for
            # generation checks against the caches; the kernel clamps positions to the last row)
            raise info.error(
                f"past + sequence is at least {_dim_low(S) + _dim_low(P)} positions; the rotary caches "
                f"hold {cos.shape[0]}",
                hint="bound the sequence and past dims to the caches (--dim NAME=LO..HI)",
            )
    elif pos_ids is not None:
        raise info.error("position_ids are for the rotary embedding; do_rotary is 0", hint="fix the model")

    # One kernel (GQAScatter, compiler/lowering/gqa.py) rotates q and k and writes Q and the
    # presents: each row's past, then its new keys and values, then zeros. Every row's new keys
    # go after its own past, seqlens_k + 1 - S keys long: rows of a batch have pasts of their own
    # lengths (right-padded in the buffer), and a past buffer shared with the present (onnxruntime-
    # genai's past_present_share_buffer: a max-length past) is longer than the valid past. One row
    # whose past fills its buffer gets Concat(past, new), as before.
    write_q = rotary or packed  # else Attention reads the query input itself
    kv_type = TensorType(dt, (B, Hkv, L, D))
    present_names = [names[1 + i] or f"{base}.present_{'kv'[i]}" for i in range(2)]
    if isinstance(simplify(P), int) and simplify(P) == 0:  # an empty past: nothing to copy
        past_k = past_v = None
    scatter = {
        "batch": B, "q_len": S, "past_len": P, "kv_len": L, "q_heads": Hq, "kv_heads": Hkv, "head_size": D,
        "placed": int(past_k is not None), "write_q": int(write_q),
        "shared": int(shared and past_k is not None),
        "interleaved": int(a.get("rotary_interleaved", 0)), "rotary_dim": 2 * cos.shape[1] if rotary else 0,
    }  # fmt: skip
    caches = (cos, sin) if rotary else (None, None)
    if rotary and cos.is_const and sin.is_const:  # one binding for both: the kernel fits one dispatch
        caches = (_cos_sin_const(g, cos, sin), None)
    outs = emit(
        g, info, "GQAScatter",
        [qkv, k, v, past_k, past_v, seqlens, *caches, pos],
        scatter, ([TensorType(dt, (B, S, Hq * D))] if write_q else []) + [kv_type, kv_type],
        ([base + ".q_rotated"] if write_q else []) + present_names, domain="",
    )  # fmt: skip
    present = outs[-2:]
    q = outs[0] if write_q else q

    if attn_bias is not None:
        _float_input(info, attn_bias, "attention_bias")
        if attn_bias.type.rank != 4 or tuple(attn_bias.shape[2:]) != (S, L):
            raise info.error(
                f"attention_bias has shape {list(attn_bias.shape)}; it must be [batch or 1, heads or 1, {S}, {L}]",
                hint="fix the model",
            )
    if sink is not None:
        _float_input(info, sink, "head_sink")
        if tuple(sink.shape) != (Hq,):
            raise info.error(
                f"head_sink has shape {list(sink.shape)}; it must be [{Hq}]", hint="fix the model"
            )
    scale = float(a.get("scale", 0.0) or 0.0)
    window = int(a.get("local_window_size", -1))
    # a window of n keys: the query's own and n - 1 before it (onnxruntime bounds nothing for a
    # window <= 0, nor does a window wider than any distance)
    window = -1 if window <= 0 or window > dim_bound(L) else window - 1
    attrs = {
        "batch": B, "q_heads": Hq, "kv_heads": Hkv, "q_len": S, "kv_len": L, "head_size": D, "v_head_size": D,
        "q_3d": 1, "kv_3d": 0, "past_len": P, "scale": scale or 1.0 / float(np.sqrt(D)),
        "softcap": float(a.get("softcap", 0.0) or 0.0), "is_causal": 1, "qk_matmul_output_mode": 0,
        "left_window_size": window, "right_window_size": -1, "padded_prompt": 1,
        "smooth_softmax": int(a.get("smooth_softmax", 0) or 0), "seqlens_k": 1,
    }  # fmt: skip
    y, _ = emit(g, info, "Attention", [q, *present, attn_bias, seqlens, sink], attrs, [types[0], None], [names[0], ""],
                domain="")  # fmt: skip
    outs = [y, present[0] if types[1] is not None else None, present[1] if types[2] is not None else None]
    return outs[: len(info.out_types)]


def _cos_sin_const(g, cos: Value, sin: Value) -> Value:
    """The rotary caches [positions, half] as one constant [2 * positions, half], the cosines
    first: the one an earlier GroupQueryAttention of the model already reads if it holds these."""
    data = np.concatenate([cos.data, sin.data]).astype(cos.dtype.numpy)
    for op in g.ops:
        if op.kind == "GQAScatter" and op.domain == "" and op.input(6) is not None and op.input(7) is None:
            v = op.input(6)
            if (
                v.is_const
                and tuple(v.shape) == data.shape
                and v.dtype == cos.dtype
                and np.array_equal(v.data, data)
            ):
                return v
    return g.const(data, cos.name + ".with_sin", dtype=cos.dtype)


@contrib("MultiHeadAttention")
def _multi_head_attention(g, info):
    """Separate 3-D query, key and value, an optional attention_bias added to the scores, and
    unidirectional (causal) self-attention, as ONNX's Attention; present_key / present_value
    are the keys and values per head. Packed QKV, the projection bias, key padding masks,
    past state and the qk output are not covered yet."""
    ins = _inputs(info, 1, 10)
    types = _outputs(info, 4)
    q, k, v, bias, pad, attn_bias = ins[:6]
    given = {
        "the projection bias": bias, "key_padding_mask": pad, "past_key": ins[6], "past_value": ins[7],
        "past_sequence_length": ins[8], "cache_indirection": ins[9],
    }  # fmt: skip
    for what, val in given.items():
        if val is not None:
            raise _unsupported(info, f"its {what} input")
    if types[3] is not None:
        raise _unsupported(info, "its qk output")
    if k is None or v is None or not q.type.rank == k.type.rank == v.type.rank == 3:
        raise _unsupported(
            info, "packed QKV / KV or key/value as past state", hint="separate 3-D query, key and value are"
        )
    _float_input(info, q, "query")
    heads = int(info.attrs.get("num_heads", 0))
    if heads <= 0 or q.shape[2] % heads or k.shape[2] % heads or v.shape[2] % heads:
        raise info.error(
            f"num_heads {heads} must divide the hidden sizes of query {list(q.shape)}, key {list(k.shape)} "
            f"and value {list(v.shape)}",
            hint="fix the model",
        )
    causal = int(info.attrs.get("unidirectional", 0))
    if causal and q.shape[1] != k.shape[1]:
        raise _unsupported(info, "unidirectional with a key length other than the query's")
    if attn_bias is not None and (
        attn_bias.type.rank != 4 or tuple(attn_bias.shape[2:]) != (q.shape[1], k.shape[1])
    ):
        raise info.error(
            f"attention_bias has shape {list(attn_bias.shape)}; it must be [batch or 1, heads or 1, "
            f"{q.shape[1]}, {k.shape[1]}]",
            hint="fix the model",
        )
    attrs = {"q_num_heads": heads, "kv_num_heads": heads, "is_causal": causal}
    if info.attrs.get("scale") is not None and float(info.attrs["scale"]) != 0.0:
        attrs["scale"] = float(info.attrs["scale"])
    names = list(info.out_names) + [""] * (4 - len(info.out_names))
    outs = _standard(g, info, "Attention", [q, k, v, attn_bias], attrs, types, names)
    return outs[: len(info.out_types)]


@contrib("Attention")
def _attention(g, info):
    """Self-attention with Q, K and V projected by one packed weight, as onnxruntime's transformer
    optimizer writes it for BERT: input [B, S, in] @ weights [in, q + k + v hidden] (+ bias),
    split into query, key and value, heads of ``num_heads``. The mask index (key end positions
    [B], or a raw 0/1 mask [B, T] or [B, S, T]) adds ``mask_filter_value`` to the scores of the
    masked keys, as onnxruntime does; an attention_bias is added too; ``unidirectional`` is
    causal. Past state, the present output and rotary embedding are not covered."""
    x, w, bias, mask, past, attn_bias, past_len = _inputs(info, 2, 7)
    types = _outputs(info, 2)
    for what, val in (("past", past), ("past_sequence_length", past_len)):
        if val is not None:
            raise _unsupported(info, f"its {what} input")
    if types[1] is not None:
        raise _unsupported(info, "its present output", hint="leave output 1 empty")
    for flag in ("do_rotary", "past_present_share_buffer"):
        if int(info.attrs.get(flag, 0)):
            raise _unsupported(info, f"{flag}=1")
    _float_input(info, x, "input")
    if x.type.rank != 3 or w.type.rank != 2 or w.shape[0] != x.shape[2]:
        raise info.error(
            f"input {list(x.shape)} and weights {list(w.shape)} must be [batch, sequence, in] and "
            "[in, q + k + v hidden]",
            hint="fix the model",
        )
    heads = int(info.attrs.get("num_heads", 0))
    total = w.shape[1]
    sizes = [int(n) for n in info.attrs.get("qkv_hidden_sizes", [])] or (
        [total // 3] * 3 if total % 3 == 0 else []
    )
    if (
        len(sizes) != 3 or sum(sizes) != total or sizes[0] != sizes[1] or heads <= 0
        or sizes[0] % heads or sizes[2] % heads
    ):  # fmt: skip
        raise info.error(
            f"qkv_hidden_sizes {sizes} and num_heads {heads} do not fit weights {list(w.shape)}: query and key "
            f"sizes must be equal, both sizes multiples of num_heads, and the three must add up to {total}",
            hint="fix the model",
        )
    if bias is not None and tuple(bias.shape) != (total,):
        raise info.error(f"bias has shape {list(bias.shape)}; it must be [{total}]", hint="fix the model")
    B, S = x.shape[0], x.shape[1]
    name = info.out_names[0]
    (qkv,) = emit(
        g, info, "MatMul", [x, w], {}, [TensorType(x.dtype, (B, S, total))], [name + ".qkv"], domain=""
    )
    if bias is not None:
        qkv = _binary(g, info, "Add", qkv, bias, name + ".qkv_biased")
    parts = emit(
        g, info, "Split", [qkv], {"axis": 2, "split": sizes}, [TensorType(x.dtype, (B, S, n)) for n in sizes],
        [name + ".q", name + ".k", name + ".v"], domain="",
    )  # fmt: skip
    add = _mask_index(
        g, info, mask, B, S, float(info.attrs.get("mask_filter_value", -10000.0)), x.dtype, name
    )
    if attn_bias is not None:
        if attn_bias.type.rank != 4 or tuple(attn_bias.shape[2:]) != (S, S):
            raise info.error(
                f"attention_bias has shape {list(attn_bias.shape)}; it must be [batch or 1, heads or 1, {S}, {S}]",
                hint="fix the model",
            )
        add = attn_bias if add is None else _binary(g, info, "Add", add, attn_bias, name + ".mask_and_bias")
    attrs = {
        "q_num_heads": heads,
        "kv_num_heads": heads,
        "is_causal": int(info.attrs.get("unidirectional", 0)),
    }
    if info.attrs.get("scale") is not None and float(info.attrs["scale"]) != 0.0:
        attrs["scale"] = float(info.attrs["scale"])
    outs = _standard(
        g, info, "Attention", [*parts, add], attrs, [types[0], None, None, None], [name, "", "", ""]
    )
    return [outs[0]] + [None] * (len(info.out_types) - 1)


def _mask_index(g, info, mask, B, S, fill: float, dtype: DType, name: str) -> Value | None:
    """onnxruntime's mask index as scores to add, [B, 1, 1 or S, S]: ``fill`` where a key is
    masked (at or past the end position of its batch, or where the raw mask is 0), else 0."""
    if mask is None:
        return None
    if mask.dtype not in (DType.i32, DType.i64):
        raise info.error(f"mask_index is {mask.dtype.name}; it must be int32", hint="fix the model")
    rank = mask.type.rank
    if rank == 1 and mask.shape[0] == B:
        # positions 0..S-1 (a constant at the bound, cut to the run's length) against each end
        top = dim_bound(S)
        positions = g.const(np.arange(top, dtype=mask.dtype.numpy), name + ".positions")
        if simplify(S) != top:
            (positions,) = emit(
                g, info, "Slice", [positions], {"starts": [0], "steps": [1]}, [TensorType(mask.dtype, (S,))],
                [name + ".key_positions"], domain="",
            )  # fmt: skip
        (ends,) = emit(
            g, info, "Reshape", [mask], {}, [TensorType(mask.dtype, (B, 1))], [name + ".ends"], domain=""
        )
        masked = _binary(g, info, "GreaterOrEqual", positions, ends, name + ".masked", DType.bool)
        shape = (B, 1, 1, S)
    elif (
        rank in (2, 3)
        and tuple(mask.shape[:1]) == (B,)
        and mask.shape[-1] == S
        and (rank == 2 or mask.shape[1] == S)
    ):
        zero = g.const(np.zeros((), mask.dtype.numpy), name + ".zero")
        masked = _binary(g, info, "LessOrEqual", mask, zero, name + ".masked", DType.bool)
        shape = (B, 1, 1, S) if rank == 2 else (B, 1, S, S)
    else:
        raise _unsupported(
            info,
            f"a mask_index of shape {list(mask.shape)}",
            hint=f"key end positions [{B}] and raw 0/1 masks [{B}, {S}] or [{B}, {S}, {S}] are",
        )
    fills = [g.const(np.asarray(v, dtype.numpy), f"{name}.{k}") for k, v in (("fill", fill), ("keep", 0.0))]
    (scores,) = emit(
        g, info, "Where", [masked, *fills], {}, [TensorType(dtype, tuple(masked.shape))], [name + ".mask_scores"],
        domain="",
    )  # fmt: skip
    (out,) = emit(
        g, info, "Reshape", [scores], {}, [TensorType(dtype, shape)], [name + ".mask_add"], domain=""
    )
    return out


@contrib("EmbedLayerNormalization")
def _embed_layer_norm(g, info):
    """BERT's embeddings as onnxruntime's optimizer fuses them: LayerNormalization of word +
    position (+ segment) embeddings, positions 0..S-1 unless position_ids are given; outputs the
    normalized sum, the mask index (the mask's sum per batch: key end positions, for Attention)
    and the sum itself."""
    ids, seg, word, pos_table, seg_table, gamma, beta, mask, pos_ids = _inputs(info, 1, 9)
    types = _outputs(info, 3)
    for v, k, what in ((word, 2, "word_embedding"), (pos_table, 3, "position_embedding"), (gamma, 5, "gamma"),
                       (beta, 6, "beta")):  # fmt: skip
        if v is None:
            raise info.error(f"its input {k} ({what}) is required, but the node leaves it empty", hint="fix the model")  # fmt: skip
    _float_input(info, word, "word_embedding")
    H = word.shape[1] if word.type.rank == 2 else None
    for what, v in (("position_embedding", pos_table), ("segment_embedding", seg_table)):
        if v is not None and (v.type.rank != 2 or v.shape[1] != H):
            raise info.error(
                f"{what} has shape {list(v.shape)}; it must be [rows, {H}]", hint="fix the model"
            )
    if (seg is None) != (seg_table is None):
        raise info.error("segment_ids and segment_embedding come together", hint="fix the model")
    for what, v in (("gamma", gamma), ("beta", beta)):
        if tuple(v.shape) != (H,):
            raise info.error(f"{what} has shape {list(v.shape)}; it must be [{H}]", hint="fix the model")
    B, S = ids.shape
    names = list(info.out_names) + [""] * (3 - len(info.out_names))
    base = names[0]

    def gather(table: Value, idx: Value, what: str) -> Value:
        out = TensorType(table.dtype, tuple(idx.shape) + (H,))
        return _standard(g, info, "Gather", [table, idx], {"axis": 0}, [out], [f"{base}.{what}"])[0]

    total = gather(word, ids, "words")
    if pos_ids is None:
        if dim_bound(S) > pos_table.shape[0]:
            raise info.error(
                f"the sequence ({S}) may be longer than position_embedding's {pos_table.shape[0]} rows",
                hint="bound the sequence dim to the table (--dim seq=1..N)",
            )
        (positions,) = emit(
            g, info, "Slice", [pos_table], {"starts": [0, 0], "steps": [1, 1]}, [TensorType(word.dtype, (S, H))],
            [base + ".positions"], domain="",
        )  # fmt: skip
    else:
        positions = gather(pos_table, pos_ids, "positions")
    total = _binary(
        g,
        info,
        "Add",
        total,
        positions,
        base + ".with_positions" if seg is not None or not types[2] else names[2],
    )
    if seg is not None:
        total = _binary(g, info, "Add", total, gather(seg_table, seg, "segments"), names[2] or base + ".sum")
    eps = float(info.attrs.get("epsilon", 1e-12))
    (y, _, _) = _standard(
        g, info, "LayerNormalization", [total, gamma, beta], {"axis": 2, "epsilon": eps}, [types[0], None, None],
        [names[0], "", ""],
    )  # fmt: skip
    index = None
    if types[1] is not None:
        if mask is None:  # onnxruntime gives zeros then
            if not isinstance(simplify(B), int):
                raise _unsupported(info, "its mask_index output without a mask, over a batch kept symbolic")
            index = g.const(np.zeros(B, np.int32), names[1])
        else:
            m = mask
            if m.dtype != DType.i32:
                (m,) = emit(g, info, "Cast", [m], {"to": "i32", "saturate": 1, "round_mode": "up"},
                            [TensorType(DType.i32, tuple(m.shape))], [base + ".mask32"], domain="")  # fmt: skip
            axes = g.const(np.array([1], np.int64), base + ".mask_axes")
            (index,) = _standard(g, info, "ReduceSum", [m, axes], {"keepdims": 0}, [types[1]], [names[1]])
    return [y, index, total if types[2] is not None else None][: len(info.out_types)]

"""Own output-type rules, used where onnx's per-node shape inference leaves a dim unknown."""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.errors import UnsupportedError
from onnx2wgsl.ir import DType, TensorType
from onnx2wgsl.ir.symbolic import Expr, SymbolicError, simplify

_SAME_AS_FIRST = {
    "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Abs", "Neg", "Erf", "LeakyRelu", "Clip",
    "Identity", "Dropout", "Softmax", "LogSoftmax", "LRN", "BatchNormalization", "Elu", "Selu",
    "HardSigmoid", "Softplus", "Softsign", "Gelu", "HardSwish", "Mish", "Celu", "Reciprocal",
    "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Not", "InstanceNormalization",
    "LayerNormalization", "GroupNormalization", "MeanVarianceNormalization",
}  # fmt: skip
_BROADCAST = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean", "PRelu", "Mod", "Where",
}  # fmt: skip
_COMPARE = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"}


# Ops whose output shape depends on the values of their inputs: they run only when all their
# inputs are constants (and then fold at compile time).
DATA_DEPENDENT = {"NonZero", "Compress", "Unique", "NonMaxSuppression", "StringSplit"}
# Secondary inputs that decide an output shape, by op: they must be compile-time constants.
SHAPE_INPUTS = {
    "Reshape": {1: "shape"}, "Expand": {1: "shape"}, "Tile": {1: "repeats"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"}, "Pad": {1: "pads", 3: "axes"},
    "Split": {1: "split"}, "Resize": {2: "scales", 3: "sizes"}, "Upsample": {1: "scales"},
    "OneHot": {1: "depth"}, "ConstantOfShape": {0: "shape"}, "CenterCropPad": {1: "shape"},
    "Col2Im": {1: "image_shape", 2: "block_shape"}, "Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"},
    "TopK": {1: "K"}, "Range": {0: "start", 1: "limit", 2: "delta"},
}  # fmt: skip


def infer_shapes(info) -> list[TensorType | None] | None:
    """Output types of the node described by ``info`` where a rule knows them, else None.

    For ops whose output shape hangs on run-time values this raises the error that says so."""
    ins = [v for v in info.inputs if v is not None]
    if (info.domain, info.op_type) in _CONTRIB:
        try:
            return _CONTRIB[info.domain, info.op_type](info)
        except (IndexError, ValueError, TypeError, KeyError):
            return None  # inputs that do not fit: the legalize rule names what is wrong
    if not ins or info.domain != "":
        return None
    if info.op_type in DATA_DEPENDENT:
        raise info.error(
            "its output shape depends on the run-time values of its inputs, which a static "
            "WebGPU schedule cannot express",
            hint="it runs only when all its inputs are constants (it is then folded at compile time)",
            cls=UnsupportedError,
        )
    for i, what in SHAPE_INPUTS.get(info.op_type, {}).items():
        info.const_input(i, what)  # raises, naming the input, if it is computed at run time
    if info.op_type in _OWN:
        return _OWN[info.op_type](info)
    if info.op_type in _SAME_AS_FIRST:
        return [ins[0].type]
    if info.op_type in _BROADCAST or info.op_type in _COMPARE:
        if any(v.type.is_symbolic for v in ins):
            from .symbolic_fold import broadcast

            try:
                shape = broadcast(*(tuple(v.shape) for v in ins))
            except SymbolicError as e:
                # e.g. an FPN's upsampled map added to a skip connection: sizes agree only for
                # inputs divisible by the net's stride, which a range cannot say
                raise info.error(
                    f"its operands' shapes {', '.join('[' + ', '.join(map(str, v.shape)) + ']' for v in ins)} over "
                    "dims kept symbolic "
                    f"agree only at some sizes ({e})",
                    hint="bind those dims with --dim NAME=N (one artifact per size), as the model "
                    "runs only at sizes where they agree",
                ) from None
        else:
            shape = np.broadcast_shapes(*(tuple(v.shape) for v in ins))
        dtype = ins[-1].dtype if info.op_type == "Where" else ins[0].dtype
        dtype = DType.bool if info.op_type in _COMPARE else dtype
        return [TensorType(dtype, shape)]
    return None


def _max_unpool(info) -> list[TensorType | None] | None:
    # onnx infers no shape when output_shape is given as an input, even a constant one
    out = info.inputs[2] if len(info.inputs) > 2 else None
    if out is None or not out.is_const:
        return None
    return [TensorType(info.inputs[0].dtype, tuple(int(d) for d in out.data.reshape(-1)))]


def _attention(info) -> list[TensorType | None] | None:
    # onnx types present_key/value only when a past cache is given; they are K/V per head anyway
    ins = list(info.inputs) + [None] * (6 - len(info.inputs))
    q, k, v, past = ins[0], ins[1], ins[2], ins[4]
    heads = int(info.attrs.get("q_num_heads") or 1), int(info.attrs.get("kv_num_heads") or 1)
    if not q.type.rank == k.type.rank == v.type.rank or q.type.rank not in (3, 4) or min(heads) <= 0:
        return None  # the legalize rule names what does not fit
    if q.type.rank == 4:
        B, Hq, Sq, _ = q.shape
        Hkv, Skv, D, Dv = k.shape[1], k.shape[2], k.shape[3], v.shape[3]
        y = (B, Hq, Sq, Dv)
    else:
        Hq, Hkv = heads
        B, Sq = q.shape[:2]
        Skv, D, Dv = k.shape[1], k.shape[2] // Hkv, v.shape[2] // Hkv
        y = (B, Sq, Hq * Dv)
    L = Skv + (past.shape[2] if past is not None else 0)
    shapes = [y, (B, Hkv, L, D), (B, Hkv, L, Dv), (B, Hq, Sq, L)]
    return [TensorType(q.dtype, s) for s in shapes]


def _window(info, x, ks: list[int]) -> tuple[list[int], list[int], list] | None:
    """A sliding window's strides, end pads and spans (``size + pads - dilated kernel``) over
    each spatial dim of ``x``, for explicit (or VALID) pads; None when the attributes do not
    fit (the legalize rule names what). A window longer than the padded input at the low end
    of a dim's range is a clear error."""
    a = info.attrs
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if x.type.rank < 3 or auto not in ("NOTSET", "VALID"):
        return None
    nd = x.type.rank - 2
    strides = [int(v) for v in (a.get("strides") or [1] * nd)]
    dilations = [int(v) for v in (a.get("dilations") or [1] * nd)]
    pads = [int(v) for v in (a.get("pads") or [0] * (2 * nd))] if auto == "NOTSET" else [0] * (2 * nd)
    if not len(ks) == len(strides) == len(dilations) == nd or len(pads) != 2 * nd or min(strides) < 1:
        return None
    spans = []
    for i in range(nd):
        span = simplify(x.shape[2 + i] + pads[i] + pads[nd + i] - dilations[i] * (ks[i] - 1) - 1)
        low = span.bounds[0] if isinstance(span, Expr) else span
        if low < 0:
            raise info.error(
                f"its window ({ks[i]} taps, dilation {dilations[i]}) is longer than the padded input "
                f"dim {x.shape[2 + i]} at the low end of its range",
                hint="narrow the dim's range (--dim NAME=LO..HI) to sizes the window fits",
            )
        spans.append(span)
    # the room a window has past its last start: the dilated kernel less the end pad
    room = [dilations[i] * (ks[i] - 1) + 1 - pads[nd + i] for i in range(nd)]
    return strides, room, spans


def _conv(info) -> list[TensorType | None] | None:
    # onnx leaves a spatial dim kept symbolic unknown; explicit (or VALID) pads give it as
    # (size + pads - dilated kernel) // stride + 1 (SAME pads would themselves hang on the size)
    x, w = info.inputs[0], info.inputs[1]
    if w is None or w.type.rank != x.type.rank:
        return None  # the legalize rule names what does not fit
    window = _window(info, x, [int(k) for k in (info.attrs.get("kernel_shape") or w.shape[2:])])
    if window is None:
        return None
    strides, _, spans = window
    out = [simplify(span // step + 1) for span, step in zip(spans, strides)]
    return [TensorType(x.dtype, (x.shape[0], w.shape[0], *out))]


def _pool(info) -> list[TensorType | None] | None:
    # as _conv, for a window without weights; ceil_mode only where its last window always
    # starts inside the input (stride at most the dilated kernel less the end pad)
    x = info.inputs[0]
    if x is None or not x.type.is_symbolic:
        return None
    window = _window(info, x, [int(k) for k in info.attrs.get("kernel_shape") or []])
    if window is None:
        return None
    ceil = int(info.attrs.get("ceil_mode", 0))
    out = []
    for i, (step, room, span) in enumerate(zip(*window)):
        if ceil and isinstance(span, Expr) and step > room:
            raise info.error(
                f"ceil_mode with stride {step} over the symbolic dim {x.shape[2 + i]}: whether its last "
                "window starts past the input depends on the size",
                hint="bind the dim with --dim NAME=N",
            )
        out.append(simplify((span + step - 1 if ceil else span) // step + 1))
    shape = (x.shape[0], x.shape[1], *out)
    types = [TensorType(x.dtype, shape)]
    if info.op_type == "MaxPool":  # its indices, where the node has them
        types.append(TensorType(DType.i64, shape))
    return types


def resized_dim(n, scale: float):
    """floor(n * scale), the size Resize gives an axis by a scale; over a dim kept symbolic only
    where that is a polynomial: an integer scale, or one over an integer k held exactly
    (floor(n / k)). None otherwise."""
    if not isinstance(n, Expr):
        return int(scale * n)
    if scale == 1.0:
        return n
    if float(scale).is_integer():
        return simplify(n * int(scale))
    k = round(1.0 / scale)
    return simplify(n // k) if k >= 1 and scale * k == 1.0 else None


def _resize(info) -> list[TensorType | None] | None:
    # a dim kept symbolic resizes by an integer scale or one over an integer; other axes take
    # floor(size * scale), or their sizes (stretched); the legalize rule names other problems
    x = info.inputs[0]
    if x is None or not x.type.is_symbolic:
        return None
    rank, a = x.type.rank, info.attrs
    if info.op_type == "Upsample" or info.opset < 11:
        scales = (
            a.get("scales")
            if info.op_type == "Upsample" and info.opset < 9
            else info.const_input(1, "scales")
        )
        sizes = None
    else:
        scales = info.const_input(2, "scales") if len(info.inputs) > 2 else None
        sizes = info.const_input(3, "sizes") if len(info.inputs) > 3 else None
    scales = (
        None if scales is None or np.asarray(scales).size == 0 else np.asarray(scales, np.float64).reshape(-1)
    )
    sizes = None if sizes is None or np.asarray(sizes).size == 0 else np.asarray(sizes).reshape(-1)
    axes = [int(d) + rank if int(d) < 0 else int(d) for d in a.get("axes") or range(rank)]
    given = sizes if sizes is not None else scales
    if given is None or len(given) != len(axes) or not all(0 <= d < rank for d in axes):
        return None
    if sizes is not None and (a.get("keep_aspect_ratio_policy", "stretch") or "stretch") != "stretch":
        return None
    shape = list(x.shape)
    for d, v in zip(axes, given):
        n = x.shape[d]
        if sizes is not None:  # over dims kept symbolic, the kernel computes the scale
            out = simplify(v) if isinstance(v, Expr) else int(v)
        else:
            out = resized_dim(n, float(v))
        if out is None:
            raise info.error(
                f"it resizes the symbolic dim {n} (axis {d}) "
                + ("to a fixed size" if sizes is not None else f"by {float(v)}")
                + "; over dims kept symbolic a Resize scales them by an integer or one over an integer",
                hint="bind the dim with --dim NAME=N",
                cls=UnsupportedError,
            )
        shape[d] = out
    return [TensorType(x.dtype, tuple(shape))]


def _col2im(info) -> list[TensorType | None] | None:
    # [N, C * prod(block), L] -> [N, C, *image]: a symbolic batch passes through
    x, image, block = info.inputs[0], info.const_input(1, "image_shape"), info.const_input(2, "block_shape")
    if x is None or not x.type.is_symbolic or x.type.rank != 3 or image is None or block is None:
        return None
    k = int(np.prod(block))
    if not isinstance(x.shape[1], int) or k <= 0 or x.shape[1] % k:
        return None  # the legalize rule names what does not fit
    return [TensorType(x.dtype, (x.shape[0], x.shape[1] // k, *(int(d) for d in image.reshape(-1))))]


def _stft(info) -> list[TensorType | None] | None:
    # [batch, signal, 1 or 2] -> [batch, frames, bins, 2] over a symbolic batch or signal
    x = info.inputs[0]
    if x is None or not x.type.is_symbolic or x.type.rank != 3:
        return None
    step = info.const_input(1, "frame_step")
    window = info.inputs[2] if len(info.inputs) > 2 else None
    length = info.const_input(3, "frame_length") if len(info.inputs) > 3 else None
    if length is not None:
        length = int(np.asarray(length).reshape(-1)[0])
    elif window is not None and window.type.rank == 1 and isinstance(window.shape[0], int):
        length = window.shape[0]
    if step is None or length is None or int(np.asarray(step).reshape(-1)[0]) < 1 or length < 1:
        return None  # the legalize rule names what does not fit
    step = int(np.asarray(step).reshape(-1)[0])
    span = simplify(x.shape[1] - length)
    if (span.bounds[0] if isinstance(span, Expr) else span) < 0:
        raise info.error(
            f"its frames of {length} samples are longer than the signal ({x.shape[1]}) at the low end "
            "of its range",
            hint="narrow the dim's range (--dim NAME=LO..HI)",
        )
    bins = length // 2 + 1 if int(info.attrs.get("onesided", 1)) else length
    return [TensorType(x.dtype, (x.shape[0], simplify(span // step + 1), bins, 2))]


def _conv_transpose(info) -> list[TensorType | None] | None:
    # over symbolic spatial dims: stride * (size - 1) + output_padding + dilated kernel - pads
    # (explicit or VALID), or size * stride (SAME); a fixed output_shape is for static sizes
    x, w, a = info.inputs[0], info.inputs[1], info.attrs
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if (
        w is None
        or not x.type.is_symbolic
        or x.type.rank < 3
        or w.type.rank != x.type.rank
        or a.get("output_shape")
    ):
        return None  # the legalize rule names what does not fit
    nd = x.type.rank - 2
    ks = [int(k) for k in (a.get("kernel_shape") or w.shape[2:])]
    strides = [int(v) for v in (a.get("strides") or [1] * nd)]
    dilations = [int(v) for v in (a.get("dilations") or [1] * nd)]
    out_pad = [int(v) for v in (a.get("output_padding") or [0] * nd)]
    pads = [int(v) for v in (a.get("pads") or [0] * (2 * nd))] if auto == "NOTSET" else [0] * (2 * nd)
    if not len(ks) == len(strides) == len(dilations) == len(out_pad) == nd or len(pads) != 2 * nd:
        return None
    out = []
    for i in range(nd):
        n = x.shape[2 + i]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(simplify(n * strides[i]))
            continue
        size = simplify(
            strides[i] * (n - 1) + out_pad[i] + (ks[i] - 1) * dilations[i] + 1 - pads[i] - pads[nd + i]
        )
        if (size.bounds[0] if isinstance(size, Expr) else size) < 0:
            return None
        out.append(size)
    if not isinstance(w.shape[1], int):
        return None
    return [TensorType(x.dtype, (x.shape[0], w.shape[1] * int(a.get("group", 1)), *out))]


# -- ops over dims kept symbolic, where onnx's inference leaves a sum or product of them unknown
def _symbolic_only(rule):
    def wrapped(info) -> list[TensorType | None] | None:
        x = info.inputs[0]
        if x is None or not any(v is not None and v.type.is_symbolic for v in info.inputs):
            return None
        return rule(info, x)

    return wrapped


def _rank_axis(a: int, rank: int) -> int | None:
    a = a + rank if a < 0 else a
    return a if 0 <= a < rank else None


@_symbolic_only
def _concat(info, x) -> list[TensorType | None] | None:
    from onnx2wgsl.ir.symbolic import simplify

    ins = [v for v in info.inputs if v is not None]
    a = _rank_axis(int(info.attrs.get("axis", 0)), x.type.rank)
    if a is None or any(v.type.rank != x.type.rank for v in ins):
        return None  # the legalize rule names what does not fit
    total = sum((v.shape[a] for v in ins), 0)
    shape = list(x.shape)
    shape[a] = simplify(total)
    return [TensorType(x.dtype, tuple(shape))]


@_symbolic_only
def _flatten(info, x) -> list[TensorType | None] | None:
    from onnx2wgsl.ir.symbolic import simplify

    a = int(info.attrs.get("axis", 1))
    a = a + x.type.rank if a < 0 else a
    if not 0 <= a <= x.type.rank:
        return None
    outer, inner = simplify(math.prod(x.shape[:a])), simplify(math.prod(x.shape[a:]))
    return [TensorType(x.dtype, (outer, inner))]


@_symbolic_only
def _tile(info, x) -> list[TensorType | None] | None:
    from onnx2wgsl.ir.symbolic import simplify

    reps = [int(r) for r in info.const_input(1, "repeats").reshape(-1)]
    if len(reps) != x.type.rank or min(reps, default=0) < 0:
        return None
    return [TensorType(x.dtype, tuple(simplify(n * r) for n, r in zip(x.shape, reps)))]


@_symbolic_only
def _pad(info, x) -> list[TensorType | None] | None:
    from onnx2wgsl.ir.symbolic import simplify

    rank = x.type.rank
    if info.opset < 11:
        pads = [int(p) for p in info.attrs.get("pads", info.attrs.get("paddings", []))]
        axes = list(range(rank))
    else:
        pads = [int(p) for p in info.const_input(1, "pads").reshape(-1)]
        given = info.const_input(3, "axes") if info.opset >= 18 else None
        axes = list(range(rank)) if given is None else [_rank_axis(int(a), rank) for a in given.reshape(-1)]
    if None in axes or len(pads) != 2 * len(axes):
        return None
    shape = list(x.shape)
    for i, a in enumerate(axes):
        shape[a] = simplify(shape[a] + pads[i] + pads[i + len(axes)])
    return [TensorType(x.dtype, tuple(shape))]


@_symbolic_only
def _depth_to_space(info, x) -> list[TensorType | None] | None:
    from onnx2wgsl.ir.symbolic import simplify

    b = int(info.attrs.get("blocksize", 0))
    if x.type.rank != 4 or b < 1 or isinstance(simplify(x.shape[1]), Expr):
        return None  # the legalize rule names what does not fit
    N, C, H, W = x.shape
    return [TensorType(x.dtype, (N, C // (b * b), simplify(H * b), simplify(W * b)))]


def _topk(info) -> list[TensorType | None] | None:
    # onnx infers no shape along an axis that is a dim kept symbolic: the axis becomes k
    x = info.inputs[0]
    if not x.type.is_symbolic or x.type.rank == 0:
        return None
    k = info.const_input(1, "K") if info.opset >= 10 else info.attrs.get("k")
    k = np.asarray(k if k is not None else []).reshape(-1)
    axis = int(info.attrs.get("axis", -1))
    if k.size != 1 or k.dtype.kind not in "iu" or not -x.type.rank <= axis < x.type.rank:
        return None  # the legalize rule names what does not fit
    shape = list(x.shape)
    shape[axis] = int(k[0])
    return [TensorType(x.dtype, tuple(shape)), TensorType(DType.i64, tuple(shape))]


_OWN = {
    "MaxUnpool": _max_unpool, "Attention": _attention, "Concat": _concat, "Flatten": _flatten,
    "Tile": _tile, "Pad": _pad, "DepthToSpace": _depth_to_space, "Conv": _conv, "TopK": _topk,
    "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool, "Resize": _resize, "Upsample": _resize,
    "Col2Im": _col2im, "STFT": _stft, "ConvTranspose": _conv_transpose,
}  # fmt: skip


# -- onnxruntime's contrib ops (legalize/contrib.py), which onnx has no schemas for ---------------
def _first(info) -> list[TensorType | None]:
    return [info.inputs[0].type]


def _norm_stats(info, axis: int, sum_output: bool) -> list[TensorType | None]:
    """output, [mean,] inv_std_var (float32, ones from ``axis`` on) [, input_skip_bias_sum]."""
    x = info.inputs[0]
    axis %= x.type.rank
    stat = TensorType(DType.f32, tuple(x.shape[:axis]) + (1,) * (x.type.rank - axis))
    return [x.type, stat, stat, x.type] if sum_output else [x.type, stat]


def _simplified_norm(info) -> list[TensorType | None]:
    y, stat = _norm_stats(info, int(info.attrs.get("axis", -1)), False)
    return [TensorType(info.inputs[1].dtype, y.shape), stat]


def _matmul_nbits(info) -> list[TensorType | None]:
    a = info.inputs[0]
    return [TensorType(a.dtype, tuple(a.shape[:-1]) + (int(info.attrs["N"]),))]


def _gather_block_quantized(info) -> list[TensorType | None]:
    data, indices, scales = info.inputs[:3]
    axis = int(info.attrs.get("gather_axis", 0)) % data.type.rank
    if data.dtype == DType.u8 and int(info.attrs.get("bits", 4)) < 8:  # packed along the last dim
        shape = tuple(data.shape[:-1]) + (data.shape[-1] * 8 // int(info.attrs.get("bits", 4)),)
    else:
        shape = tuple(data.shape)
    return [TensorType(scales.dtype, shape[:axis] + tuple(indices.shape) + shape[axis + 1 :])]


def _multi_head_attention(info) -> list[TensorType | None]:
    q, k, v = info.inputs[:3]
    heads = int(info.attrs["num_heads"])
    (B, S, _), L = q.shape, k.shape[1]
    present = [TensorType(q.dtype, (B, heads, L, w.shape[2] // heads)) for w in (k, v)]
    return [TensorType(q.dtype, (B, S, v.shape[2])), *present]


def gqa_present_len(S, past, total):
    """GroupQueryAttention's present length: past + S, or onnxruntime's max(total, past) where
    total_sequence_length is a constant and the past length fixed (a past that holds the max
    length, shared with the present)."""
    if past is None or past.type.rank != 4:
        return S
    P = past.shape[2]
    if total is not None and total.is_const and total.data.size == 1 and isinstance(P, int):
        return max(int(total.data.reshape(-1)[0]), P)
    return simplify(P + S)


def _group_query_attention(info) -> list[TensorType | None]:
    """output [B, S, num_heads * head], present [B, kv_num_heads, past + S, head] (max(total,
    past) positions for a constant total_sequence_length), output_qk [B, num_heads, S, present]."""
    ins = list(info.inputs) + [None] * (7 - len(info.inputs))
    q, k, past = ins[0], ins[1], ins[3]
    Hq, Hkv = int(info.attrs.get("num_heads", 0)), int(info.attrs.get("kv_num_heads", 0))
    if q.type.rank != 3 or Hq <= 0 or Hkv <= 0 or not isinstance(q.shape[2], int):
        return None  # the legalize rule names what does not fit
    B, S, W = q.shape
    D = W // (Hq + 2 * Hkv) if k is None else W // Hq
    L = gqa_present_len(S, past, ins[6])
    present = TensorType(q.dtype, (B, Hkv, L, D))
    return [TensorType(q.dtype, (B, S, Hq * D)), present, present, TensorType(q.dtype, (B, Hq, S, L))]


def _contrib_attention(info) -> list[TensorType | None]:
    """Attention with packed Q/K/V weights: output [B, S, v hidden], present [2, B, N, S, head]."""
    x, w = info.inputs[:2]
    sizes = [int(n) for n in info.attrs.get("qkv_hidden_sizes", [])] or [w.shape[1] // 3] * 3
    heads = max(int(info.attrs.get("num_heads", 1)), 1)
    B, S = x.shape[0], x.shape[1]
    present = TensorType(x.dtype, (2, B, heads, S, sizes[0] // heads))
    return [TensorType(x.dtype, (B, S, sizes[2])), present]


def _embed_layer_norm(info) -> list[TensorType | None]:
    """output [B, S, H], mask_index [B] (int32), embedding_sum [B, S, H]."""
    ids, word = info.inputs[0], info.inputs[2]
    B, S = ids.shape
    out = TensorType(word.dtype, (B, S, word.shape[1]))
    return [out, TensorType(DType.i32, (B,)), out]


_MS = "com.microsoft"
_CONTRIB = {
    **{
        (_MS, op): _first
        for op in ("Gelu", "BiasGelu", "FastGelu", "QuickGelu", "BiasAdd", "RotaryEmbedding")
    },
    (_MS, "SkipLayerNormalization"): lambda info: _norm_stats(info, -1, True),
    (_MS, "SkipSimplifiedLayerNormalization"): lambda info: _norm_stats(info, -1, True),
    ("", "SimplifiedLayerNormalization"): _simplified_norm,
    (_MS, "MatMulNBits"): _matmul_nbits,
    (_MS, "GatherBlockQuantized"): _gather_block_quantized,
    (_MS, "MultiHeadAttention"): _multi_head_attention,
    (_MS, "Attention"): _contrib_attention,
    (_MS, "GroupQueryAttention"): _group_query_attention,
    (_MS, "EmbedLayerNormalization"): _embed_layer_norm,
}

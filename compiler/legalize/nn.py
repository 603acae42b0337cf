"""Legalize rules: convolution, pooling, matrix products, softmax family, normalization."""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.errors import UnsupportedError
from onnx2wgsl.ir import TensorType, Value
from onnx2wgsl.ir.symbolic import simplify
from onnx2wgsl.ir.types import dim_bound

from . import _axis, _ints, emit, rule

# -- normalization of attributes ------------------------------------------------------------
_WINDOW_MAX = 1 << 24  # far beyond any real window, and inside the i32 range of WGSL's loops


def _check_window(info, **lists: list[int]) -> None:
    """Window attributes within their ranges: sizes, strides and dilations >= 1, pads >= 0."""
    for name, values in lists.items():
        low = 0 if name in ("pads", "output_padding") else 1
        if any(not low <= v <= _WINDOW_MAX for v in values):
            raise info.error(
                f"{name} {list(values)} is out of range; each is {low} to {_WINDOW_MAX:,}",
                hint="fix the model",
            )


def _spatial(info, x: Value, kernel_shape: list[int]) -> dict:
    """strides, dilations and explicit pads (auto_pad resolved) of a conv or pool."""
    nd = len(kernel_shape)
    a = info.attrs
    strides = _ints(a.get("strides") or [1] * nd)
    dilations = _ints(a.get("dilations") or [1] * nd)
    pads = _ints(a.get("pads") or [0] * (2 * nd))
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i in range(nd):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel_shape[i] - 1) * dilations[i] + 1 - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    elif auto != "NOTSET":
        raise info.error(f"unknown auto_pad {auto!r}")
    if len(strides) != nd or len(dilations) != nd or len(pads) != 2 * nd:
        raise info.error("strides, dilations or pads do not match the kernel's rank")
    _check_window(info, kernel_shape=kernel_shape, strides=strides, dilations=dilations, pads=pads)
    return {"kernel_shape": list(kernel_shape), "strides": strides, "dilations": dilations, "pads": pads}


def _check_bias(info, b: Value | None, n: int, what: str = "bias") -> None:
    """An optional per-channel operand of shape [n] (onnx's inference leaves it unchecked)."""
    if b is not None and tuple(b.shape) != (n,):
        raise info.error(f"{what} has shape {list(b.shape)}; the op needs [{n}]", hint="fix the model")


def _check_ranks(info, x: Value, w: Value) -> None:
    if x.type.rank < 3 or w.type.rank != x.type.rank:
        raise info.error(
            f"X {list(x.shape)} and W {list(w.shape)} must have one rank, at least 3 (N, C and spatial dims)",
            hint="fix the model",
        )


@rule("Conv")
def _conv(g, info):
    x, w = info.inputs[0], info.inputs[1]
    _check_ranks(info, x, w)
    _check_bias(info, info.inputs[2] if len(info.inputs) > 2 else None, w.shape[0] if w.type.rank else 0)
    ks = _ints(info.attrs.get("kernel_shape") or w.shape[2:])
    attrs = _spatial(info, x, ks)
    attrs["group"] = int(info.attrs.get("group", 1))
    return emit(g, info, "Conv", info.inputs[:3], attrs)


@rule("ConvTranspose")
def _conv_transpose(g, info):
    """Resolve auto_pad / output_shape into explicit pads (as the ONNX spec computes them)."""
    x, w = info.inputs[0], info.inputs[1]
    _check_ranks(info, x, w)
    nd = x.type.rank - 2
    a = info.attrs
    if len(info.inputs) > 2:
        _check_bias(info, info.inputs[2], w.shape[1] * int(a.get("group", 1)))
    ks = _ints(a.get("kernel_shape") or w.shape[2:])
    strides = _ints(a.get("strides") or [1] * nd)
    dilations = _ints(a.get("dilations") or [1] * nd)
    out_pad = _ints(a.get("output_padding") or [0] * nd)
    pads = _ints(a.get("pads") or [])
    out_shape = _ints(a.get("output_shape") or [])[-nd:] if a.get("output_shape") else []
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise info.error(f"unknown auto_pad {auto!r}")
    if any(len(v) != nd for v in (ks, strides, dilations, out_pad)) or len(pads) not in (0, 2 * nd):
        raise info.error("kernel_shape, strides, dilations, pads or output_padding do not match the rank")
    _check_window(
        info, kernel_shape=ks, strides=strides, dilations=dilations, pads=pads, output_padding=out_pad
    )
    sizes = x.shape[2:]
    full = [
        s * (n - 1) + p + (k - 1) * d + 1 for s, n, p, k, d in zip(strides, sizes, out_pad, ks, dilations)
    ]
    if auto == "VALID":
        begin = [0] * nd
    elif pads and auto == "NOTSET" and not out_shape:
        begin = pads[:nd]
    elif out_shape or auto != "NOTSET":
        target = out_shape or [n * s for n, s in zip(sizes, strides)]
        total = [f - t for f, t in zip(full, target)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        begin = [0] * nd
    out = info.out_types[0].shape[2:]
    end = [f - o - b for f, o, b in zip(full, out, begin)]
    if x.type.is_symbolic:  # the pads of symbolic sizes are constants (or the sizes do not fit)
        begin, end = [simplify(v) for v in begin], [simplify(v) for v in end]
        if not all(isinstance(v, int) for v in begin + end):
            raise info.error(
                f"its pads over the symbolic dims {list(sizes)} depend on their values",
                hint="bind the dims with --dim NAME=N",
                cls=UnsupportedError,
            )
    attrs = {
        "kernel_shape": ks, "strides": strides, "dilations": dilations, "pads": begin + end,
        "group": int(a.get("group", 1)),
    }  # fmt: skip
    return emit(g, info, "ConvTranspose", info.inputs[:3], attrs)


@rule("MaxPool", "AveragePool", "LpPool")
def _pool(g, info):
    x = info.inputs[0]
    ks = _ints(info.attrs["kernel_shape"])
    attrs = _spatial(info, x, ks)
    attrs["ceil_mode"] = int(info.attrs.get("ceil_mode", 0))
    if info.op_type == "AveragePool":
        attrs["count_include_pad"] = int(info.attrs.get("count_include_pad", 0))
    if info.op_type == "LpPool":
        attrs["p"] = int(info.attrs.get("p", 2))
    if info.op_type == "MaxPool":
        attrs["storage_order"] = int(info.attrs.get("storage_order", 0))
        attrs["with_indices"] = int(len(info.out_types) > 1 and info.out_types[1] is not None)
    return emit(g, info, info.op_type, info.inputs[:1], attrs)


@rule("MaxUnpool")
def _max_unpool(g, info):
    x = info.inputs[0]
    ks = _ints(info.attrs["kernel_shape"])
    nd = len(ks)
    strides = _ints(info.attrs.get("strides") or [1] * nd)
    pads = _ints(info.attrs.get("pads") or [0] * (2 * nd))
    info.const_input(2, "output_shape")  # the output type already holds it; it must be known
    inferred = list(x.shape[:2]) + [
        (x.shape[2 + i] - 1) * strides[i] - (pads[i] + pads[nd + i]) + ks[i] for i in range(nd)
    ]
    return emit(g, info, "MaxUnpool", info.inputs[:2], {"inferred_shape": inferred})


@rule("Gemm")
def _gemm(g, info):
    a = info.attrs
    attrs = {
        "alpha": float(a.get("alpha", 1.0)),
        "beta": float(a.get("beta", 1.0)),
        "transA": int(a.get("transA", 0)),
        "transB": int(a.get("transB", 0)),
    }
    A, B = info.inputs[0], info.inputs[1]
    if A.type.rank != 2 or B.type.rank != 2:
        raise info.error(f"A {list(A.shape)} and B {list(B.shape)} must be matrices (rank 2)")
    (M, K), (K2, N) = A.shape[:: -1 if attrs["transA"] else 1], B.shape[:: -1 if attrs["transB"] else 1]
    if K != K2:
        raise info.error(
            f"A {list(A.shape)} (transA={attrs['transA']}) and B {list(B.shape)} (transB={attrs['transB']}) "
            f"do not share an inner dim ({K} vs {K2})",
            hint="fix the model",
        )
    C = info.inputs[2] if len(info.inputs) > 2 else None
    if C is not None and (C.type.rank > 2 or any(c not in (1, n) for c, n in zip(C.shape[::-1], (N, M)))):
        raise info.error(f"C of shape {list(C.shape)} does not broadcast to [{M}, {N}]", hint="fix the model")
    return emit(g, info, "Gemm", info.inputs[:3], attrs)


@rule("Softmax", "LogSoftmax", "Hardmax")
def _softmax(g, info):
    x = info.inputs[0]
    rank = x.type.rank
    default = -1 if info.opset >= 13 else 1
    axis = _axis(info, int(info.attrs.get("axis", default)), rank)
    if info.opset >= 13 or axis == rank - 1:
        return emit(g, info, info.op_type, [x], {"axis": axis})
    # Before opset 13 the input is coerced to 2-D at axis: a free view around a 2-D softmax.
    rows = math.prod(x.shape[:axis])
    flat = TensorType(x.dtype, (rows, math.prod(x.shape[axis:])))
    (x2,) = emit(g, info, "Reshape", [x], {}, [flat], [info.out_names[0] + ".2d"])
    (y2,) = emit(g, info, info.op_type, [x2], {"axis": 1}, [flat], [info.out_names[0] + ".2d"])
    return emit(g, info, "Reshape", [y2], {})


@rule("BatchNormalization")
def _batchnorm(g, info):
    if int(info.attrs.get("training_mode", 0)):
        raise info.error("training_mode=1 is not supported (inference only)", cls=UnsupportedError)
    x = info.inputs[0]
    if info.opset < 9 and not int(info.attrs.get("spatial", 1)):
        # spatial=0: statistics per (C, H, W) element, not per channel
        attrs = {"epsilon": float(info.attrs.get("epsilon", 1e-5)), "per_activation": 1}
        params = tuple(x.shape[1:])
    else:
        attrs = {"epsilon": float(info.attrs.get("epsilon", 1e-5))}
        params = tuple(x.shape[1:2])
    for what, v in zip(("scale", "B", "mean", "var"), info.inputs[1:5]):
        if v is not None and tuple(v.shape) != params:
            raise info.error(
                f"{what} has shape {list(v.shape)}; the op needs {list(params)}", hint="fix the model"
            )
    live = [info.out_types[0]] + [None] * (len(info.out_types) - 1)
    if any(t is not None for t in info.out_types[1:]):
        raise info.error("running-statistics outputs are training-only", cls=UnsupportedError)
    return emit(g, info, "BatchNormalization", info.inputs[:5], attrs, out_types=live)


@rule("LRN")
def _lrn(g, info):
    a = info.attrs
    attrs = {
        "size": int(a["size"]),
        "alpha": float(a.get("alpha", 1e-4)),
        "beta": float(a.get("beta", 0.75)),
        "bias": float(a.get("bias", 1.0)),
    }
    return emit(g, info, "LRN", info.inputs[:1], attrs)


# -- recurrent layers -------------------------------------------------------------------------
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
# Activations that take alpha / beta, with the defaults of the ONNX ops of the same name.
_ACTIVATION_PARAMS = {
    "Affine": (1.0, 0.0), "LeakyRelu": (0.01, None), "ThresholdedRelu": (1.0, None),
    "ScaledTanh": (1.0, 1.0), "HardSigmoid": (0.2, 0.5), "Elu": (1.0, None),
}  # fmt: skip
_ACTIVATION_NAMES = (
    "Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid",
    "Elu", "Softsign", "Softplus",
)  # fmt: skip


@rule("RNN", "GRU", "LSTM")
def _recurrent(g, info):
    """Inputs as [X, W, R, B, sequence_lens, initial_h, initial_c, P]; activations resolved to
    (name, alpha, beta) per direction; which of Y, Y_h, Y_c are wanted in ``outputs``."""
    a = info.attrs
    kind = info.op_type
    ins = list(info.inputs) + [None] * (8 - len(info.inputs))
    X, W = ins[0], ins[1]
    direction = a.get("direction", "forward") or "forward"
    if direction not in ("forward", "reverse", "bidirectional"):
        raise info.error(f"unknown direction {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    if W.shape[0] != dirs:
        raise info.error(f"W has {W.shape[0]} directions, direction={direction!r} needs {dirs}")
    hidden = int(a.get("hidden_size") or W.shape[1] // _GATES[kind])
    layout = int(a.get("layout", 0) or 0)
    T = X.shape[0] if layout == 0 else X.shape[1]
    names = list(a.get("activations") or _DEFAULT_ACTIVATIONS[kind] * dirs)
    n = len(_DEFAULT_ACTIVATIONS[kind])
    if dirs == 1 and len(names) == 2 * n and names[:n] == names[n:]:
        names = names[:n]  # RNN's schema default lists both directions' Tanh
    if len(names) != len(_DEFAULT_ACTIVATIONS[kind]) * dirs:
        raise info.error(
            f"it lists {len(names)} activations; {kind} takes {len(_DEFAULT_ACTIVATIONS[kind])} per direction"
        )
    canonical = {n.lower(): n for n in _ACTIVATION_NAMES}
    alphas = [float(v) for v in a.get("activation_alpha") or []]
    betas = [float(v) for v in a.get("activation_beta") or []]
    acts = []
    for name in names:
        if name.lower() not in canonical:
            raise info.error(
                f"activation {name!r} is not supported", hint=f"supported: {', '.join(_ACTIVATION_NAMES)}"
            )
        name = canonical[name.lower()]
        alpha, beta = _ACTIVATION_PARAMS.get(name, (None, None))
        # alphas and betas are consumed, in order, by the activations that take them
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        acts.append((name, alpha or 0.0, beta or 0.0))
    seq_lens = ins[4]
    if seq_lens is not None and seq_lens.is_const:
        lens = np.asarray(seq_lens.data).reshape(-1)
        if np.any(lens < 0) or np.any(lens > T):
            raise info.error(f"sequence_lens {lens.tolist()} must lie in [0, {T}]")
        if np.all(lens == T):
            seq_lens = None
    if kind != "LSTM":
        ins[6] = ins[7] = None
    attrs = {
        "hidden_size": hidden, "direction": direction, "layout": layout,
        "activations": [n for n, _, _ in acts], "activation_alpha": [al for _, al, _ in acts],
        "activation_beta": [be for _, _, be in acts],
        "linear_before_reset": int(a.get("linear_before_reset", 0) or 0),
        "input_forget": int(a.get("input_forget", 0) or 0),
        "outputs": [int(i < len(info.out_types) and info.out_types[i] is not None) for i in range(3)],
    }  # fmt: skip
    if a.get("clip") is not None:
        attrs["clip"] = float(a["clip"])
    return emit(g, info, kind, [ins[0], ins[1], ins[2], ins[3], seq_lens, ins[5], ins[6], ins[7]], attrs)


# -- attention ----------------------------------------------------------------------------------
@rule("Attention")
def _attention(g, info):
    """Attention as one IR op over [Q, K_all, V_all, attn_mask, nonpad_kv_seqlen].

    With a KV cache, K_all / V_all are the present key/value (past concatenated with the new
    keys, made 4-D first), which are also the op's present outputs. Without one, K and V are
    read in place (3-D or 4-D). Attributes carry the head geometry and every mask option."""
    a = info.attrs
    ins = list(info.inputs) + [None] * (7 - len(info.inputs))
    Q, K, V, mask, pk, pv, nonpad = ins[:7]
    if (pk is None) != (pv is None):
        raise info.error("past_key and past_value must be given together")
    if nonpad is not None and pk is not None:
        raise info.error("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    rank = Q.type.rank
    if rank not in (3, 4) or K.type.rank != rank or V.type.rank != rank:
        raise info.error(
            f"Q, K and V have ranks {Q.type.rank}, {K.type.rank} and {V.type.rank}; Attention takes "
            "all three 3-D or all three 4-D"
        )
    if rank == 3:
        Hq, Hkv = int(a.get("q_num_heads") or 0), int(a.get("kv_num_heads") or 0)
        if Hq <= 0 or Hkv <= 0:
            raise info.error("3-D inputs need q_num_heads and kv_num_heads (positive)")
        B, Sq = Q.shape[:2]
        D, Dv, Skv = Q.shape[2] // Hq, V.shape[2] // Hkv, K.shape[1]
        fits = Q.shape[2] == Hq * D and K.shape[2] == Hkv * D and V.shape[2] == Hkv * Dv
        fits = fits and K.shape[0] == V.shape[0] == B and V.shape[1] == Skv
    else:
        B, Hq, Sq, D = Q.shape
        Hkv, Skv, Dv = K.shape[1], K.shape[2], V.shape[3]
        fits = K.shape[0] == V.shape[0] == B and K.shape[3] == D and V.shape[1] == Hkv and V.shape[2] == Skv
    if not fits or not Hkv:
        raise info.error(
            f"Q {list(Q.shape)}, K {list(K.shape)} and V {list(V.shape)} do not agree on batch, heads, "
            "head size and key length",
            hint="fix the model",
        )
    if Hq % Hkv:
        raise info.error(f"{Hq} query heads cannot share {Hkv} key/value heads evenly")
    names = info.out_names + [""] * (4 - len(info.out_names))
    types = info.out_types + [None] * (4 - len(info.out_types))

    def heads_first(x, dh, hint):  # (B, S, H*d) -> (B, H, S, d)
        if rank == 4:
            return x
        S = x.shape[1]
        (r,) = emit(g, info, "Reshape", [x], {}, [x.type.with_shape((B, S, Hkv, dh))], [hint + ".heads"])
        (t,) = emit(
            g, info, "Transpose", [r], {"perm": [0, 2, 1, 3]}, [r.type.with_shape((B, Hkv, S, dh))], [hint]
        )
        return t

    outs = [None, None, None, None]
    kv_4d = rank == 4
    if pk is not None:
        k4, v4 = heads_first(K, D, names[1] + ".new"), heads_first(V, Dv, names[2] + ".new")
        L = pk.shape[2] + Skv
        (K,) = emit(
            g, info, "Concat", [pk, k4], {"axis": 2}, [k4.type.with_shape((B, Hkv, L, D))], [names[1]]
        )
        (V,) = emit(
            g, info, "Concat", [pv, v4], {"axis": 2}, [v4.type.with_shape((B, Hkv, L, Dv))], [names[2]]
        )
        outs[1], outs[2] = K, V
        kv_4d = True
    else:
        L = Skv
        if types[1] is not None:
            outs[1] = heads_first(K, D, names[1])
        if types[2] is not None:
            outs[2] = heads_first(V, Dv, names[2])
    if mask is not None and mask.type.rank > 4:
        raise info.error(f"attn_mask has rank {mask.type.rank}; at most 4 is allowed")
    scale = a.get("scale")
    windows = {}
    for side in ("left_window_size", "right_window_size"):
        w = int(a.get(side, -1))
        if w < -1:
            raise info.error(f"{side}={w} is out of spec; it is -1 (unbounded) or a count >= 0")
        # a window wider than any query-key distance bounds nothing (and stays a valid WGSL i32)
        windows[side] = -1 if w >= dim_bound(L + Sq) else w
    attrs = {
        "batch": B, "q_heads": Hq, "kv_heads": Hkv, "q_len": Sq, "kv_len": L, "head_size": D,
        "v_head_size": Dv, "q_3d": int(rank == 3), "kv_3d": int(not kv_4d),
        "past_len": pk.shape[2] if pk is not None else 0,
        "scale": float(scale) if scale is not None else 1.0 / math.sqrt(D),
        "softcap": float(a.get("softcap") or 0.0), "is_causal": int(a.get("is_causal") or 0),
        "qk_matmul_output_mode": int(a.get("qk_matmul_output_mode") or 0),
        **windows,
    }  # fmt: skip
    y, qk = emit(
        g, info, "Attention", [Q, K, V, mask, nonpad], attrs, [types[0], types[3]], [names[0], names[3]]
    )
    outs[0], outs[3] = y, qk
    return outs[: len(info.out_types)]


@rule("RotaryEmbedding")
def _rotary(g, info):
    x = info.inputs[0]
    rank = x.type.rank
    heads = int(info.attrs.get("num_heads") or 0)
    if rank == 3 and not heads:
        raise info.error("a 3-D input needs the num_heads attribute")
    if rank not in (3, 4):
        raise info.error(f"input has rank {rank}; RotaryEmbedding takes 3-D or 4-D input")
    head = x.shape[2] // heads if rank == 3 else x.shape[3]
    dim = int(info.attrs.get("rotary_embedding_dim") or 0) or head
    if dim > head or dim % 2:
        raise info.error(f"rotary_embedding_dim {dim} must be even and at most the head size {head}")
    half = info.inputs[1].shape[-1]
    if half != dim // 2:
        raise info.error(f"the cos/sin caches' last dim is {half}, rotary_embedding_dim/2 is {dim // 2}")
    attrs = {
        "interleaved": int(info.attrs.get("interleaved") or 0),
        "num_heads": heads or x.shape[1],
        "rotary_dim": dim,
    }
    return emit(g, info, "RotaryEmbedding", info.inputs[:4], attrs)


@rule("DeformConv")
def _deform_conv(g, info):
    x, w = info.inputs[0], info.inputs[1]
    attrs = _spatial(info, x, _ints(info.attrs.get("kernel_shape") or w.shape[2:]))
    attrs["group"] = int(info.attrs.get("group", 1))
    attrs["offset_group"] = int(info.attrs.get("offset_group", 1))
    return emit(g, info, "DeformConv", info.inputs[:5], attrs)

"""Legalize rules: reductions, arg-max/min, normalizations, CumSum, CumProd, TopK, Einsum,
Det and the quantization ops.

Axes (attribute or constant input, depending on the opset) become a sorted list of positive
axes; every other compile-time input (CumSum's and CumProd's axis, TopK's k) becomes an
attribute. Ops with optional outputs record which ones are used in ``outputs`` (output
positions), since the IR op only carries the live ones.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.errors import UnsupportedError
from onnx2wgsl.ir import DType, TensorType
from onnx2wgsl.ir.symbolic import Expr
from onnx2wgsl.ir.types import storage_dtype

from . import _axis, _ints, emit, rule

REDUCE_OPS = (
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)  # fmt: skip


def _live(info) -> list[int]:
    return [i for i, t in enumerate(info.out_types) if t is not None]


def _axes_list(info, axes, rank: int) -> list[int]:
    out = sorted({_axis(info, int(a), rank) for a in axes})
    if len(out) != len(list(axes)):
        raise info.error(f"axes {list(axes)} name an axis twice")
    return out


# -- Reduce* ---------------------------------------------------------------------------------
@rule(*REDUCE_OPS)
def _reduce(g, info):
    from ..lowering.reduce import empty_reduction_value

    x = info.inputs[0]
    rank = x.type.rank
    since = 13 if info.op_type == "ReduceSum" else 18  # axes moved from attribute to input
    if info.opset >= since:
        raw = info.const_input(1, "axes")
        axes = None if raw is None else _ints(raw)
    else:
        axes = info.attrs.get("axes")
        axes = None if axes is None else _ints(axes)
    noop = int(info.attrs.get("noop_with_empty_axes", 0))
    if not axes:
        axes = [] if noop else list(range(rank))  # empty axes: all of them, or none with noop
    axes = _axes_list(info, axes, rank)
    keepdims = int(info.attrs.get("keepdims", 1))
    y = info.out_types[0]
    want = tuple(1 if d in axes else n for d, n in enumerate(x.shape) if keepdims or d not in axes)
    if tuple(y.shape) != want:
        raise info.error(f"inferred output shape {y.shape} does not match reducing {x.type} over {axes}")
    if axes and math.prod(x.shape[a] for a in axes) == 0 and y.numel:
        # No points to reduce: the output is the reduction's identity, known now.
        value = empty_reduction_value(info.op_type, y.dtype)
        if value is None:
            raise info.error(
                f"an empty {info.op_type} of {y.dtype.name} gives a value the GPU cannot hold",
                cls=UnsupportedError,
            )
        return [g.const(np.full(y.shape, value, dtype=y.dtype.numpy), info.out_names[0])]
    if not axes and info.op_type in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"):
        return emit(g, info, "Identity", [x], {})
    return emit(g, info, info.op_type, [x], {"axes": axes, "keepdims": keepdims})


@rule("ArgMax", "ArgMin")
def _arg(g, info):
    x = info.inputs[0]
    axis = _axis(info, int(info.attrs.get("axis", 0)), x.type.rank)
    if x.type.rank == 0 or x.shape[axis] == 0:
        raise info.error(f"{info.op_type} over an empty axis has no answer")
    attrs = {
        "axis": axis,
        "keepdims": int(info.attrs.get("keepdims", 1)),
        "select_last_index": int(info.attrs.get("select_last_index", 0)),
    }
    return emit(g, info, info.op_type, [x], attrs)


# -- normalizations --------------------------------------------------------------------------
@rule("LayerNormalization", "RMSNormalization")
def _layer_norm(g, info):
    x = info.inputs[0]
    axis = _axis(info, int(info.attrs.get("axis", -1)), x.type.rank)
    live = _live(info)
    if info.op_type == "RMSNormalization" and live != [0]:
        raise info.error("RMSNormalization has one output")
    ins = [v for v in info.inputs[:3] if v is not None]
    norm = tuple(x.shape[axis:])
    for v in ins[1:]:
        if v.type.is_symbolic or x.type.is_symbolic:  # each dim 1 or the one it meets
            fits = v.type.rank <= len(norm) and all(
                d == 1 or d == n for d, n in zip(reversed(v.shape), reversed(norm))
            )
        else:
            try:
                fits = np.broadcast_shapes(tuple(v.shape), norm) == norm
            except ValueError:
                fits = False
        if not fits:
            raise info.error(f"{v.name!r} of shape {v.shape} does not broadcast to {norm}")
    attrs = {"axis": axis, "epsilon": float(info.attrs.get("epsilon", 1e-5)), "outputs": live}
    if info.op_type == "LayerNormalization":
        attrs["bias"] = int(len(info.inputs) > 2 and info.inputs[2] is not None)
    return emit(g, info, info.op_type, ins, attrs)


@rule("InstanceNormalization")
def _instance_norm(g, info):
    x = info.inputs[0]
    if x.type.rank < 3:
        raise info.error(f"input of rank {x.type.rank}; InstanceNormalization needs N, C and spatial dims")
    for what, v in zip(("scale", "B"), info.inputs[1:3]):
        if v is not None and tuple(v.shape) != (x.shape[1],):
            raise info.error(
                f"{what} has shape {list(v.shape)}; the op needs [{x.shape[1]}]", hint="fix the model"
            )
    attrs = {"epsilon": float(info.attrs.get("epsilon", 1e-5))}
    return emit(g, info, "InstanceNormalization", info.inputs[:3], attrs)


@rule("GroupNormalization")
def _group_norm(g, info):
    x, scale, bias = info.inputs[:3]
    G = int(info.attrs["num_groups"])
    C = x.shape[1] if x.type.rank >= 2 else 0
    if x.type.rank < 3 or G <= 0 or C % G:
        raise info.error(f"{C} channels do not split into {G} groups")
    # Opset 18 gives scale and bias per group; opset 21 per channel.
    per_group = int(info.opset < 21)
    want = (G,) if per_group else (C,)
    if tuple(scale.shape) != want or tuple(bias.shape) != want:
        raise info.error(f"scale and bias must have shape {want} at opset {info.opset}")
    attrs = {"num_groups": G, "epsilon": float(info.attrs.get("epsilon", 1e-5)), "per_group": per_group}
    return emit(g, info, "GroupNormalization", [x, scale, bias], attrs)


@rule("MeanVarianceNormalization")
def _mvn(g, info):
    x = info.inputs[0]
    axes = _axes_list(info, _ints(info.attrs.get("axes", [0, 2, 3])), x.type.rank)
    return emit(g, info, "MeanVarianceNormalization", [x], {"axes": axes})


@rule("LpNormalization")
def _lp_norm(g, info):
    x = info.inputs[0]
    p = int(info.attrs.get("p", 2))
    if p not in (1, 2):
        raise info.error(f"p={p}; LpNormalization is defined for p=1 and p=2")
    axis = _axis(info, int(info.attrs.get("axis", -1)), x.type.rank)
    return emit(g, info, "LpNormalization", [x], {"axis": axis, "p": p})


# -- scans, selection, contraction -----------------------------------------------------------
@rule("CumSum", "CumProd")
def _cumulative(g, info):
    x = info.inputs[0]
    axis = np.asarray(info.const_input(1, "axis")).reshape(-1)
    if axis.size != 1:
        raise info.error("axis must hold one value")
    attrs = {
        "axis": _axis(info, int(axis[0]), x.type.rank),
        "exclusive": int(info.attrs.get("exclusive", 0)),
        "reverse": int(info.attrs.get("reverse", 0)),
    }
    return emit(g, info, info.op_type, [x], attrs)


@rule("TopK")
def _topk(g, info):
    x = info.inputs[0]
    if info.opset >= 10:
        k = np.asarray(info.const_input(1, "k")).reshape(-1)
        if k.size != 1:
            raise info.error("k must hold one value")
        k = int(k[0])
    else:
        k = int(info.attrs["k"])
    axis = _axis(info, int(info.attrs.get("axis", -1)), x.type.rank)
    L = x.shape[axis]
    if isinstance(L, Expr):  # k must fit every length the range allows
        if not 0 <= k <= L.bounds[0]:
            raise info.error(
                f"k={k} is outside [0, {L}] for {L} in {L.bounds[0]}..{L.bounds[1]}",
                hint="narrow the dim's range (--dim NAME=LO..HI) so that its least value is at least k",
            )
    elif not 0 <= k <= L:
        raise info.error(f"k={k} is outside [0, {L}]")
    attrs = {
        "axis": axis,
        "k": k,
        "largest": int(info.attrs.get("largest", 1)),
        "sorted": int(info.attrs.get("sorted", 1)),  # sorted=0 leaves the order free: we sort
        "outputs": _live(info),
    }
    return emit(g, info, "TopK", [x], attrs)


def parse_einsum(equation: str, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """Each operand's labels and the output's; the dims under '...' get labels '0', '1', ...
    aligned from the right (they broadcast like numpy)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    parts = lhs.split(",")
    if len(parts) != len(ranks):
        raise ValueError(f"{len(parts)} terms for {len(ranks)} inputs")
    ell_rank = 0
    for part, rank in zip(parts, ranks):
        named = len(part.replace("...", ""))
        if "..." in part:
            ell_rank = max(ell_rank, rank - named)
        elif named != rank:
            raise ValueError(f"term {part!r} has {named} labels for an input of rank {rank}")
    if ell_rank > 10:
        raise ValueError("more than 10 dims under '...'")
    ell = [str(i) for i in range(ell_rank)]

    def expand(part: str, rank: int | None) -> list[str]:
        if part.count("...") > 1:
            raise ValueError(f"term {part!r} has two ellipses")
        head, dots, tail = part.partition("...")
        if not all(c.isalpha() for c in head + tail):
            raise ValueError(f"term {part!r} has a character that is not a letter")
        if not dots:
            return list(head)
        n = (rank - len(head) - len(tail)) if rank is not None else ell_rank
        return list(head) + ell[ell_rank - n :] + list(tail)

    terms = [expand(p, r) for p, r in zip(parts, ranks)]
    if arrow:
        out = expand(rhs, None)
        if len(set(out)) != len(out):
            raise ValueError("the output repeats a label")
        known = {c for t in terms for c in t}
        if any(c not in known for c in out):
            raise ValueError("the output has a label no input has")
    else:
        counts: dict[str, int] = {}
        for t in terms:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + sorted(c for c, n in counts.items() if n == 1 and not c.isdigit())
    return terms, out


@rule("Einsum")
def _einsum(g, info):
    ins = [v for v in info.inputs if v is not None]
    try:
        terms, out = parse_einsum(str(info.attrs["equation"]), [v.type.rank for v in ins])
    except ValueError as e:
        raise info.error(f"equation {info.attrs['equation']!r}: {e}") from None
    if len(ins) == 2 and info.out_types[0].dtype.is_float:
        y = _einsum_as_matmul(g, info, ins, terms, out)
        if y is not None:
            return y
    # IR form: the explicit equation, one character per label ('0'.. for the ellipsis dims)
    equation = ",".join("".join(t) for t in terms) + "->" + "".join(out)
    return emit(g, info, "Einsum", ins, {"equation": equation})


def _einsum_as_matmul(g, info, ins, terms, out):
    """A two-operand contraction without diagonals, broadcasting or one-sided sums is a batched
    MatMul between transposes and free reshapes (the tiled GEMM template); None otherwise."""
    (a, b), (ta, tb) = ins, terms
    if len(set(ta)) != len(ta) or len(set(tb)) != len(tb) or not a.type.numel or not b.type.numel:
        return None
    size = {}
    for v, t in ((a, ta), (b, tb)):
        for label, n in zip(t, v.shape):
            if size.setdefault(label, n) != n:
                return None
    batch = [c for c in out if c in ta and c in tb]
    M = [c for c in ta if c in out and c not in tb]
    N = [c for c in tb if c in out and c not in ta]
    K = [c for c in ta if c in tb and c not in out]
    if not K or sorted(ta) != sorted(batch + M + K) or sorted(tb) != sorted(batch + K + N):
        return None  # nothing summed is a broadcast product: the generic kernel does it directly
    dt = info.out_types[0].dtype
    name = info.out_names[0]

    def prod(labels):
        return math.prod(size[c] for c in labels)

    def arrange(v, t, order, hint):
        perm = [t.index(c) for c in order]
        if perm != list(range(len(t))):
            tt = TensorType(v.dtype, tuple(v.shape[p] for p in perm))
            (v,) = emit(g, info, "Transpose", [v], {"perm": perm}, [tt], [f"{name}.{hint}t"])
        return v

    def reshape(v, shape, hint):
        if tuple(v.shape) == tuple(shape):
            return v
        (r,) = emit(g, info, "Reshape", [v], {}, [TensorType(v.dtype, tuple(shape))], [f"{name}.{hint}"])
        return r

    lead = (prod(batch),) if batch else ()
    a3 = reshape(arrange(a, ta, batch + M + K, "a"), lead + (prod(M), prod(K)), "a3")
    b3 = reshape(arrange(b, tb, batch + K + N, "b"), lead + (prod(K), prod(N)), "b3")
    mm = TensorType(dt, lead + (prod(M), prod(N)))
    order = batch + M + N
    perm = [order.index(c) for c in out]
    if perm == list(range(len(out))) and mm.shape == tuple(info.out_types[0].shape):
        return emit(g, info, "MatMul", [a3, b3], {})  # the product is the output as it stands
    (y3,) = emit(g, info, "MatMul", [a3, b3], {}, [mm], [f"{name}.mm"])
    if perm == list(range(len(out))):
        return emit(g, info, "Reshape", [y3], {})
    y = reshape(y3, tuple(size[c] for c in order), "mmshape")
    return emit(g, info, "Transpose", [y], {"perm": perm})


@rule("Det")
def _det(g, info):
    x = info.inputs[0]
    if x.type.rank < 2 or x.shape[-1] != x.shape[-2]:
        raise info.error(f"Det needs [..., N, N] matrices, got {x.type}")
    return emit(g, info, "Det", [x], {})


# -- quantization ----------------------------------------------------------------------------
def _gpu_dtype(info, dt: DType, what: str) -> None:
    if storage_dtype(dt) is None:
        raise info.error(
            f"{what} of type {dt.name} is not supported (float8, float4, int4 and int2 have no "
            "WebGPU storage here)",
            hint="use int8/uint8/int16/uint16/int32 quantization",
            cls=UnsupportedError,
        )


def _quant_params(info, x, scale, zp, axis_default: int = 1) -> dict:
    """axis and block_size, checked against the scale's shape (per tensor, per axis, blocked)."""
    rank = x.type.rank
    block = int(info.attrs.get("block_size", 0) or 0)
    sshape = tuple(scale.shape)
    axis = int(info.attrs.get("axis", axis_default))
    if math.prod(sshape) == 1 and len(sshape) <= 1 and not block:
        return {"axis": 0, "block_size": 0, "mode": "tensor"}
    axis = _axis(info, axis, rank)
    if not block:
        if sshape != (x.shape[axis],):
            raise info.error(f"scale of shape {sshape} does not match axis {axis} of {x.type}")
        mode = "axis"
    else:
        want = tuple(-(-n // block) if d == axis else n for d, n in enumerate(x.shape))
        if sshape != want:
            raise info.error(f"scale of shape {sshape} does not match blocks of {block} along axis {axis}")
        mode = "blocked"
    if zp is not None and tuple(zp.shape) != sshape:
        raise info.error(f"zero point of shape {zp.shape} does not match the scale's {sshape}")
    return {"axis": axis, "block_size": block, "mode": mode}


@rule("QuantizeLinear")
def _quantize(g, info):
    x, scale = info.inputs[:2]
    zp = info.inputs[2] if len(info.inputs) > 2 else None
    y = info.out_types[0]
    _gpu_dtype(info, y.dtype, "output")
    attrs = _quant_params(info, x, scale, zp)
    attrs["saturate"] = int(info.attrs.get("saturate", 1))  # float8 outputs: saturate or overflow
    return emit(g, info, "QuantizeLinear", [x, scale] + ([zp] if zp is not None else []), attrs)


@rule("DequantizeLinear")
def _dequantize(g, info):
    x, scale = info.inputs[:2]
    zp = info.inputs[2] if len(info.inputs) > 2 else None
    _gpu_dtype(info, x.dtype, "input")
    attrs = _quant_params(info, x, scale, zp)
    return emit(g, info, "DequantizeLinear", [x, scale] + ([zp] if zp is not None else []), attrs)


@rule("DynamicQuantizeLinear")
def _dynamic_quantize(g, info):
    # All three outputs are computed together; unused ones still get their types.
    x = info.inputs[0]
    defaults = (TensorType(DType.u8, x.shape), TensorType(DType.f32, ()), TensorType(DType.u8, ()))
    types = [t if t is not None else d for t, d in zip(info.out_types, defaults)]
    return emit(g, info, "DynamicQuantizeLinear", [x], {}, out_types=types)


@rule("MatMulInteger", "QLinearMatMul")
def _matmul_integer(g, info):
    ins = list(info.inputs) + [None] * (8 - len(info.inputs))
    if info.op_type == "MatMulInteger":
        a, b, azp, bzp = ins[:4]
        scales = [None, None, None, None]
    else:
        a, a_s, azp, b, b_s, bzp, y_s, yzp = ins
        scales = [a_s, b_s, y_s, yzp]
    for v in (a, b):
        if v.type.rank < 1:
            raise info.error("operands must have rank 1 or more")
    M = a.shape[-2] if a.type.rank >= 2 else 1
    N = b.shape[-1] if b.type.rank >= 2 else 1
    # zero points: per tensor, per row of A ([M] or [..., M, 1]), per column of B ([N] or [..., 1, N])
    for zp, want, what in ((azp, (M, 1), "a_zero_point"), (bzp, (1, N), "b_zero_point")):
        if zp is None or zp.type.numel == 1:
            continue
        s = tuple(zp.shape)
        ok = s == (max(want),) or (len(s) >= 2 and s[-2:] == want)
        if not ok:
            raise info.error(
                f"{what} of shape {s} is neither per tensor nor per {'row' if want[1] == 1 else 'column'}"
            )
    attrs = {"has": [int(v is not None) for v in (azp, bzp, *scales)]}
    ins = [v for v in (a, b, azp, bzp, *scales) if v is not None]
    return emit(g, info, info.op_type, ins, attrs)


@rule("ConvInteger", "QLinearConv")
def _conv_integer(g, info):
    from .nn import _spatial

    ins = list(info.inputs) + [None] * (9 - len(info.inputs))
    if info.op_type == "ConvInteger":
        x, w, xzp, wzp = ins[:4]
        rest = [None] * 5
    else:
        x, xs, xzp, w, ws, wzp, ys, yzp, bias = ins
        rest = [xs, ws, ys, yzp, bias]
    if x.type.rank < 3 or w.type.rank != x.type.rank:
        raise info.error(f"input {x.type} and weights {w.type} are not an N-C-spatial convolution")
    attrs = _spatial(info, x, _ints(info.attrs.get("kernel_shape") or w.shape[2:]))
    attrs["group"] = int(info.attrs.get("group", 1))
    OC = w.shape[0]
    for v, what in (
        (xzp, "x_zero_point"),
        (rest[0], "x_scale"),
        (rest[2], "y_scale"),
        (rest[3], "y_zero_point"),
    ):
        if v is not None and v.type.numel != 1:
            raise info.error(f"{what} must be a scalar (per tensor)")
    for v, what in ((wzp, "w_zero_point"), (rest[1], "w_scale"), (rest[4], "B")):
        if v is not None and v.type.numel not in (1, OC) or (v is not None and v.type.rank > 1):
            raise info.error(f"{what} must be a scalar or one value per output channel")
    attrs["has"] = [int(v is not None) for v in (xzp, wzp, *rest)]
    return emit(g, info, info.op_type, [v for v in (x, w, xzp, wzp, *rest) if v is not None], attrs)

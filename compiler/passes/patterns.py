"""Recognize normalizations, softmax and rotary position embedding written out in primitive
ops, the way PyTorch, TF and Keras exporters often emit them, and replace each by the one op
whose lowering runs it as a single kernel (a row kernel, or the softmax template) instead of five to ten kernels and as
many round trips through memory."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from onnx2wgsl.ir import Graph, Op, TensorType, Value

from . import Pass, PassResult

# A match: the ops it covers in topological order (the last computes the pattern's result) and
# a builder that, given that result value, returns the ops computing it instead.
Match = tuple[list[Op], Callable[[Value], list[Op]]]


def _scalar(v: Value | None) -> float | None:
    """v's value if it is a constant holding one value (any number of times), else None."""
    if v is None or not v.is_const or v.type.numel == 0:
        return None
    flat = v.data.reshape(-1)
    if not np.all(flat == flat[0]):
        return None
    if flat.dtype.kind == "f":  # the shortest decimal of the stored precision: 1e-05, not 9.99e-06
        return float(str(flat[0]))
    return float(flat[0])


def _other(op: Op, v: Value) -> Value | None:
    """The operand of binary ``op`` beside ``v`` (v itself for ``op(v, v)``); None if v is not one."""
    if len(op.inputs) != 2:
        return None
    a, b = op.inputs
    return b if a is v else a if b is v else None


def _block(op: Op) -> tuple[int, int] | None:
    """(first, last) of a keepdims reduction's axes when they are one contiguous run of dims."""
    axes = op.attrs.get("axes")
    if not axes or not op.attrs.get("keepdims", 1) or list(axes) != list(range(axes[0], axes[-1] + 1)):
        return None
    return axes[0], axes[-1]


def _trailing(op: Op) -> int | None:
    """The first axis of a keepdims reduction over the trailing dims from it on, else None."""
    block = _block(op)
    return block[0] if block is not None and block[1] == op.inputs[0].type.rank - 1 else None


def _param_shape(v: Value, norm: tuple, dtype) -> tuple | None:
    """The shape that makes constant ``v`` a LayerNormalization / RMSNormalization scale or bias
    over the normalized dims ``norm`` (leading 1s dropped), or None if it varies across rows."""
    if not v.is_const or v.dtype != dtype:
        return None
    shape = tuple(v.shape)
    while len(shape) > len(norm) and shape[0] == 1:
        shape = shape[1:]
    try:
        fits = len(shape) <= len(norm) and np.broadcast_shapes(shape, norm) == norm
    except ValueError:
        fits = False
    return shape if fits else None


class _Uses:
    """Use queries that ignore dead ops (an intermediate read only by dead code still counts
    as single-use: dead-code elimination removes that reader after the rewrite)."""

    def __init__(self, g: Graph):
        self.outputs = {id(v) for v in g.outputs}
        live: set[int] = set()
        for op in reversed(g.ops):
            if any(id(v) in self.outputs or any(id(u) in live for u in v.uses) for v in op.outputs):
                live.add(id(op))
        self.dead = {id(op): op for op in g.ops if id(op) not in live}
        self.order = {id(op): i for i, op in enumerate(g.ops)}  # rewrites keep the rest in order
        self.caches: dict[tuple, tuple[Value, int]] = {}  # rotary caches made, and where

    def users(self, v: Value) -> list[Op]:
        """The distinct live ops reading v."""
        seen: dict[int, Op] = {}
        for u in v.uses:
            if id(u) not in self.dead:
                seen.setdefault(id(u), u)
        return list(seen.values())

    def internal(self, v: Value) -> bool:
        """Whether v may vanish in a rewrite: no graph output (its other users are checked apart)."""
        return id(v) not in self.outputs

    def only(self, v: Value, *kinds: str) -> Op | None:
        """The one live op reading intermediate v, if v has exactly one and it is of ``kinds``."""
        us = self.users(v)
        if not self.internal(v) or len(us) != 1 or us[0].domain or (kinds and us[0].kind not in kinds):
            return None
        return us[0]


# -- shared pieces -----------------------------------------------------------------------------
def _square(op: Op | None, x: Value | None = None) -> Value | None:
    """The value ``op`` squares (Pow(x, 2) or Mul(x, x)), if it is x or x is not given."""
    if op is None or op.domain or len(op.inputs) != 2 or op.outputs[0].type != op.inputs[0].type:
        return None
    a, b = op.inputs
    if (op.kind == "Pow" and _scalar(b) == 2.0) or (op.kind == "Mul" and a is b):
        return a if x is None or a is x else None
    return None


def _divide(u: _Uses, num: Value, den: Value) -> list[Op] | None:
    """The ops from ``den`` on that compute num / den: Div(num, den), or num * Reciprocal(den),
    or num * Div(1, den). The last one reads ``num``."""
    op = u.only(den, "Div", "Reciprocal")
    if op is None:
        return None
    if op.kind == "Div" and op.inputs[0] is num and op.inputs[1] is den:
        return [op] if op.outputs[0].type == num.type else None
    if op.kind == "Div" and (op.inputs[1] is not den or _scalar(op.inputs[0]) != 1.0):
        return None
    r = op.outputs[0]
    mul = u.only(r, "Mul")
    if r.type != den.type or mul is None or _other(mul, r) is not num or mul.outputs[0].type != num.type:
        return None
    return [op, mul]


def _root_of_eps(u: _Uses, ms: Value) -> tuple[float, Op, Op] | None:
    """From a mean square ``ms`` on: Add of a constant eps, then Sqrt or Pow of the sum.
    Returns eps, the Add and the Sqrt / Pow (a Pow's exponent is left to the caller)."""
    add = u.only(ms, "Add")
    eps = _scalar(_other(add, ms)) if add is not None else None
    if eps is None or add.outputs[0].type != ms.type:
        return None
    ve = add.outputs[0]
    op = u.only(ve, "Sqrt", "Pow")
    if op is None or op.inputs[0] is not ve or op.outputs[0].type != ve.type:
        return None
    return eps, add, op


def _normalize(u: _Uses, ms: Value, num: Value) -> tuple[float, list[Op]] | None:
    """From a mean square ``ms`` on: + eps (a constant), then num / sqrt(.) in any of the
    forms of ``_divide`` or as num * Pow(., -0.5). Returns eps and the ops (the last reads num)."""
    found = _root_of_eps(u, ms)
    if found is None:
        return None
    eps, add, op = found
    if op.kind == "Sqrt":
        rest = _divide(u, num, op.outputs[0])
    else:
        mul = u.only(op.outputs[0], "Mul") if _scalar(op.inputs[1]) == -0.5 else None
        ok = mul is not None and _other(mul, op.outputs[0]) is num and mul.outputs[0].type == num.type
        rest = [mul] if ok else None
    return None if rest is None else (eps, [add, op, *rest])


def _affine(u: _Uses, n: Value, axis: int, kinds: tuple[str, ...]) -> tuple[list[Op], dict]:
    """The Mul by a constant scale and the Add of a constant shift (``kinds`` says which may
    occur) that follow the normalized ``n``, each optional; returns those ops and
    {kind: (constant, the shape it takes as the op's parameter)}."""
    norm = tuple(n.shape[axis:])
    ops: list[Op] = []
    params: dict[str, tuple[Value, tuple]] = {}
    for kind in kinds:
        op = u.only(n, kind)
        p = _other(op, n) if op is not None else None
        shape = _param_shape(p, norm, n.dtype) if p is not None and p is not n else None
        if shape is None or op.outputs[0].type != n.type:
            continue
        ops.append(op)
        params[kind] = (p, shape)
        n = op.outputs[0]
    return ops, params


def _reshaped(g: Graph, v: Value, shape: tuple) -> Value:
    return v if tuple(v.shape) == shape else g.const(v.data.reshape(shape), f"{v.name}.r", dtype=v.dtype)


def _norm_op(g: Graph, kind: str, x: Value, y: Value, params: dict, axis: int, eps: float, name: str) -> Op:
    """LayerNormalization / RMSNormalization of x into y; a missing scale is ones."""
    if "Mul" in params:
        scale = _reshaped(g, *params["Mul"])
    else:
        scale = g.const(np.ones(1), f"{y.name}.scale", dtype=x.dtype)
    attrs = {"axis": axis, "epsilon": eps, "outputs": [0]}
    ins = [x, scale]
    if kind == "LayerNormalization":
        attrs["bias"] = int("Add" in params)
        ins += [_reshaped(g, *params["Add"])] if "Add" in params else []
    return Op(kind, ins, [y], attrs, name=name)


# -- the patterns --------------------------------------------------------------------------------
def layer_norm(g: Graph, u: _Uses, mean_op: Op) -> Match | None:
    """d = x - ReduceMean(x); d / sqrt(ReduceMean(d^2) + eps) [* gamma] [+ beta], over the
    trailing dims from ``axis``."""
    x = mean_op.inputs[0]
    axis = _trailing(mean_op)
    sub = u.only(mean_op.outputs[0], "Sub")
    if axis is None or not x.dtype.is_float or sub is None or sub.inputs != [x, mean_op.outputs[0]]:
        return None
    d = sub.outputs[0]
    readers = u.users(d)
    if d.type != x.type or not u.internal(d) or len(readers) != 2:
        return None
    sq = next((op for op in readers if _square(op, d) is not None), None)
    var_op = u.only(sq.outputs[0], "ReduceMean") if sq is not None else None
    if var_op is None or _trailing(var_op) != axis:
        return None
    found = _normalize(u, var_op.outputs[0], d)
    if found is None or found[1][-1] not in readers or found[1][-1] is sq:
        return None
    eps, ops = found
    tail, params = _affine(u, ops[-1].outputs[0], axis, ("Mul", "Add"))
    matched = [mean_op, sub, sq, var_op, *ops, *tail]
    return matched, lambda y: [_norm_op(g, "LayerNormalization", x, y, params, axis, eps, matched[-1].name)]


def _inverse_std(u: _Uses, var: Value) -> tuple[float, list[Op]] | None:
    """From a variance on: + eps (a constant), then 1 / sqrt(.) as Reciprocal(Sqrt(.)),
    Div(1, Sqrt(.)) or Pow(., -0.5). Returns eps and the ops (the last makes the inverse)."""
    found = _root_of_eps(u, var)
    if found is None:
        return None
    eps, add, op = found
    if op.kind == "Pow":
        return (eps, [add, op]) if _scalar(op.inputs[1]) == -0.5 else None
    inv = u.only(op.outputs[0], "Reciprocal", "Div")
    if inv is None or inv.outputs[0].type != var.type:
        return None
    if inv.kind == "Div" and (inv.inputs[1] is not op.outputs[0] or _scalar(inv.inputs[0]) != 1.0):
        return None
    return eps, [add, op, inv]


def _variance(u: _Uses, mean_op: Op, x: Value, axis: int) -> tuple[list[Op], Value] | None:
    """The variance of x beside its mean ``mean_op``: ReduceMean((x - mean)^2), or
    ReduceMean(x^2) - mean^2. Returns the ops and the mean's other reader they leave."""
    mean = mean_op.outputs[0]
    readers = u.users(mean)
    if not u.internal(mean) or len(readers) != 2:
        return None
    for op in readers:
        if op.kind == "Sub" and op.inputs == [x, mean] and op.outputs[0].type == x.type:
            d = op.outputs[0]
            sq = u.only(d)
            var_op = u.only(sq.outputs[0], "ReduceMean") if _square(sq, d) is not None else None
            if var_op is not None and _trailing(var_op) == axis:
                return [op, sq, var_op], var_op.outputs[0]
        elif _square(op, mean) is not None:
            m2 = op.outputs[0]
            sub = u.only(m2, "Sub")
            ex2 = sub.inputs[0].producer if sub is not None and sub.inputs[1] is m2 else None
            if ex2 is None or ex2.kind != "ReduceMean" or ex2.domain or _trailing(ex2) != axis:
                continue
            sq = ex2.inputs[0].producer
            if (
                _square(sq, x) is None
                or u.only(sq.outputs[0]) is not ex2
                or u.only(ex2.outputs[0]) is not sub
            ):
                continue
            if sub.outputs[0].type == mean.type:
                return [op, sq, ex2, sub], sub.outputs[0]
    return None


def layer_norm_folded(g: Graph, u: _Uses, mean_op: Op) -> Match | None:
    """The form with the scale folded into the inverse std (Keras LayerNormalization as
    tf2onnx writes it): s = gamma / sqrt(var + eps); y = x * s + (beta - mean * s), the
    variance as E[(x - mean)^2] or E[x^2] - mean^2; gamma and beta optional."""
    x = mean_op.inputs[0]
    axis = _trailing(mean_op)
    if axis is None or not x.dtype.is_float:
        return None
    found = _variance(u, mean_op, x, axis)
    if found is None:
        return None
    var_ops, var = found
    mean = mean_op.outputs[0]
    inv_found = _inverse_std(u, var)
    if inv_found is None:
        return None
    eps, inv_ops = inv_found
    s = inv_ops[-1].outputs[0]
    norm = tuple(x.shape[axis:])
    params: dict[str, tuple[Value, tuple]] = {}
    scale_ops: list[Op] = []
    users = u.users(s)
    if len(users) == 1 and users[0].kind == "Mul" and not users[0].domain:  # s = inv * gamma
        gamma = _other(users[0], s)
        shape = _param_shape(gamma, norm, x.dtype) if gamma is not None and gamma is not s else None
        if shape is None or not u.internal(s):
            return None
        params["Mul"] = (gamma, shape)
        scale_ops = [users[0]]
        s = users[0].outputs[0]
        users = u.users(s)
    if not u.internal(s) or len(users) != 2 or any(op.kind != "Mul" or op.domain for op in users):
        return None
    xm = next((op for op in users if _other(op, s) is x), None)
    mm = next((op for op in users if _other(op, s) is mean and op is not xm), None)
    if xm is None or mm is None or xm.outputs[0].type != x.type:
        return None
    m = mm.outputs[0]
    tail = u.only(m, "Sub")
    if tail is None:
        return None
    if tail.inputs == [xm.outputs[0], m]:  # no shift: x * s - mean * s
        if not u.internal(xm.outputs[0]) or u.only(xm.outputs[0]) is not tail:
            return None
        shift_ops = [tail]
    else:  # x * s + (beta - mean * s)
        beta = tail.inputs[0] if tail.inputs[1] is m else None
        shape = _param_shape(beta, norm, x.dtype) if beta is not None else None
        add = u.only(tail.outputs[0], "Add")
        if shape is None or add is None or _other(add, tail.outputs[0]) is not xm.outputs[0]:
            return None
        if u.only(xm.outputs[0]) is not add:
            return None
        params["Add"] = (beta, shape)
        shift_ops = [tail, add]
    if shift_ops[-1].outputs[0].type != x.type:
        return None
    matched = [mean_op, *var_ops, *inv_ops, *scale_ops, mm, xm, *shift_ops]
    matched.sort(key=lambda op: u.order[id(op)])
    last = shift_ops[-1]
    if matched[-1] is not last:
        return None
    return matched, lambda y: [_norm_op(g, "LayerNormalization", x, y, params, axis, eps, last.name)]


def rms_norm(g: Graph, u: _Uses, ms_op: Op) -> Match | None:
    """x / sqrt(ReduceMean(x^2) + eps) [* gamma] over the trailing dims from ``axis``."""
    p = ms_op.inputs[0]
    sq = p.producer
    x = _square(sq)
    axis = _trailing(ms_op)
    if x is None or axis is None or not x.dtype.is_float or p.type != x.type or u.only(p) is not ms_op:
        return None
    found = _normalize(u, ms_op.outputs[0], x)
    if found is None:
        return None
    eps, ops = found
    tail, params = _affine(u, ops[-1].outputs[0], axis, ("Mul",))
    matched = [sq, ms_op, *ops, *tail]
    return matched, lambda y: [_norm_op(g, "RMSNormalization", x, y, params, axis, eps, matched[-1].name)]


def _exp_of_shifted(sum_op: Op) -> tuple[tuple[int, int], Op, Value, list[Op]] | None:
    """For ReduceSum(Exp(b)) over a contiguous block of axes: the block, the Exp, the softmax
    input x and the ops before the Exp: b is x, or b = x - ReduceMax(x) over the same axes
    (the stable form; then [ReduceMax, Sub])."""
    block = _block(sum_op)
    exp = sum_op.inputs[0].producer
    if block is None or exp is None or exp.kind != "Exp" or exp.domain or not exp.inputs[0].dtype.is_float:
        return None
    b = exp.inputs[0]
    sub = b.producer
    mx = sub.inputs[1].producer if sub is not None and sub.kind == "Sub" and not sub.domain else None
    if (
        mx is not None and mx.kind == "ReduceMax" and mx.inputs[0] is sub.inputs[0]
        and _block(mx) is not None and mx.attrs["axes"] == sum_op.attrs["axes"]
        and b.type == sub.inputs[0].type
    ):  # fmt: skip
        return block, exp, sub.inputs[0], [mx, sub]
    return block, exp, b, []


def _shift_absorbed(u: _Uses, pre: list[Op], readers: set[int]) -> bool:
    """Whether the stabilizing ReduceMax and Sub ``pre`` are read by nothing but the pattern
    (``readers``: the ops that may read the shifted value)."""
    mx, sub = pre
    b = sub.outputs[0]
    return u.only(mx.outputs[0]) is sub and u.internal(b) and {id(op) for op in u.users(b)} == readers


def _softmax_ops(g: Graph, kind: str, x: Value, y: Value, block: tuple[int, int], name: str) -> list[Op]:
    """``kind`` (Softmax / LogSoftmax) of x over the contiguous dims ``block``: one axis
    directly, several merged into one by Reshape views around it."""
    a, b = block
    if a == b:
        return [Op(kind, [x], [y], {"axis": a}, name=name)]
    shape = (*x.shape[:a], math.prod(x.shape[a : b + 1]), *x.shape[b + 1 :])
    flat = TensorType(x.dtype, shape)
    x2 = g.make_op("Reshape", [x], [flat], name=name, out_names=[f"{y.name}.in"])
    op = g.make_op(kind, x2.outputs, [flat], {"axis": a}, name=name, out_names=[f"{y.name}.flat"])
    return [x2, op, Op("Reshape", op.outputs, [y], name=name)]


def softmax(g: Graph, u: _Uses, sum_op: Op) -> Match | None:
    """Exp(b) / ReduceSum(Exp(b)), b = x or x - ReduceMax(x)."""
    found = _exp_of_shifted(sum_op)
    if found is None:
        return None
    block, exp, x, pre = found
    e, s = exp.outputs[0], sum_op.outputs[0]
    div = _divide(u, e, s)
    if div is None or not u.internal(e) or {id(op) for op in u.users(e)} != {id(sum_op), id(div[-1])}:
        return None
    if pre and not _shift_absorbed(u, pre, {id(exp)}):
        x, pre = exp.inputs[0], []  # the shifted value is needed anyway: softmax of it
    matched = [*pre, exp, sum_op, *div]
    return matched, lambda y: _softmax_ops(g, "Softmax", x, y, block, matched[-1].name)


def log_softmax(g: Graph, u: _Uses, sum_op: Op) -> Match | None:
    """b - Log(ReduceSum(Exp(b))), b = x or x - ReduceMax(x)."""
    found = _exp_of_shifted(sum_op)
    if found is None:
        return None
    block, exp, x, pre = found
    b, s = exp.inputs[0], sum_op.outputs[0]
    log = u.only(s, "Log")
    sub = u.only(log.outputs[0], "Sub") if log is not None else None
    if sub is None or sub.inputs != [b, log.outputs[0]] or sub.outputs[0].type != b.type:
        return None
    if u.only(exp.outputs[0]) is not sum_op:
        return None
    if pre and not _shift_absorbed(u, pre, {id(exp), id(sub)}):
        x, pre = b, []
    matched = [*pre, exp, sum_op, log, sub]
    return matched, lambda y: _softmax_ops(g, "LogSoftmax", x, y, block, matched[-1].name)


# -- rotary position embedding as transformers writes it ----------------------------------------
def _half_slice(op: Op | None, x: Value, start: int, h: int) -> bool:
    """Whether ``op`` is a unit-step Slice of x's last axis [start, start + h), whole elsewhere."""
    if op is None or op.kind != "Slice" or op.domain or op.inputs[0] is not x:
        return False
    r = x.type.rank
    starts, steps = list(op.attrs.get("starts", ())), list(op.attrs.get("steps", ()))
    want = (*x.shape[:-1], h)
    return starts == [0] * (r - 1) + [start] and steps == [1] * r and tuple(op.outputs[0].shape) == want


def _rotate_half(u: _Uses, rot: Value) -> tuple[Value, list[Op]] | None:
    """x for rot = Concat(-x[..., h:], x[..., :h]) over the last axis; the ops, or None."""
    cat = rot.producer
    if cat is None or cat.kind != "Concat" or cat.domain or len(cat.inputs) != 2:
        return None
    r = rot.type.rank
    if cat.attrs.get("axis") not in (r - 1, -1) or u.only(rot) is None:
        return None
    neg, lo = cat.inputs[0].producer, cat.inputs[1].producer
    if neg is None or neg.kind != "Neg" or neg.domain or lo is None or u.only(neg.outputs[0]) is not cat:
        return None
    hi = neg.inputs[0].producer
    x = lo.inputs[0] if lo.kind == "Slice" else None
    if x is None or x.type != rot.type or not isinstance(x.shape[-1], int) or x.shape[-1] % 2:
        return None
    h = x.shape[-1] // 2
    if not (_half_slice(lo, x, 0, h) and _half_slice(hi, x, h, h)):
        return None
    if u.only(lo.outputs[0]) is not cat or u.only(hi.outputs[0]) is not neg:
        return None
    return x, [lo, hi, neg, cat]


def _squeezed(shape: tuple) -> tuple:
    return tuple(d for d in shape if d != 1)


def _cache_half(g: Graph, v: Value, rows: tuple, trig: str) -> tuple[Value, list[Op]] | None:
    """The first half of a cos or sin table ``v`` that broadcasts against x [B, H, S, D] as
    [b, 1, S, D] (or against a 3-D x [B, S, D] as [b, S, D]), b 1 or B, as a [b, S, D/2] cache,
    when its halves are equal by construction: a constant whose halves are equal, or Reshape /
    Cast / Mul-by-a-scalar of ``trig``(Concat(f, f)) over the last axis; then the cache is
    trig(f) with the same scale and cast. ``rows`` is (x's rank, B, S). Returns the cache and
    the ops that compute it, or None."""
    rank, B, S = rows
    D = v.shape[-1]
    h = D // 2
    if v.type.rank > rank:
        return None
    full = (1,) * (rank - v.type.rank) + tuple(v.shape)
    if rank == 4 and full[1] != 1:
        return None
    shape = (full[0], full[-2], D)
    if shape[1] != S or shape[0] not in (1, B):
        return None
    if v.is_const:
        data = v.data.reshape(shape)
        if not np.array_equal(data[..., :h], data[..., h:]):
            return None
        half = np.ascontiguousarray(data[..., :h])
        return g.const(half, f"{v.name}.half", dtype=v.dtype), []
    steps: list[Op] = []  # from v back to the trig op: Reshapes (unit dims only), Casts, one Mul
    w = v
    while True:
        op = w.producer
        if op is None or op.domain:
            return None
        if (
            op.kind == "Reshape"
            and op.inputs[0].shape[-1] == D
            and _squeezed(op.inputs[0].shape) == _squeezed(w.shape)
        ):
            w = op.inputs[0]
        elif op.kind == "Cast" and op.inputs[0].dtype.is_float and w.dtype.is_float:
            steps.append(op)
            w = op.inputs[0]
        elif op.kind == "Mul" and not any(s.kind == "Mul" for s in steps):
            scale = next((s for s in op.inputs if _scalar(s) is not None), None)
            other = _other(op, scale) if scale is not None else None
            if other is None or other is scale or other.type != w.type:
                return None
            steps.append(op)
            w = other
        else:
            break
    trig_op = w.producer
    cat = trig_op.inputs[0].producer if trig_op is not None and trig_op.kind == trig else None
    if cat is None or cat.kind != "Concat" or cat.domain or len(cat.inputs) != 2:
        return None
    f = cat.inputs[0]
    last = (f.type.rank - 1, -1)
    if cat.inputs[1] is not f or cat.attrs.get("axis") not in last or f.shape[-1] != h:
        return None
    if _squeezed(f.shape[:-1]) != _squeezed(shape[:2]):
        return None
    new: list[Op] = []
    out = [f"{v.name}.half"]
    cur = f
    for op in [trig_op, *reversed(steps)]:
        if op.kind == "Mul":
            scale = next(s for s in op.inputs if _scalar(s) is not None)
            scale = g.const(np.array(_scalar(scale)), f"{scale.name}.s", dtype=scale.dtype)
            ins, t = [cur, scale], cur.type
        else:
            ins, t = [cur], TensorType(op.outputs[0].dtype, cur.shape)
        new.append(g.make_op(op.kind, ins, [t], dict(op.attrs), name=op.name, out_names=out))
        cur = new[-1].outputs[0]
    if tuple(cur.shape) != (*shape[:2], h):
        t = TensorType(cur.dtype, (*shape[:2], h))
        new.append(g.make_op("Reshape", [cur], [t], name=trig_op.name, out_names=out))
    return new[-1].outputs[0], new


def _pass_through(u: _Uses, x: Value, y: Value, readers: set[int]) -> tuple[Value, list[Op]] | None:
    """Partial rotary: x = q[..., :R] (read only by the rotation's ``readers``) and the rotated
    y is read only by Concat(y, q[..., R:]) over the last axis. Returns q and those three ops."""
    xs = x.producer
    q = xs.inputs[0] if xs is not None and xs.kind == "Slice" and not xs.domain else None
    cat = u.only(y, "Concat")
    if q is None or cat is None or len(cat.inputs) != 2 or cat.inputs[0] is not y:
        return None
    R, Dq = x.shape[-1], q.shape[-1]
    if not isinstance(Dq, int) or cat.attrs.get("axis") not in (q.type.rank - 1, -1) or Dq <= R:
        return None
    ps = cat.inputs[1].producer
    if not (_half_slice(xs, q, 0, R) and _half_slice(ps, q, R, Dq - R)) or cat.outputs[0].type != q.type:
        return None
    if not u.internal(x) or {id(op) for op in u.users(x)} != readers or u.only(ps.outputs[0]) is not cat:
        return None
    return q, [xs, ps, cat]


def _head_split(x: Value) -> Value | None:
    """t for x = Transpose(Reshape(t [B, S, H * D]) [B, S, H, D], (0, 2, 1, 3)): the heads
    split off rows of a stored [B, S, H * D] tensor, the layout attention's projections write."""
    tr = x.producer
    if tr is None or tr.kind != "Transpose" or tr.domain or list(tr.attrs.get("perm", ())) != [0, 2, 1, 3]:
        return None
    rs = tr.inputs[0].producer
    if rs is None or rs.kind != "Reshape" or rs.domain:
        return None
    t, (B, S, H, D) = rs.inputs[0], rs.outputs[0].shape
    return t if t.type.rank == 3 and tuple(t.shape) == (B, S, H * D) else None


def _rotary_ops(
    g: Graph, new: list[Op], ins: list, attrs: dict, name: str, rows: Value | None
) -> Callable[[Value], list[Op]]:
    """The ops computing y: RotaryEmbedding of ins[0] or, with ``rows`` ([B, S, H * D] that
    ins[0] splits into heads), of rows, its heads split the same way after, so that attention
    reads the rotated rows where they are stored."""

    def build(y: Value) -> list[Op]:
        if rows is None:
            return [*new, Op("RotaryEmbedding", ins, [y], attrs, name=name)]
        B, H, S, D = y.shape
        rot = g.make_op(
            "RotaryEmbedding", [rows, *ins[1:]], [rows.type], attrs, name=name, out_names=[f"{y.name}.rows"]
        )
        split = TensorType(y.dtype, (B, S, H, D))
        rs = g.make_op("Reshape", rot.outputs, [split], name=name, out_names=[f"{y.name}.heads"])
        return [*new, rot, rs, Op("Transpose", rs.outputs, [y], {"perm": [0, 2, 1, 3]}, name=name)]

    return build


def rotary(g: Graph, u: _Uses, add: Op) -> Match | None:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = Concat(-x[..., D/2:], x[..., :D/2]),
    over x [B, H, S, D] or [B, S, D] with cos and sin [B or 1, 1, S, D] or [B or 1, S, D] whose
    halves are equal (see ``_cache_half``): RotaryEmbedding with [B or 1, S, D/2] caches (one
    batch row serves all). Either operand order. When x is q[..., :R] and the result is
    concatenated with q[..., R:] (partial rotary), the RotaryEmbedding is of q with
    rotary_embedding_dim R and replaces the Slices and the Concat too."""
    y = add.outputs[0]
    if len(add.inputs) != 2 or y.type.rank not in (3, 4) or not y.dtype.is_float:
        return None
    muls = [v.producer for v in add.inputs]
    if (
        any(m is None or m.kind != "Mul" or m.domain or len(m.inputs) != 2 for m in muls)
        or muls[0] is muls[1]
    ):
        return None
    for m_cos, m_sin in (muls, muls[::-1]):
        for rot in m_sin.inputs:
            found = _rotate_half(u, rot)
            if found is None:
                continue
            x, ops = found
            sin = _other(m_sin, rot)
            cos = _other(m_cos, x)
            if sin is None or cos is None or sin is rot or cos is x or x.type != y.type:
                continue
            if m_cos.outputs[0].type != y.type or m_sin.outputs[0].type != y.type:
                continue
            if u.only(m_cos.outputs[0]) is not add or u.only(m_sin.outputs[0]) is not add:
                continue
            if cos.dtype != x.dtype or sin.dtype != x.dtype:
                continue
            rank, B, S = x.type.rank, x.shape[0], x.shape[-2]
            heads = x.shape[1] if rank == 4 else 1
            if not all(isinstance(d, int) for d in (heads, x.shape[-1])):
                continue
            matched = [*ops, m_cos, m_sin, add]
            part = _pass_through(u, x, y, {id(m_cos), id(ops[0]), id(ops[1])})
            if part is not None:
                x, more = part
                matched += more
            matched.sort(key=lambda op: u.order[id(op)])
            at = u.order[id(matched[-1])]  # where the new ops go
            new: list[Op] = []
            caches, made = [], {}
            for t, trig in ((cos, "Cos"), (sin, "Sin")):
                key = (id(t), rank)
                val, pos = u.caches.get(key, (None, None))
                if val is None or pos >= at or val.shape[0] not in (1, B) or val.shape[1] != S:
                    half = _cache_half(g, t, (rank, B, S), trig)
                    if half is None:
                        break
                    val, ops_t = half
                    new += ops_t
                    made.setdefault(key, (val, at))
                caches.append(val)
            if len(caches) != 2:
                continue
            for key, entry in made.items():  # made where first used; later matches read it
                u.caches.setdefault(key, entry)
            c, s = caches
            attrs = {"interleaved": 0, "num_heads": heads, "rotary_dim": 2 * c.shape[-1]}
            rows = _head_split(x) if rank == 4 else None
            return matched, _rotary_ops(g, new, [x, c, s, None], attrs, matched[-1].name, rows)
    return None


# The op each pattern is anchored at (its reduction, or RoPE's final Add), and the patterns to
# try there, in order.
PATTERNS: dict[str, tuple[Callable[[Graph, _Uses, Op], Match | None], ...]] = {
    "ReduceMean": (layer_norm, layer_norm_folded, rms_norm),
    "ReduceSum": (softmax, log_softmax),
    "Add": (rotary,),
}


class FusePatterns(Pass):
    """Replace decomposed LayerNorm (ReduceMean, Sub, Pow or Mul, ReduceMean, Add eps, Sqrt,
    Div or Reciprocal and Mul, optional constant scale and shift; or the Keras form with the
    scale folded into the inverse std, x * s + (beta - mean * s)), RMSNorm (the same without
    the mean) and Softmax / LogSoftmax (Exp, ReduceSum, Div / Log and Sub, with or without the
    stabilizing ReduceMax and Sub) by LayerNormalization, RMSNormalization, Softmax and
    LogSoftmax; and x * cos + rotate_half(x) * sin (transformers' RoPE, also partial) by
    RotaryEmbedding when cos and sin repeat their halves by construction. Matches only when
    no intermediate has a use (or is a graph output) outside the pattern, the reductions keep dims over trailing (normalizations) or contiguous (softmax)
    axes, and eps, scale and shift are constants that do not vary across rows."""

    name = "fuse-patterns"

    def run(self, g: Graph) -> PassResult:
        u = _Uses(g)
        # each match's last op gives way to the new ops, the others leave: the list is rebuilt once
        put: dict[int, list[Op]] = {}
        gone: set[int] = set()
        for op in g.ops:
            if not op.outputs or op.outputs[0].producer is not op or id(op) in u.dead or op.domain:
                continue  # already rewritten away, or dead
            for pattern in PATTERNS.get(op.kind, ()):
                match = pattern(g, u, op)
                if match is not None:
                    self._replace(u, *match, put, gone)
                    break
        if put:
            g.ops = [new for op in g.ops if id(op) not in gone for new in put.get(id(op), [op])]
        return PassResult(g, bool(put))

    @staticmethod
    def _replace(
        u: _Uses, ops: list[Op], build: Callable[[Value], list[Op]], put: dict[int, list[Op]], gone: set[int]
    ) -> None:
        last = ops[-1]
        y = last.outputs[0]
        last.detach()  # y keeps its name and type; the new ops compute it
        put[id(last)] = build(y)
        for op in reversed(ops[:-1]):
            if any(v.uses or id(v) in u.outputs for v in op.outputs):
                u.dead[id(op)] = op  # read only by dead code now; dead-code elimination drops it
            else:
                op.detach()
                gone.add(id(op))

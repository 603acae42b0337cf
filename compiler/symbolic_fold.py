"""Shape arithmetic over dims kept symbolic, folded at compile time.

A dim kept symbolic (``--dim seq=1..128``) makes ``Shape`` of a tensor a *symbolic shape
value*: a constant whose data is a numpy object array of ints and ``ir.symbolic.Expr``
(int64 in the IR). The ops exporters build shapes with (Gather, Slice, Concat, Unsqueeze,
Cast, Add, Mul, Div, Equal, Where, ...) fold over such values here, as host_eval folds plain
constants; comparisons are decided by the dims' ranges or fail naming the node. A result
whose elements are all ints becomes an ordinary constant again. Such values never reach the
GPU: an op that would read one as data raises (later stages will feed dims as uniforms).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from onnx2wgsl.errors import CompileError, UnsupportedError
from onnx2wgsl.ir import DType, TensorType, Value
from onnx2wgsl.ir.symbolic import Expr, SymbolicError, _atom_key, compare, simplify, smax, smin, tdiv
from onnx2wgsl.ir.symbolic import mod as smod

from .host_eval import axes_input


def is_symbolic(v: Value | None) -> bool:
    """A value whose data holds symbolic dims (an object array that is no string tensor)."""
    return v is not None and v.is_const and v.data.dtype == object and v.dtype != DType.string


def symbols_of(data: np.ndarray) -> list[str]:
    names: set[str] = set()
    for x in data.reshape(-1):
        if isinstance(x, Expr):
            names |= {s.name for s in x.symbols}
    return sorted(names)


def make_value(data: np.ndarray, name: str, dtype: DType = DType.i64) -> Value | np.ndarray:
    """A symbolic value of ``data`` (elements simplified), or the plain array if all are ints."""
    flat = [simplify(x) for x in data.reshape(-1)]
    if all(isinstance(x, int | np.integer | bool | np.bool_) for x in flat):
        return np.array(flat, dtype=dtype.numpy).reshape(data.shape)
    arr = np.empty(len(flat), dtype=object)
    arr[:] = flat
    return Value(name, TensorType(dtype, data.shape), data=arr.reshape(data.shape))


def shape_data(shape, start: int = 0, end: int | None = None) -> np.ndarray:
    dims = list(shape)[slice(*_norm_range(start, end, len(shape)))]
    arr = np.empty(len(dims), dtype=object)
    arr[:] = dims
    return arr


def _norm_range(start, end, rank):
    end = rank if end is None else end
    return tuple(min(max(i + rank if i < 0 else i, 0), rank) for i in (start, end))


def numel(shape) -> int | Expr:
    return simplify(math.prod((Expr.const(0) + d for d in shape), start=Expr.const(1)))


def broadcast(*shapes) -> tuple:
    """Multidirectional broadcasting of shapes with symbolic dims; a pair the ranges cannot
    decide (``seq`` against 5) raises SymbolicError."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        d: Any = 1
        for x in dims:
            if d == 1 or x == d:
                d = x
            elif x != 1:
                raise SymbolicError(f"cannot broadcast dim {x} with {d}: their ranges do not say they agree")
        out.append(simplify(d) if isinstance(d, Expr) else d)
    return tuple(out)


def _decide(a, b) -> int:
    c = compare(a, b)
    if c is None:
        raise SymbolicError(f"cannot compare {a} with {b}: it depends on the dims' values")
    return c


_CMP = {
    "Equal": lambda c: c == 0, "Less": lambda c: c < 0, "Greater": lambda c: c > 0,
    "LessOrEqual": lambda c: c <= 0, "GreaterOrEqual": lambda c: c >= 0,
}  # fmt: skip
_ARITH = {
    "Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
    "Div": lambda a, b: tdiv(a, b), "Mod": lambda a, b: smod(a, b),
    "Max": smax, "Min": smin,
}  # fmt: skip


def _elementwise(f, *arrays) -> np.ndarray:
    arrays = [np.asarray(a, dtype=object) for a in arrays]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    flat = [np.broadcast_to(a, shape).reshape(-1) for a in arrays]
    out = np.empty(len(flat[0]) if flat else 0, dtype=object)
    out[:] = [simplify(f(*(int(x) if isinstance(x, np.integer) else x for x in xs))) for xs in zip(*flat)]
    return out.reshape(shape)


def _slice(attrs, x, opset):
    data = x[0]
    if opset >= 10:
        starts, ends = (list(np.asarray(a).reshape(-1)) for a in x[1:3])
        axes = list(np.asarray(x[3]).reshape(-1)) if len(x) > 3 and x[3] is not None else range(len(starts))
        steps = list(np.asarray(x[4]).reshape(-1)) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    else:
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes", range(len(starts))), [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if any(isinstance(v, Expr) for v in (s, e, st)):
            raise SymbolicError("slice bounds that depend on the dims' values")
        index[int(a)] = slice(int(s), int(e), int(st))
    return data[tuple(index)]


def _reshape_shape(x_shape, target, allowzero: bool = False) -> tuple:
    """Reshape's target with 0 (copy the input's dim) and -1 (the rest) resolved."""
    out = [x_shape[i] if (not allowzero and isinstance(d, int | np.integer) and d == 0) else d
           for i, d in enumerate(target)]  # fmt: skip
    out = [int(d) if isinstance(d, np.integer) else d for d in out]
    holes = [i for i, d in enumerate(out) if isinstance(d, int) and d == -1]
    if len(holes) > 1:
        raise SymbolicError("a reshape target with more than one -1")
    if holes:
        rest = numel([d for i, d in enumerate(out) if i != holes[0]])
        total = numel(x_shape)
        q = _exact_div(Expr.const(0) + total, Expr.const(0) + rest)
        if q is None or q * rest != Expr.const(0) + total:
            raise SymbolicError(f"cannot divide {total} elements into rows of {rest} for its -1")
        out[holes[0]] = simplify(q)
    return tuple(simplify(d) if isinstance(d, Expr) else d for d in out)


def slice_extent(n: Expr, start: int, end: int, step: int) -> tuple:
    """ONNX Slice at int bounds and a positive step on a dim kept symbolic: the first index
    (see slice_start) and the count (clamps become min and max of expressions; at a run whose
    count is 0 the first index is never read)."""
    if step <= 0:
        raise SymbolicError(f"a slice with step {step} of a dim kept symbolic")
    end = end + n if end < 0 else end
    first, end = slice_start(n, start), smin(smax(end, 0), n)
    return first, simplify(Expr.const(0) + smax((end - first + step - 1) // step, 0))


def slice_start(n: Expr, start: int):
    """The first index of a slice at ``start`` (negative counts from the end) of a dim kept
    symbolic, clamped into it. (A Slice op keeps the int start on such an axis, as IR
    attributes are ints; its lowering takes the first index from here.)"""
    return simplify(Expr.const(0) + smin(smax(start + n if start < 0 else start, 0), n))


def slice_index(i, n):
    """A Slice start or end (negative counts from the end) clamped into ``[0, n]``, where its
    sign is decided by the dims' ranges."""
    if not isinstance(i, Expr) and int(i) >= 0:
        return smin(int(i), n)
    if not isinstance(i, Expr):
        return smax(n + int(i), 0)
    sign = compare(i, 0)
    if sign is None:
        raise SymbolicError(f"a slice bound {i} whose sign depends on the dims' values")
    return smin(i, n) if sign >= 0 else smax(n + i, 0)


def slice_symbolic_start(n, start, end) -> tuple:
    """ONNX Slice with unit step and a start that depends on the dims (``x[:, :, -seq:]``, as
    T5's relative position bias is sliced): the first index, clamped, and the count. The
    start's sign must be decided by the ranges."""
    first = simplify(Expr.const(0) + slice_index(start, n))
    last = slice_index(end, n)
    return first, simplify(Expr.const(0) + smax(Expr.const(0) + last - first, 0))


def slice_type(x: TensorType, params: list[Value | None]) -> TensorType:
    """The type of a Slice (opset >= 10) of ``x`` whose ends may be symbolic (``x[:, :seq]``):
    unit steps and int starts only, except on static axes, which slice any way."""
    starts, ends, axes, steps = (
        [None if v is None else list(v.data.reshape(-1)) for v in params] + [None] * 4
    )[:4]
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    shape = list(x.shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = int(a) + (x.rank if int(a) < 0 else 0)
        if not any(isinstance(v, Expr) for v in (shape[a], s, e, st)) and int(st) != 0:
            # a static axis of a tensor with other dims kept symbolic: any slice of it
            shape[a] = len(range(*slice(int(s), int(e), int(st)).indices(shape[a])))
            continue
        if not isinstance(e, Expr) and not isinstance(s, Expr) and not isinstance(st, Expr) and int(st) > 0:
            # a symbolic axis at int bounds (x[:, -1:], x[:, 1::2]): min and max clamps
            shape[a] = slice_extent(shape[a], int(s), int(e), int(st))[1]
            continue
        if isinstance(s, Expr) and not isinstance(st, Expr) and int(st) == 1:
            shape[a] = slice_symbolic_start(shape[a], s, e)[1]
            continue
        if isinstance(s, Expr) or isinstance(st, Expr) or int(st) != 1 or int(s) < 0:
            raise SymbolicError("a slice with symbolic steps, or a negative start or step")
        n = shape[a]
        e = int(e) if not isinstance(e, Expr) else e
        if isinstance(e, int) and e < 0:
            e = n + e
        shape[a] = simplify(Expr.const(0) + smax(Expr.const(0) + smin(e, n) - int(s), 0))
    return TensorType(x.dtype, tuple(simplify(d) if isinstance(d, Expr) else d for d in shape))


def _exact_div(a: Expr, b: Expr) -> Expr | None:
    """``a / b`` when ``b`` is one term dividing every term of ``a`` (1600*batch / 400*batch),
    or a sum that ``a`` is a one-term multiple of (768*n + 768 over 64*n + 64, as a reshape of
    heads over a length derived by a conv stack divides)."""
    if len(b.terms) != 1:
        for term in a.terms:  # a candidate quotient from each term of a over b's first term
            q = _exact_div(
                Expr({}) + Expr({term[0]: term[1]}), Expr({}) + Expr({b.terms[0][0]: b.terms[0][1]})
            )
            if q is not None and q * b == a:
                return q
        return None
    mb, cb = b.terms[0]
    if not mb:
        return a // cb if cb > 0 else None
    out: dict = {}
    for m, c in a.terms:
        powers = dict(m)
        for atom, p in mb:
            if powers.get(atom, 0) < p:
                return None
            powers[atom] -= p
        if c % cb:
            return None
        key = tuple(sorted(((x, p) for x, p in powers.items() if p), key=lambda ap: _atom_key(ap[0])))
        out[key] = out.get(key, 0) + c // cb
    return Expr({}) + sum((Expr({k: c}) for k, c in out.items()), Expr.const(0))


def _unsqueeze(attrs, x, opset):
    axes = axes_input(attrs, x, opset, 13)
    rank = x[0].ndim + len(axes)
    out = x[0]
    for a in sorted(a + rank if a < 0 else a for a in axes):
        out = np.expand_dims(out, a)
    return out


def _squeeze(attrs, x, opset):
    axes = axes_input(attrs, x, opset, 13)
    if axes is None:
        return x[0].reshape([d for d in x[0].shape if d != 1])
    return np.squeeze(x[0], axis=tuple(a + x[0].ndim if a < 0 else a for a in axes))


def _gather(attrs, x, opset):
    idx = np.asarray(x[1])
    if idx.dtype == object:
        raise SymbolicError("gather indices that depend on the dims' values")
    axis = int(attrs.get("axis", 0))
    n = x[0].shape[axis]
    return np.take(x[0], np.where(idx < 0, idx + n, idx), axis=axis)


def _where(attrs, x, opset):
    cond = np.asarray(x[0])
    if cond.dtype == object:
        raise SymbolicError("a Where condition that depends on the dims' values")
    return _elementwise(lambda c, a, b: a if c else b, cond, x[1], x[2])


def _reduce_prod(attrs, x, opset):
    axes = axes_input(attrs, x, opset, 18)
    if x[0].ndim != 1 or axes not in (None, [0], [-1]):
        raise SymbolicError("ReduceProd other than over a 1-D shape vector")
    out = np.empty(1, dtype=object)
    out[0] = numel(list(x[0]))
    return out.reshape(()) if not attrs.get("keepdims", 1) else out


def _cast(attrs, x, opset):
    to = DType.from_onnx(attrs["to"])
    if not (to.is_int or to == DType.bool):
        raise SymbolicError(f"a cast of symbolic dims to {to.name}")
    if to == DType.bool:
        return _elementwise(lambda a: _decide(a, 0) != 0, x[0])
    return x[0]


_FOLD = {
    "Identity": lambda at, x, o: x[0],
    "Gather": _gather,
    "Slice": _slice,
    "Concat": lambda at, x, o: np.concatenate([np.asarray(a, dtype=object) for a in x], axis=int(at["axis"])),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": lambda at, x, o: x[0].reshape(_reshape_shape(x[0].shape, [int(d) for d in x[1]], at.get("allowzero", 0))),
    "Flatten": lambda at, x, o: x[0].reshape(-1) if x[0].ndim <= 1 else None,
    "Cast": _cast,
    "Neg": lambda at, x, o: _elementwise(lambda a: -a, x[0]),
    "Abs": lambda at, x, o: _elementwise(lambda a: a if _decide(a, 0) >= 0 else -a, x[0]),
    "Where": _where,
    "ReduceProd": _reduce_prod,
    "Expand": lambda at, x, o: np.broadcast_to(
        np.asarray(x[0], dtype=object), broadcast(x[0].shape, tuple(int(d) for d in x[1]))
    ).copy(),
    "Not": lambda at, x, o: np.logical_not(x[0]),
}  # fmt: skip
_OUT_DTYPE = {**dict.fromkeys(_CMP, DType.bool), "Not": DType.bool}


def folds(op: str) -> bool:
    """Whether shape arithmetic folds ``op`` over symbolic values (else the GPU computes it)."""
    return op in _ARITH or op in _CMP or op in _FOLD


def evaluate(node, attrs: dict, inputs: list[Value | None], opset: int) -> list[Value | np.ndarray] | None:
    """Fold ``node`` over inputs some of which are symbolic values; each result is a symbolic
    Value or, when its elements are all ints, a plain array. None when the dims' ranges do not
    decide the result (a comparison, a cast to float): the GPU computes it at run time."""
    op = node.op_type
    datas = [None if v is None else v.data for v in inputs]
    first = next(v for v in inputs if v is not None)
    dtype = _OUT_DTYPE.get(op, DType.from_onnx(attrs["to"]) if op == "Cast" else first.dtype)
    try:
        if op in _ARITH:
            out = _elementwise(_ARITH[op], *datas)
        elif op in _CMP:
            out = _elementwise(lambda a, b: _CMP[op](_decide(a, b)), *datas)
        elif op in _FOLD:
            out = _FOLD[op](attrs, datas, opset)
            if out is None:
                raise SymbolicError(f"{op} of this form")
        else:
            raise AssertionError(
                f"{op} does not fold (folds() is False); the frontend computes it on the GPU"
            )
    except SymbolicError:
        return None  # not decided at compile time: the GPU computes it from the run's dims
    out = np.asarray(out, dtype=object)
    return [make_value(out, node.output[0], dtype)]


def runtime_use_error(info, v: Value) -> CompileError:
    """An op that reads a symbolic value as tensor data (not as a shape)."""
    names = ", ".join(symbols_of(v.data))
    return info.error(
        f"its input {v.name!r} depends on symbolic dim{'s' if ',' in names else ''} {names} at run "
        "time; not supported yet",
        hint="bind the dims with --dim NAME=N",
        cls=UnsupportedError,
    )

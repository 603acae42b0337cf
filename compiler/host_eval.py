"""Evaluate ONNX nodes on the host with numpy, for folding constants at compile time.

Shape math (Shape, Gather, Unsqueeze, Concat, ...) is most of what models fold, so those ops
have direct numpy paths; every other op is evaluated by onnx's reference implementation at
the model's own opset, which keeps each op's per-version semantics exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx2wgsl.errors import CompileError

# Ops whose result is not a function of their inputs: never folded.
NONDETERMINISTIC = {
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli",
}  # fmt: skip

# The most bytes one tensor folded on the host may take unless the compile raises it
# (fold_limit=, --fold-limit): a model of a hundred bytes can ask for an enormous constant
# (ConstantOfShape([100000, 100000])), and its size is checked before anything is allocated.
FOLD_LIMIT = 1 << 30


def check_fold_size(shape, itemsize: int, limit: int, what: str, **where) -> None:
    """A clear error when a tensor folded on the host would take more than ``limit`` bytes."""
    n = 1
    for d in shape:
        n *= int(d)
    if n * itemsize > limit:
        raise CompileError(
            f"folding it on the host would make {what} of shape {list(shape)} ({n * itemsize:,} bytes), "
            f"over the fold limit of {limit:,} bytes",
            hint="raise the limit with --fold-limit BYTES (Python: fold_limit=) if the model really "
            "holds such a constant",
            **where,
        )


FastPath = Callable[[dict[str, Any], list, int], list]
_FAST: dict[str, FastPath] = {}


def _fast(*names: str):
    def register(fn: FastPath) -> FastPath:
        for n in names:
            _FAST[n] = fn
        return fn

    return register


def axes_input(attrs, inputs, opset, since):
    """An op's axes: its second input from opset ``since``, its attribute before."""
    if opset >= since:
        return (
            None
            if len(inputs) < 2 or inputs[1] is None
            else [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
        )
    return attrs.get("axes")


@_fast("Identity")
def _identity(attrs, x, opset):
    return [x[0]]


@_fast("Shape")
def _shape(attrs, x, opset):
    shape = np.array(x[0].shape, dtype=np.int64)
    return [shape[attrs.get("start", 0) : attrs.get("end", None)]]


@_fast("Size")
def _size(attrs, x, opset):
    return [np.array(x[0].size, dtype=np.int64)]


class FoldError(Exception):
    """A fast path's inputs break the op's rules; ``evaluate`` turns it into a CompileError."""


@_fast("Gather")
def _gather(attrs, x, opset):
    data, idx = x
    axis = attrs.get("axis", 0)
    if not -data.ndim <= axis < data.ndim:
        raise FoldError(f"axis {axis} is out of range for data of rank {data.ndim}")
    n = data.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx.min() if idx.min() < -n else idx.max()
        raise FoldError(f"index {int(bad)} is out of range for axis {axis} of size {n}")
    idx = np.where(idx < 0, idx + n, idx)
    return [np.take(data, idx, axis=axis)]


@_fast("Unsqueeze")
def _unsqueeze(attrs, x, opset):
    axes = axes_input(attrs, x, opset, 13)
    rank = x[0].ndim + len(axes)
    out = x[0]
    for a in sorted(a % rank for a in axes):
        out = np.expand_dims(out, a)
    return [out]


@_fast("Squeeze")
def _squeeze(attrs, x, opset):
    axes = axes_input(attrs, x, opset, 13)
    if axes is None:
        return [np.squeeze(x[0])]
    return [np.squeeze(x[0], axis=tuple(a % x[0].ndim for a in axes))]


@_fast("Concat")
def _concat(attrs, x, opset):
    parts = [a for a in x if a is not None]
    axis = attrs["axis"]
    rank = parts[0].ndim
    if not -rank <= axis < max(rank, 1) or any(a.ndim != rank for a in parts):
        raise FoldError(f"cannot concatenate shapes {[list(a.shape) for a in parts]} along axis {axis}")
    axis %= max(rank, 1)
    if any(
        a.shape[:axis] + a.shape[axis + 1 :] != parts[0].shape[:axis] + parts[0].shape[axis + 1 :]
        for a in parts
    ):
        raise FoldError(
            f"cannot concatenate shapes {[list(a.shape) for a in parts]} along axis {axis}: "
            "the other dims differ"
        )
    return [np.concatenate(parts, axis=axis)]


@_fast("Cast")
def _cast(attrs, x, opset):
    to = helper.tensor_dtype_to_np_dtype(attrs["to"])
    if x[0].dtype.kind == "f" and np.dtype(to).kind in "iu":
        return None  # float -> int rounding and overflow rules: leave to the reference
    return [x[0].astype(to)]


@_fast("Add", "Sub", "Mul")
def _arith(attrs, x, opset):
    a, b = x
    if a.dtype != b.dtype:
        return None
    op = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[attrs["__op"]]
    return [op(a, b).astype(a.dtype)]


@_fast("Equal")
def _equal(attrs, x, opset):
    return [np.equal(x[0], x[1])]


@_fast("Where")
def _where(attrs, x, opset):
    return [np.where(x[0], x[1], x[2])]


@_fast("ConstantOfShape")
def _constant_of_shape(attrs, x, opset):
    value = attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else value
    return [np.full(tuple(int(d) for d in x[0]), value.reshape(-1)[0], dtype=value.dtype)]


@_fast("Range")
def _range(attrs, x, opset):
    if any(a.size != 1 for a in x):
        raise FoldError(f"start, limit and delta must be scalars, not of shapes {[list(a.shape) for a in x]}")
    start, limit, delta = (a.item() for a in x)
    if delta == 0 or delta != delta:
        raise FoldError(f"delta is {delta}, so the range never reaches its limit")
    return [np.arange(start, limit, delta).astype(x[0].dtype)]


def evaluate(
    node: onnx.NodeProto,
    attrs: dict[str, Any],
    inputs: list[np.ndarray | None],
    opset_imports: dict[str, int],
) -> list[np.ndarray]:
    """Outputs of ``node`` on constant ``inputs`` (None = omitted optional input)."""
    domain = node.domain if node.domain != "ai.onnx" else ""
    opset = opset_imports.get(domain, 1)
    fast = _FAST.get(node.op_type) if domain == "" else None
    try:
        if fast is not None and all(v is not None for v in inputs[:1]):
            try:
                out = fast({**attrs, "__op": node.op_type}, inputs, opset)
            except FoldError as e:
                raise CompileError(
                    str(e),
                    node=node.name,
                    op=node.op_type,
                    opset=opset,
                    hint="its inputs are constants; fix them",
                ) from None
            except (ArithmeticError, IndexError, KeyError, TypeError, ValueError):
                out = None  # inputs the fast path does not handle: the reference says what is wrong
            if out is not None:
                return [np.asarray(o) for o in out]
        return _reference(node, inputs, opset_imports)
    except MemoryError as e:
        raise CompileError(
            "folding it on the host ran out of memory",
            node=node.name,
            op=node.op_type,
            opset=opset,
            hint="the model asks for an enormous constant; check the node's inputs",
        ) from e


def _reference(node, inputs, opset_imports) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    outs = [f"out{i}" if o else "" for i, o in enumerate(node.output)]
    n = onnx.NodeProto()
    n.CopyFrom(node)
    del n.input[:]
    n.input.extend(names)
    del n.output[:]
    n.output.extend(outs)
    graph = helper.make_graph(
        [n],
        "fold",
        [
            helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for nm, v in zip(names, inputs)
            if v is not None
        ],
        [helper.make_value_info(o, onnx.TypeProto()) for o in outs if o],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opset_imports.items())]
    )
    try:
        ev = ReferenceEvaluator(model)
        res = ev.run(None, {nm: v for nm, v in zip(names, inputs) if v is not None})
    except Exception as e:  # the reference raises many types; any of them means "cannot fold"
        raise CompileError(
            f"could not evaluate it at compile time ({type(e).__name__}: {e})",
            node=node.name,
            op=node.op_type,
            opset=opset_imports.get(node.domain or "", None),
            hint="all its inputs are constants, so it must fold; check the node's inputs",
        ) from e
    it = iter(res)
    return [np.asarray(next(it)) if o else None for o in outs]


def tensor_to_array(t: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(t)

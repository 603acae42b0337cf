"""Constant folding of IR ops whose inputs are all constants."""

from __future__ import annotations

import numpy as np

from onnx2wgsl.ir import Graph, Op

from ..elementwise_ops import TABLE, evaluate
from ..host_eval import FOLD_LIMIT, check_fold_size
from . import Pass, PassResult


def _transpose(op: Op, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, op.attrs["perm"])


def _concat(op: Op, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=op.attrs["axis"])


def _reshape(op: Op, x: np.ndarray) -> np.ndarray:
    return x.reshape(op.outputs[0].shape)


HOST = {"Transpose": _transpose, "Concat": _concat, "Reshape": _reshape}


class FoldConstants(Pass):
    """Evaluate on the host every op whose inputs are all constants and replace it by its result
    (none whose result would take more than ``fold_limit`` bytes)."""

    name = "fold-constants"

    def __init__(self, fold_limit: int | None = None):
        self.fold_limit = FOLD_LIMIT if fold_limit is None else fold_limit

    def run(self, g: Graph) -> PassResult:
        changed = False
        for op in list(g.ops):
            ins = [v for v in op.inputs if v is not None]
            if not ins or not all(v.is_const for v in ins) or len(op.outputs) != 1:
                continue
            y = op.outputs[0]
            if op.kind in HOST or op.kind in TABLE:
                check_fold_size(
                    y.shape, y.dtype.itemsize, self.fold_limit, f"%{y.name}", node=op.name, op=op.kind
                )
            if op.kind in HOST:
                data = HOST[op.kind](op, *(v.data for v in ins))
            elif op.kind in TABLE:
                data = evaluate(
                    op.kind, [None if v is None else v.data for v in op.inputs], op.attrs, y.dtype
                )
            else:
                continue
            data = np.asarray(data).astype(y.dtype.numpy).reshape(y.shape)
            g.replace_uses(y, g.const(data, f"{y.name}.folded", dtype=y.dtype))
            g.remove_op(op)
            changed = True
        return PassResult(g, changed)

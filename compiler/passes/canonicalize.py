"""Canonicalize: rewrite ops into the smaller set that lowering and fusion know."""

from __future__ import annotations

import numpy as np

from onnx2wgsl.ir import Graph, Op

from . import Pass, PassResult


class Canonicalize(Pass):
    """Drop Identity ops and Casts to the dtype their input already has; turn inference BatchNormalization with constant statistics into
    Mul + Add by per-channel constants (scale = gamma / sqrt(var + eps), shift = beta -
    mean * scale), which later passes fold into a preceding Conv or Gemm."""

    name = "canonicalize"

    def run(self, g: Graph) -> PassResult:
        changed = False
        ops: list[Op] = []  # the new list, built in one pass (no list.remove per dropped op)
        for op in g.ops:
            if op.inputs and op.inputs[0] is not None and self._identity(op):
                g.replace_uses(op.outputs[0], op.inputs[0])
                op.detach()
                changed = True
            elif op.kind == "BatchNormalization" and all(v.is_const for v in op.inputs[1:5]):
                ops += self._batchnorm(g, op)
                changed = True
            else:
                ops.append(op)
        g.ops = ops
        return PassResult(g, changed)

    @staticmethod
    def _identity(op: Op) -> bool:
        if op.domain or not op.outputs:  # no outputs: a dead op, which dce removes
            return False
        same = op.outputs[0].dtype == op.inputs[0].dtype
        return op.kind == "Identity" or (op.kind in ("Cast", "CastLike") and same)

    @staticmethod
    def _batchnorm(g: Graph, op: Op) -> list[Op]:
        """Detach the BatchNormalization; return the Mul and Add that replace it."""
        x, gamma, beta, mean, var = op.inputs[:5]
        y = op.outputs[0]
        eps = op.attrs.get("epsilon", 1e-5)
        f64 = [v.data.astype(np.float64) for v in (gamma, beta, mean, var)]
        scale = f64[0] / np.sqrt(f64[3] + eps)
        shift = f64[1] - f64[2] * scale
        # Per-channel params broadcast over the spatial dims (axis 1 is the channel axis).
        bshape = gamma.shape + (1,) * (x.type.rank - 1 - gamma.type.rank)
        s = g.const(scale.reshape(bshape), f"{gamma.name}.scale", dtype=x.dtype)
        b = g.const(shift.reshape(bshape), f"{beta.name}.shift", dtype=x.dtype)
        mul = g.make_op("Mul", [x, s], [y.type], name=op.name, out_names=[f"{y.name}.scaled"])
        op.detach()
        return [mul, Op("Add", [mul.outputs[0], b], [y], name=op.name)]

"""What a kernel op computes, for profiles: floating-point operations (a multiply-add counts
two), estimated from the ONNX op it came from and its operands' shapes."""

from __future__ import annotations

import math

from onnx2wgsl.ir import Op
from onnx2wgsl.ir.symbolic import Dimish, simplify

_CONTRACTIONS = ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm", "MatMulNBits")
_CONVS = ("Conv", "ConvInteger", "QLinearConv", "DeformConv")


def _numel(shape) -> Dimish:
    """The product of some dims (a slice of a shape)."""
    return simplify(math.prod(shape, start=1))


def flops(op: Op) -> Dimish:
    """An op's operations (the op before lowering): 2*M*N*K for a contraction, 2 per
    multiply-add of a convolution, one per output element and op for anything else (an
    estimate: exp, erf and friends cost more), fused epilogues and prologues included."""
    out = op.outputs[0] if op.outputs else None
    if out is None:
        return 0
    from .lowering.fused import operands  # (here: lowering imports this module)

    n = out.type.numel
    # the op's own operands: a fused prologue's come first, and then input 0 is its result
    own = operands(op)[1]
    x = own[0] if own and own[0] is not None else None
    if x is None and op.attrs.get("prologue") is not None:
        x = op.attrs["prologue"].outputs[0]
    w = own[1] if len(own) > 1 else None
    total: Dimish = n
    if op.kind in _CONTRACTIONS and x is not None and w is not None:
        if op.kind == "Gemm":
            k = x.shape[0] if op.attrs.get("transA") else x.shape[-1]
        else:
            k = x.shape[-1] if x.type.rank else 1
        total = 2 * n * k
    elif op.kind in _CONVS and w is not None:
        total = 2 * n * _numel(w.shape[1:])
    elif op.kind == "ConvTranspose" and x is not None and w is not None:
        total = 2 * x.type.numel * _numel(w.shape[1:])
    elif op.kind == "Attention" and x is not None and op.input(2) is not None:
        a = op.attrs
        total = 2 * a["batch"] * a["q_heads"] * a["q_len"] * a["kv_len"] * (a["head_size"] + a["v_head_size"])
    elif op.kind == "Fused":
        total = n * len(op.attrs["body"].ops)
    for part in ("prologue", "epilogue"):
        body = op.attrs.get(part)
        if body is not None:
            total = total + body.outputs[0].type.numel * len(body.ops)
    return simplify(total)

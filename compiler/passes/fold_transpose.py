"""Fold a Transpose of the last two dims into the MatMul or Gemm that reads it."""

from __future__ import annotations

from onnx2wgsl.ir import Graph

from . import Pass, PassResult

_FLAGS = ("transA", "transB")


class FoldTranspose(Pass):
    """A Transpose that swaps the last two dims of a MatMul or Gemm operand, and is read by
    nothing else, becomes that op's transA/transB flag: the kernel reads the operand in its
    stored layout (attention's K^T, weights exported as their transpose) and no copy runs."""

    name = "fold-transpose"

    def run(self, g: Graph) -> PassResult:
        outputs = {id(v) for v in g.outputs}
        changed = False
        for op in g.ops:
            if op.kind not in ("MatMul", "Gemm") or op.domain:
                continue
            for i in (0, 1):
                v = op.input(i)
                t = v.producer if v is not None else None
                if t is None or t.kind != "Transpose" or t.domain or id(v) in outputs or len(v.uses) != 1:
                    continue
                rank = v.type.rank
                if rank < 2 or list(t.attrs["perm"]) != [*range(rank - 2), rank - 1, rank - 2]:
                    continue
                if op.kind == "MatMul" and op.input(1 - i) is not None and op.input(1 - i).type.rank < 2:
                    continue  # a 1-D operand: keep MatMul's vector rules simple
                op.set_input(i, t.inputs[0])
                op.attrs[_FLAGS[i]] = 1 - int(op.attrs.get(_FLAGS[i], 0))
                changed = True
        return PassResult(g, changed)

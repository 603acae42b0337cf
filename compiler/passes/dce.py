"""Dead-code elimination."""

from __future__ import annotations

from onnx2wgsl.ir import Graph

from . import Pass, PassResult


class DeadCodeElimination(Pass):
    """Remove ops none of whose outputs is used by another op or is a graph output."""

    name = "dce"

    def run(self, g: Graph) -> PassResult:
        outputs = {id(v) for v in g.outputs}
        removed = False
        for op in reversed(list(g.ops)):
            if not any(v.uses or id(v) in outputs for v in op.outputs):
                g.remove_op(op)
                removed = True
        return PassResult(g, removed)

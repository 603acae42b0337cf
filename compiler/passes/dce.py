"""Dead-code elimination."""

from __future__ import annotations

from onnx2wgsl.ir import Graph

from . import Pass, PassResult


class DeadCodeElimination(Pass):
    """Remove ops none of whose outputs is used by another op or is a graph output."""

    name = "dce"

    def run(self, g: Graph) -> PassResult:
        outputs = {id(v) for v in g.outputs}
        removed: set[int] = set()
        for op in reversed(g.ops):
            if not any(v.uses or id(v) in outputs for v in op.outputs):
                op.detach()  # (its inputs' producers, visited later, may die of it)
                removed.add(id(op))
        if removed:
            g.ops = [op for op in g.ops if id(op) not in removed]
        return PassResult(g, bool(removed))

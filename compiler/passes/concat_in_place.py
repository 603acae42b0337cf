"""Concat in place: its producers write straight into their slices of the output."""

from __future__ import annotations

import math

from onnx2wgsl.ir import Graph, Op

from . import Pass, PassResult


class ConcatInPlace(Pass):
    """Replace a lowered Concat's copies by a ``concat_view``: each input then lives inside the
    output, so the kernels producing the inputs write the concatenated tensor directly.

    Runs after lowering. A Concat qualifies when its slices are contiguous (every dim before
    the axis is 1), every slice starts at an offset the target can bind (256-byte alignment),
    and every input is a kernel's (or another in-place Concat's) output that nothing else
    hosts and that is not a graph input or output."""

    name = "concat-in-place"

    def __init__(self, alignment: int = 256):
        self.alignment = alignment

    def run(self, g: Graph) -> PassResult:
        changed = False
        hosted: set[int] = set()
        io = {id(v) for v in list(g.inputs) + list(g.outputs)}
        for i, op in enumerate(g.ops):
            if op.kind != "kernel" or op.attrs.get("op") != "Concat":
                continue
            # (its inputs: the parts, then any tables of sizes its copies read)
            xs = [v for v in op.inputs[: op.attrs.get("parts", len(op.inputs))] if v is not None]
            y = op.outputs[0]
            offsets = self._offsets(xs, y)
            if offsets is None or id(y) in io:
                continue
            ok = len({id(x) for x in xs}) == len(xs) and all(
                x.producer is not None
                and x.producer.kind in ("kernel", "concat_view")
                and id(x) not in io
                and id(x) not in hosted
                for x in xs
            )
            if not ok:
                continue
            op.detach()
            g.ops[i] = Op("concat_view", xs, [y], {"offsets": offsets}, name=op.name)
            hosted.update(id(x) for x in xs)
            changed = True
        return PassResult(g, changed)

    def _offsets(self, xs, y) -> list[int] | None:
        if not xs or y.nbytes == 0:
            return None
        if y.type.is_symbolic:
            return None  # a part's offset would move with the run's dims; storage is planned once
        ref = xs[0].shape
        axis = next((d for d in range(len(ref)) if y.shape[d] != ref[d]), 0)
        if math.prod(y.shape[:axis]) != 1:
            return None  # slices are strided: producers would need strided writes
        if any(x.storage is not y.storage for x in xs):
            return None  # parts stored as other scalar types than the whole
        offsets, at = [], 0
        for x in xs:
            if at % self.alignment:
                return None
            offsets.append(at)
            at += x.nbytes
        return offsets

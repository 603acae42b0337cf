"""Graph -> Graph passes and the per-level pipelines that sequence them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnx2wgsl.ir import Graph


@dataclass
class PassResult:
    graph: Graph
    changed: bool


class Pass:
    """A named rewrite of a Graph; ``run`` returns the graph and whether it changed."""

    name = "pass"

    def run(self, g: Graph) -> PassResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


from .attention_fusion import FuseAttention  # noqa: E402
from .canonicalize import Canonicalize  # noqa: E402
from .concat_in_place import ConcatInPlace  # noqa: E402
from .dce import DeadCodeElimination  # noqa: E402
from .fold import FoldConstants  # noqa: E402
from .fold_affine import FoldAffine  # noqa: E402
from .fold_transpose import FoldTranspose  # noqa: E402
from .fuse import FuseElementwise, FuseEpilogue, FusePrologue  # noqa: E402
from .in_place import InPlace  # noqa: E402
from .kv_share import ShareKVCache  # noqa: E402
from .patterns import FusePatterns  # noqa: E402

PASSES: dict[str, Callable[[], Pass]] = {
    p.name: p
    for p in (
        Canonicalize,
        FoldConstants,
        FoldAffine,
        FoldTranspose,
        FusePatterns,
        FuseAttention,
        DeadCodeElimination,
        ShareKVCache,
        FuseElementwise,
        FuseEpilogue,
        FusePrologue,
        ConcatInPlace,
        InPlace,
    )
}


def pipeline(level: int = 2, target=None, fold_limit: int | None = None) -> list[Pass]:
    """The graph passes for an optimization level: -O0 only what correctness needs (BatchNorm
    canonicalized, constants folded, dead ops removed); -O1 folds affine ops into weights and
    last-two-dim Transposes into MatMul/Gemm flags,
    replaces decomposed normalizations, softmax and rotate_half RoPE by their single ops and
    scaled-dot-product
    attention by the Attention op (Q, K and V projections merged into one MatMul), writes a
    decoder's Concat(past, new) KV cache in place when compiled for generation, and fuses
    elementwise ops; -O2 also fuses epilogues into Conv, ConvTranspose, Gemm and MatMul and prologues
    into Conv. Fusion keeps each kernel within
    the target's storage bindings per stage."""
    bindings = target.max_bindings if target is not None else 8
    passes: list[Pass] = [Canonicalize(), FoldConstants(fold_limit)]
    if level >= 1:
        passes += [FoldAffine(), FoldTranspose(), FusePatterns(), FuseAttention()]
    passes += [DeadCodeElimination()]
    if level >= 1:
        passes += [ShareKVCache(), FuseElementwise(bindings)]
    if level >= 2:
        passes += [FuseEpilogue(bindings), FusePrologue(bindings)]
    return passes


def lowered_pipeline(level: int = 2, target=None) -> list[Pass]:
    """The passes over the lowered graph (kernels and views), before memory planning: from -O1,
    Concat outputs written in place by their producers, then outputs written over inputs that
    die at their kernel."""
    alignment = target.alignment if target is not None else 256
    return [ConcatInPlace(alignment), InPlace()] if level >= 1 else []


def run_passes(g: Graph, passes: list[Pass], after: Callable[[str, Graph], None] | None = None) -> Graph:
    for p in passes:
        g = p.run(g).graph
        if after is not None:
            after(p.name, g)
    return g


__all__ = ["PASSES", "Pass", "PassResult", "pipeline", "run_passes"]

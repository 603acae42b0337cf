"""The precision pass: which float values a compile stores as f16 (``--precision fp16``).

Kernels always compute in f32 (matmul and conv accumulate in f32; reductions, normalizations,
Softmax and exp/log run in f32) and convert at their loads and stores (``lowering.widen`` /
``narrow``). Storage is a property of each value (``Value.storage``): under fp16 a float value
is stored as f16 when

- every op that writes it and every op that reads it lowers to a kernel that loads and stores
  its operands through those conversions (``F16_OPS``; any other op keeps its operands 32-bit,
  so coverage grows op by op and nothing is ever read as the wrong type),
- the range guard allows it: a result that f16 (largest finite 65504) could not hold by the
  op's nature stays f32 (``guarded``: sums over an axis, squares, exp, powers, and any fused
  group or epilogue computing one of them),
- and, for a graph input or output of a graph compiled for generation, it is one of the
  state pairs (the KV cache; a past and its present decide together, as the runtime copies
  one into the other, or they are one buffer written in place by KVCacheWrite or GQAScatter):
  the logits, token ids, mask, positions, the appended tokens and the sampling's seen-token
  pair keep 32-bit storage. A float input or output stored f16 is recorded in the manifest
  (``storage`` "f16"); runtime/generate.py and generate.js copy a present into its past's
  slot as stored (2 bytes an element), and the runtimes convert other feeds and results at the
  boundary, so they keep the model's dtype (a GPU buffer bound for one, IO binding, holds
  f16s).

Values that share storage through a zero-copy view (Reshape, Identity) decide together. A
constant read only by such kernels is stored, and packed into weights.bin, as f16; constants
a lowering re-lays out take the storage of the weight they come from (``LowerCtx.const``).
"""

from __future__ import annotations

import numpy as np

from onnx2wgsl.errors import CompileError
from onnx2wgsl.ir import DType, Graph, Op, Value
from onnx2wgsl.runtime.manifest import PRECISIONS  # (the names a manifest may give a variant)

from .elementwise_ops import TABLE
from .generation import SEEN
from .lowering.reduce import REDUCE

# op kinds (before lowering) whose kernels convert every float operand at its loads and stores
_TEMPLATE_OPS = {
    "Conv", "MatMul", "Gemm", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
    "GlobalMaxPool", "GlobalLpPool", "Softmax", "LogSoftmax", "Hardmax", "LRN", "Attention",
    "RotaryEmbedding", "MatMulNBits", "ConvTranspose",
}  # fmt: skip
_BUILDER_OPS = {
    "Fused", "Concat", "Transpose", "Gather", "GatherElements", "BatchNormalization", "LayerNormalization",
    "RMSNormalization", "InstanceNormalization", "GroupNormalization",
    "MeanVarianceNormalization", "LpNormalization", "Slice", "Split", "Pad", "Expand", "Tile", "Where",
    "DepthToSpace", "SpaceToDepth", "GatherNBits", "Resize", "Upsample", "Trilu", "GatherND", "ScatterND",
    "ScatterElements", "Scatter", "GQAScatter", "KVCacheWrite",
}  # fmt: skip
F16_OPS = frozenset(_TEMPLATE_OPS | _BUILDER_OPS | set(REDUCE) | (set(TABLE) - {"Identity", "Cast"}))
VIEWS = ("Reshape", "Identity")

# results f16 could overflow by the op's nature (the range guard): they stay f32
_SUMS = {"ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceProd", "CumSum", "CumProd"}
_GROWS = {"Exp", "Pow", "Softplus", "Cosh", "Sinh", "Reciprocal", "Tan"}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise CompileError(f"unknown precision {precision!r}", hint=f"choose one of {', '.join(PRECISIONS)}")
    return precision


def check_precisions(precision: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The precisions asked for, in order of preference: one ("fp16"), or several ("fp16,fp32"
    or a list) for an artifact holding one variant each, of which the runtime picks the first
    the device runs; None for the model's own (``model_precision``)."""
    if precision is None:
        return None
    if not isinstance(precision, (str, list, tuple)):
        raise CompileError(
            f"precision {precision!r} is not a name or a list of names",
            hint=f"give one of {', '.join(PRECISIONS)}, or several in order of preference (fp16,fp32)",
        )
    names = precision.split(",") if isinstance(precision, str) else list(precision)
    names = [check_precision(p.strip() if isinstance(p, str) else p) for p in names]
    if not names or len(set(names)) != len(names):
        raise CompileError(
            f"precision {precision!r} lists no precision or one twice",
            hint="give one (fp16) or several, each once, in order of preference (fp16,fp32)",
        )
    return tuple(names)


F16_MAX = 65504.0


def model_precision(g: Graph) -> str:
    """The precision a model compiles at when none is asked for: "fp16" for a float16 model
    (most of its float constants' elements are float16, or, with no float constants, its float
    inputs and outputs are all float16: its author chose half precision, and its weights and
    activations keep it on the GPU instead of doubling), "fp32" for any other."""
    sizes = {DType.f16: 0, DType.f32: 0}
    for v in g.constants():
        if v.dtype in sizes:
            sizes[v.dtype] += v.type.numel_bound
    if sizes[DType.f16] or sizes[DType.f32]:
        return "fp16" if sizes[DType.f16] > sizes[DType.f32] else "fp32"
    io = [v.dtype for v in list(g.inputs) + list(g.outputs) if v.dtype in sizes]
    return "fp16" if io and all(d == DType.f16 for d in io) else "fp32"


def guarded(op: Op) -> bool:
    """Whether ``op``'s results may exceed f16's range by its nature: sums over an axis (of
    any length: a row of 4096 values of 16 already reaches 65536), squares (a value of 300
    squared is 90000), exp and powers, an operand constant beyond f16's range (a mask's
    float32 minimum), a normalization's exposed statistics, or a fused body or epilogue doing
    one of these."""
    if op.kind in _SUMS or op.kind in _GROWS:
        return True
    if op.kind == "Mul" and len(op.inputs) == 2 and op.inputs[0] is op.inputs[1]:
        return True
    if any(v is not None and v.is_const and _beyond_f16(v) for v in op.inputs):
        return True
    if op.kind in ("LayerNormalization", "RMSNormalization") and len(op.outputs) > 1:
        return True  # its inverse standard deviation reaches 1 / sqrt(epsilon): 1e6 at 1e-12
    for key in ("body", "epilogue", "prologue"):
        body = op.attrs.get(key)
        if isinstance(body, Graph) and any(guarded(o) for o in body.ops):
            return True
    return False


def assign_storage(g: Graph, precision: str) -> int:
    """Mark the values ``precision`` stores as f16 (see the module); the count marked."""
    if check_precision(precision) == "fp32":
        return 0
    parent: dict[int, int] = {}
    values: dict[int, Value] = {}

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def add(v: Value) -> None:
        if id(v) not in parent:
            parent[id(v)] = id(v)
            values[id(v)] = v

    for op in g.ops:
        for v in list(op.inputs) + list(op.outputs):
            if v is not None:
                add(v)
        if op.kind in VIEWS and op.domain == "" and op.inputs and op.inputs[0] is not None:
            parent[find(id(op.outputs[0]))] = find(id(op.inputs[0]))
    for v in list(g.inputs) + list(g.outputs):  # (an input that is an output, read by no op)
        add(v)
    # a model compiled for generation keeps its inputs and outputs 32-bit but for its KV cache,
    # whose pasts and presents decide together (one is copied into, or is, the other)
    io = _io_kept_32bit(g)
    for past, present in _state_pairs(g):
        parent[find(id(present))] = find(id(past))
    ok: dict[int, bool] = {}
    for k, v in values.items():
        root = find(k)
        fits = v.dtype in (DType.f32, DType.f16) and k not in io and v.type.numel_bound > 0
        fits = fits and not (v.is_const and _beyond_f16(v))  # (a float32 minimum as a mask fill)
        if fits and v.producer is not None and not _views(v.producer):
            fits = _takes_f16(v.producer) and not guarded(v.producer)
        if fits:
            fits = all(_views(u) or _takes_f16(u) for u in v.uses)
        ok[root] = ok.get(root, True) and fits
    n = 0
    for k, v in values.items():
        if ok[find(k)]:
            v.storage = DType.f16
            n += 1
    g.metadata["precision"] = precision
    return n


def _state_pairs(g: Graph) -> list[tuple[Value, Value]]:
    """A generation graph's (past input, present output) pairs of the model's KV cache (not
    the sampling's seen-token pair, which stays 32-bit)."""
    gen = g.metadata.get("generation")
    if not gen:
        return []
    inputs = dict(zip(g.metadata.get("input_names", [v.name for v in g.inputs]), g.inputs))
    outputs = dict(zip(g.metadata.get("output_names", [v.name for v in g.outputs]), g.outputs))
    return [
        (inputs[s["past"]], outputs[s["present"]])
        for s in gen.get("state", ())
        if s["past"] != SEEN and s["past"] in inputs and s["present"] in outputs
    ]


def _io_kept_32bit(g: Graph) -> set[int]:
    """The ids of a generation graph's inputs and outputs kept 32-bit: all but its state pairs."""
    if "generation" not in g.metadata:
        return set()
    state = {id(v) for pair in _state_pairs(g) for v in pair}
    return {id(v) for v in list(g.inputs) + list(g.outputs) if id(v) not in state}


def _beyond_f16(v: Value) -> bool:
    if not v.dtype.is_float or v.data.size == 0:
        return False
    a = np.abs(v.data[np.isfinite(v.data)])
    return bool(a.size) and float(a.max()) > F16_MAX


def _views(op: Op) -> bool:
    return op.domain == "" and op.kind in VIEWS


def _takes_f16(op: Op) -> bool:
    return op.domain == "" and op.kind in F16_OPS

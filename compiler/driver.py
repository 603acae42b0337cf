"""The compile driver: one loop over named stages, each of which can be observed."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnx2wgsl.ir import Graph, verify

from .artifact import Artifact, build_artifact
from .frontend import import_model, load_model
from .lowering import lower
from .memory import MemoryPlan, check_plan, plan_memory
from .passes import pipeline, run_passes
from .passes.concat_in_place import ConcatInPlace
from .report import CompileReport
from .target import Target, get_target


@dataclass
class CompileResult:
    graph: Graph
    plan: MemoryPlan
    artifact: Artifact
    report: CompileReport


def _parse_shapes(shapes) -> dict[str, tuple[int, ...]]:
    out = {}
    for name, shape in (shapes or {}).items():
        if isinstance(shape, str):
            shape = tuple(int(d) for d in shape.lower().split("x") if d)
        out[name] = tuple(int(d) for d in shape)
    return out


def compile_model(
    model: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike | None = None,
    *,
    shapes: dict | None = None,
    dims: dict[str, int] | None = None,
    target: str | Target | None = None,
    opt_level: int = 2,
    verify_ir: bool = False,
    on_stage: Callable[[str, Graph], None] | None = None,
) -> CompileResult:
    """Compile an ONNX model (path or proto) into an artifact; write it if ``output`` is given."""
    t0 = time.perf_counter()
    tgt = get_target(target)
    proto = load_model(model)
    source_sha = None
    if not isinstance(model, onnx.ModelProto):
        source_sha = hashlib.sha256(Path(model).read_bytes()).hexdigest()

    def stage(name: str, g: Graph) -> None:
        if verify_ir:
            verify(g, static=True)
        if on_stage is not None:
            on_stage(name, g)

    g, warnings = import_model(proto, _parse_shapes(shapes), dims)
    g.metadata["input_names"] = [v.name for v in g.inputs]
    stage("import", g)
    g = run_passes(g, pipeline(opt_level), after=stage)
    ops = len(g.ops)
    g = lower(g, tgt)
    stage("lower", g)
    if opt_level >= 1:
        g = run_passes(g, [ConcatInPlace(tgt.alignment)], after=stage)
    plan = plan_memory(g, tgt)
    check_plan(g, tgt.alignment)
    stage("plan", g)
    artifact = build_artifact(g, tgt, source_sha)
    if output is not None:
        artifact.write(output)
    name = Path(model).name if not isinstance(model, onnx.ModelProto) else (proto.graph.name or "model")
    report = CompileReport(
        model=name,
        onnx_nodes=len(proto.graph.node),
        ops=ops,
        kernels=len(g.kernels()),
        dispatches=g.dispatch_count(),
        shaders=len(artifact.shaders),
        weight_bytes=plan.weight_bytes,
        weight_file_bytes=len(artifact.weights),
        arena_bytes=plan.arena_bytes,
        naive_bytes=plan.naive_bytes,
        lower_bound=plan.lower_bound,
        strategy=plan.strategy,
        target=tgt.name,
        output=str(output) if output is not None else None,
        warnings=warnings,
        notes=_notes(g),
        seconds=time.perf_counter() - t0,
    )
    return CompileResult(g, plan, artifact, report)


def _notes(g: Graph) -> list[str]:
    from onnx2wgsl.ir import DType

    narrowed = sorted(
        {v.dtype.name for v in g.values() if not v.is_const and v.dtype in (DType.i64, DType.u64, DType.f64)}
    )
    if narrowed:
        return [f"tensors of {', '.join(narrowed)} are computed in 32 bits on the GPU"]
    return []

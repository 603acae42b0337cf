"""The compile driver: one loop over named stages, each of which can be observed."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from onnx2wgsl.errors import CompileError, InternalError, IRError, Onnx2WgslError
from onnx2wgsl.ir import Graph, VerifyError, verify
from onnx2wgsl.ir.printer import HEADER as IR_HEADER
from onnx2wgsl.runtime.manifest import SUBGROUPS_FEATURE, SUBGROUPS_HEADER

from .artifact import Artifact, build_artifact, check_output_dir, write_index
from .frontend import import_model, load_model
from .generation import Generation, generation_note, prepare
from .host_eval import FOLD_LIMIT
from .lowering import lower
from .memory import MemoryPlan, align, check_plan, lifetimes, peak_bytes, plan_memory, roots
from .passes import lowered_pipeline, pipeline, run_passes
from .precision import assign_storage, check_precisions, model_precision
from .report import CompileReport
from .target import Target, get_target
from .tune import read_tuning, tuning_notes
from .validate import check_ir_ops


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


def stage_names(opt_level: int = 2) -> list[str]:
    """The stages of a compile, in order: import, each graph pass of the -O level, lower, each
    pass over the lowered graph, plan.

    After each one the driver calls ``on_stage(name, graph)``; IR dumped after any of them
    (``print_ir(g, stage=name)``) can be compiled onward from there."""
    return [
        "import",
        *(p.name for p in pipeline(opt_level)),
        "lower",
        *(p.name for p in lowered_pipeline(opt_level)),
        "plan",
    ]


@dataclass
class _Source:
    """What a compile starts from: an ONNX proto, or a graph already past stage ``done``."""

    label: str
    proto: onnx.ModelProto | None = None
    graph: Graph | None = None
    done: str | None = None
    sha256: str | None = None


def infer_stage(g: Graph) -> str:
    """The stage a graph without a recorded one is past: plan, lower, else import."""
    if g.buffers or any(v.placement is not None for v in g.values()):
        return "plan"
    if g.shaders or any(op.kind in ("kernel", "view") for op in g.ops):
        return "lower"
    return "import"


def _source(model, stage: str | None, names: list[str], shapes, dims) -> _Source:
    if isinstance(model, onnx.ModelProto):
        return _Source(model.graph.name or "model", proto=load_model(model))
    if isinstance(model, Graph):
        src = _Source(model.name, graph=model, done=stage or infer_stage(model))
    elif Path(model).suffix == ".ir":
        from onnx2wgsl.ir import load_ir

        mod = load_ir(model)
        src = _Source(Path(model).name, graph=mod.graph, done=stage or mod.stage or infer_stage(mod.graph))
    else:
        proto = load_model(model)
        return _Source(
            Path(model).name, proto=proto, sha256=hashlib.sha256(Path(model).read_bytes()).hexdigest()
        )
    if shapes or dims:
        raise CompileError(
            f"{src.label}: --shape and --dim apply to ONNX models; an IR graph's shapes are already bound"
        )
    if src.done not in names:
        raise CompileError(
            f"{src.label}: its IR is after stage {src.done!r}, which is not a stage of this compile",
            hint=f"the stages are {', '.join(names)}",
        )
    try:
        verify(src.graph)
    except VerifyError as e:
        raise CompileError(f"{src.label}: the IR is not valid ({e})") from None
    check_ir_ops(src.graph.ops)
    src.sha256 = src.graph.metadata.get("source_sha256")
    return src


class _Stop(Exception):
    def __init__(self, graph: Graph):
        self.graph = graph


def compile_model(
    model: str | os.PathLike | onnx.ModelProto | Graph,
    output: str | os.PathLike | None = None,
    *,
    shapes: dict | None = None,
    dims: dict[str, int | tuple[int, int]] | None = None,
    target: str | Target | None = None,
    opt_level: int = 2,
    verify_ir: bool = False,
    on_stage: Callable[[str, Graph], None] | None = None,
    stage: str | None = None,
    constants: dict[str, np.ndarray] | None = None,
    force: bool = False,
    fold_limit: int = FOLD_LIMIT,
    freeze_initializers: bool = False,
    generation: Generation | None = None,
    precision: str | list[str] | tuple[str, ...] | None = None,
    subgroups: bool = False,
    tuning: str | os.PathLike | dict | None = None,
) -> CompileResult:
    """Compile into an artifact; write it if ``output`` is given (a new or empty folder, or one
    holding an earlier artifact; any other folder only with ``force``).

    ``model`` is an ONNX model (path or proto), an IR file (``FILE.ir``, dumped after some
    stage, which its header records) or a Graph (``stage`` names the stage it is past;
    without it the stage is inferred: planned, lowered, or else all passes run). IR input
    continues with the stages after its own; ``on_stage`` sees each stage that runs.

    ``constants`` freezes graph inputs of an ONNX model to the given arrays (see
    ``frontend.import_model``); an op that needs an input's value at compile time raises
    ConstantRequiredError naming it. An input with an initializer of its name (IR version >= 4)
    stays an input that defaults to it, unless an op needs its value; ``freeze_initializers``
    compiles every such initializer in as a constant. No tensor folded on the host may take
    more than ``fold_limit`` bytes (a clear error names the node).

    ``generation`` (a ``Generation``: the max total length, state pairs beyond those recognised
    by name, the most tokens a step takes, sampling candidates) compiles a decoder with a KV
    cache for token-by-token generation (compiler/generation.py): one artifact for the prompt
    and every later token, with the greedy choice ``next_token`` (and a sampled one) as extra
    outputs; ``onnx2wgsl.Generator`` runs it.

    ``precision="fp16"`` stores activations and weights as f16 wherever every kernel that reads
    and writes them converts at its loads and stores (computing in f32) and the range guard
    allows (compiler/precision.py); the artifact then requires the device feature shader-f16.
    Several precisions (``"fp16,fp32"`` or a list, in order of preference) write one complete
    artifact each in ``output/<precision>`` under an index manifest.json listing them; the
    runtimes load the first the device runs, and the first variant's result is returned.
    ``subgroups=True`` lets kernels use subgroup operations: the matmul and conv_rows share
    loads across lanes (each still runs right where subgroups are narrower than 8 invocations,
    on its plain loop), and row reductions fold a row in one subgroup rather than a workgroup
    tree; the artifact then needs the device feature subgroups.
    ``tuning`` (a table, or the path of a JSON file of one or of an artifact compiled with
    ``--tune``, compiler/tune.py) gives tunable kernels the forms it names; the manifest records
    those it used, so the same table builds the same artifact.
    Without a precision, a float16 model compiles at fp16 (its weights and activations stay
    half; compiler/precision.py ``model_precision``) and any other at fp32; the report notes it.

    Only onnx2wgsl's errors leave (an exception ``on_stage`` raises passes through as it is):
    any other is a bug, wrapped as an InternalError naming the stage it was raised in; when the
    compile started from IR, whose ops are checked for structure but not for every op's
    meaning, it is an IRError that says the IR breaks what the stage relies on."""
    precisions = check_precisions(precision)
    if precisions is not None and len(precisions) > 1:
        return _compile_variants(
            model, output, precisions, shapes=shapes, dims=dims, target=target, opt_level=opt_level,
            verify_ir=verify_ir, on_stage=on_stage, stage=stage, constants=constants, force=force,
            fold_limit=fold_limit, freeze_initializers=freeze_initializers, generation=generation,
            subgroups=subgroups, tuning=tuning,
        )  # fmt: skip
    at = _Progress(stage_names(opt_level))
    try:
        return _compile(
            model, output, at, shapes=shapes, dims=dims, target=target, opt_level=opt_level,
            verify_ir=verify_ir, on_stage=on_stage, stage=stage, constants=constants, force=force,
            fold_limit=fold_limit, freeze_initializers=freeze_initializers, generation=generation,
            precision=precisions and precisions[0], subgroups=subgroups, tuning=tuning,
        )  # fmt: skip
    except InternalError as e:
        if at.from_ir:  # the graph came in as IR, whose ops are checked for structure only
            raise IRError(e.stage, e.error, node=e.node, op=e.op) from e.error
        raise
    except Onnx2WgslError:
        raise
    except _HookError as e:
        raise e.error from None  # the caller's own hook: its exception is the caller's
    except MemoryError as e:
        raise CompileError(
            f"ran out of memory in stage {at.stage!r}",
            hint="the model asks for more than this machine holds; lower --fold-limit to find the node",
        ) from e
    except Exception as e:
        if at.from_ir:
            raise IRError(at.stage, e) from e
        raise InternalError(at.stage, e) from e


def _compile_variants(model, output, precisions: tuple[str, ...], **options) -> CompileResult:
    """One artifact per precision, each complete in ``output/<precision>``, under an index
    manifest listing them in order of preference (the runtimes load the first the device
    runs). Returns the first variant's result, its report noting the others."""
    if isinstance(model, Graph):
        raise CompileError(
            "a Graph compiles for one precision at a time (passes change it in place)",
            hint="pass the ONNX model or an IR file, or compile the Graph once per precision",
        )
    if output is not None:
        check_output_dir(output, options["force"])
    results = [
        compile_model(model, None if output is None else Path(output) / p, precision=p, **options)
        for p in precisions
    ]
    if output is not None:
        write_index(output, [(p, r.artifact.manifest) for p, r in zip(precisions, results, strict=True)])
    first = results[0]
    first.report.notes.append(
        "precision variants, in order of preference: "
        + ", ".join(
            f"{p} ({r.report.weight_file_bytes:,} B of weights)"
            for p, r in zip(precisions, results, strict=True)
        )
        + f"; this report is {precisions[0]}'s"
    )
    if output is not None:
        first.report.output = str(output)
    return first


class _HookError(Exception):
    """An exception of the caller's ``on_stage`` hook, carried through the boundary unwrapped."""

    def __init__(self, error: BaseException):
        self.error = error


@dataclass
class _Progress:
    """The stage a compile is in, for the error that wraps an unexpected exception."""

    names: list[str]
    stage: str = "load"
    from_ir: bool = False  # the compile started from IR text or a Graph, not from ONNX

    def done(self, name: str) -> None:
        i = self.names.index(name)
        self.stage = self.names[i + 1] if i + 1 < len(self.names) else "artifact"


def _compile(
    model, output, at: _Progress, *, shapes, dims, target, opt_level, verify_ir, on_stage, stage,
    constants, force, fold_limit, freeze_initializers, generation, precision, subgroups, tuning,
) -> CompileResult:  # fmt: skip
    t0 = time.perf_counter()
    if output is not None:
        check_output_dir(output, force)  # before the work, not after it
    tgt = get_target(target)
    if subgroups and SUBGROUPS_FEATURE not in tgt.features:
        tgt = replace(tgt, features=(*tgt.features, SUBGROUPS_FEATURE))
    if tuning is not None:
        tgt = replace(tgt, tuning=read_tuning(tuning))
    names = at.names
    src = _source(model, stage, names, shapes, dims)
    at.from_ir = src.proto is None
    if src.done:
        at.done(src.done)
    else:
        at.stage = "import"

    def after(name: str, g: Graph) -> None:
        at.done(name)
        if verify_ir:
            verify(g, static=not g.symbols)
        if on_stage is not None:
            try:
                on_stage(name, g)
            except Exception as e:
                raise _HookError(e) from e

    done = names.index(src.done) if src.done else -1
    warnings: list[str] = []
    record = None
    if generation is not None:
        if src.proto is None:
            raise CompileError(f"{src.label}: compiling for generation starts from the ONNX model, not IR")
        src.proto, dims, constants, record = prepare(src.proto, generation, dims or {}, constants or {})
    if src.proto is not None:
        g, warnings = import_model(
            src.proto, _parse_shapes(shapes), dims, constants, fold_limit, freeze_initializers
        )
        if record is not None:
            g.metadata["generation"] = record
        warnings += wide_int_warnings(g)
        g.metadata["input_names"] = [v.name for v in g.inputs]
        g.metadata["onnx_nodes"] = len(src.proto.graph.node)
        if src.sha256:
            g.metadata["source_sha256"] = src.sha256
        after("import", g)
        done = 0
    elif constants:
        raise CompileError(
            f"{src.label}: constants apply to ONNX models; an IR graph's inputs are already set"
        )
    else:
        g = src.graph
    passes = pipeline(opt_level, tgt, fold_limit)
    g = run_passes(g, passes[done:], after=after)  # names[1 + i] is passes[i]
    ops = len(g.ops)
    precision_notes: list[str] = []
    if done < names.index("lower"):
        if precision is None:
            precision = model_precision(g)
            if precision == "fp16":
                precision_notes.append(
                    "a float16 model: compiled at --precision fp16 (weights and activations stored as f16), "
                    "which needs the device feature shader-f16; --precision fp16,fp32 adds a schedule for "
                    "adapters without it, --precision fp32 widens everything to 32 bits"
                )
        assign_storage(g, precision)
        g = lower(g, tgt)
        after("lower", g)
    lowered = lowered_pipeline(opt_level, tgt)
    first = names.index("lower") + 1
    for i, p in enumerate(lowered):
        if done < first + i:
            g = p.run(g).graph
            after(p.name, g)
    if done < names.index("plan"):
        plan = plan_memory(g, tgt)
        check_plan(g, tgt.alignment)
        after("plan", g)
    else:
        check_plan(g, tgt.alignment)
        plan = _plan_of_placements(g, tgt)
    at.stage = "artifact"
    artifact = build_artifact(g, tgt, src.sha256)
    if output is not None:
        try:
            artifact.write(output, force)
        except OSError as e:
            raise CompileError(
                f"cannot write the artifact to {str(output)!r} ({e.strerror or e})",
                hint="check the folder's permissions and free space",
            ) from e
    report = CompileReport(
        model=src.label,
        onnx_nodes=int(g.metadata.get("onnx_nodes", 0)),
        ops=ops,
        kernels=len(g.kernels()),
        dispatches=g.dispatch_count(),
        in_place=sum(bool(op.attrs.get("in_place")) for op in g.kernels()),
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
        notes=_notes(g)
        + precision_notes
        + ([f"inputs frozen to constants: {', '.join(sorted(constants))}"] if constants else [])
        + ([generation_note(record)] if record else [])
        + _subgroup_notes(subgroups, artifact)
        + _lanes_notes(tgt, artifact)
        + (tuning_notes(g, tgt.tuning) if tuning is not None else []),
        seconds=time.perf_counter() - t0,
        dims={s.name: [s.lo, s.hi] for s in g.symbols.values()},
    )
    return CompileResult(g, plan, artifact, report)


def run_to_stage(model, until: str, **options) -> Graph:
    """The graph right after stage ``until`` (see ``stage_names``), compiling no further.

    ``model`` and ``options`` are as for ``compile_model``; an IR already after ``until`` is
    returned as it is, one past it is an error."""
    names = stage_names(options.get("opt_level", 2))
    if until not in names:
        raise CompileError(f"unknown stage {until!r}", hint=f"the stages are {', '.join(names)}")
    user_hook = options.pop("on_stage", None)

    def hook(name: str, g: Graph) -> None:
        if user_hook is not None:
            user_hook(name, g)
        if name == until:
            raise _Stop(g)

    if not isinstance(model, (Graph, onnx.ModelProto)) and Path(model).suffix == ".ir":
        from onnx2wgsl.ir import load_ir

        mod = load_ir(model)
        model = mod.graph
        options["stage"] = options.get("stage") or mod.stage
    if isinstance(model, Graph):
        done = options.get("stage") or infer_stage(model)
        if done in names and names.index(done) >= names.index(until):
            if done == until:
                return model
            raise CompileError(f"the IR is after stage {done!r}, past {until!r}; it cannot go back")
    try:
        compile_model(model, on_stage=hook, **options)
    except _Stop as stop:
        return stop.graph
    raise AssertionError(f"stage {until!r} never ran")  # every stage in names runs or was done


def _plan_of_placements(g: Graph, tgt: Target) -> MemoryPlan:
    """The figures of a plan an IR file already carries (the report needs them)."""
    root = roots(g)
    blocks = [b for b in lifetimes(g, root) if b.size > 0]
    arenas: dict[str, int] = {}
    for b in blocks:
        p = b.value.placement
        arenas[p.buffer] = max(arenas.get(p.buffer, 0), p.offset + p.size)
    weights: dict[str, int] = {}
    for v in g.constants():
        p = v.placement
        weights[p.buffer] = max(weights.get(p.buffer, 0), p.offset + p.size)
    naive = sum(align(b.size, tgt.alignment) for b in blocks)
    return MemoryPlan(
        list(arenas.values()), list(weights.values()), naive, peak_bytes(blocks), "from IR", blocks
    )


class IRDumper:
    """An ``on_stage`` hook that writes ``DIR/NN-<stage>.ir`` after each stage.

    All stages share one ``DIR/weights.bin`` (each distinct tensor stored once; the texts
    name it in their header). DIR must be new, empty or an earlier dump (whose IR files the
    first write removes), or any folder with ``force``; no other file is deleted."""

    def __init__(self, directory: str | os.PathLike, opt_level: int = 2, force: bool = False):
        from onnx2wgsl.ir import WeightBlob

        self.dir = Path(directory)
        self.earlier = _earlier_dump(self.dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise CompileError(f"--dump-ir {str(self.dir)!r} exists and is not a folder")
        if self.dir.is_dir() and not (force or self.earlier or not any(self.dir.iterdir())):
            raise CompileError(
                f"--dump-ir folder {str(self.dir)!r} is not empty and holds no IR dump",
                hint="choose a new or empty folder, or pass --force to write the dump's files into it",
            )
        self.names = stage_names(opt_level)
        self.blob = WeightBlob()
        self.written = 0
        self.files: list[Path] = []

    def __call__(self, stage: str, g: Graph) -> None:
        from onnx2wgsl.ir import print_ir

        if not self.files:
            self.dir.mkdir(parents=True, exist_ok=True)
            for old in self.earlier:
                old.unlink()
            (self.dir / "weights.bin").write_bytes(b"")
        text = print_ir(g, stage=stage, weights=self.blob, weights_file="weights.bin")
        path = self.dir / f"{self.names.index(stage):02d}-{stage}.ir"
        path.write_text(text, encoding="utf-8")
        with open(self.dir / "weights.bin", "ab") as f:
            f.write(self.blob.data[self.written :])
        self.written = len(self.blob.data)
        self.files.append(path)


def _earlier_dump(d: Path) -> list[Path]:
    """The IR files of an earlier dump in ``d``: NN-<stage>.ir files that begin as print_ir's do."""
    found = []
    for f in sorted(d.glob("[0-9][0-9]-*.ir")) if d.is_dir() else []:
        try:
            with open(f, encoding="utf-8") as fh:
                head = fh.read(len(IR_HEADER))
        except (OSError, UnicodeDecodeError):
            continue
        if f.is_file() and not f.is_symlink() and head == IR_HEADER:
            found.append(f)
    return found


# Ops whose 32-bit result can wrap on inputs that fit it: sums, products and powers, negation
# and absolute value of the least value, shifts past 31 bits, and casts of large floats.
_WRAPS = frozenset(
    "Add Sub Mul Neg Abs Pow Div Sum CumSum ReduceSum ReduceProd ReduceSumSquare ReduceL1 MatMul "
    "Gemm MatMulInteger ConvInteger Conv Einsum BitShift Cast".split()
)
_SHOWN = 4


def wide_int_warnings(g: Graph) -> list[str]:
    """A warning naming the GPU ops (those left after import's folding) whose int64 or uint64
    result is computed in 32 bits and can wrap although their inputs fit: the dtype policy
    computes 64-bit integers in 32 bits, which silently differs from onnxruntime past 2^31."""
    from onnx2wgsl.ir import DType

    wide = (DType.i64, DType.u64)
    risky = []
    for op in g.ops:
        if op.kind not in _WRAPS or not any(v is not None and v.dtype in wide for v in op.outputs):
            continue
        if op.kind == "Cast" and not op.inputs[0].dtype.is_float:
            continue  # a cast from an integer type that fits is exact (wider inputs are refused)
        risky.append(f"{op.kind} {op.name!r}" if op.name else op.kind)
    if not risky:
        return []
    shown = ", ".join(risky[:_SHOWN]) + (f" and {len(risky) - _SHOWN} more" if len(risky) > _SHOWN else "")
    return [
        f"{len(risky)} op{'s' if len(risky) > 1 else ''} with int64/uint64 results run in 32 bits on the "
        f"GPU and wrap past 2^31 where onnxruntime would not: {shown}; fine for indices, positions "
        "and counts, wrong for values that grow past 32 bits (README: dtype policy)"
    ]


# the comments of the kernels that split a reduction across a workgroup's lanes (conv_rows'
# split form, MatMulNBits' per-column form, the matmul's tree: only a K past the loop budget
# also takes it; attention's lanes form)
_LANE_SPLITS = (
    "partial sums meet in workgroup memory",
    "adjacent words in adjacent lanes",
    "sum in a tree",
    "first of two passes on a GPU",
)


def _lanes_notes(tgt, artifact: Artifact) -> list[str]:
    """For a GPU target, how many shaders split reductions across lanes, and what a CPU
    adapter should take instead."""
    if not tgt.lanes:
        return []
    n = sum(any(m in text for m in _LANE_SPLITS) for text in artifact.shaders.values())
    if not n:
        return []
    return [
        f"target {tgt.name}: {n} of {len(artifact.shaders)} shaders split reductions across a workgroup's "
        "lanes to fill a GPU; for a CPU adapter (lavapipe, SwiftShader) --limits cpu compiles without them"
    ]


def _subgroup_notes(asked: bool, artifact: Artifact) -> list[str]:
    """What --subgroups did: how many shaders use subgroup operations (the artifact then needs
    the device feature), or that none could."""
    if not asked:
        return []
    n = sum(SUBGROUPS_HEADER in text for text in artifact.shaders.values())
    if not n:
        return ["--subgroups: no kernel of this model uses subgroup operations (none asked of the device)"]
    return [
        f"--subgroups: {n} of {len(artifact.shaders)} shaders use subgroup operations; "
        "the artifact needs the device feature subgroups"
    ]


def _notes(g: Graph) -> list[str]:
    from onnx2wgsl.ir import DType

    narrowed = sorted(
        {v.dtype.name for v in g.values() if not v.is_const and v.dtype in (DType.i64, DType.u64, DType.f64)}
    )
    if narrowed:
        return [f"tensors of {', '.join(narrowed)} are computed in 32 bits on the GPU"]
    return []

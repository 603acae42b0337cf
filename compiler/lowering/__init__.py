"""Lowering: every graph op becomes ``kernel`` ops (WGSL dispatches) or a zero-copy ``view``.

A lowering is a function registered per op kind with ``@lowers``; it reads the op, renders
templates through the context (which deduplicates identical shaders), and emits kernel ops
that reuse the op's input and output values, so use-def links survive the rewrite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import jinja2
import numpy as np

from onnx2wgsl.errors import InternalError, Onnx2WgslError, UnsupportedError
from onnx2wgsl.ir import Binding, Dispatch, DType, Graph, Op, TensorType, Tune, Value
from onnx2wgsl.ir.kernel import DECLARATIONS, ENTRY, F32_BITS, Buffer, Dim, Fold, Kernel, dim, ref, slot
from onnx2wgsl.ir.symbolic import Dimish, Expr, SymbolicError, simplify, smax, smin, wgsl
from onnx2wgsl.ir.types import dim_bound, storage_dtype
from onnx2wgsl.runtime.manifest import SUBGROUPS_FEATURE, max_workgroups

from ..cost import flops
from ..target import LOOP_BUDGET, Target

Lowering = Callable[["LowerCtx", Op], None]
_LOWERINGS: dict[str, Lowering] = {}
_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)

WORKGROUP = 64  # invocations per workgroup of the 1-D kernels: a safe size on every GPU
# lanes that share one load through subgroupBroadcast in the subgroup kernels (--subgroups);
# their shaders branch on subgroup_size to a plain path for narrower subgroups
SUBGROUP = 8
LOOP_SLACK = 1024  # iterations left for a kernel's short fixed loops (workgroup trees, lanes)


# constant loop trip counts up to this one are hidden from the shader compiler (``rolled``)
ROLLED_TRIPS = 64


def rolled(bound: str, buffer: str) -> str:
    """A loop bound (u32 shader text) that shader compilers cannot read as a constant, for a
    loop from 0 by 1: Mesa's NIR unrolls a loop of a few constant trips completely, and on
    llvmpipe each storage load then becomes straight-line code for every SIMD lane of every
    trip, which LLVM takes 0.1 s or more per trip to compile (measured: a LayerNorm row loop
    of 32 trips 1.0 s, rolled 0.05 s; a matmul's 8 trips over k 1.1 s, 16 trips 0.17 s), paid
    at the first run wherever no shader cache holds it. ``buffer`` (a ``ref``) is one of the
    kernel's storage buffers: its arrayLength, never 0 for a bound buffer, keeps the bound."""
    n = bound[:-1] if bound.endswith("u") else ""
    if not n.isdigit() or not 1 < int(n) <= ROLLED_TRIPS:
        return bound
    return f"select({bound}, 0u, arrayLength(&{buffer}) == 0u)"


def loop_room() -> int:
    """Loop iterations a kernel may plan for one invocation: target.LOOP_BUDGET, which some
    drivers enforce, less the slack."""
    return LOOP_BUDGET - LOOP_SLACK


def loops_fit(iterations: int) -> bool:
    """Whether an invocation looping ``iterations`` times in all (every loop's iterations,
    nested ones included) stays within the loop budget."""
    return iterations <= loop_room()


def nested_loops(*trips: int) -> int:
    """Iterations of nested loops with these trip counts, outer first (every level counts)."""
    total, outer = 0, 1
    for t in trips:
        outer *= t
        total += outer
    return total


SPLIT_WORKGROUPS = (WORKGROUP, 256)


def subgroups(ctx: LowerCtx) -> int:
    """Lanes the subgroup kernels share loads across (SUBGROUP), or 0 without the target
    feature subgroups (the CLI's --subgroups)."""
    return SUBGROUP if SUBGROUPS_FEATURE in ctx.target.features else 0


def split_workgroup(serial: int, steps: int | None = None, per_step: int = 1) -> int | None:
    """None when an invocation may loop ``serial`` times (target.LOOP_BUDGET), else the smallest
    workgroup whose invocations, each taking every wg-th of ``steps`` steps (default ``serial``)
    of ``per_step`` iterations each, stay within the budget; they then combine in a tree.

    Past 256 x the budget (16M points in one reduction, near the default binding limit) the
    largest workgroup still loops too long on a driver that cuts loops short: such a
    reduction would need a second pass over partial results, which these kernels do not have.
    It still compiles, and runs right on every other driver."""
    if loops_fit(serial):
        return None
    steps = serial if steps is None else steps
    for wg in SPLIT_WORKGROUPS:
        if loops_fit(math.ceil(steps / wg) * per_step):
            return wg
    return SPLIT_WORKGROUPS[-1]


def u32(*factors: Dimish) -> str:
    """A size (the product of ``factors``) in shader text: a u32 literal, or for dims kept
    symbolic its expression over the run's values, which the kernel reads from the dims
    uniform. Where the expanded polynomial's bounds are too loose to show it stays in u32
    (interval bounds of a square such as (h - 2) * (h - 2)), the factors, each a size and so
    never negative, are multiplied in the shader instead."""
    n = simplify(math.prod(factors, start=1))
    if isinstance(n, int):
        return f"{n}u"
    try:
        return wgsl(n, dim)
    except SymbolicError:
        if len(factors) < 2:
            raise
        return "(" + " * ".join(u32(f) for f in factors) + ")"


# Kernels whose sizes come from a table (so that kernels differing only in them share a shader)
# split a flat index i by a size d read at run time as floor((i + 0.5) / d) =
# u32((f32(i) + 0.5) * R), R the f32 nearest 1 / d (a CPU's SIMD lanes have no integer
# division, and a GPU's is slow): (i + 0.5) / d lies at least 0.5 / d from an integer, and the
# two roundings move it by under (i + 0.5) / d * 2^-23, so the quotient is exact while
# i < 2^22. Such a kernel has at most this many elements (more: its sizes are written in).
TABLE_MAX_OUTPUTS = 1 << 21


def reciprocal_bits(n: int) -> int:
    """The u32 bits of the f32 nearest 1 / n: a table's word for dividing by n."""
    return int(np.array(1.0 / n, np.float32).view(np.uint32))


def quotient(i: str, reciprocal: str) -> str:
    """WGSL for floor(i / n), ``reciprocal`` the f32 1 / n (exact below TABLE_MAX_OUTPUTS)."""
    return f"u32((f32({i}) + 0.5f) * {reciprocal})"


def rows_gate(rows: Dimish, most: int) -> Dimish:
    """1 in a run of at most ``most`` rows (``rows`` kept symbolic), else 0: a pair of dispatches
    (``gated``) scale their grids by it and by its complement, and a run leaves one empty."""
    return smax(smin(most + 1 - rows, 1), 0)


def gated(on: Dispatch, off: Dispatch, gate: Dimish, work: Dimish) -> list[Dispatch]:
    """The pair ``on`` (its grid scaled by ``gate``) and ``off`` (by 1 - gate), ``work`` (the
    op's FLOPs, or this pair's share) on the one that runs, for ``bench --profile``."""
    on.flops, off.flops = simplify(work * gate), simplify(work * (1 - gate))
    return [on, off]


def ceil_div(a: Dimish, b: int) -> Dimish:
    """``ceil(a / b)`` of a size (an int, or an expression of dims kept symbolic)."""
    return simplify((a + b - 1) // b)


def i32(n: Dimish) -> str:
    """A size as an i32 expression in shader text (see ``u32``)."""
    n = simplify(n)
    if isinstance(n, int):
        return f"{n}i"
    return wgsl(n, dim, "i32")


def is_symbolic(*dims) -> bool:
    """Some of these dims (or dims of these shapes) is kept symbolic."""
    for d in dims:
        if isinstance(d, tuple | list):
            if is_symbolic(*d):
                return True
        elif isinstance(simplify(d), Expr):
            return True
    return False


def lowers(*kinds: str):
    """Register a lowering for op kinds."""

    def register(fn: Lowering) -> Lowering:
        for k in kinds:
            _LOWERINGS[k] = fn
        return fn

    return register


# ONNX ops that legalize into another op's IR form, and ops that only ever fold on the host.
ALIASES = {
    "Flatten": "Reshape", "Squeeze": "Reshape", "Unsqueeze": "Reshape", "Dropout": "Identity",
    "CastLike": "Cast",
}  # fmt: skip
# (MelWeightMatrix: its input values decide its output shape.)
HOST_ONLY = ("Constant", "ConstantOfShape", "Shape", "Size", "MelWeightMatrix")
# Control flow the frontend resolves at compile time (compiler/control_flow.py).
UNROLLED = ("If", "Loop", "Scan")
_VIEWS = ("Reshape", "Identity")
INTERNAL = (
    "Fused",
    "DimValue",
    "MatMulNBits",
    "GatherNBits",
    "GQAScatter",
    "KVCacheWrite",
)  # made by the compiler, never read from a model
# (MatMulNBits, GatherNBits: com.microsoft.MatMulNBits and GatherBlockQuantized with their weights
# packed, see legalize/contrib.py)


def supported_ops() -> dict[str, str]:
    """ONNX op type -> how it runs: 'gpu' (kernels), 'view' (zero-copy) or 'folded' (host, at compile time).

    onnxruntime's contrib ops are named with their domain (``com.microsoft.FastGelu``); they
    legalize into GPU ops."""
    from ..legalize.contrib import OPS as CONTRIB_OPS

    _load_all()
    table = {k: "view" if k in _VIEWS else "gpu" for k in _LOWERINGS if k not in INTERNAL}
    table.update({k: table[v] for k, v in ALIASES.items()})
    table.update({k: "folded" for k in HOST_ONLY})
    table.update({k: "unrolled" for k in UNROLLED})
    table.update({f"{d}.{k}" if d else k: "gpu" for d, k in CONTRIB_OPS})
    return dict(sorted(table.items()))


def wgsl_type(v: Value) -> str:
    """The WGSL scalar type a kernel computes a value in: the 32-bit type of the dtype policy
    (f32 also for a value stored as f16, which loads widen and stores narrow: ``elem_type``)."""
    st = storage_dtype(v.dtype)
    if st is None:
        raise UnsupportedError(f"dtype {v.dtype} of %{v.name} cannot be stored on the GPU")
    return st.value


def elem_type(v: Value) -> str:
    """The WGSL scalar type a value's buffer holds: f16 for a value stored as f16, else
    ``wgsl_type``. Two values share storage in place only when they agree on it."""
    return "f16" if v.storage is DType.f16 else wgsl_type(v)


_OPEN_WIDE = {"f16": "f32(", "vec4<f16>": "vec4<f32>("}
_OPEN_NARROW = {"f16": "f16(", "vec4<f16>": "vec4<f16>("}


def widen(elem: str, text: str) -> str:
    """``text``, a load of a buffer element of WGSL type ``elem``, as the f32 (or vec4<f32>)
    a kernel computes with: f16 elements convert, others are as stored."""
    return f"{_OPEN_WIDE[elem]}{text})" if elem in _OPEN_WIDE else text


def narrow(elem: str, expr: str) -> str:
    """``expr`` (computed in f32) as a store into a buffer element of WGSL type ``elem``."""
    return f"{_OPEN_NARROW[elem]}{expr})" if elem in _OPEN_NARROW else expr


def _count_work(op: Op, made: list[Op]) -> None:
    """The op's work (``cost.flops``) once, on the heaviest dispatch of the kernels it was
    lowered into, unless its lowering gave its dispatches their shares (a gated pair:
    ``gated``), so that ``bench --profile`` counts each op once. The heaviest binds the most
    bytes (the op's operands, where a second pass binds partial results), then has the most
    workgroups."""
    dispatches = [d for k in made for d in k.dispatches]
    if dispatches and all(isinstance(d.flops, int) and d.flops == 0 for d in dispatches):
        heaviest = max(
            dispatches,
            key=lambda d: (sum(b.nbytes for b in d.bindings), math.prod(dim_bound(n) for n in d.grid)),
        )
        heaviest.flops = flops(op)


class LowerCtx:
    """What a lowering may do: render shaders, make values and constants, emit kernel ops."""

    def __init__(self, g: Graph, target: Target):
        self.g = g
        self.target = target
        self.ops: list[Op] = []
        self.current: Op | None = None

    # -- shaders ------------------------------------------------------------------------
    def shader(self, template: str, *, decls: list[Buffer], **params) -> str:
        """Render a template into a kernel; an identical kernel gives the same shader name.

        The template writes each buffer ``N`` of ``decls`` as ``{{ N }}``, the declarations as
        ``{{ declarations }}``, the entry point as ``{{ entry(workgroup_size) }}`` and a run-time
        bit-cast (how shaders spell inf and nan) as ``{{ f32_bits }}``: markers the kernel
        renders itself (ir/kernel.py)."""
        buffers = tuple(decls)
        refs = {b.name: ref(b.name) for b in buffers}
        assert not refs.keys() & params.keys(), f"{template}: a parameter shares a buffer's name"
        sizes: list[int] = []

        def entry(size: int) -> str:
            sizes.append(int(size))
            return slot(ENTRY)

        elems = {refs[b.name]: b.elem for b in buffers}

        def wide(r: str) -> str:  # opens a load of buffer ``r`` as f32: wide(X)X[i]shut(X)
            return _OPEN_WIDE.get(elems[r], "")

        def narrowed(r: str) -> str:  # opens a store into buffer ``r``: X[i] = narrow(X)v shut(X)
            return _OPEN_NARROW.get(elems[r], "")

        def shut(r: str) -> str:  # closes either
            return ")" if elems[r] in _OPEN_WIDE else ""

        text = _ENV.get_template(template).render(
            **params, **refs, declarations=slot(DECLARATIONS), entry=entry, f32_bits=slot(F32_BITS),
            wide=wide, narrow=narrowed, shut=shut,
        )  # fmt: skip
        assert len(sizes) == 1, f"{template} has {len(sizes)} entry points"
        return self.add_kernel(Kernel.from_marked(text, buffers, sizes[0]), template.split(".")[0])

    def add_kernel(self, kernel: Kernel, stem: str) -> str:
        """The shader name of ``kernel`` (shaders are deduplicated by kernel)."""
        if not kernel.dims and any(isinstance(p, Dim) for p in kernel.parts):
            kernel = replace(kernel, dims=tuple(self.g.symbols))
        problem = kernel.check()
        if problem is not None:
            raise AssertionError(f"a {stem} kernel {problem}")
        return self.g.add_shader(kernel, stem)

    def _fold_grid(self, d: Dispatch) -> Dispatch:
        """A dispatch whose grid is over the per-dimension limit, refolded to fit: the kernel's
        entry point recomputes the workgroup id from a flat id over a grid of the same or a few
        more groups (those past the end return at once, uniformly for their whole workgroup)."""
        limit = self.target.max_groups
        if is_symbolic(d.grid):
            raise self.error(
                f"a grid over dims kept symbolic reaches {[dim_bound(n) for n in d.grid]} workgroups, "
                f"over {limit} per dimension",
                hint="narrow the dims' ranges (--dim NAME=LO..HI)",
            )
        X, Y, Z = d.grid
        total = X * Y * Z
        gx = min(total, limit)
        rest = math.ceil(total / gx)
        gy = min(rest, limit)
        gz = math.ceil(rest / gy)
        if gz > limit:
            raise self.error(
                f"grid {d.grid} has {total:,} workgroups, more than {limit}^3 can address",
                hint="compile for a target with a larger maxComputeWorkgroupsPerDimension",
            )
        kernel = self.g.shaders[d.shader]
        if kernel.fold is not None:
            raise self.error(f"grid {d.grid} exceeds {limit} workgroups per dimension")
        folded = kernel.folded(Fold(gx, gy, total, X, Y))
        name = self.add_kernel(folded, d.shader.split("_", 1)[1] + "_folded")
        return Dispatch(name, (gx, gy, gz), d.bindings)

    # -- values -------------------------------------------------------------------------
    def temp(self, type: TensorType, hint: str) -> Value:
        return self.g.value(hint, type)

    def const(self, data, hint: str, dtype=None, like: Value | None = None) -> Value:
        """A constant; ``like``: a value whose storage type it takes (a weight re-laid out)."""
        v = self.g.const(data, hint, dtype=dtype)
        if like is not None and v.dtype.is_float:
            v.storage = like.storage
        return v

    # -- ops ----------------------------------------------------------------------------
    def kernel(self, inputs: list[Value], outputs: list[Value], dispatches: list[Dispatch], **attrs) -> Op:
        src = self.current
        dispatches = [
            self._fold_grid(d) if max(dim_bound(n) for n in d.grid) > self.target.max_groups else d
            for d in dispatches
        ]
        op = Op(
            "kernel",
            inputs,
            outputs,
            {"op": src.kind if src else "", **attrs},
            name=src.name if src else "",
            dispatches=dispatches,
        )
        n = self.target.max_bindings
        for d in dispatches:
            if len(d.bindings) > n:
                raise self.error(
                    f"a dispatch needs {len(d.bindings)} storage bindings, the target allows {n}"
                )
            for b in d.bindings:
                if b.nbytes > self.target.max_binding_size:
                    raise self.error(
                        f"%{b.value.name} needs a {b.nbytes:,}-byte binding, over the target's "
                        f"maxStorageBufferBindingSize of {self.target.max_binding_size:,}",
                        hint="compile for a target with larger limits (--limits FILE.json)",
                    )
            if any(dim_bound(n) > self.target.max_groups for n in d.grid):
                raise self.error(f"grid {d.grid} exceeds {self.target.max_groups} workgroups per dimension")
            most = max_workgroups([{"size": b.nbytes} for b in d.bindings], self.target.max_groups)
            if (
                math.prod(dim_bound(n) for n in d.grid) > most
            ):  # the runtimes refuse such a dispatch as damage
                raise InternalError(
                    "lower",
                    AssertionError(
                        f"grid {d.grid} gives more workgroups than the {most} its bindings can occupy"
                    ),
                    node=src.name if src else None,
                    op=src.kind if src else None,
                )
        self.ops.append(op)
        return op

    def can_view(self, src: Value, dst: Value) -> bool:
        """Whether ``dst`` can alias ``src``'s storage: a computed value stored as the same
        scalars (under --precision fp16 one side may be f16 and the other 32-bit: a copy then
        converts)."""
        return not src.is_const and src.stored == dst.stored

    def view(self, src: Value, dst: Value, offset: int = 0) -> Op:
        """``dst`` aliases ``src``'s storage, ``offset`` bytes in (a multiple of the target's
        binding alignment, so any kernel can bind the view)."""
        assert offset % self.target.alignment == 0, "view offsets must keep bindings aligned"
        assert src.stored == dst.stored, f"a view of {src.stored} storage as {dst.stored}"
        attrs = {"offset": offset} if offset else {}
        op = Op("view", [src], [dst], attrs, name=self.current.name if self.current else "")
        self.ops.append(op)
        return op

    # -- tunable forms ------------------------------------------------------------------
    def tuned(
        self, kind: str, facts: Mapping[str, object], candidates: Sequence[Mapping], default: Mapping
    ) -> tuple[dict, Tune]:
        """The form a kernel takes among ``candidates`` (each equally correct; ``default`` is
        the lowering's own pick) for the problem ``kind`` with ``facts`` (the sizes and modes
        the choice depends on), and the Tune record its dispatches carry (``tag``): the target's
        tuning table's entry for the problem when it names a candidate, the candidate of the
        tuning round (target.explore) in a tuning run, else the default."""
        key = f"{kind}(" + ", ".join(f"{k}={v}" for k, v in facts.items()) + ")"
        default = dict(default)
        forms = [default] + [dict(c) for c in candidates if dict(c) != default]
        t = self.target
        source = "default"
        choice = default
        if t.explore is not None:
            choice, source = (forms[t.explore], "explore") if t.explore < len(forms) else (default, "default")
        elif key in t.tuning:
            got = t.tuning[key]
            choice, source = (dict(got), "table") if got in forms else (default, "refused")
        return choice, Tune(key, Tune.text(choice), len(forms), source)

    @staticmethod
    def tag(dispatch: Dispatch, tune: Tune) -> Dispatch:
        """``dispatch``, marked as shaped by the tunable choice ``tune``."""
        dispatch.tune = tune
        return dispatch

    def error(self, message: str, hint: str | None = None, cls=UnsupportedError):
        op = self.current
        return cls(
            message,
            node=op.name if op else None,
            op=op.kind if op else None,
            opset=self.g.opset.get(op.domain if op else "", None),
            hint=hint,
        )

    # -- launch geometry ----------------------------------------------------------------
    def grid(self, groups: Dimish) -> tuple[tuple, int]:
        """A grid of ``groups`` workgroups folded into 2-D under the per-dimension limit.

        Returns the grid and its x extent (a shader's flat group id is y * x + x_id). Over dims
        kept symbolic the grid is an expression of them and the x extent is the limit: the
        grid's y is 1 whenever its x is below the limit."""
        limit = self.target.max_groups
        groups = simplify(groups)
        if isinstance(groups, Expr):
            if groups.bounds[1] <= limit:
                return (groups, 1, 1), limit
            return (smin(groups, limit), simplify((groups + limit - 1) // limit), 1), limit
        y = max(1, math.ceil(groups / limit))
        x = max(1, math.ceil(groups / y))
        return (x, y, 1), x


def binding(v: Value, write: bool = False, offset: int = 0, size: int | None = None) -> Binding:
    return Binding(v, offset, size, write)


def decl(name: str, v: Value, write: bool = False, elem: str | None = None) -> Buffer:
    """A kernel's buffer for ``v``, named ``name`` in its shader: constants live in read-only
    weight buffers; everything else is read_write, since WebGPU forbids one buffer in a
    dispatch as both read-only and writable storage."""
    elem = elem or wgsl_type(v)
    if v.storage is DType.f16:  # f32 or vec4<f32>: the same shape of f16s
        assert elem in ("f32", "vec4<f32>"), f"%{v.name} is stored as f16, not {elem}"
        elem = elem.replace("f32", "f16")
    return Buffer(name, elem, "read" if v.is_const else "read_write")


def lower(g: Graph, target: Target) -> Graph:
    """Replace every op of ``g`` by kernel and view ops."""
    _load_all()
    ctx = LowerCtx(g, target)
    for op in list(g.ops):
        fn = _LOWERINGS.get(op.kind) if op.domain == "" else None
        ctx.current = op
        if fn is None:
            raise ctx.error(
                f"no WebGPU lowering for {op.domain + '.' if op.domain else ''}{op.kind}",
                hint="`onnx2wgsl ops` lists the supported ops",
            )
        for v in list(op.inputs) + list(op.outputs):
            if v is not None and storage_dtype(v.dtype) is None:
                _bad_dtype(ctx, v)
            if v is not None and not v.is_const and v.nbytes > target.max_buffer_size:
                # before the lowering: some build host tables as large as a dim (weights may
                # be split over buffers; a computed tensor must fit one)
                raise ctx.error(
                    f"tensor %{v.name} ({v.type}) needs {v.nbytes:,} bytes, over the target's "
                    f"maxBufferSize of {target.max_buffer_size:,}",
                    hint="bind smaller dims (--dim, --shape), or compile for a device with larger "
                    "limits (--limits)",
                )
        op.detach()
        first = len(ctx.ops)
        try:
            if op.outputs and not any(v.type.numel_bound for v in op.outputs):
                ctx.kernel(list(op.inputs), list(op.outputs), [])  # empty outputs: no work to dispatch
            else:
                fn(ctx, op)
                _count_work(op, ctx.ops[first:])
            for v in op.outputs:
                assert v.producer is not None, f"lowering of {op.label} left %{v.name} unproduced"
        except (Onnx2WgslError, MemoryError):
            raise
        except Exception as e:
            if any(v is not None and v.type.is_symbolic for v in list(op.inputs) + list(op.outputs)):
                # a lowering that does not yet take dims kept symbolic, or one that needs a
                # comparison of them that their ranges do not decide
                why = str(e) if isinstance(e, SymbolicError) else "not supported yet"
                raise ctx.error(
                    f"{op.kind} over dims kept symbolic: {why}",
                    hint="bind the dims with --dim NAME=N, or narrow their ranges",
                ) from e
            raise InternalError("lower", e, node=op.name, op=op.kind) from e  # a bug: say where
    g.ops = ctx.ops
    ctx.current = None
    for v in list(g.inputs) + list(g.outputs):
        if storage_dtype(v.dtype) is None:
            _bad_dtype(ctx, v)
    return g


def _bad_dtype(ctx: LowerCtx, v: Value):
    raise ctx.error(
        f"tensor {v.name!r} has dtype {v.dtype.name}, which WebGPU cannot hold",
        hint="only float, integer and bool tensors can run on the GPU",
    )


def _load_all() -> None:
    from . import (  # noqa: F401
        attention,
        conv,
        data,
        dims,
        elementwise,
        fused,
        gather,
        gather_nbits,
        gemm,
        gqa,
        kv_cache,
        matmul_nbits,
        norm,
        pool,
        quant,
        reduce,
        resize,
        rnn,
        shape_ops,
        signal,
    )

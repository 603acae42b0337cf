"""Row reductions and normalizations: Softmax family, LRN, BatchNormalization, and the
Layer / RMS / Instance / Group / mean-variance / Lp normalizations as row kernels (builder.py)."""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, DType, Op, TensorType
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.symbolic import simplify
from onnx2wgsl.ir.types import dim_bound

from ..elementwise_ops import f32
from . import (
    TABLE_MAX_OUTPUTS,
    WORKGROUP,
    LowerCtx,
    binding,
    ceil_div,
    decl,
    elem_type,
    i32,
    is_symbolic,
    loops_fit,
    lowers,
    quotient,
    reciprocal_bits,
    u32,
    wgsl_type,
)
from .builder import KernelBuilder, Sweep, subgroup_rows
from .elementwise import emit_map, map_dispatch
from .indexing import View, broadcast, contiguous
from .reduce import fold_sweep, size_f32

SOFTMAX_SPLIT_L = 32768  # rows this long run in chunks, a workgroup each ...
SOFTMAX_CHUNK = 4096  # ... of this many points


@lowers("Softmax", "LogSoftmax", "Hardmax")
def lower_softmax(ctx: LowerCtx, op: Op) -> None:
    """One workgroup per row: the row's max, then its sum of exp(x - max), then the outputs.
    A long row runs in chunks, a workgroup each, in two passes: each chunk's max and sum (for
    Hardmax, the first index of its max), then each chunk's workgroup folds the row's chunk
    results and writes its outputs. More workgroups for vocabulary-sized rows, and no
    invocation loops past target.LOOP_BUDGET over rows of millions."""
    x, y = op.inputs[0], op.outputs[0]
    axis = op.attrs["axis"]
    L = x.shape[axis]
    inner = simplify(math.prod(x.shape[axis + 1 :]))
    if is_symbolic(x.shape):
        rows = simplify(math.prod(x.shape[:axis]) * inner)
    else:
        rows = math.prod(x.shape) // max(L, 1)
    params = dict(wg=WORKGROUP, kind=op.kind)
    sizes = dict(rows=rows, L=L, inner=inner, L_inner=L * inner)
    # Y may go over X: a row's (or chunk's) last loop reads X only where it writes Y, after
    # barriers that every other read of the row precedes.
    same = x.nbytes == y.nbytes and elem_type(x) == elem_type(y)
    if dim_bound(L) < SOFTMAX_SPLIT_L:  # every length in the range fits one workgroup per row
        per_group = subgroup_rows(ctx, rows, dim_bound(L))  # a subgroup per row (--subgroups)
        lanes = per_group > 0
        grid, nx = ctx.grid(ceil_div(rows, per_group) if lanes else rows)
        shader = ctx.shader(
            "softmax.wgsl.j2",
            decls=[decl("X", x), decl("Y", y, write=True)],
            nx=nx,
            stage="rows",
            lanes=lanes,
            per_group=per_group,
            **_sizes(sizes),
            **params,
        )
        pairs = ((0, 1),) if same else ()
        ctx.kernel([x], [y], [Dispatch(shader, grid, [binding(x), binding(y, write=True)], pairs)])
        return
    chunk = SOFTMAX_CHUNK
    most = dim_bound(L)  # the loops must fit the budget at the longest row
    while not loops_fit(2 * math.ceil(most / chunk) + 3 * math.ceil(chunk / WORKGROUP)) and chunk < most:
        chunk *= 2  # rows beyond 16M points: fewer, longer chunks
    chunks = ceil_div(L, chunk)
    sizes.update(chunk=chunk, chunks=chunks, chunks_2=chunks * 2)
    params.update(_sizes(sizes))
    part = ctx.temp(TensorType(DType.u32, (rows, chunks, 2)), f"{y.name}.chunk_max")
    grid, nx = ctx.grid(simplify(rows * chunks))
    first = ctx.shader(
        "softmax.wgsl.j2",
        decls=[decl("X", x), decl("P", part, write=True)],
        nx=nx,
        stage="partials",
        lanes=False,
        **params,
    )
    ctx.kernel([x], [part], [Dispatch(first, grid, [binding(x), binding(part, write=True)])])
    decls = [decl("X", x), decl("P", part), decl("Y", y, write=True)]
    second = ctx.shader("softmax.wgsl.j2", decls=decls, nx=nx, stage="write", lanes=False, **params)
    bindings = [binding(x), binding(part), binding(y, write=True)]
    ctx.kernel([x, part], [y], [Dispatch(second, grid, bindings, ((0, 2),) if same else ())])


def _sizes(sizes: dict) -> dict:
    """Sizes for a template: each as shader text (``u32``), and as comment text under ``text``."""
    return {**{k: u32(n) for k, n in sizes.items()}, "text": {k: str(simplify(n)) for k, n in sizes.items()}}


@lowers("LRN")
def lower_lrn(ctx: LowerCtx, op: Op) -> None:
    """One invocation an element, summing the squares of its channel window. Static sizes come
    from a table (LRNs that differ only in them share one shader; a channel is split off the
    flat index through f32 reciprocals, lowering.quotient), past TABLE_MAX_OUTPUTS elements
    or over dims kept symbolic they are written in."""
    x, y = op.inputs[0], op.outputs[0]
    size = op.attrs["size"]
    total = simplify(math.prod(x.shape))
    C = x.shape[1]
    HW = simplify(math.prod(x.shape[2:]))
    grid, nx = ctx.grid(ceil_div(total, WORKGROUP))
    decls = [decl("X", x), decl("Y", y, write=True)]
    bindings, inputs = [binding(x), binding(y, write=True)], [x]
    C_last = str(C - 1) if isinstance(C, int) else i32(C - 1)
    sizes = dict(total=u32(total), C=u32(C), C_last=C_last, HW=u32(HW))
    tabled = all(isinstance(n, int) for n in (total, C, HW)) and total <= TABLE_MAX_OUTPUTS
    if tabled:
        words = [nx, total, C, HW, reciprocal_bits(C), reciprocal_bits(HW)]
        tv = ctx.const(np.array(words, np.uint32), f"{y.name}.sizes")
        decls.insert(1, decl("Sz", tv))
        bindings.insert(1, binding(tv))
        inputs.append(tv)
        sz = ref("Sz")
        sizes = dict(total=f"{sz}[1]", C=f"{sz}[2]", C_last=f"i32({sz}[2]) - 1", HW=f"{sz}[3]")
        plane = quotient("i", f"bitcast<f32>({sz}[5])")
        channel = f"i32(q - {quotient('q', f'bitcast<f32>({sz}[4])')} * {sizes['C']})"
        nx = f"{sz}[0]"
    shader = ctx.shader(
        "lrn.wgsl.j2", decls=decls, wg=WORKGROUP, nx=nx, tabled=tabled,
        plane=plane if tabled else "", channel=channel if tabled else "", size=size,
        before=(size - 1) // 2, after=size - 1 - (size - 1) // 2, bias=f32(op.attrs["bias"]),
        alpha_over_size=f32(op.attrs["alpha"] / size), beta=f32(op.attrs["beta"]), **sizes,
    )  # fmt: skip
    ctx.kernel(inputs, [y], [Dispatch(shader, grid, bindings)])


@lowers("BatchNormalization")
def lower_batchnorm(ctx: LowerCtx, op: Op) -> None:
    """Statistics computed at run time (constant ones were canonicalized to Mul + Add)."""
    x, y = op.inputs[0], op.outputs[0]
    params = op.inputs[1:5]
    pshape = params[0].shape + (1,) * (x.type.rank - 1 - params[0].type.rank)
    eps = f32(op.attrs["epsilon"])
    reads = [(x, contiguous(x.shape))] + [(v, broadcast(pshape, x.shape)) for v in params]
    d = map_dispatch(
        ctx, y.shape, reads, (y, contiguous(y.shape)),
        lambda a: f"(({a[0]} - {a[3]}) * {a[1]} / sqrt({a[4]} + {eps}) + {a[2]})",
    )  # fmt: skip
    emit_map(ctx, [x, *params], y, [d])


# -- normalizations over row statistics: one kernel each (statistics, then the normalized row)
def _stats(x: str, R, eps: float | None) -> list[Sweep]:
    """Mean, then the mean squared deviation from it (two passes: no cancellation), in f32, of
    the element ``x``. ``R``, the points per row, may be an expression of dims kept symbolic."""
    after = [f"let inv = 1.0f / sqrt(q / {size_f32(R)} + {f32(eps)});"] if eps is not None else []
    return [
        fold_sweep("s", "f32", "sum", x, after=[f"let mean = s / {size_f32(R)};"]),
        fold_sweep("q", "f32", "sum", f"({x} - mean) * ({x} - mean)", after=after),
    ]


def _float_only(ctx: LowerCtx, x) -> None:
    if wgsl_type(x) != "f32":
        raise ctx.error(f"{x.dtype.name} input; this normalization is defined for floats")


@lowers("LayerNormalization", "RMSNormalization")
def lower_layer_norm(ctx: LowerCtx, op: Op) -> None:
    """Normalize over the dims from ``axis`` on; scale (and bias) broadcast over them."""
    x = op.inputs[0]
    _float_only(ctx, x)
    space, axis, eps = tuple(x.shape), op.attrs["axis"], op.attrs["epsilon"]
    outs = dict(zip(op.attrs["outputs"], op.outputs))
    params = [v for v in op.inputs[1:] if v is not None]
    R = simplify(math.prod(space[axis:]))
    k = KernelBuilder(
        ctx, space, reduced=range(axis, len(space)), comment=f"{op.kind} of {x.type} over dims {axis}.."
    )
    a, *p = [k.load(x, contiguous(space))] + [k.load(v, broadcast(v.shape, space)) for v in params]
    if op.kind == "RMSNormalization":
        k.sweep(fold_sweep("q", "f32", "sum", f"{a} * {a}",
                           after=[f"let inv = 1.0f / sqrt(q / {size_f32(R)} + {f32(eps)});"]))  # fmt: skip
        expr = f"{a} * inv * {p[0]}"
    else:
        k.sweep(*_stats(a, R, eps))
        expr = f"({a} - mean) * inv * {p[0]}" + (f" + {p[1]}" if op.attrs["bias"] else "")
    stats = [(outs[i], name) for i, name in ((1, "mean"), (2, "inv")) if i in outs]
    for v, name in stats:
        k.row_write(v, name)
    if 0 in outs:
        k.elem_write(outs[0], contiguous(space), expr)
    _emit_norm(ctx, op, k, [v for v, _ in stats])


@lowers("InstanceNormalization", "GroupNormalization")
def lower_instance_norm(ctx: LowerCtx, op: Op) -> None:
    """Per (instance, channel group): InstanceNormalization is the group-per-channel case.
    The space is [N, G, C/G, spatial]; scale and bias are per channel (or per group)."""
    x, scale, bias = op.inputs[:3]
    y = op.outputs[0]
    _float_only(ctx, x)
    N, C = x.shape[:2]
    S = math.prod(x.shape[2:])
    G = op.attrs.get("num_groups", C)
    space = (N, G, C // G, S)
    per_group = op.attrs.get("per_group", 0)
    pview = View(0, (0, 1, 0, 0)) if per_group else View(0, (0, C // G, 1, 0))
    k = KernelBuilder(ctx, space, reduced=[2, 3], comment=f"{op.kind} of {x.type} in {G} groups")
    a, s, b = k.load(x, contiguous(space)), k.load(scale, pview), k.load(bias, pview)
    k.sweep(*_stats(a, simplify(math.prod(space[2:])), op.attrs["epsilon"]))
    k.elem_write(y, contiguous(space), f"({a} - mean) * inv * {s} + {b}")
    _emit_norm(ctx, op, k)


@lowers("MeanVarianceNormalization")
def lower_mvn(ctx: LowerCtx, op: Op) -> None:
    """(x - mean) / (std + 1e-9) over ``axes``, the function's definition."""
    x, y = op.inputs[0], op.outputs[0]
    _float_only(ctx, x)
    space, axes = tuple(x.shape), op.attrs["axes"]
    R = simplify(math.prod(space[a] for a in axes))
    k = KernelBuilder(ctx, space, reduced=axes, comment=f"MVN of {x.type} over {axes}")
    a = k.load(x, contiguous(space))
    sweeps = _stats(a, R, None)
    sweeps[-1].after.append(f"let den = sqrt(q / {size_f32(R)}) + {f32(1e-9)};")
    k.sweep(*sweeps)
    k.elem_write(y, contiguous(space), f"({a} - mean) / den")
    _emit_norm(ctx, op, k)


@lowers("LpNormalization")
def lower_lp_norm(ctx: LowerCtx, op: Op) -> None:
    """x / ||x||_p along ``axis`` (p = 1 or 2); a zero norm gives 0, like the reference."""
    x, y = op.inputs[0], op.outputs[0]
    _float_only(ctx, x)
    space, axis, p = tuple(x.shape), op.attrs["axis"], op.attrs["p"]
    k = KernelBuilder(ctx, space, reduced=[axis], comment=f"L{p} norm of {x.type}")
    a = k.load(x, contiguous(space))
    norm = f"abs({a})" if p == 1 else f"{a} * {a}"
    k.sweep(fold_sweep("q", "f32", "sum", norm, after=["let n = q;" if p == 1 else "let n = sqrt(q);"]))
    k.elem_write(y, contiguous(space), f"select({a} / n, 0.0f, n == 0.0f)")
    _emit_norm(ctx, op, k)


def _emit_norm(ctx: LowerCtx, op: Op, k: KernelBuilder, stats=()) -> None:
    """Emit the normalization ``k`` builds; over empty rows, its outputs without a dispatch
    (unless it writes row statistics ``stats``, which would be undefined)."""
    ins = [v for v in op.inputs if v is not None]
    if math.prod(k.space[d] for d in k.reduced) == 0:
        if any(v.type.numel for v in stats):
            raise ctx.error("statistics over an empty set of points are undefined")
        ctx.kernel(ins, list(op.outputs), [])
        return
    d = k.dispatch()
    ctx.kernel(ins, list(op.outputs), [d] if d else [])

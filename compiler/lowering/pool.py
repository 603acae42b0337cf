"""Pooling over 1-3 spatial dims: windowed max (with indices) / average / Lp, the global pools
as one window over all space, and MaxUnpool's scatter.

Like the convolutions, every kernel addresses (D, H, W) and fewer spatial dims run with
leading dims of size 1. A window too big for one invocation to loop over (a global pool of
a large image) is shared by a workgroup's invocations, combined in a tree.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, Op
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.types import dim_bound

from ..elementwise_ops import NEG_INF, f32
from . import (
    TABLE_MAX_OUTPUTS,
    WORKGROUP,
    LowerCtx,
    binding,
    ceil_div,
    decl,
    i32,
    is_symbolic,
    lowers,
    nested_loops,
    quotient,
    reciprocal_bits,
    split_workgroup,
    u32,
    wgsl_type,
)
from .conv import spatial_geometry
from .elementwise import map_dispatch
from .indexing import contiguous

# The most negative value of each storage type: where a max starts.
_LOWEST = {"f32": NEG_INF, "i32": "i32(-2147483647i - 1i)", "u32": "0u"}


@lowers("MaxPool", "AveragePool", "LpPool")
def lower_pool(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    geo = spatial_geometry(ctx, op, x, y, symbolic=True)
    _emit(ctx, op, geo, op.kind, op.attrs)


@lowers("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def lower_global_pool(ctx: LowerCtx, op: Op) -> None:
    x = op.inputs[0]
    S = math.prod(x.shape[2:])  # (over symbolic spatial dims, a window of symbolic length)
    geo = dict(
        D=1, H=1, W=S, S=S, OD=1, OH=1, OW=1, OS=1, KD=1, KH=1, KW=S, KS=S, SD=1, SH=1, SW=1,
        DD=1, DH=1, DW=1, PD=0, PH=0, PW=0, PDE=0, PHE=0, PWE=0,
    )  # fmt: skip
    kind = op.kind.removeprefix("Global")
    _emit(ctx, op, geo, kind, {"count_include_pad": 0, "p": op.attrs.get("p", 2)})


def _emit(ctx: LowerCtx, op: Op, geo: dict, kind: str, attrs: dict) -> None:
    x, y = op.inputs[0], op.outputs[0]
    indices = op.outputs[1] if kind == "MaxPool" and op.attrs.get("with_indices") else None
    ty = wgsl_type(x)
    if kind != "MaxPool" and ty != "f32":
        raise ctx.error(f"{kind} of {x.dtype.name} is not supported", hint="only float inputs average")
    if is_symbolic(x.shape[1]):
        raise ctx.error(
            f"{kind} over dims kept symbolic takes symbolic batch and spatial dims only; input {x.type}",
            hint="bind the channel dim with --dim NAME=N",
        )
    # a window of symbolic length (a global pool over symbolic spatial dims) plans at its bound
    KW, KS = dim_bound(geo["KW"]), dim_bound(geo["KS"])
    split = split_workgroup(nested_loops(geo["KD"], geo["KH"], KW), KS)
    index = None
    if kind == "MaxPool":
        init, finish = _LOWEST[ty], "acc"
        if indices is not None:
            # flat index into the whole input: row-major, or column-major over the spatial dims
            D, H = geo["D"], geo["H"]
            if attrs.get("storage_order", 0):
                index = f"i32(nc * {u32(D, H, geo['W'])}) + z + y * {_int(D)} + x * {_int(D * H)}"
            else:
                index = f"i32(xb) + (z * {_int(H)} + y) * {_int(geo['W'])} + x"
            at = "\n          bt = t;" if split else ""  # a split window breaks ties by place
            acc = f"if (valid == 0u || v > acc) {{\n          acc = v;\n          best = {index};{at}\n        }}"
        else:
            acc = "acc = max(acc, v);"
    elif kind == "AveragePool":
        div = "padded" if attrs.get("count_include_pad") else "valid"
        init, acc, finish = "0.0f", "acc += v;", f"acc / f32(max({div}, 1u))"
    else:
        p = attrs["p"]
        init, acc = "0.0f", f"acc += pow(abs(v), {f32(p)});"
        finish = f"pow(acc, {f32(1.0 / p)})"
    total = math.prod(y.shape)
    N, C = y.shape[:2]
    accs, merge = [("acc", ty), ("valid", "u32"), ("padded", "u32")], []
    if split:
        if indices is not None:
            accs += [("best", "i32"), ("bt", "u32")]
            merge = [  # before this level's counts are summed: a half without points never wins
                "let o = lid + half;",
                "if (red_valid[o] > 0u && (red_valid[lid] == 0u || red_acc[o] > red_acc[lid] ||",
                "    (red_acc[o] == red_acc[lid] && red_bt[o] < red_bt[lid]))) {",
                "  red_acc[lid] = red_acc[o];",
                "  red_best[lid] = red_best[o];",
                "  red_bt[lid] = red_bt[o];",
                "}",
            ]
        elif kind == "MaxPool":
            merge = ["red_acc[lid] = max(red_acc[lid], red_acc[lid + half]);"]
        else:
            merge = ["red_acc[lid] += red_acc[lid + half];"]
        merge += [f"red_{n}[lid] += red_{n}[lid + half];" for n in ("valid", "padded")]
    decls = [decl("X", x), decl("Y", y, write=True)]
    if indices is not None:
        decls.append(decl("I", indices, write=True))
    bindings = [binding(x), binding(y, write=True)]
    if indices is not None:
        bindings.append(binding(indices, write=True))
    inputs = [x]
    sizes, size_code = _sizes(geo), []
    OS, NC = geo["OD"] * geo["OH"] * geo["OW"], N * C
    tabled = (
        not split
        and indices is None
        and all(isinstance(geo[k], int) for k in TABLE_SIZES if k in geo)
        and isinstance(NC, int)
        and NC * OS <= TABLE_MAX_OUTPUTS
        and len(bindings) < ctx.target.max_bindings
    )
    depth = any(geo[k] != v for k, v in (("D", 1), ("OD", 1), ("KD", 1), ("PD", 0), ("PDE", 0)))
    grid, nx = ctx.grid(total if split else ceil_div(total, WORKGROUP))
    if tabled:
        # the sizes from a table: pools that differ only in them share one shader (a 2-D pool
        # writes its depth's sizes in, all 1 or 0, and every pool its window's dilations)
        values = _table_values(geo, NC, nx)
        table = TABLE_SIZES + (DEPTH_SIZES if depth else ())
        tv = ctx.const(np.array([values[k] for k in table], np.uint32), f"{y.name}.sizes")
        decls.insert(1, decl("Sz", tv))
        bindings.insert(1, binding(tv))
        inputs.append(tv)
        sz = ref("Sz")
        size_code = [f"let s{k} = {_SIZE_TYPES.get(k, 'i32')}({sz}[{j}]);" for j, k in enumerate(table)]
        sizes = _tabled_sizes(sizes, depth)
    shader = ctx.shader(
        "pool.wgsl.j2", decls=decls, wg=split or WORKGROUP, nx=nx, total=u32(N, C, *y.shape[2:]),
        kind=kind, init=init, accumulate=acc, finish=finish, with_index=indices is not None,
        split=split is not None, accs=accs, merge=merge, tabled=tabled, size_code=size_code,
        depth=depth, plane=quotient("i", "sROS"), row=quotient("r", "sROW"), layer=quotient("q", "sROH"),
        **{**geo, **sizes},
    )  # fmt: skip
    ctx.kernel(inputs, list(op.outputs), [Dispatch(shader, grid, bindings)])


# a tabled pool's sizes: what its shader reads from the dispatch's table (the window's shape,
# KD x KH x KW, stays in the text, where its loops unroll)
TABLE_SIZES = ("NX", "TOTAL", "OS", "ROS", "OW", "ROW", "S", "SH", "SW", "PH", "PW", "H", "W", "HE", "WE")
DEPTH_SIZES = ("OH", "ROH", "SD", "PD", "D", "DE")  # and these for a pool over depth too
_SIZE_TYPES = dict.fromkeys(("NX", "TOTAL", "OS", "OW", "OH", "S"), "u32") | dict.fromkeys(
    ("ROS", "ROW", "ROH"), "bitcast<f32>"
)
# (the quotients by them: lowering.quotient, at most TABLE_MAX_OUTPUTS outputs)


def _table_values(g: dict, nc: int, nx: int) -> dict:
    """The table's sizes as u32 words (the R sizes: the bits of f32 reciprocals) for ``nc``
    rows of outputs and a grid ``nx`` workgroups wide."""
    OS = g["OD"] * g["OH"] * g["OW"]
    return dict(
        g, NX=nx, TOTAL=nc * OS, OS=OS, ROS=reciprocal_bits(OS), S=g["D"] * g["H"] * g["W"],
        DE=g["D"] + g["PDE"], HE=g["H"] + g["PHE"], WE=g["W"] + g["PWE"], ROW=reciprocal_bits(g["OW"]),
        ROH=reciprocal_bits(g["OH"]),
    )  # fmt: skip


def _tabled_sizes(sizes: dict, depth: bool) -> dict:
    """The template's sizes as the tabled shader's variables (``let sK`` lines read them)."""
    names = dict(
        H_i="sH", W_i="sW", HE_i="sHE", WE_i="sWE", S_u="sS", OS_u="sOS", OW_u="sOW", SH="sSH",
        SW="sSW", PH="sPH", PW="sPW",
    )  # fmt: skip
    if depth:
        names.update(D_i="sD", DE_i="sDE", OH_u="sOH", SD="sSD", PD="sPD")
    return {**sizes, **names}


def _int(n) -> str:
    """An i32 size as the pool template writes it: a bare literal, or an expression of dims
    kept symbolic."""
    return str(n) if isinstance(n, int) else i32(n)


def _sizes(g: dict) -> dict:
    """A geometry's sizes rendered for the pool template (the same text as before for ints)."""
    D, H, W, KH, KW = g["D"], g["H"], g["W"], g["KH"], g["KW"]
    return dict(
        D_i=_int(D), H_i=_int(H), W_i=_int(W), DE_i=_int(D + g["PDE"]), HE_i=_int(H + g["PHE"]),
        WE_i=_int(W + g["PWE"]), S_u=u32(D, H, W), OS_u=u32(g["OD"], g["OH"], g["OW"]),
        OHW_u=u32(g["OH"], g["OW"]), OW_u=u32(g["OW"]), OH_u=u32(g["OH"]), KW_i=_int(KW),
        KW_u=u32(KW), KHW_u=u32(KH, KW), KS_u=u32(g["KD"], KH, KW),
    )  # fmt: skip


@lowers("MaxUnpool")
def lower_max_unpool(ctx: LowerCtx, op: Op) -> None:
    """Zero the output, then scatter each value to its index. Indices address the shape MaxPool
    would have unpooled to; a larger output_shape holds that block in its leading corner."""
    x, ind, y = op.inputs[0], op.inputs[1], op.outputs[0]
    inferred = op.attrs["inferred_shape"]
    nd = len(inferred) - 2
    if not 1 <= nd <= 3:
        raise ctx.error(f"{nd}-D unpooling is not supported", hint="1-D, 2-D and 3-D are")
    out = tuple(y.shape)
    if is_symbolic(tuple(inferred[1:]), out[1:], tuple(x.shape[1:])):
        raise ctx.error(
            f"MaxUnpool over dims kept symbolic takes a symbolic batch only; input {x.type}, output {y.type}",
            hint="bind the other dims with --dim NAME=N",
        )
    if any(i > o for i, o in zip(inferred, out)):
        raise ctx.error(f"output_shape {out} is smaller than the unpooled shape {tuple(inferred)}")
    zero = "0.0f" if wgsl_type(y) == "f32" else f"{wgsl_type(y)}(0)"
    fill = map_dispatch(ctx, out, [], (y, contiguous(out)), lambda a: zero)
    # flat index in the inferred shape -> coordinates -> flat index in the output
    lines = ["var q = u32(idx);"]
    terms = []
    stride = 1
    for d in reversed(range(len(out))):
        lines.append(f"let c{d} = q % {u32(inferred[d])};" if d else f"let c{d} = q;")
        if d:
            lines.append(f"q = q / {u32(inferred[d])};")
        terms.append(f"c{d} * {u32(stride)}")
        stride *= out[d]
    total = math.prod(x.shape)  # (a symbolic batch: the other dims are static)
    grid, nx = ctx.grid(ceil_div(total, WORKGROUP))
    shader = ctx.shader(
        "max_unpool.wgsl.j2",
        decls=[decl("X", x), decl("Ind", ind), decl("Y", y, write=True)],
        wg=WORKGROUP, nx=nx, total=u32(total), limit=_int(math.prod(inferred)), lines=lines,
        target=" + ".join(reversed(terms)),
    )  # fmt: skip
    scatter = Dispatch(shader, grid, [binding(x), binding(ind), binding(y, write=True)])
    ctx.kernel([x, ind], [y], [d for d in (fill, scatter) if d is not None])

"""Convolutions: Conv (implicit GEMM or direct), ConvTranspose (gather form), DeformConv.

Conv with constant weights and at least 4 output channels per group runs as conv_rows.wgsl.j2:
each invocation a tile of pixels along an output row x a block of output channels, sized per
conv by ``row_tile``; run-time weights and kernel rows longer than ROW_KW taps take
conv_gemm.wgsl.j2, fewer channels per group conv_direct.wgsl.j2. Its sizes other than the
kernel's and the tile's are read at run time from a table (a constant u32 tensor per
dispatch), so convs that differ in channels, spatial sizes, strides along D and H or pads
share one shader.

Every kernel is written for three spatial dims; 1-D and 2-D convolutions are viewed as 3-D
ones with leading spatial dims of size 1 (their loops then run once, which shader compilers
remove). Weights and biases may be constants or computed at run time: the implicit-GEMM
kernel reads constant weights re-laid out at compile time as vec4s of output channels, and
run-time weights in their ONNX layout, four channels per vec4 gathered by the kernel.

An output whose reduction (input channels x kernel taps) is too long for one invocation to
loop over (target.LOOP_BUDGET) gets a workgroup of its own instead: its invocations take
every 64th (or 256th) product and sum in a tree (conv_split.wgsl.j2, and the split branches of
the ConvTranspose and DeformConv templates).

Conv takes a batch and spatial dims kept symbolic (channels stay static): the templates take
those sizes rendered (``sizes``), tiles are chosen at the bounds, grids are expressions.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, Op, Value
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.symbolic import SymbolicError, simplify, smax
from onnx2wgsl.ir.types import dim_bound

from . import (
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
    nested_loops,
    split_workgroup,
    subgroups,
    u32,
    widen,
)
from .fused import Epilogue, Prologue, epilogue, operands, prologue

SPATIAL = 3  # kernels address (D, H, W); fewer spatial dims are padded with leading 1s


def _as3(values, fill, symbolic: bool = False) -> list:
    values = [simplify(v) for v in values] if symbolic else [int(v) for v in values]
    return [fill] * (SPATIAL - len(values)) + values


def spatial_geometry(ctx: LowerCtx, op: Op, x: Value, y: Value, symbolic: bool = False) -> dict:
    """Window geometry of a conv or pool over (D, H, W): sizes, kernel, strides, dilations, pads.
    With ``symbolic`` the sizes may be expressions of dims kept symbolic (the templates then
    take them rendered: ``sizes``)."""
    nd = len(op.attrs["kernel_shape"])
    if not 1 <= nd <= SPATIAL:
        raise ctx.error(f"{nd}-D windows are not supported", hint="1-D, 2-D and 3-D are")
    pads = op.attrs["pads"]
    D, H, W = _as3(x.shape[2:], 1, symbolic)
    OD, OH, OW = _as3(y.shape[2:], 1, symbolic)
    KD, KH, KW = _as3(op.attrs["kernel_shape"], 1)
    SD, SH, SW = _as3(op.attrs["strides"], 1)
    DD, DH, DW = _as3(op.attrs["dilations"], 1)
    PD, PH, PW = _as3(pads[:nd], 0)
    PDE, PHE, PWE = _as3(pads[nd:], 0)
    return dict(
        D=D, H=H, W=W, S=D * H * W, OD=OD, OH=OH, OW=OW, OS=OD * OH * OW, KD=KD, KH=KH, KW=KW,
        KS=KD * KH * KW, SD=SD, SH=SH, SW=SW, DD=DD, DH=DH, DW=DW, PD=PD, PH=PH, PW=PW,
        PDE=PDE, PHE=PHE, PWE=PWE,
    )  # fmt: skip


def last(*factors) -> str:
    """``u32(*factors) - 1`` clamped at 0 (the last index, for clamping reads; a kernel
    whose product is 0 has no workgroups)."""
    n = simplify(math.prod(factors))
    try:
        return u32(smax(n, 1) - 1)
    except SymbolicError:
        return f"(max({u32(*factors)}, 1u) - 1u)"


def sizes(p: dict) -> dict:
    """The spatial sizes of a geometry as the conv templates write them: ``X_u`` u32 sizes,
    ``X_i`` i32 ones (bare integer literals for static sizes, as the templates always wrote)."""

    def i(n) -> str:
        return str(n) if isinstance(n, int) else i32(n)

    return dict(
        D_i=i(p["D"]), H_i=i(p["H"]), W_i=i(p["W"]), S_u=u32(p["D"], p["H"], p["W"]),
        OS_u=u32(p["OD"], p["OH"], p["OW"]), OHW_u=u32(p["OH"], p["OW"]), OH_u=u32(p["OH"]),
        OW_u=u32(p["OW"]), OCS_u=u32(p["OC"], p["OD"], p["OH"], p["OW"]) if "OC" in p else None,
    )  # fmt: skip


def conv_geometry(ctx: LowerCtx, op: Op, x: Value, w: Value, symbolic: bool = False) -> dict:
    """Conv shape parameters: batch, channels, groups and the 3-D window geometry."""
    p = spatial_geometry(ctx, op, x, op.outputs[0], symbolic)
    G = op.attrs["group"]
    N, C = x.shape[:2]
    OC = w.shape[0]
    if C % G or OC % G or w.shape[1] != C // G:
        raise ctx.error(f"weights {w.type} do not match {C} input channels in {G} groups")
    p.update(N=N, C=C, OC=OC, G=G, ICG=C // G, OCG=OC // G, K=(C // G) * p["KS"], P=N * p["OS"])
    return p


@lowers("Conv")
def lower_conv(ctx: LowerCtx, op: Op) -> None:
    """Input 0 is read through ``load_x`` (stored, or computed by a prologue); a result goes
    through the epilogue before it is stored."""
    pro = prologue(ctx, op)
    own = operands(op)[1]
    w, b = own[1], own[2] if len(own) > 2 else None
    if is_symbolic(pro.x.shape[1], tuple(w.shape)):
        raise ctx.error(
            f"Conv over dims kept symbolic takes symbolic batch and spatial dims only; input "
            f"{pro.x.type}, weights {w.type}",
            hint="bind the channel dims with --dim NAME=N",
        )
    p = conv_geometry(ctx, op, pro.x, w, symbolic=True)
    if p["OCG"] >= 4:
        _gemm(ctx, op, p, pro, w, b)
    else:
        _direct(ctx, op, p, pro, w, b)


def _gemm(ctx: LowerCtx, op: Op, p: dict, pro: Prologue, w: Value, b: Value | None) -> None:
    y = op.outputs[0]
    G, OCG, K = p["G"], p["OCG"], p["K"]
    ocg4 = math.ceil(OCG / 4)
    if w.is_const:
        # [OC, ICG, KD, KH, KW] -> [G, K, OCG padded to 4]: one vec4 of weights feeds 4 channels
        wt = w.data.reshape(G, OCG, K).transpose(0, 2, 1)
        wt = np.pad(wt, ((0, 0), (0, 0), (0, ocg4 * 4 - OCG)))
        wv = ctx.const(wt.reshape(G * K * ocg4, 4), f"{w.name}.gemm", dtype=w.dtype, like=w)
        w_decl = decl("Wt", wv, elem="vec4<f32>")
        w_setup = [f"let wb = g * {K * ocg4}u + oc4;"]
        w_load = widen(w_decl.elem, f"{ref('Wt')}[wb + kk * {ocg4}u]")
    else:
        # run-time weights in ONNX layout: lane c reads channel oc4 * 4 + c (clamped; unused lanes
        # past OCG are never stored)
        wv = w
        w_decl = decl("Wt", w)
        w_setup = [f"let wb{c} = (g * {OCG}u + min(oc4 * 4u + {c}u, {OCG - 1}u)) * {K}u;" for c in range(4)]
        w_load = (
            "vec4<f32>(" + ", ".join(widen(w_decl.elem, f"{ref('Wt')}[wb{c} + kk]") for c in range(4)) + ")"
        )
    inputs = pro.inputs + [wv] + ([b] if b is not None else [])
    epi = epilogue(ctx, op)
    decls = epi.decls_with(pro.decls + [w_decl] + ([decl("Bv", b)] if b is not None else []), y)
    if w.is_const and p["KW"] <= ROW_KW and loops_fit(nested_loops(p["ICG"], p["KD"], p["KH"])):
        _rows(ctx, op, p, pro, w, b)
        return
    split = split_workgroup(nested_loops(p["ICG"], p["KD"], p["KH"], p["KW"]), p["K"])
    if split:
        channels = [f"let g = wid.y / {ocg4}u;", f"let oc4 = wid.y % {ocg4}u;"]
        grid = (p["P"], G * ocg4, 1)
        _split(ctx, op, p, pro, epi, decls, inputs, split, channels, w_setup, w_load, 4, grid, b is not None)
        return
    P = dim_bound(p["P"])  # (over dims kept symbolic: the tile is chosen at the bound)
    pixels = (p["N"], p["OD"], p["OH"], p["OW"])
    tm = 4 if P >= 4096 else 2 if P >= 512 else 1
    prologue = op.attrs.get("prologue") is not None
    form, tune = ctx.tuned(
        "conv_gemm", _facts(p, pro, prologue), [{"tm": t} for t in (1, 2, 4, 8)], {"tm": tm}
    )
    tm = form["tm"]
    pointwise = (
        p["KS"] == 1
        and (p["SD"], p["SH"], p["SW"]) == (1, 1, 1)
        and (
            (p["PD"], p["PH"], p["PW"]) == (0, 0, 0)
            and (p["D"], p["H"], p["W"]) == (p["OD"], p["OH"], p["OW"])
        )
    )
    shader = ctx.shader(
        "conv_gemm.wgsl.j2", decls=decls, wg=WORKGROUP, tm=tm, ocg4=ocg4,
        bias=b is not None, pointwise=pointwise, w_setup=w_setup, w_load=w_load, out_expr=epi.expr,
        epi_lines=epi.lines, helpers=_helpers(pro, epi), load_x=pro.code,
        **{**p, "P": u32(*pixels), "P_last": last(*pixels)}, **sizes(p),
    )  # fmt: skip
    grid = (ceil_div(p["P"], WORKGROUP * tm), G * ocg4, 1)
    ctx.kernel(inputs + epi.inputs, [y], [ctx.tag(epi.dispatch(shader, grid, inputs, y), tune)])


ROW_TILE = 8  # most output pixels of a row one invocation computes
ROW_TILE_PROLOGUE = 4  # the same when the input is read through a prologue
ROW_ACCS = 128  # accumulators (pixels x channels) an invocation keeps at most
ROW_BODY = 128  # multiply-adds of vec4s the unrolled (pixels x kernel row x channels) body holds
# input columns the unrolled body reads per (input channel, kd, kh) at most: SwiftShader
# (Chromium's software WebGPU) loses the device creating the pipeline of a padded 3x3 conv at
# stride 2 whose tile of 8 pixels reads 17 columns (each a clamped, masked load), and of
# squeezenet's padded 3x3 convs at tiles of 16 pixels (18 columns); at most 10 run
ROW_COLS = 10
ROW_KW = ROW_COLS  # longest kernel row conv_rows unrolls (longer ones loop in conv_gemm)
ROW_GROUPS = 16  # fewer workgroups than this: smaller channel blocks, to share the work out
# a conv with fewer tiles (an invocation each) than the target's lanes splits its input channels
# over up to ROW_SPLIT_LANES lanes per tile, each taking at least ROW_SPLIT_CHANNELS of them: a
# GPU runs tens of thousands of invocations at once, and small late-stage convs (7x7 pixels, 1x1
# logits) had a few hundred, each looping over every input channel
ROW_SPLIT_LANES = 16
ROW_SPLIT_CHANNELS = 8
ROW_SPLIT_ACCS = 64  # accumulators of a split tile (its partial sums pass through workgroup memory)

# conv_rows' sizes, each a u32 its shader reads once from the dispatch's table of sizes (a
# constant u32 tensor) or, for a size over dims kept symbolic, computes from the dims uniform
ROW_SIZES = (
    "C", "ICG", "OCG", "D", "H", "W", "OD", "OH", "OW", "SD", "SH", "DD", "DH",
    "PD", "PH", "PW", "S", "OS", "OC", "NBLK", "NWT", "TASKS", "BIAS", "KS",
)  # fmt: skip


def row_cols(p: dict, tw: int) -> list[int]:
    """The input columns (from a tile's first pixel's first tap) that a tile of ``tw`` pixels'
    taps read."""
    return sorted({t * p["SW"] + kw * p["DW"] for t in range(tw) for kw in range(p["KW"])})


def row_tile(p: dict, prologue: bool = False) -> tuple[int, int]:
    """The (pixels along a row, output channels) tile of one invocation of conv_rows, chosen at
    the bounds of dims kept symbolic.

    On lavapipe (each invocation one SIMD lane of a CPU thread) a conv's time goes to its loads,
    the per-lane reads of the input and the loads of weights, more than to its multiply-adds, so
    an invocation takes a tile whose taps share input columns (a row of tw pixels reads
    tw + KW - 1 of them at stride 1) and whose weights serve tw pixels. The tile is small and
    comes from a few sizes so that shaders stay small (a shader compiler compiles each one when
    it is first dispatched, and SwiftShader gives up on large unrolled bodies) and convs of
    different sizes share one: ROW_TILE pixels (ROW_TILE_PROLOGUE when the input is read through
    a prologue, whose loads cost more), fewer for a narrower row (a power of two), x ROW_ACCS /
    tw channels (at most 32); channels halve (down to 4) while there are fewer than ROW_GROUPS
    workgroups, then pixels halve while the unrolled body (tw x KW x channels / 4 vec4
    multiply-adds) exceeds ROW_BODY or reads more than ROW_COLS input columns."""
    ow = dim_bound(p["OW"])
    tw = min(ROW_TILE_PROLOGUE if prologue else ROW_TILE, 1 << max(0, ow - 1).bit_length())
    oct = min(ROW_ACCS // tw, 32, 4 * math.ceil(p["OCG"] / 4))
    tasks = dim_bound(p["N"] * p["OD"] * p["OH"]) * math.ceil(ow / tw)
    tiles = math.ceil(tasks / WORKGROUP) * p["G"]
    while oct > 4 and tiles * math.ceil(p["OCG"] / oct) < ROW_GROUPS:
        oct //= 2
    oct = max(4, oct // 4 * 4)
    while tw > 1 and (tw * p["KW"] * oct // 4 > ROW_BODY or len(row_cols(p, tw)) > ROW_COLS):
        tw //= 2
    return tw, oct


def row_split(p: dict, tw: int, oct: int, lanes: int) -> int:
    """The lanes (a power of two) that share each tile of ``tw`` pixels x ``oct`` channels of
    conv_rows, each over every such-th input channel: doubling from 1 while the tiles' lanes stay
    within the target's ``lanes`` (target.GPU_LANES; none on a CPU), at most ROW_SPLIT_LANES,
    and each lane keeps ROW_SPLIT_CHANNELS channels."""
    tiles = dim_bound(p["N"] * p["OD"] * p["OH"]) * math.ceil(dim_bound(p["OW"]) / tw)
    tiles *= p["G"] * math.ceil(p["OCG"] / oct)
    ks = 1
    while ks < ROW_SPLIT_LANES and tiles * ks * 2 <= lanes and p["ICG"] >= ks * 2 * ROW_SPLIT_CHANNELS:
        ks *= 2
    return ks


def _rows(ctx: LowerCtx, op: Op, p: dict, pro: Prologue, w: Value, b: Value | None) -> None:
    """Constant weights whose reduction loop over (input channels, kd, kh) fits one invocation:
    conv_rows.wgsl.j2, a tile of ``row_tile`` pixels along an output row x output channels.

    The shader text holds the tile, the kernel's shape (KW, SW and DW index the unrolled body;
    KD and KH bound loops that compilers unroll), which pads exist and the prologue and
    epilogue; every other size comes from
    ``ROW_SIZES`` at run time, so convs that differ only in those sizes share one shader."""
    y = op.outputs[0]
    G, OCG, K = p["G"], p["OCG"], p["K"]
    prologue = op.attrs.get("prologue") is not None
    tw, oct = row_tile(p, prologue=prologue)
    form, tune = ctx.tuned("conv_rows", _facts(p, pro, prologue), row_tiles(p), {"tw": tw, "oct": oct})
    tw, oct = form["tw"], form["oct"]
    lanes = ctx.target.lanes
    if row_split(p, tw, oct, lanes) > 1:  # a split tile's accumulators pass through workgroup memory
        while tw * oct > ROW_SPLIT_ACCS:
            oct, tw = (max(4, oct // 8 * 4), tw) if oct > 8 else (oct, tw // 2)
    ks = row_split(p, tw, oct, lanes)
    nq, nblk = oct // 4, math.ceil(OCG / oct)
    # [OC, ICG, KD, KH, KW] -> [G, channel block, K, oct] (channels past OCG are zeros)
    wt = np.pad(w.data.reshape(G, OCG, K), ((0, 0), (0, nblk * oct - OCG), (0, 0)))
    wt = wt.reshape(G, nblk, oct, K).transpose(0, 1, 3, 2)
    wt = np.ascontiguousarray(wt).reshape(-1, 4)
    # a constant bias follows the weights (per group and channel block, oct of them): one binding
    # fewer, which leaves room for the table of sizes next to a prologue's inputs
    bias_in_w = b is not None and b.is_const and b.dtype == w.dtype
    if bias_in_w:
        bt = np.pad(b.data.reshape(G, OCG), ((0, 0), (0, nblk * oct - OCG)))
        wt = np.concatenate([wt, bt.reshape(-1, 4).astype(wt.dtype)])
    wv = ctx.const(wt, f"{w.name}.rows{oct}", dtype=w.dtype, like=w)
    rows = p["N"] * p["OD"] * p["OH"]
    nwt = ceil_div(p["OW"], tw)
    tasks = simplify(rows * nwt)
    values = dict(
        C=p["C"], ICG=p["ICG"], OCG=OCG, D=p["D"], H=p["H"], W=p["W"], OD=p["OD"], OH=p["OH"],
        OW=p["OW"], SD=p["SD"], SH=p["SH"], DD=p["DD"], DH=p["DH"],
        PD=p["PD"], PH=p["PH"], PW=p["PW"], S=simplify(p["D"] * p["H"] * p["W"]),
        OS=simplify(p["OD"] * p["OH"] * p["OW"]), OC=p["OC"],
        NBLK=nblk, NWT=nwt, TASKS=tasks, BIAS=G * nblk * K * nq, KS=ks,
    )  # fmt: skip
    names = [k for k in ROW_SIZES if k != "KS" or ks > 1]  # (KS only in the split form)
    table = [k for k in names if isinstance(values[k], int)]
    epi = epilogue(ctx, op)
    own, own_decls = [wv], [decl("Wt", wv, elem="vec4<f32>")]
    if b is not None and not bias_in_w:
        own, own_decls = own + [b], own_decls + [decl("Bv", b)]
    if table and len(pro.inputs + own + epi.inputs) + 2 <= ctx.target.max_bindings:
        tv = ctx.const(np.array([values[k] for k in table], np.uint32), f"{y.name}.sizes")
        own, own_decls = own + [tv], own_decls + [decl("Sz", tv)]
        slot = {k: j for j, k in enumerate(table)}
        size_code = [(k, f"{ref('Sz')}[{slot[k]}]" if k in slot else u32(values[k])) for k in names]
    else:  # no binding left for the table (or nothing static): the sizes are written in
        size_code = [(k, u32(values[k])) for k in names]
    inputs = pro.inputs + own
    decls = epi.decls_with(pro.decls + own_decls, y)
    shader = ctx.shader(
        "conv_rows.wgsl.j2", decls=decls, wg=WORKGROUP, tw=tw, oct=oct, nq=nq, cols=row_cols(p, tw),
        KD=p["KD"], KH=p["KH"], KW=p["KW"], SW=p["SW"], DW=p["DW"], size_code=size_code,
        mask_w=bool(p["PW"] or p["PWE"]), mask_r=bool(p["PD"] or p["PDE"] or p["PH"] or p["PHE"]),
        bias="in_w" if bias_in_w else "own" if b is not None else "", out_expr=epi.expr,
        epi_lines=epi.lines, helpers=_helpers(pro, epi), load_x=pro.plane_code or pro.code,
        planes=pro.plane_code is not None,
        sg=subgroups(ctx) if p["KW"] * nq > 1 else 0, split=ks > 1,
    )  # fmt: skip
    grid = (ceil_div(tasks, WORKGROUP // ks), G * nblk, 1)
    ctx.kernel(inputs + epi.inputs, [y], [ctx.tag(epi.dispatch(shader, grid, inputs, y), tune)])


def row_tiles(p: dict) -> list[dict]:
    """The tiles conv_rows may take (each right for every size; ``onnx2wgsl compile --tune``
    measures which is fastest): 2 to 16 pixels (not past the row's next power of two) x 8 to
    32 channels (not past OCG's next multiple of 4), within row_tile's bounds on accumulators,
    the unrolled body and the input columns it reads."""
    ow = dim_bound(p["OW"])
    forms = []
    for tw in (2, 4, 8, 16):
        if tw > 1 << max(0, ow - 1).bit_length() or len(row_cols(p, tw)) > ROW_COLS:
            continue
        for oct in (8, 16, 32):
            if oct > 4 * math.ceil(p["OCG"] / 4) or tw * oct > ROW_ACCS or tw * p["KW"] * oct // 4 > ROW_BODY:
                continue
            forms.append({"tw": tw, "oct": oct})
    return forms


def _facts(p: dict, pro: Prologue, prologue: bool) -> dict:
    """What a conv's tunable tile depends on: its sizes, window and storage types."""
    return {
        "N": p["N"], "C": p["C"], "OC": p["OC"], "G": p["G"],
        "in": "x".join(str(p[k]) for k in ("D", "H", "W")),
        "out": "x".join(str(p[k]) for k in ("OD", "OH", "OW")),
        "k": "x".join(str(p[k]) for k in ("KD", "KH", "KW")),
        "s": "x".join(str(p[k]) for k in ("SD", "SH", "SW")),
        "d": "x".join(str(p[k]) for k in ("DD", "DH", "DW")),
        "pro": int(prologue), "x": pro.decls[0].elem if pro.decls else "",
    }  # fmt: skip


def _direct(ctx: LowerCtx, op: Op, p: dict, pro: Prologue, w: Value, b: Value | None) -> None:
    """One output element per invocation: depthwise and narrow groups."""
    y = op.outputs[0]
    inputs = pro.inputs + [w] + ([b] if b is not None else [])
    total = p["N"] * p["OC"] * p["OS"]
    epi = epilogue(ctx, op)
    decls = epi.decls_with(pro.decls + [decl("Wt", w)] + ([decl("Bv", b)] if b is not None else []), y)
    split = split_workgroup(nested_loops(p["ICG"], p["KD"], p["KH"], p["KW"]), p["K"])
    if split:
        channels = ["let oc = wid.y;", f"let g = oc / {p['OCG']}u;"]
        w_load = widen(elem_type(w), f"{ref('Wt')}[oc * {p['K']}u + kk]")
        grid = (p["P"], p["OC"], 1)
        _split(ctx, op, p, pro, epi, decls, inputs, split, channels, [], w_load, 1, grid, b is not None)
        return
    grid, nx = ctx.grid(ceil_div(total, WORKGROUP))
    total_u = u32(p["N"], p["OC"], p["OD"], p["OH"], p["OW"])
    shader = ctx.shader(
        "conv_direct.wgsl.j2", decls=decls, wg=WORKGROUP, nx=nx, total=total_u, bias=b is not None,
        out_expr=epi.expr, epi_lines=epi.lines, helpers=_helpers(pro, epi), load_x=pro.code,
        **p, **sizes(p),
    )  # fmt: skip
    ctx.kernel(inputs + epi.inputs, [y], [epi.dispatch(shader, grid, inputs, y)])


def _split(ctx, op, p, pro, epi, decls, inputs, wg, channels, w_setup, w_load, lanes, grid, bias) -> None:
    """A workgroup per output pixel and ``lanes`` output channels (``channels`` lines name the
    group ``g`` and the channel ``oc`` or quad ``oc4`` from ``wid.y``), for reductions too
    long for one invocation."""
    y = op.outputs[0]
    shader = ctx.shader(
        "conv_split.wgsl.j2", decls=decls, wg=wg, lanes=lanes, acc_type="vec4<f32>" if lanes == 4 else "f32",
        channel_lines=channels, w_setup=w_setup, w_load=w_load, bias=bias,
        out_expr=epi.expr, epi_lines=epi.lines, helpers=_helpers(pro, epi), load_x=pro.code,
        **p, **sizes(p),
    )  # fmt: skip
    ctx.kernel(inputs + epi.inputs, [y], [epi.dispatch(shader, grid, inputs, y)])


def _helpers(pro: Prologue, epi: Epilogue) -> list[str]:
    return pro.helpers + [h for h in epi.helpers if h not in pro.helpers]


@lowers("ConvTranspose")
def lower_conv_transpose(ctx: LowerCtx, op: Op) -> None:
    """Gather form: each output element sums the input positions whose window covers it."""
    x, w, b, y = op.inputs[0], op.inputs[1], op.input(2), op.outputs[0]
    if is_symbolic(x.shape[1], y.shape[1]):
        raise ctx.error(
            f"ConvTranspose over dims kept symbolic takes symbolic batch and spatial dims only; input "
            f"{x.type}, output {y.type}",
            hint="bind the channel dims with --dim NAME=N",
        )
    p = spatial_geometry(ctx, op, x, y, symbolic=True)
    G = op.attrs["group"]
    N, C = x.shape[:2]
    OC = y.shape[1]
    if C % G or w.shape[0] != C or w.shape[1] * G != OC:
        raise ctx.error(f"weights {w.type} do not match {C} input channels, {OC} outputs in {G} groups")
    total = math.prod(y.shape)
    p.update(N=N, C=C, OC=OC, G=G, ICG=C // G, OCG=OC // G)
    inputs = [x, w] + ([b] if b is not None else [])
    epi = epilogue(ctx, op)
    decls = epi.decls_with([decl("X", x), decl("Wt", w)] + ([decl("Bv", b)] if b is not None else []), y)
    # an output gathers through the taps whose stride phase matches it, each over ICG channels
    taps = math.prod(
        math.ceil(p[k] / (p[s] // math.gcd(p[d], p[s])))
        for k, s, d in (("KD", "SD", "DD"), ("KH", "SH", "DH"), ("KW", "SW", "DW"))
    )
    split = split_workgroup(nested_loops(p["KD"], p["KH"], p["KW"]) + taps * p["ICG"], p["KS"] * p["ICG"])
    grid, nx = ctx.grid(total if split else ceil_div(total, WORKGROUP))
    shader = ctx.shader(
        "conv_transpose.wgsl.j2", decls=decls, wg=split or WORKGROUP, nx=nx, total=u32(*y.shape), bias=b is not None,
        out_expr=epi.expr, epi_lines=epi.lines, helpers=epi.helpers, split=split is not None, **p, **sizes(p),
    )  # fmt: skip
    ctx.kernel(inputs + epi.inputs, [y], [epi.dispatch(shader, grid, inputs, y)])


def _batch_only(ctx: LowerCtx, x: Value, y: Value) -> None:
    """DeformConv takes a batch kept symbolic; other dims must be static."""
    if is_symbolic(tuple(x.shape[1:]), tuple(y.shape[1:])):
        raise ctx.error(
            f"{ctx.current.kind} over dims kept symbolic takes a symbolic batch only; input {x.type}, "
            f"output {y.type}",
            hint="bind the channel and spatial dims with --dim NAME=N",
        )


@lowers("DeformConv")
def lower_deform_conv(ctx: LowerCtx, op: Op) -> None:
    """2-D deformable convolution: each kernel tap samples the input bilinearly (zero outside)
    at its grid position plus a learned offset, scaled by an optional mask."""
    x, w, off, b, mask = (op.input(i) for i in range(5))
    y = op.outputs[0]
    if x.type.rank != 4:
        raise ctx.error(f"{x.type.rank - 2}-D deformable convolution is not supported", hint="2-D is")
    _batch_only(ctx, x, y)
    p = conv_geometry(ctx, op, x, w)
    OG = op.attrs["offset_group"]
    if p["C"] % OG:
        raise ctx.error(f"{p['C']} input channels do not split into {OG} offset groups")
    reads = [("X", x), ("Wt", w), ("Off", off)] + ([("Bv", b)] if b is not None else [])
    reads += [("Mk", mask)] if mask is not None else []
    total = math.prod(y.shape)
    sample = 2 + 4  # the bilinear sample's 2x2 loop
    split = split_workgroup(nested_loops(p["ICG"], p["KH"], p["KW"], sample), p["K"], 1 + sample)
    grid, nx = ctx.grid(total if split else ceil_div(total, WORKGROUP))
    shader = ctx.shader(
        "deform_conv.wgsl.j2", decls=[decl(n, v) for n, v in reads] + [decl("Y", y, write=True)],
        wg=split or WORKGROUP, nx=nx, total=u32(total), bias=b is not None, masked=mask is not None, OG=OG,
        ICOG=p["C"] // OG, out_expr="v", split=split is not None, **p,
    )  # fmt: skip
    bindings = [binding(v) for _, v in reads] + [binding(y, write=True)]
    ctx.kernel([v for _, v in reads], [y], [Dispatch(shader, grid, bindings)])

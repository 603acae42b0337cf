"""MatMul and Gemm on one register-tiled template.

A constant B is re-laid out at compile time as [K, N] in vec4 columns (alpha folded in),
and split along N into chunks that each fit one storage binding: a 25088x4096 fully
connected weight (411 MB) runs as four dispatches under the 128 MiB binding limit.

An invocation's tile is up to 8 rows (A's reads are uniform across its SIMD group) by one or
two groups of 4 columns (B read as vec4 along n), or by 1 column (_tile has the rule). Where
A's rows are whole vec4s (K % 4 == 0, no transA) A is read as vec4 along k and a loop trip
takes four k: on llvmpipe every load in a loop is a gather per component, so one vec4 of A per
row and trip (and, for a run-time B stored [N, K], one vec4 of B) does a quarter of the loads
of four scalar ones, and the four products sum into one write of the accumulator.

Each invocation sums all K products of its tile, unless K is longer than one invocation may
loop (target.LOOP_BUDGET): then a workgroup computes the tile, its invocations taking every
64th (or 256th) k, and sums their partial tiles in a tree.

Any of batch, M, N and K may be kept symbolic (a constant B fixes K and N): sizes render
through u32, the row tile and the split workgroup are chosen at the bounds, and a symbolic K
loops to the run's value read from the dims uniform.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, Op, Value
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.symbolic import simplify, smax
from onnx2wgsl.ir.types import dim_bound

from ..cost import flops
from ..elementwise_ops import f32
from . import (
    SUBGROUP,
    WORKGROUP,
    LowerCtx,
    ceil_div,
    decl,
    elem_type,
    gated,
    is_symbolic,
    lowers,
    rolled,
    rows_gate,
    split_workgroup,
    subgroups,
    u32,
    wgsl_type,
    widen,
)
from .fused import epilogue
from .indexing import View, broadcast, contiguous_strides, index_code


def rows_per_invocation(M) -> int:
    """Rows of A an invocation's plain tile takes; for M kept symbolic, chosen at its bound (the
    kernels clamp their reads and guard their stores, so any tile is right for every M)."""
    M = dim_bound(M)
    return 4 if M >= 64 else 2 if M >= 8 else 1


def _tile(M, nv, bmode: str, split: bool) -> tuple[int, int]:
    """(rows, column groups) of an invocation's tile; dims kept symbolic are judged at their
    bounds (the kernel clamps its reads and guards its stores, so any tile is right for every
    size). On llvmpipe each load in the loop is a gather per component, so the cost of a k step
    is about rows + column groups x 4 loads for rows x column groups x 4 products: 4 x 4 does 8
    loads for 16 products, 8 rows x 2 vec4 column groups 16 for 64 (measured 1.2x faster on a
    1024^3 product; larger tiles spill registers and are slower). Wide tiles only where every
    lane still has columns (two column groups each: N at least 512) and rows (M at least 128);
    a split workgroup keeps 4 x 4 (its tree holds a tile per invocation in workgroup memory)."""
    M = dim_bound(M)
    tm = rows_per_invocation(M)
    if split or bmode != "n4" or dim_bound(nv) < 2 * WORKGROUP or M < 128:
        return tm, 1
    return 8, 2


def few_tiles(ctx, M, nv, bmode: str, steps, Z) -> bool:
    """The plain tiles would fill under a quarter of the target's lanes (a GEMV, one row as in an
    LLM's decode step, had a few hundred invocations each looping over all of K), and K gives
    each lane of a workgroup two steps or more: a workgroup per tile then, its lanes splitting K
    and summing in a tree. Never on a CPU's target (no lanes to fill: the tree only costs)."""
    if not _may_split(ctx, steps):
        return False
    tm, tn = _tile(M, nv, bmode, False)
    tiles = math.ceil(dim_bound(nv) / tn) * math.ceil(dim_bound(M) / tm) * dim_bound(Z)
    return tiles * 4 <= ctx.target.lanes


def _may_split(ctx, steps) -> bool:
    """A GPU target, and K of two steps a lane or more. (A split grid's workgroup per column
    group stays within the limit: the target's lanes are at most 4 x the limit.)"""
    return bool(ctx.target.lanes) and dim_bound(steps) >= 2 * WORKGROUP


def _dispatches(
    ctx, a, b, bias_inputs, y, M, N, K, a_row, a_col, batch_lines, bias_lines, **kw
) -> list[Dispatch]:
    """The matmul's dispatches: one (``_dispatch``), or over rows kept symbolic whose bound
    takes the plain tiles but whose shortest runs would fill under a quarter of a GPU's lanes
    (a prompt and the decode steps after it, in one artifact), both forms: the split one (a
    row a workgroup) for runs of up to lanes / (4 x column groups x batch) rows and the plain
    one for longer runs, the run's row count leaving the other's grid empty."""
    args = (ctx, a, b, bias_inputs, y, M, N, K, a_row, a_col, batch_lines, bias_lines)
    nv, Z = kw["nv"], kw["Z"]
    steps = simplify(K // 4) if kw["kv"] else K
    if (
        is_symbolic(M)
        and split_workgroup(dim_bound(steps)) is None
        and _may_split(ctx, steps)
        and not few_tiles(ctx, M, nv, kw["bmode"], steps, Z)
    ):
        split_rows = ctx.target.lanes // (4 * dim_bound(nv) * dim_bound(Z))
        if split_rows >= max(M.bounds[0], 1):
            gate = rows_gate(M, split_rows)
            share = (
                flops(ctx.current) * nv // (math.ceil(N / 4) if kw["bmode"] == "n4" else N)
            )  # its columns'
            return gated(
                _dispatch(*args, **kw, lanes_form="split", gate=gate),
                _dispatch(*args, **kw, lanes_form="plain", gate=1 - gate),
                gate,
                share,
            )
    return [_dispatch(*args, **kw)]


def _subgroup_rows(ctx, M, bmode: str, kv: bool, split: bool) -> int:
    """Rows of the subgroup tile (0: the plain tile). With subgroups (a target feature, the
    CLI's --subgroups) an invocation computes 32 (16 for M under 256) rows x 4 columns, and
    the 8 lanes of its subgroup each load one vec4 of A per 8 rows and share them by
    subgroupBroadcast: on llvmpipe every load is a loop over the lanes (the rows' loads are
    uniform, yet made lane by lane), so a broadcast row costs an eighth of a loaded one
    (1024^3: 4x the plain tile's rate; 32 rows a further 1.15x over 16, the fastest of 16-128
    rows and 32-256 invocations). For A read as vec4 along k, B as vec4 along n, one
    invocation per tile, and M of at least 64 (smaller M would broadcast clamped copies of its
    last row)."""
    if not subgroups(ctx) or split or not kv or bmode != "n4":
        return 0
    M = dim_bound(M)
    return 32 if M >= 256 else 16 if M >= 64 else 0


@lowers("MatMul")
def lower_matmul(ctx: LowerCtx, op: Op) -> None:
    a, b = op.inputs[0], op.inputs[1]
    y = op.outputs[0]
    # transA/transB (set by fold-transpose): the operand is stored with its last two dims swapped
    ta, tb = bool(op.attrs.get("transA", 0)), bool(op.attrs.get("transB", 0))
    a_shape = (1,) + tuple(a.shape) if a.type.rank == 1 else _swapped(a.shape, ta)
    b_shape = tuple(b.shape) + (1,) if b.type.rank == 1 else _swapped(b.shape, tb)
    M, K = a_shape[-2:]
    N = b_shape[-1]
    # the batch dims are Y's leading ones (shape inference broadcast them, symbolic ones too)
    batch = tuple(simplify(d) for d in y.shape[: y.type.rank - (a.type.rank > 1) - (b.type.rank > 1)])
    if batch and len(b_shape) == 2 and not ta:
        # A's batch dims are just more rows against one B
        M, batch = M * math.prod(batch), ()
        a_shape = (M, K)
    # a third input is a per-column bias that fold-affine moved in from a following Add
    _emit(ctx, op, a, b, op.input(2), y, M, N, K, batch, a_shape, b_shape, trans_a=ta, trans_b=tb)


def _swapped(shape, swap: bool) -> tuple:
    shape = tuple(shape)
    return shape[:-2] + (shape[-1], shape[-2]) if swap else shape


@lowers("Gemm")
def lower_gemm(ctx: LowerCtx, op: Op) -> None:
    a, b, c = op.inputs[0], op.inputs[1], op.input(2)
    y = op.outputs[0]
    ta, tb = op.attrs["transA"], op.attrs["transB"]
    M, K = (a.shape[1], a.shape[0]) if ta else tuple(a.shape)
    N = b.shape[0] if tb else b.shape[1]
    _emit(ctx, op, a, b, c, y, M, N, K, (), tuple(a.shape), tuple(b.shape), bool(ta), bool(tb))


def _emit(ctx, op, a, b, c, y, M, N, K, batch, a_shape, b_shape, trans_a, trans_b) -> None:
    alpha = float(op.attrs.get("alpha", 1.0))
    beta = float(op.attrs.get("beta", 1.0))
    Z = simplify(math.prod(batch))
    a_row, a_col = (1, M) if trans_a else (K, 1)

    # Batch offsets of A, B and Y from the batch index z (broadcast batch dims read stride 0).
    views = [
        _batch_view(ctx, a_shape, batch, M * K),
        _batch_view(ctx, b_shape, batch, K * N),
        View(0, tuple(s * M * N for s in contiguous_strides(batch))),
    ]
    if batch:
        lines, (ab, bb, yb) = index_code(batch, views, flat="z", prefix="zb")
    else:
        lines, (ab, bb, yb) = [], ["0u", "0u", "0u"]
    batch_lines = lines + [f"let ab = {ab};", f"let bb = {bb};", f"let yb = {yb};"]

    bias_inputs: list[Value] = []
    bias_lines: list[str] = []
    if c is not None and beta != 0.0:
        cv = c
        if c.is_const:
            cv = (
                ctx.const(c.data * np.float32(beta), f"{c.name}.beta", dtype=c.dtype, like=c)
                if beta != 1.0
                else c
            )
        s0, s1 = broadcast(c.shape, (M, N)).strides
        terms = (f"m * {u32(s0)}" if s0 != 0 else "", f"n * {u32(s1)}" if s1 != 0 else "")
        idx = " + ".join(t for t in terms if t) or "0u"
        scale = "" if (c.is_const or beta == 1.0) else f" * {f32(beta)}"
        bias_lines = [f"v += {widen(elem_type(cv), ref('C') + f'[{idx}]')}{scale};"]
        bias_inputs = [cv]

    epi = epilogue(ctx, op)
    # A read as vec4 along k (four k per loop trip, one load per row): its rows must be whole vec4s
    kv = not trans_a and simplify(K % 4) == 0 and wgsl_type(a) == "f32"
    if b.is_const and not batch:
        # [K, N] with alpha folded in, padded to whole vec4 columns, chunked under the binding limit.
        K = simplify(K)  # a constant B fixes K and N
        bdata = b.data.reshape(b_shape) if b.type.rank == 1 else b.data  # a vector is a [K, 1] matrix
        bm = (bdata.T if trans_b else bdata).astype(np.float32) * np.float32(alpha)
        n4 = math.ceil(N / 4)
        bm = np.pad(bm, ((0, 0), (0, n4 * 4 - N)))
        cols = max(1, ctx.target.max_binding_size // (K * 16))  # vec4 columns per chunk
        cols = min(n4, cols)
        dispatches, consts = [], []
        for c0 in range(0, n4, cols):
            c1 = min(n4, c0 + cols)
            part = np.ascontiguousarray(bm[:, c0 * 4 : c1 * 4]).reshape(K * (c1 - c0), 4)
            w = ctx.const(part, f"{b.name}.mm{c0}" if c0 else f"{b.name}.mm", dtype=b.dtype, like=b)
            consts.append(w)
            dispatches.extend(
                _dispatches(ctx, a, w, bias_inputs, y, M, N, K, a_row, a_col, batch_lines, bias_lines,
                            bmode="n4", kv=kv, nv=c1 - c0, n_base=f"{c0 * 4}u",
                            b_at=_b_at("const", N, K, c1 - c0), scale="", epi=epi, Z=1)
            )  # fmt: skip
        ctx.kernel([a, *consts, *bias_inputs, *epi.inputs], [y], dispatches)
        return

    scale = "" if alpha == 1.0 else f" * {f32(alpha)}"
    if not trans_b and simplify(N % 4) == 0:  # (for N kept symbolic: a multiple of 4 at every value)
        bmode, nv, b_at = "n4", simplify(N // 4), _b_at("n4", N, K)
    elif trans_b and kv and wgsl_type(b) == "f32":  # B's rows along k are whole vec4s too
        bmode, nv, b_at = "k4", N, _b_at("k4", N, K)
    else:
        bmode, nv, b_at = "s", N, _b_at("nk" if trans_b else "kn", N, K)
    ds = _dispatches(ctx, a, b, bias_inputs, y, M, N, K, a_row, a_col, batch_lines, bias_lines,
                     bmode=bmode, kv=kv, nv=nv, n_base="0u", b_at=b_at, scale=scale, epi=epi, Z=Z)  # fmt: skip
    ctx.kernel([a, b, *bias_inputs, *epi.inputs], [y], ds)


def _b_at(layout: str, N, K, cols: int = 0):
    """B's load at row ``k`` (shader text), an expression of ``bb`` (B's batch offset) and of
    ``nv``, the invocation's column (a vec4 column for ``const`` and ``n4``, which also take
    another column variable's name). ``const`` is a chunk of ``cols`` vec4 columns of the
    compile-time layout, ``n4`` a run-time [K, N] read as vec4 along n, ``k4`` a run-time
    [N, K] read as vec4 along k (rows k4 * 4 to k4 * 4 + 3), ``kn`` and ``nk`` run-time [K, N]
    and [N, K] read one f32 at a time."""
    B = ref("B")

    def at(k: str, nv: str = "nv") -> str:
        if layout == "const":
            return f"{B}[{k} * {cols}u + {nv}]"
        if layout == "n4":
            return f"{B}[bb / 4u + {k} * {u32(N // 4)} + {nv}]"
        if layout == "k4":
            return f"{B}[bb / 4u + nv * {u32(K // 4)} + k4]"
        if layout == "nk":
            return f"{B}[bb + nv * {u32(K)} + {k}]"
        return f"{B}[bb + {k} * {u32(N)} + nv]"

    return at


def _batch_view(ctx, shape, batch, mat) -> View:
    own = tuple(simplify(d) for d in shape[:-2])
    if not batch:
        return View(0, ())
    for n, m in zip(reversed(own), reversed(batch)):
        if n != m and n != 1:  # (static shapes were checked on import; a symbolic one may not match)
            raise ctx.error(
                f"batch dim {n} of a MatMul operand does not broadcast to {m} at every value of the dims",
                hint="bind the dims with --dim NAME=N, or give the operands the same batch dims",
            )
    v = broadcast(own, batch)
    return View(0, tuple(s * mat for s in v.strides))


def _dispatch(ctx, a, b, bias_inputs, y, M, N, K, a_row, a_col, batch_lines, bias_lines,
              *, bmode, kv, nv, n_base, b_at, scale, epi, Z, lanes_form="auto", gate=None) -> Dispatch:  # fmt: skip
    """One dispatch of the matmul template. ``bmode`` is how B is read: ``n4`` as vec4 along n
    (vec4 accumulators, one per row and column group), ``k4`` as vec4 along k (B stored [N, K],
    one column), ``s`` one f32 at a time (one column); ``kv`` reads A as vec4 along k, four k
    per loop trip. ``b_at`` makes B's loads (see _b_at); _tile picks the tile. ``lanes_form`` "split"
    takes a row a workgroup, "plain" never splits for the lanes (``_dispatches``); ``gate`` (0 or
    1 at run time) scales the grid's rows."""
    vec = 4 if bmode == "n4" else 1
    vec4 = "vec4<f32>"
    decls = [decl("A", a, elem=vec4 if kv else None), decl("B", b, elem=vec4 if bmode != "s" else None)]
    ea, eb = decls[0].elem, decls[1].elem  # loads of f16 storage widen to f32
    decls = epi.decls_with(decls + [decl("C", v) for v in bias_inputs], y)
    acc_type = vec4 if vec == 4 else "f32"
    steps = simplify(K // 4) if kv else K
    split = split_workgroup(dim_bound(steps))  # a K kept symbolic loops up to its bound
    if split is None and (
        lanes_form == "split" or lanes_form == "auto" and few_tiles(ctx, M, nv, bmode, steps, Z)
    ):
        split = WORKGROUP
    wg = split or WORKGROUP
    sg = _subgroup_rows(ctx, M, bmode, kv, split is not None)
    tm, tn = (sg, 1) if sg else _tile(M, nv, bmode, split is not None)
    if lanes_form == "split":
        tm = 1  # (the runs it serves have few rows)
    tune = None
    if not split:  # (a split workgroup's tree holds one plain tile per invocation)
        form, tune = ctx.tuned(
            "matmul",
            {
                "M": M,
                "NV": nv,
                "K": steps,
                "Z": Z,
                "b": bmode,
                "kv": int(kv),
                "A": ea,
                "B": eb,
                "const": int(b.is_const),
            },
            _tiles(ctx, M, bmode, kv),
            {"rows": tm, "cols": tn, "sg": int(bool(sg))},
        )
        tm, tn, sg = form["rows"], form["cols"], form["rows"] if form["sg"] else 0
    # column group j of an invocation is column nv + j * wg (loads clamp to the last column)
    cols = ["nv"] + [f"nv{j}" for j in range(1, tn)]
    accs = [(f"acc{t}_{j}", acc_type) for t in range(tm) for j in range(tn)]
    A = ref("A")
    body: list[str] = []
    if kv:
        # four products per row and trip, summed into one write of the accumulator
        if bmode == "k4":
            body.append(f"let b0_0 = {widen(eb, b_at('k4'))};")
            bs = [["b0_0.x", "b0_0.y", "b0_0.z", "b0_0.w"]]
        else:
            body += [
                f"let b{j}_{i} = {widen(eb, b_at(f'(k4 * 4u + {i}u)', cols[j]))};"
                for j in range(tn)
                for i in range(4)
            ]
            bs = [[f"b{j}_{i}" for i in range(4)] for j in range(tn)]
        for t in range(tm):
            body.append(f"let x{t} = {widen(ea, f'{A}[a{t} + k4]')};")
            for j in range(tn):
                terms = " + ".join(f"x{t}.{c} * {bs[j][i]}" for i, c in enumerate("xyzw"))
                body.append(f"acc{t}_{j} += {terms};")
    else:
        body += [f"let b{j} = {widen(eb, b_at('k', cols[j]))};" for j in range(tn)]
        for t in range(tm):
            body.append(f"let x{t} = {widen(ea, f'{A}[a{t} + k * {u32(a_col)}]')};")
            body += [f"acc{t}_{j} += x{t} * b{j};" for j in range(tn)]
    sg_body: list[str] = []
    fb_body: list[str] = []  # narrower subgroups: the rows in a loop, into rows_acc
    if sg:
        a_row_v = u32(simplify(a_row // 4))  # (A is read as vec4 along k)
        fb_body += [f"let b0_{i} = {widen(eb, b_at(f'(k4 * 4u + {i}u)', 'nvc'))};" for i in range(4)]
        fb_body += [
            f"for (var t = 0u; t < {rolled(u32(tm), ref('Y'))}; t++) {{",
            f"  let x = {widen(ea, f'{A}[ab / 4u + min(m0 + t, {u32(smax(M, 1) - 1)}) * {a_row_v} + k4]')};",
            "  rows_acc[t] += x.x * b0_0 + x.y * b0_1 + x.z * b0_2 + x.w * b0_3;",
            "}",
        ]
        # each lane of 8 loads one vec4 of A for rows m0 + lane (+ 8 ...); every lane takes all
        # tm rows from them by broadcast, and loads only its own columns of B
        sg_body += [f"let own{r} = {widen(ea, f'{A}[ao{r} + k4]')};" for r in range(tm // SUBGROUP)]
        sg_body += [f"let b0_{i} = {widen(eb, b_at(f'(k4 * 4u + {i}u)', 'nvc'))};" for i in range(4)]
        for t in range(tm):
            sg_body.append(f"let x{t} = subgroupBroadcast(own{t // SUBGROUP}, {t % SUBGROUP}u);")
            # (as fma: on llvmpipe a product and a sum are two instructions, measured 8% slower)
            acc = f"acc{t}_0"
            for i, c in enumerate("xyzw"):
                acc = f"fma(vec4(x{t}.{c}), b0_{i}, {acc})"
            sg_body.append(f"acc{t}_0 = {acc};")
    # (M1, the last row, clamps reads; for an M whose range holds 0 no workgroup runs)
    shader = ctx.shader(
        "matmul.wgsl.j2", decls=decls, wg=wg, tm=tm, tn=tn, M=u32(M), M1=u32(smax(M, 1) - 1), N=u32(N),
        NV=u32(nv), NV1=u32(smax(nv, 1) - 1), vec=vec, acc_type=acc_type, kv=kv, bmode=bmode,
        a_row=u32(simplify(a_row // 4) if kv else a_row), steps=u32(steps), body=body,
        batch_lines=batch_lines, bias_lines=bias_lines, n_base=n_base, scale=scale,
        out_expr=epi.expr, epi_lines=epi.lines, helpers=epi.helpers, split=split is not None,
        accs=accs, merge=[f"red_{n}[lid] += red_{n}[lid + half];" for n, _ in accs],
        sg=SUBGROUP if sg else 0, sg_body=sg_body, fb_body=fb_body, trips=rolled(u32(steps), ref("Y")),
        tile_end=rolled(u32(tm * tn), ref("Y")), vec_end=rolled("4u", ref("Y")),
    )  # fmt: skip
    rows = ceil_div(M, tm) if gate is None else simplify(ceil_div(M, tm) * gate)
    grid = (nv if split else ceil_div(nv, WORKGROUP * tn), rows, Z)
    d = epi.dispatch(shader, grid, [a, b, *bias_inputs], y)
    return ctx.tag(d, tune) if tune else d


def _tiles(ctx, M, bmode: str, kv: bool) -> list[dict]:
    """The tiles a matmul without a split workgroup may take (each right for every size; which
    is fastest depends on the device: ``onnx2wgsl compile --tune`` measures them): 1 to 8 rows
    by one or (B read as vec4 along n) two column groups, and with subgroups 16 to 64 rows
    shared by broadcast (A read as vec4 along k, B as vec4 along n, M of at least 16)."""
    forms = [
        {"rows": tm, "cols": tn, "sg": 0} for tm in (1, 2, 4, 8) for tn in ((1, 2) if bmode == "n4" else (1,))
    ]
    if subgroups(ctx) and kv and bmode == "n4" and dim_bound(M) >= 16:
        forms += [{"rows": r, "cols": 1, "sg": 1} for r in (16, 32, 64)]
    return forms

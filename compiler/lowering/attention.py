"""Attention (opset 23+) and RotaryEmbedding as dedicated kernels.

Attention runs one invocation per query row (batch, head, position): it walks the keys
once with an online softmax (running max, running sum, rescaled V accumulator), so the
scores are never stored, and skips every key the masks disallow (causal, attn_mask,
nonpad_kv_seqlen, sliding window) instead of adding -inf, so a masked key can never turn
a row into NaN. A row with no allowed key yields zeros, as the spec's fully-masked-row
guard says. The optional QK output (modes 0-3) is written on the way, mode 3 (the
probabilities) by a second walk once the row's max and sum are known.

When at least TILE_MIN_ROWS query rows read the same keys (a kv head's query heads at every
position: encoders and prefills; over a symbolic sequence both kernels are dispatched and
the run's length leaves one of them an empty grid), the flash form runs instead: one workgroup per block of those rows loads the keys and values a tile at a time into
workgroup memory (vec4 where the head sizes allow), once for the whole block, and each row
folds a tile's scores into its online softmax with one rescale. The block's key span (causal
and window limits) bounds the walk. `tools/bench_attention.py` times both forms on one
Attention op; on Mesa 25's lavapipe the flash form took 0.56 of the per-row kernel's time for
BERT-base at 128 tokens, 0.33 at 384, 0.41 for Whisper's 1500-frame encoder and 0.32 for a
256-token causal GQA prefill (32 query heads over 8).

Keys too many for one invocation to walk within target.LOOP_BUDGET are split into chunks,
one invocation per row and chunk, each storing its chunk's max, sum and V sum; a second pass
folds a row's chunks (one invocation per output value), and for mode 3 a third computes each
probability (one invocation per score). Decoding (one query row, thousands of keys) then
runs on many invocations instead of one per head. On a GPU target the rows of the per-row
kernel may be too few to fill its lanes even where they fit the budget (a decode step: a row per
head): a workgroup of LANE_GROUP lanes then takes each row and chunk of keys, its lanes
splitting the head (adjacent lanes read adjacent values), with chunks enough to fill the lanes
(``_lane_chunk``), folded by the same combine pass; a CPU's target keeps the budget's chunks.
"""

from __future__ import annotations

import math

from onnx2wgsl.ir import Dispatch, DType, Op, TensorType, Value
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.symbolic import floordiv, simplify, smin
from onnx2wgsl.ir.types import dim_bound

from ..cost import flops
from ..elementwise_ops import NEG_INF, f32, helper_code
from . import (
    WORKGROUP,
    LowerCtx,
    binding,
    ceil_div,
    decl,
    elem_type,
    gated,
    i32,
    is_symbolic,
    loop_room,
    loops_fit,
    lowers,
    subgroups,
    u32,
    wgsl_type,
    widen,
)
from .indexing import broadcast

MAX_CHUNK = 512  # keys per invocation when a row's keys are split
LANE_GROUP = 32  # GPU targets: lanes of the lanes form's workgroup, and keys a step of its walk
# ... and its invocations over the target's lanes: a decode step reads the whole cache once, and
# a GPU hides those reads' latency behind more of them (on an NVIDIA H200, 32 heads of 128 over
# 4096 keys: 0.45-0.49 ms of GPU time at 1-4x the lanes' invocations, 0.90 ms at 0.5x)
LANE_FILL = 4
TILE_MIN_ROWS = 8  # rows reading the same keys from which they share them in workgroup memory
TILE_KEYS = 32  # keys per tile, fewer where the heads are large


@lowers("Attention")
def lower_attention(ctx: LowerCtx, op: Op) -> None:
    a = op.attrs
    Q, K, V, mask, nonpad, sink = (op.input(i) for i in range(6))
    outs = iter(op.outputs)
    y = next(outs)
    qk = next(outs, None)
    B, Hq, Hkv, Sq, L = a["batch"], a["q_heads"], a["kv_heads"], a["q_len"], a["kv_len"]
    D, Dv = a["head_size"], a["v_head_size"]
    rows = B * Hq * Sq

    # element offsets of row starts: q/y by (b, h, i), k/v by (b, kv head, key j). A 3-D
    # operand is [B, S, row] with the heads one after another from an offset in the row
    # (row and offset default to the heads alone: a packed QKV projection sets them).
    def row_3d(name: str, width: int) -> tuple[str, str]:
        row, offset = a.get(f"{name}_row", width), a.get(f"{name}_offset", 0)
        return f"{row}u", f"{offset}u + " if offset else ""

    Skv = L - a["past_len"]
    k_3d, v_3d = a.get("k_3d", a["kv_3d"]), a.get("v_3d", a["kv_3d"])
    if a["q_3d"]:
        row, off = row_3d("q", Hq * D)
        q_base = f"(b * {u32(Sq)} + i) * {row} + {off}h * {D}u"
    else:
        q_base = f"row * {D}u"
    if a.get("y_3d", a["q_3d"]):
        y_base = f"(b * {u32(Sq)} + i) * {Hq * Dv}u + h * {Dv}u"
    else:
        y_base = f"row * {Dv}u"
    if k_3d:
        row, off = row_3d("k", Hkv * D)
        k_base = f"(b * {u32(Skv)} + j) * {row} + {off}hk * {D}u"
    else:
        k_base = f"((b * {Hkv}u + hk) * {u32(L)} + j) * {D}u"
    if v_3d:
        row, off = row_3d("v", Hkv * Dv)
        v_base = f"(b * {u32(Skv)} + j) * {row} + {off}hk * {Dv}u"
    else:
        v_base = f"((b * {Hkv}u + hk) * {u32(L)} + j) * {Dv}u"

    # which keys a row may attend, and the additive bias of a float mask
    allow: list[str] = []
    end = sizes_L = u32(L)  # the walk's end: past the last key a row may attend
    if nonpad is not None:
        # GroupQueryAttention passes its seqlens_k: each row's key count - 1
        count = f"{ref('NP')}[b] + 1" if a.get("seqlens_k") else f"{ref('NP')}[b]"
        if a.get("seqlens_k") and qk is None:
            # no key past the row's count is scored (a cache of the max length, a short past)
            end = f"min({sizes_L}, u32(max({count}, 0)))"
        offset = f"i32({count}) - {Sq if isinstance(Sq, int) else i32(Sq)}"
        if a.get("padded_prompt"):  # GroupQueryAttention: a right-padded first prompt has no past
            offset = f"max({offset}, 0)"
        allow.append(f"j < u32(max({count}, 0))")
    else:
        offset = str(a["past_len"]) if isinstance(a["past_len"], int) else i32(a["past_len"])
    if a["is_causal"]:
        allow.append("i32(j) <= i32(i) + off")
    if a["left_window_size"] >= 0:
        allow.append(f"i32(i) + off - i32(j) <= {a['left_window_size']}")
    if a["right_window_size"] >= 0:
        allow.append(f"i32(j) - i32(i) - off <= {a['right_window_size']}")
    bias = "0.0f"
    if mask is not None:
        # right-aligned broadcast of the mask over (B, Hq, Sq, its own last dim)
        full = (B, Hq, Sq, mask.shape[-1])
        strides = broadcast(mask.shape, full).strides
        terms = [f"{c} * {u32(s)}" for c, s in zip(("b", "h", "i", "j"), strides) if s != 0]
        index = " + ".join(terms) or "0u"
        allow.append(f"j < {u32(mask.shape[-1])}")
        fill = a.get("mask_fill", -math.inf)
        if wgsl_type(mask) == "f32":
            bias = widen(elem_type(mask), f"{ref('M')}[{index}]")
        elif fill == -math.inf:  # a bool mask: True attends
            allow.append(f"{ref('M')}[{index}] != 0u")
        else:  # a bool mask adding ``fill`` to the scores where False (Where(mask, 0, fill))
            bias = f"select({f32(fill)}, 0.0f, {ref('M')}[{index}] != 0u)"

    mode = a["qk_matmul_output_mode"] if qk is not None else -1
    softcap = a["softcap"]
    reads: list[tuple[str, Value]] = [("Qm", Q), ("Km", K), ("Vm", V)]
    if mask is not None:
        reads.append(("M", mask))
    if nonpad is not None:
        reads.append(("NP", nonpad))
    # a sink: one more logit in each row's softmax, of no value (per head from a tensor, or 0)
    sink_logit = ""
    if sink is not None:
        reads.append(("Sk", sink))
        sink_logit = widen(elem_type(sink), f"{ref('Sk')}[h]")
    elif a.get("smooth_softmax"):
        sink_logit = "0.0f"
    if not all(isinstance(n, int) for n in (Hq, Hkv, D, Dv)):
        raise ctx.error("Attention over a symbolic head count or head size is not supported",
                        hint="bind the dims with --dim NAME=N")  # fmt: skip
    sizes = dict(Sq=u32(Sq), SqHq=u32(Sq * Hq), L=u32(L), rows=u32(rows))
    params = dict(
        wg=WORKGROUP, rows=rows, Sq=Sq, Hq=Hq, L=L, D=D, Dv=Dv, u=sizes, group=Hq // Hkv, q_base=q_base, y_base=y_base,
        k_base=k_base, v_base=v_base, offset=offset, allow=" && ".join(allow) or "true", bias=bias,
        scale=f32(a["scale"]), softcap=f32(softcap) if softcap > 0 else "", mode=mode, neg_inf=NEG_INF,
        helpers=helper_code("tanh") if softcap > 0 else [], sink=sink_logit, end=end,
    )  # fmt: skip
    per_key, fixed = 1 + D + 2 * Dv, D + 2 * Dv  # a key's score, V sum and worst-case rescale
    chunk = min(MAX_CHUNK, (loop_room() - fixed) // per_key)
    Lb = dim_bound(L)  # loops are planned for the most keys a run may have
    chunks = math.ceil(Lb / max(chunk, 1))
    # one invocation per row when it fits the budget, or when no split does (huge heads, or
    # more chunks than the second pass may fold): that still loops past it on lavapipe
    fits = loops_fit(fixed + Lb * per_key + (Lb * (1 + D) if mode == 3 else 0))
    one_pass = fits or chunk < 1 or not loops_fit(2 * chunks)
    if mode < 0 and _tiles(ctx, a, params, sizes, reads, y, one_pass, chunk):
        return
    lane_chunk = _lane_chunk(ctx, rows, Lb, chunk, D, Dv)
    if lane_chunk:
        chunk, chunks, one_pass = lane_chunk, math.ceil(Lb / lane_chunk), False
    if one_pass:
        writes = [("Y", y)] + ([("QK", qk)] if qk is not None else [])
        ctx.kernel(*_dispatch(ctx, "rows", rows, reads, writes, params))
        return
    if is_symbolic(L):
        # a run with fewer keys walks fewer chunks: the grid and the fold cover ceil(L / chunk)
        chunks = ceil_div(L, chunk)
    sizes.update(
        chunks=u32(chunks), rows_chunks=u32(rows * chunks), rows_Dv=u32(rows * Dv), rows_L=u32(rows * L)
    )
    params.update(chunk=chunk, chunks=chunks)
    part = ctx.temp(TensorType(DType.f32, (rows, chunks, Dv + 2)), f"{y.name}.partials")
    early = [("QK", qk)] if 0 <= mode <= 2 else []
    if lane_chunk:
        lanes_params = params | {"wg": LANE_GROUP, "T": LANE_GROUP}
        ctx.kernel(
            *_dispatch(
                ctx, "lanes", rows * chunks, reads, [("Pt", part)] + early, lanes_params, per_group=True
            )
        )
    else:
        ctx.kernel(*_dispatch(ctx, "chunks", rows * chunks, reads, [("Pt", part)] + early, params))
    stats = [("St", ctx.temp(TensorType(DType.f32, (rows, 2)), f"{y.name}.stats"))] if mode == 3 else []
    ctx.kernel(*_dispatch(ctx, "combine", rows * Dv, [("Pt", part)], [("Y", y)] + stats, params))
    if mode == 3:
        ctx.kernel(
            *_dispatch(
                ctx, "probs", rows * L, [r for r in reads if r[0] != "Vm"] + stats, [("QK", qk)], params
            )
        )


def _lane_chunk(ctx: LowerCtx, rows, Lb: int, chunk: int, D: int, Dv: int) -> int | None:
    """Keys a chunk of the lanes form (stage "lanes": a workgroup of LANE_GROUP lanes per row
    and chunk, splitting each head) on a GPU target, whose per-row kernel would have too few
    invocations to fill its lanes (a decode step: a query row per head over a long cache, a
    few dozen invocations each walking thousands of keys). The chunks are as many as give the
    fewest rows a run may have LANE_FILL x the target's lanes, of whole steps of LANE_GROUP keys, and
    no more than the lanes for the most rows (which bounds the partial sums' memory). None
    on a CPU's target (no lanes to fill; each load is a loop over the lanes, and the parts'
    sums cost), where the budget's chunks already fill a quarter of the lanes, and for fewer
    than two steps of keys."""
    lanes, T = ctx.target.lanes, LANE_GROUP
    least = max(rows.bounds[0] if is_symbolic(rows) else rows, 1)
    most = dim_bound(rows)
    if not lanes or Lb < 2 * T or least * math.ceil(Lb / max(chunk, 1)) * 4 > lanes:
        return None
    chunks = max(1, min(-(-LANE_FILL * lanes // (T * least)), lanes // most))
    keys = T * -(-Lb // (chunks * T))
    Dq, Dvq = -(-D // T), -(-Dv // T)
    steps = -(-keys // T)
    if not loops_fit(steps * (T * (Dq + Dvq + 1) + T + Dvq) + Dq + 2 * Dvq) or not loops_fit(
        2 * -(-Lb // keys)
    ):
        return None
    return keys


def _tiles(
    ctx: LowerCtx, a: dict, params: dict, sizes: dict, reads, y: Value, one_pass: bool, row_chunk: int
) -> bool:
    """The flash form, when enough query rows read the same keys (a kv head's query heads at
    every position: an encoder, a prefill) to share them through workgroup memory. One
    workgroup per block of those rows walks the keys a tile at a time, each tile loaded once
    for the block; keys too many for the loop budget are split into chunks, folded by the
    combine pass. False when the rows are too few or the heads too large for a tile.

    Over a symbolic sequence that may also be too short for tiles (one artifact for prefill
    and decode), the per-row kernel is dispatched beside it (when it is ``one_pass``) and the
    run's sequence length picks one: the other's grid is zero workgroups. On a GPU target the
    short runs (a decode step) take the lanes form instead (``_decode_form``), the per-row
    kernel or not: ``row_chunk`` is the per-row kernel's keys a chunk within the loop budget."""
    D, Dv, group, Sq = params["D"], params["Dv"], params["group"], params["Sq"]
    GSq = group * Sq
    if dim_bound(GSq) < TILE_MIN_ROWS:
        return False
    words = ctx.target.limit("maxComputeWorkgroupStorageSize") // 4 - 4  # the span words
    T = min(TILE_KEYS, words // (D + Dv))
    if T < 4:
        return False
    wg = min(WORKGROUP, 1 << (dim_bound(GSq) - 1).bit_length())
    W = 4 if D % 4 == 0 and Dv % 4 == 0 else 1  # values per load and product
    D4, Dv4 = D // W, Dv // W
    # one invocation's loops per tile: the cooperative loads, the scores, one rescale and the
    # V sums; and once: q, the accumulator and the stores
    per_tile = ceil_div(T * D4, wg) + ceil_div(T * Dv4, wg) + T * (D4 + 1) + Dv4 + T * (Dv4 + 1) + 1
    fixed = D4 + 2 * Dv4 + Dv + 2
    tiles = (loop_room() - fixed) // per_tile
    if tiles < 1:
        return False
    L = params["L"]
    Lb = dim_bound(L)
    chunk = tiles * T
    chunks = math.ceil(Lb / chunk)
    if chunks == 1:
        chunk = T * math.ceil(Lb / T)
    elif not loops_fit(2 * chunks):
        return False
    blocks = ceil_div(GSq, wg)
    n_chunks = ceil_div(L, chunk) if chunks > 1 and is_symbolic(L) else chunks
    units = simplify(a["batch"] * a["kv_heads"] * blocks * n_chunks)
    sizes = dict(
        sizes, GSq=u32(GSq), blocks=u32(blocks), chunks=u32(n_chunks), blocks_chunks=u32(simplify(blocks * n_chunks)),
        units=u32(units),
    )  # fmt: skip
    tile_params = dict(
        params, u=sizes, wg=wg, T=T, W=W, chunk=chunk, chunks=chunks, causal=a["is_causal"],
        left=a["left_window_size"], right=a["right_window_size"],
        # --subgroups: a subgroup's lanes share each tile's loads by broadcast (vec4 heads)
        sg=subgroups(ctx) > 0 and W == 4,
    )  # fmt: skip
    short_runs = not isinstance(GSq, int) and GSq.bounds[0] < TILE_MIN_ROWS
    gate = smin(floordiv(Sq, -(-TILE_MIN_ROWS // group)), 1)  # 1 where a run has rows enough
    decode = _decode_form(ctx, a, params, sizes, reads, y, gate, row_chunk) if short_runs else None
    rows_pair = decode is None and short_runs and one_pass and chunks == 1
    g = gate if decode or rows_pair else None  # (the flash form serves only the long runs)
    rows = params["rows"]
    if chunks == 1:
        tiles_d = _dispatch(ctx, "tiles", units, reads, [("Y", y)], tile_params, per_group=True, gate=g)
        if decode:
            d_part, lanes_d, d_combine = decode
            gated(tiles_d[2][0], lanes_d[2][0], gate, flops(ctx.current))
            ctx.kernel(lanes_d[0], [d_part], lanes_d[2])
            ctx.kernel(tiles_d[0] + [d_part], [y], tiles_d[2] + d_combine[2])
        elif rows_pair:
            rows_d = _dispatch(ctx, "rows", rows, reads, [("Y", y)], params, gate=simplify(1 - gate))
            ctx.kernel(tiles_d[0], [y], tiles_d[2] + rows_d[2])
        else:
            ctx.kernel(*tiles_d)
        return True
    sizes.update(rows_Dv=u32(rows * Dv))
    part = ctx.temp(TensorType(DType.f32, (rows, n_chunks, Dv + 2)), f"{y.name}.partials")
    tiles_d = _dispatch(ctx, "tiles", units, reads, [("Pt", part)], tile_params, per_group=True, gate=g)
    combine = _dispatch(
        ctx, "combine", rows * Dv, [("Pt", part)], [("Y", y)], tile_params | {"wg": WORKGROUP}, gate=g
    )
    if decode:
        d_part, lanes_d, d_combine = decode
        gated(tiles_d[2][0], lanes_d[2][0], gate, flops(ctx.current))
        ctx.kernel(tiles_d[0], [part, d_part], tiles_d[2] + lanes_d[2])
        ctx.kernel([part, d_part], [y], combine[2] + d_combine[2])
    else:
        ctx.kernel(*tiles_d)
        ctx.kernel(*combine)
    return True


def _decode_form(ctx, a, params, sizes, reads, y, gate, row_chunk):
    """Over a symbolic sequence whose short runs (a decode step) have too few rows for the flash
    form, on a GPU target: the lanes form for the runs where ``gate`` is 0 (the flash form
    takes the others), as (its partial sums, its dispatch, its combine pass's dispatch), each
    dispatch's grid scaled by 1 - gate; its rows are at most those of a run below the gate,
    which bounds its grid and its partial sums. None where the lanes form would not be taken."""
    D, Dv, Hq, L = params["D"], params["Dv"], params["Hq"], params["L"]
    short = -(-TILE_MIN_ROWS // params["group"]) - 1  # the most positions of a run below the gate
    rows = simplify(smin(params["rows"], dim_bound(a["batch"]) * Hq * short))
    keys = _lane_chunk(ctx, rows, dim_bound(L), row_chunk, D, Dv)
    if not keys:
        return None
    n = ceil_div(L, keys) if is_symbolic(L) else math.ceil(L / keys)
    lanes_sizes = dict(
        sizes,
        rows=u32(rows),
        chunks=u32(n),
        rows_chunks=u32(simplify(rows * n)),
        rows_Dv=u32(simplify(rows * Dv)),
    )
    lanes_params = dict(params, u=lanes_sizes, chunk=keys, chunks=n, wg=LANE_GROUP, T=LANE_GROUP)
    part = ctx.temp(TensorType(DType.f32, (rows, n, Dv + 2)), f"{y.name}.decode_partials")
    off = simplify(1 - gate)
    lanes = _dispatch(ctx, "lanes", rows * n, reads, [("Pt", part)], lanes_params, per_group=True, gate=off)
    combine = _dispatch(
        ctx, "combine", rows * Dv, [("Pt", part)], [("Y", y)], lanes_params | {"wg": WORKGROUP}, gate=off
    )
    return part, lanes, combine


def _dispatch(ctx, stage: str, units, reads, writes, params: dict, per_group: bool = False, gate=None):
    """The inputs, the outputs and the dispatch of one invocation per unit (one workgroup with
    ``per_group``) running ``stage`` of attention.wgsl.j2, for ``ctx.kernel``; ``gate`` (0 or 1
    at run time) scales the grid. Q, K and V read from one tensor (a packed projection) are
    bound once, under Q's name."""
    first: dict[int, str] = {}
    same: dict[str, str] = {}
    kept = []
    for n, v in reads:
        if n in ("Km", "Vm") and id(v) in first:
            same[n] = ref(first[id(v)])
            continue
        if n in ("Qm", "Km"):
            first.setdefault(id(v), n)
        kept.append((n, v))
    reads = kept
    decls = [decl(n, v) for n, v in reads] + [decl(n, v, write=True) for n, v in writes]
    groups = units if per_group else ceil_div(units, WORKGROUP)
    grid, nx = ctx.grid(groups if gate is None else simplify(groups * gate))
    shader = ctx.shader("attention.wgsl.j2", decls=decls, stage=stage, nx=nx, **params, **same)
    bindings = [binding(v) for _, v in reads] + [binding(v, write=True) for _, v in writes]
    return [v for _, v in reads], [v for _, v in writes], [Dispatch(shader, grid, bindings)]


@lowers("RotaryEmbedding")
def lower_rotary(ctx: LowerCtx, op: Op) -> None:
    """Each output element rotates with its partner in the (first, second) half or the
    (even, odd) pair of the head's first rotary_dim values; the rest pass through."""
    x, cos, sin, pos = (op.input(i) for i in range(4))
    y = op.outputs[0]
    a = op.attrs
    total = math.prod(y.shape, start=1)
    R, half = a["rotary_dim"], a["rotary_dim"] // 2
    if x.type.rank == 4:
        _, N, S, Dh = x.shape
        coords = [
            f"let d = i % {Dh}u;",
            f"let s = (i / {Dh}u) % {u32(S)};",
            f"let b = i / {u32(N * S * Dh)};",
        ]
    else:
        _, S, hidden = x.shape
        Dh = hidden // a["num_heads"]
        coords = [
            f"let d = i % {Dh}u;",
            f"let s = (i / {hidden}u) % {u32(S)};",
            f"let b = i / {u32(S * hidden)};",
        ]
    if is_symbolic(Dh, x.shape[-1], x.shape[1] if x.type.rank == 4 else 1):
        raise ctx.error("RotaryEmbedding over a symbolic head count or size is not supported",
                        hint="bind the dims with --dim NAME=N")  # fmt: skip
    if a["interleaved"]:
        pair = [
            "let k = d / 2u;",
            "let first = d % 2u == 0u;",
            "let partner = select(i - 1u, i + 1u, first);",
        ]
    else:
        pair = [
            f"let first = d < {half}u;",
            f"let k = select(d - {half}u, d, first);",
            f"let partner = select(i - {half}u, i + {half}u, first);",
        ]
    if pos is not None:
        row = f"u32({ref('P')}[b * {u32(S)} + s])"
    elif cos.shape[0] == 1 and x.shape[0] != 1:  # one cache row for every batch (rotary fusion)
        row = "s"
    else:
        row = f"(b * {u32(S)} + s)"
    reads = [("X", x), ("C", cos), ("Sn", sin)] + ([("P", pos)] if pos is not None else [])
    decls = [decl(n, v) for n, v in reads] + [decl("Y", y, write=True)]
    grid, nx = ctx.grid(ceil_div(total, WORKGROUP))
    shader = ctx.shader(
        "rotary.wgsl.j2", decls=decls, wg=WORKGROUP, nx=nx, total=u32(total), R=R, coords=coords, pair=pair,
        cache_index=f"{row} * {half}u + k",
    )  # fmt: skip
    bindings = [binding(v) for _, v in reads] + [binding(y, write=True)]
    ctx.kernel([v for _, v in reads], [y], [Dispatch(shader, grid, bindings)])

"""GQAScatter: GroupQueryAttention's query, key and value rows made ready for the Attention
kernel (legalize/contrib.py emits it), in one dispatch where its operands fit the target's
bindings.

Each batch row b's present_key / present_value [B, Hkv, L, D] hold its first ``past_b`` past
keys (from the past buffer [B, Hkv, P, D]), then its S new keys, then zeros: past_b =
max(seqlens_k[b] + 1 - S, 0) (``placed``: rows with pasts of their own lengths, right-padded in
the buffer, or a max-length past buffer shared with the present), or P without a past.

Two kinds of invocation, one per output element:

- a new-row element reads the new rows (Q, K and V packed in one [B, S, (Hq + 2 Hkv) D]
  tensor, or three tensors), rotates q and k by their positions (the cos / sin caches over the
  first rotary_dim values of each head, halves or interleaved pairs; the rest pass through;
  constant caches come packed in one, the sines after the cosines) and writes Q [B, S, Hq * D]
  where Attention reads it (``write_q``: else Attention reads the query input) or the new key
  or value at slot past_b + s of its row;
- a present slot j outside its row's new keys (j < past_b or j >= past_b + S) gets the past
  key j where there is one (j < past_b, j < P), else zero; both presents at once.

The new-row elements come first, then the slots. Operands over the target's bindings split
the kernel: the slots in a dispatch of their own (separate Q, K and V with rotary caches), and
Q apart from K and V (with position_ids too).

A generation's shared state (``shared``: the present as long as the past, which is a state
input whose pair is this present) takes the new-row elements alone: the presents are the
pasts' buffers (in place), so each step writes only its new keys and values, at slot
seqlens_k + 1 - S + s, and copies nothing.

A query or key at step s of row b stands at position position_ids[b, s], or at
max(seqlens_k[b] + 1 - S, 0) + s (a right-padded first prompt starts at 0).

Every float operand is widened at its loads and every store narrowed to its output's storage
(``--precision fp16`` may store the rows, caches and presents as f16).
"""

from __future__ import annotations

from onnx2wgsl.ir import Op

from ..memory import shared_states
from . import LowerCtx, i32, is_symbolic, lowers, u32
from .builder import ZERO, KernelBuilder


@lowers("GQAScatter")
def lower_gqa_scatter(ctx: LowerCtx, op: Op) -> None:
    a = op.attrs
    q, k_in, v_in, past_k, past_v, seqlens, cos, sin, pos = (op.input(i) for i in range(9))
    outs = list(op.outputs)
    q_out = outs.pop(0) if a["write_q"] else None
    present_k, present_v = outs
    B, S, P, L = a["batch"], a["q_len"], a["past_len"], a["kv_len"]
    Hq, Hkv, D = a["q_heads"], a["kv_heads"], a["head_size"]
    if is_symbolic(Hq, Hkv, D):
        raise ctx.error("GroupQueryAttention over a symbolic head count or head size is not supported",
                        hint="bind the dims with --dim NAME=N")  # fmt: skip
    packed = k_in is None
    rotary = cos is not None
    nkv = B * Hkv * L * D

    def row_past(kb: KernelBuilder, var: str) -> str:
        """``var``: row b's keys before its first query, from seqlens_k."""
        return f"let {var} = u32(max({kb.read(seqlens)}[b] + 1i - {i32(S)}, 0i));"

    def before(kb: KernelBuilder) -> str:
        """``before``: row b's past keys in its present."""
        if a["placed"]:
            return row_past(kb, "before")
        return f"let before = {u32(P)};"

    def past_lines(kb: KernelBuilder, index: str) -> list[str]:
        """Present slot ``index`` over both presents: the past key or zero, unless a new one."""
        # (bound in this order: the past keys, values, then the presents)
        PK, PV = kb.element(past_k, "at"), kb.element(past_v, "at")
        KO, VO = kb.put(present_k, "o", "y"), kb.put(present_v, "o", "y")
        return [
            f"let is_v = {index} >= {u32(nkv)};",
            f"let o = select({index}, {index} - {u32(nkv)}, is_v);",
            f"let d = o % {D}u;",
            f"let t = o / {D}u;",
            f"let j = t % {u32(L)};",
            f"let hk = (t / {u32(L)}) % {Hkv}u;",
            f"let b = t / {u32(L * Hkv)};",
            before(kb),
            f"if (j >= before && j < before + {u32(S)}) {{",
            "  return;  // a new key: written from the new rows",
            "}",
            f"var y = {ZERO['f32']};",
            f"if (j < min(before, {u32(P)})) {{",
            f"  let at = ((b * {Hkv}u + hk) * {u32(P)} + j) * {D}u + d;",
            f"  y = select({PK}, {PV}, is_v);",
            "}",
            "if (is_v) {",
            f"  {VO}",
            "} else {",
            f"  {KO}",
            "}",
        ]

    def new_lines(kb: KernelBuilder, parts: tuple[int, ...], index: str) -> list[str]:
        """New row element ``index`` of ``parts`` (0: Q, 1: K, 2: V): (b, s, column), the
        columns of the parts one after another."""
        widths = [Hq * D if p == 0 else Hkv * D for p in parts]
        W = sum(widths)
        lines = [
            f"let col = {index} % {W}u;",
            f"let s = ({index} / {W}u) % {u32(S)};",
            f"let b = {index} / {u32(S * W)};",
        ]
        if 1 in parts:
            lines.append(before(kb))
        start = 0
        for n, (p, width) in enumerate(zip(parts, widths)):
            last = n == len(parts) - 1
            lines.append(f"if (col < {start + width}u) {{" if not last else "{")
            lines += ["  " + line for line in _new_element(kb, p, start, a, inputs=(q, k_in, v_in, cos, sin, pos),
                                                           seqlens=seqlens, outputs=(q_out, present_k, present_v),
                                                           packed=packed, rotary=rotary)]  # fmt: skip
            lines += ["  return;", "}"]
            start += width
        return lines

    def new_count(parts: tuple[int, ...]):
        return B * S * sum(Hq * D if p == 0 else Hkv * D for p in parts)

    parts = (0, 1, 2) if q_out is not None else (1, 2)
    sources = (q,) if packed else (q, k_in, v_in) if q_out is not None else (k_in, v_in)
    reads = {id(v) for v in (*sources, cos, sin, pos) if v is not None}
    if rotary and pos is None or a["placed"]:
        reads.add(id(seqlens))
    writes = len(parts)
    limit = ctx.target.max_bindings
    kernels: list[KernelBuilder] = []
    # a present that is its past's own buffer (a generation's shared state): only the new keys
    # are written, into the past's bytes; the past is not bound apart (its bytes are the present's)
    states = shared_states(ctx.g) if a.get("shared") else {}
    in_place = (
        past_k is not None and states.get(id(past_k)) is present_k and states.get(id(past_v)) is present_v
    )
    if in_place:
        past_k = past_v = None
    if past_k is not None and len(reads) + 2 + writes <= limit:
        # one dispatch: the new rows' elements, then the present slots they leave
        n = new_count(parts)
        kb = KernelBuilder(ctx, (n + 2 * nkv,))
        kb.add(f"if (i < {u32(n)}) {{", *("  " + x for x in new_lines(kb, parts, "i")), "}")
        kb.add(f"let r = i - {u32(n)};", *past_lines(kb, "r"))
        kernels.append(kb)
    else:
        if past_k is not None:
            kb = KernelBuilder(ctx, (2 * nkv,))
            kb.add(*past_lines(kb, "i"))
            kernels.append(kb)
        # more operands than a dispatch binds (separate Q, K and V with position_ids): Q apart
        for group in [(0,), (1, 2)] if len(reads) + writes > limit and q_out is not None else [parts]:
            kb = KernelBuilder(ctx, (new_count(group),))
            kb.add(*new_lines(kb, group, "i"))
            kernels.append(kb)
    dispatches = [kb.dispatch() for kb in kernels]
    if in_place:
        past_k, past_v = op.input(3), op.input(4)
    inputs = [v for v in (q, k_in, v_in, past_k, past_v, seqlens, cos, sin, pos) if v is not None]
    outputs = [v for v in (q_out, present_k, present_v) if v is not None]
    at = lambda vs, x: next(i for i, v in enumerate(vs) if v is x)  # noqa: E731
    pairs = {"in_place": [[at(outputs, present_k), at(inputs, past_k)],
                          [at(outputs, present_v), at(inputs, past_v)]]} if in_place else {}  # fmt: skip
    ctx.kernel(inputs, outputs, [d for d in dispatches if d is not None], **pairs)


def _new_element(kb: KernelBuilder, part: int, start: int, a: dict, *, inputs, seqlens, outputs, packed: bool,
                 rotary: bool) -> list[str]:  # fmt: skip
    """Lines writing column ``col`` (from ``start`` in the part's columns) of new row (b, s) of
    ``part`` (0: Q, 1: K, 2: V), rotated for Q and K."""
    q, k_in, v_in, cos, sin, pos = inputs
    S, L, Hq, Hkv, D = a["q_len"], a["kv_len"], a["q_heads"], a["kv_heads"], a["head_size"]
    source = q if packed else (q, k_in, v_in)[part]
    x = kb.element(source, "at + d")  # (each float operand widened at its loads)
    row = (Hq + 2 * Hkv) * D if packed else (Hq * D if part == 0 else Hkv * D)
    offset = (0, Hq * D, (Hq + Hkv) * D)[part] if packed else 0
    c = f"col - {start}u" if start else "col"
    lines = [
        f"let e = {c};",
        f"let d = e % {D}u;",
        f"let head = e / {D}u;",
        f"let at = (b * {u32(S)} + s) * {row}u + {f'{offset}u + ' if offset else ''}head * {D}u;",
        "var y = 0.0f;",
    ]
    if not rotary or part == 2:
        lines.append(f"y = {x};")
    else:
        R, half = a["rotary_dim"], a["rotary_dim"] // 2
        if a["interleaved"]:
            pair = [
                "let kk = d / 2u;",
                "let first = d % 2u == 0u;",
                "let partner = select(d - 1u, d + 1u, first);",
            ]
        else:
            pair = [
                f"let first = d < {half}u;",
                f"let kk = select(d - {half}u, d, first);",
                f"let partner = select(d - {half}u, d + {half}u, first);",
            ]
        # positions past the caches (never reached by a run within the caches: legalize and
        # compiling for generation check that) read the last row, not the sines after the cosines
        last = cos.shape[0] // (1 if sin is not None else 2) - 1
        if pos is not None:
            where = [f"let p = min(u32({kb.read(pos)}[b * {u32(S)} + s]), {last}u);"]
        else:
            where = [f"let p = min(u32(max({kb.read(seqlens)}[b] + 1i - {i32(S)}, 0i)) + s, {last}u);"]
        cosine = kb.element(cos, f"p * {half}u + kk")
        # the sines: their own cache, or after the cosines in one (legalize packs constant caches)
        sin_at = "" if sin is not None else f"{cos.shape[0] // 2 * half}u + "
        sine = kb.element(sin if sin is not None else cos, f"{sin_at}p * {half}u + kk")
        rotate = [
            *pair,
            *where,
            f"let c = {cosine};",
            f"let sn = {sine};",
            f"let x = {x};",
            f"let xp = {kb.element(source, 'at + partner')};",
            # as the RotaryEmbedding kernel: first of a pair x cos - partner sin, second partner sin + x cos
            "y = select(xp * sn + x * c, x * c - xp * sn, first);",
        ]
        if R < D:  # the values past the rotary dim pass through
            rotate = [
                f"if (d >= {R}u) {{",
                f"  y = {x};",
                "} else {",
                *("  " + line for line in rotate),
                "}",
            ]
        lines += rotate
    if part == 0:
        return lines + [kb.put(outputs[part], f"(b * {u32(S)} + s) * {Hq * D}u + e", "y")]
    return lines + [
        "let j = before + s;",
        f"if (j < {u32(L)}) {{",
        f"  {kb.put(outputs[part], f'((b * {Hkv}u + head) * {u32(L)} + j) * {D}u + d', 'y')}",
        "}",
    ]

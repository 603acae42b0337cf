"""GatherNBits: GatherBlockQuantized's rows gathered from a table kept packed on the GPU
(legalize/contrib.py packs it; the common form: gathered along axis 0, quantized along the
last axis, as LLMs quantize their token embeddings).

The table [rows, ..., K] is [rows, M * words] 32-bit words: each of a row's M sub-rows (the
middle dims, 1 for a 2-D table) holds K values of ``bits`` bits, 32/bits to a word, low bits
first, the last word of a sub-row partly filled (blocks are powers of two of at least 16, so a
word never spans two blocks). Scales are [rows, M * blocks] f32; zero points are absent (the
``zero`` attribute) or packed into words in one run over all (sub-row, block) pairs. Each
invocation dequantizes one output element: (q - z) * s of its word; an index out of range
reads 0, like Gather, and negative indices count from the end.

A table whose words are over the binding limit (a large vocabulary) is cut into parts of whole
rows, with one dispatch per part, as compiler/lowering/gather.py cuts a float table: the parts'
row counts keep each part's zero points starting on a word.

Under --precision fp16 the scales and the output may be stored f16 (the scale widened as it is
read, the result narrowed at the store).
"""

from __future__ import annotations

import math

from onnx2wgsl.ir import DType, Op, Value

from . import LowerCtx, i32, lowers, u32
from .builder import ZERO, KernelBuilder, literal
from .gather import _index


@lowers("GatherNBits")
def lower_gather_nbits(ctx: LowerCtx, op: Op) -> None:
    words, idx, scales, zeros = op.inputs[0], op.inputs[1], op.inputs[2], op.input(3)
    y = op.outputs[0]
    at = op.attrs
    K, bits, block = at["K"], at["bits"], at["block_size"]
    per, mask = 32 // bits, (1 << bits) - 1
    W, blocks = math.ceil(K / per), math.ceil(K / block)
    R = words.shape[0]
    M = words.shape[1] // W  # sub-rows per row
    inner = M * K  # the output elements of one index
    parts = _parts(ctx, words, scales, zeros, M * blocks, per)
    dispatches = []
    for wq, sq, zq, lo, hi in parts:
        k = KernelBuilder(ctx, y.shape)
        Q, s_blk = k.read(wq), k.element(sq, "blk")  # (the scale, widened from f16 storage)
        k.add(f"let p = i / {u32(inner)};", f"let e = i % {u32(inner)};")
        _index(k, "j", f"{k.read(idx)}[p]", R)
        if len(parts) > 1:  # the first part also writes the zeros of indices out of range
            theirs = f"j_ok && j >= {i32(hi)}" if lo == 0 else f"!(j_ok && j >= {i32(lo)} && j < {i32(hi)})"
            k.add(f"if ({theirs}) {{", "  return;", "}")
        row = f"(j_u - {u32(lo)})" if lo else "j_u"
        if M > 1:
            k.add(f"let sub = {row} * {u32(M)} + e / {u32(K)};", f"let kk = e % {u32(K)};")
        else:
            k.add(f"let sub = {row};", "let kk = e;")
        k.add(
            f"let word = {Q}[sub * {u32(W)} + kk / {u32(per)}];",
            f"let v = f32((word >> ((kk % {u32(per)}) * {u32(bits)})) & {u32(mask)});",
            f"let blk = sub * {u32(blocks)} + kk / {u32(block)};",
        )
        if zq is None:
            k.add(f"let z = {literal(at['zero'], 'f32')};")
        else:
            Z = k.read(zq)
            k.add(
                f"let z = f32(({Z}[blk / {u32(per)}] >> ((blk % {u32(per)}) * {u32(bits)})) & {u32(mask)});"
            )
        k.store(f"select({ZERO['f32']}, (v - z) * {s_blk}, j_ok)", y)
        dispatches.append(k.dispatch())
    inputs = [v for wq, sq, zq, _, _ in parts for v in (wq, sq, zq) if v is not None]
    ctx.kernel([*inputs, idx], [y], [d for d in dispatches if d is not None])


def _parts(
    ctx: LowerCtx, words: Value, scales: Value, zeros: Value | None, zblocks: int, per: int
) -> list[tuple[Value, Value, Value | None, int, int]]:
    """(words, scales, zero points, first row, end row) of each part of the table: the table
    itself when every operand fits one binding, else slices of whole rows that do. ``zblocks``
    zero points per row, ``per`` to a word."""
    limit = ctx.target.max_binding_size
    R = words.shape[0]
    if max(v.nbytes for v in (words, scales, zeros) if v is not None) <= limit:
        return [(words, scales, zeros, 0, R)]
    per_row = max(words.nbytes, scales.nbytes) // R  # (the zero points take fewer bytes than the scales)
    align = per // math.gcd(zblocks, per)  # rows whose zero points fill whole words
    step = limit // per_row // align * align
    if step == 0:
        raise ctx.error(
            f"{align} row(s) of the packed table %{words.name} span {align * per_row:,} bytes, over the "
            f"target's maxStorageBufferBindingSize of {limit:,}",
            hint="compile for a target with larger limits (--limits FILE.json)",
        )
    parts = []
    for lo in range(0, R, step):
        hi = min(R, lo + step)
        wq = ctx.const(words.data[lo:hi], f"{words.name}.rows{lo}", dtype=DType.u32)
        sq = ctx.const(scales.data[lo:hi], f"{scales.name}.rows{lo}", dtype=DType.f32, like=scales)
        zq = None
        if zeros is not None:
            first, end = lo * zblocks // per, -(-hi * zblocks // per)
            zq = ctx.const(zeros.data[first:end], f"{zeros.name}.rows{lo}", dtype=DType.u32)
        parts.append((wq, sq, zq, lo, hi))
    return parts

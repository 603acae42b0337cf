"""MatMulNBits with its weights packed on the GPU (legalize/contrib.py packs them).

B is [N, words] 32-bit words, each holding 32/bits values of one row along K, low bits first,
with no padding between blocks (block sizes are powers of two of at least 16, so a word never
spans two blocks); scales are [N, blocks] floats; zero points are absent (2^(bits-1)), packed
into words like B but in one run over all (row, block) pairs, or floats [N, blocks]. Each
invocation computes a few rows of one output column, dequantizing each word once for all of
them: the weights cost 4 bits each in memory and in bandwidth (plus a scale and a zero point
per block), about a seventh of f32. Where the columns x row tiles would fill under a quarter of
a GPU target's lanes (a decode step: one row) and the row has two words a lane or more, each
column takes a workgroup instead, its lanes reading adjacent words and summing in a tree. Over
rows kept symbolic (one artifact for a prompt and the decode steps after it) both forms are
dispatched, each gated by the run's row count to an empty grid where the other one serves.

Under --precision fp16 the float operands (A, scales, float zero points, bias, a fused
epilogue's operands) and the output may be stored f16: the kernel widens them as it loads and
narrows its result as it stores, accumulating in f32.

M (A's rows, which may be kept symbolic: a sequence) is read clamped and stored guarded.
"""

from __future__ import annotations

import math

from onnx2wgsl.ir import Op
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.symbolic import simplify, smax

from ..cost import flops
from . import WORKGROUP, LowerCtx, ceil_div, decl, elem_type, gated, loops_fit, lowers, rows_gate, u32, widen
from .fused import epilogue
from .gemm import rows_per_invocation


@lowers("MatMulNBits")
def lower_matmul_nbits(ctx: LowerCtx, op: Op) -> None:
    a = op.inputs[0]
    y = op.outputs[0]
    at = op.attrs
    K, N, bits, block = at["K"], at["N"], at["bits"], at["block_size"]
    mode = at["zero_points"]
    words_v, scales, zeros, bias = op.inputs[1], op.inputs[2], op.input(3), op.input(4)
    epi = epilogue(ctx, op)  # elementwise consumers fused in (fuse-epilogue), applied at the store
    per = 32 // bits
    full, tail = divmod(K, per)
    words, blocks = math.ceil(K / per), math.ceil(K / block)
    if not loops_fit(words):
        raise ctx.error(
            f"K={K} is too long for one invocation's loop on this target ({words} words of {per} values)",
            hint="split the projection along K into several MatMulNBits nodes",
        )
    M = simplify(math.prod(a.shape[:-1]))
    tm = rows_per_invocation(M)
    zq = ref("Z") if zeros is not None else None

    def zero(word: str) -> str:
        """The zero point of the block of ``word`` (a WGSL expression)."""
        if mode == "default":
            return f"{float(1 << (bits - 1))}f"
        blk = f"({word} / {block // per}u)"
        if mode == "float":
            return widen(elem_type(zeros), f"{zq}[srow + {blk}]")
        at = f"(srow + {blk})"  # (row, block) in row-major order, packed across rows
        return f"f32(({zq}[{at} / {per}u] >> (({at} % {per}u) * {bits}u)) & {(1 << bits) - 1}u)"

    decls = [decl("A", a), decl("Bq", words_v), decl("S", scales)]
    reads = [a, words_v, scales]
    if zeros is not None:
        decls.append(decl("Z", zeros))
        reads.append(zeros)
    if bias is not None:
        decls.append(decl("Bias", bias))
        reads.append(bias)
    decls = epi.decls_with(decls, y)

    def dispatch(tm: int, split: bool, rows):
        """The dispatch of ``tm`` rows an invocation (a workgroup when ``split``) over ``rows``
        row tiles (0 in a run the other form takes)."""
        accs = [(f"acc{t}", "f32") for t in range(tm)]
        shader = ctx.shader(
            "matmul_nbits.wgsl.j2", decls=decls, wg=WORKGROUP, tm=tm, M=u32(M), M1=u32(smax(M, 1) - 1), N=N,
            K=K, bits=bits, per=per, mask=(1 << bits) - 1, block=block, words=words, blocks=blocks,
            words_per_block=block // per, full=full, tail=tail, zero=zero("w"), zero_tail=zero(f"{full}u"),
            bias=bias is not None, epi_lines=epi.lines, out_expr=epi.expr, helpers=epi.helpers,
            split=split, accs=accs, merge=[f"red_{n}[lid] += red_{n}[lid + half];" for n, _ in accs],
        )  # fmt: skip
        return epi.dispatch(shader, (N if split else ceil_div(N, WORKGROUP), rows, 1), reads, y)

    # few columns x row tiles for a GPU's lanes (a decode step's one row): a workgroup per column,
    # its lanes splitting the row's words (never on a CPU's target; the grid's x is a column each)
    lanes = ctx.target.lanes
    can_split = bool(lanes) and words >= 2 * WORKGROUP  # (N <= lanes / 4: within the grid's limit)
    lo, hi = (M, M) if isinstance(M, int) else (M.bounds[0], M.bounds[1])
    split_rows = lanes // (4 * N) if can_split else 0  # rows the split form fills a quarter with
    if can_split and N * math.ceil(hi / tm) * 4 <= lanes:  # every run
        dispatches = [dispatch(tm, True, ceil_div(M, tm))]
    elif split_rows >= max(lo, 1):
        # rows kept symbolic (a prefill and decode in one artifact): both forms, and the run's row
        # count leaves one of them an empty grid (gate 1 up to split_rows rows)
        gate = rows_gate(M, split_rows)
        dispatches = gated(
            dispatch(1, True, simplify(M * gate)),
            dispatch(tm, False, simplify(ceil_div(M, tm) * (1 - gate))),
            gate,
            flops(ctx.current),
        )
    else:
        dispatches = [dispatch(tm, False, ceil_div(M, tm))]
    ctx.kernel(reads + epi.inputs, [y], dispatches)

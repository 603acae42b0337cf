"""KVCacheWrite: a step's new keys (or values) written into a KV cache of the max length in
place (compiler/passes/kv_share.py makes it of a decoder's Concat(past, new) when compiling
for generation).

The cache (input 0) is [B, H, N, D]; its present (output 0) is those very bytes, the new rows
[B, H, S, D] stored at rows ``start`` .. ``start`` + S - 1 (``start``: the past's length, a dim the
kernel reads from the dims uniform); no other row is read or written. The new rows are read
where they are stored: a [B, H, S, D] tensor, or (``new_3d``) a [B, S, row] tensor whose row
holds the heads one after another (a projection's output before its head split).
"""

from __future__ import annotations

from onnx2wgsl.ir import Op

from . import LowerCtx, i32, is_symbolic, lowers, u32
from .builder import KernelBuilder


@lowers("KVCacheWrite")
def lower_kv_cache_write(ctx: LowerCtx, op: Op) -> None:
    cache, new = op.input(0), op.input(1)
    present = op.outputs[0]
    a = op.attrs
    B, H, S, D, at = a["batch"], a["heads"], a["new_len"], a["head_size"], a["start"]
    N = present.shape[2]
    if is_symbolic(B, H, D, N) or present.shape != cache.shape:
        raise ctx.error("KVCacheWrite needs a cache of fixed batch, heads, length and head size, its present "
                        "of its shape", hint="bind the dims with --dim NAME=N")  # fmt: skip
    kb = KernelBuilder(ctx, (B * H * S * D,))
    src, dst = kb.read(new), kb.write(present)
    at_new = f"(b * {u32(S)} + s) * {a['new_row']}u + h * {D}u + d" if a["new_3d"] else "i"
    kb.add(
        f"let d = i % {D}u;",
        f"let s = (i / {D}u) % {u32(S)};",
        f"let h = (i / {u32(S, D)}) % {H}u;",
        f"let b = i / {u32(H, S, D)};",
        f"let j = u32({i32(at)} + i32(s));  // (never negative in a run: the past is total - sequence)",
        f"if (j < {N}u) {{",
        f"  {dst}[((b * {H}u + h) * {N}u + j) * {D}u + d] = {src}[{at_new}];",
        "}",
    )
    # the cache is not bound apart: its bytes are the present's
    dispatch = kb.dispatch()
    ctx.kernel([cache, new], [present], [dispatch] if dispatch else [], in_place=[[0, 0]])

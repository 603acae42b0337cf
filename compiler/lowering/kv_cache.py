"""KVCacheWrite: a step's new keys and values written into KV caches of the max length in place
(compiler/passes/kv_share.py makes it of a decoder's Concat(past, new) ops when compiling for
generation: the keys and values one attention reads, in one dispatch).

Inputs: the caches (k of them, each [B, H, N, D_c]), then the new rows of each (in that order);
outputs: the presents, each its cache's very bytes (``in_place``). Cache c gets its new rows
[B, H, S, D_c] at rows ``start`` .. ``start`` + S - 1 (``start``: the past's length, a dim the
kernel reads from the dims uniform); no other row is read or written. The new rows are read
where they are stored: a [B, H, S, D_c] tensor, or (``new_3d[c]``) a [B, S, row] tensor whose
row (``new_row[c]``) holds the heads one after another from ``new_offset[c]`` on (a
projection's output before its head split, or the packed Q, K and V one Split would part).
One invocation per new element, the caches' elements one after another, each widened at its
load and narrowed at its store (``--precision fp16`` may store caches or new rows as f16).
"""

from __future__ import annotations

from onnx2wgsl.ir import Op

from . import LowerCtx, i32, is_symbolic, lowers, u32
from .builder import KernelBuilder


@lowers("KVCacheWrite")
def lower_kv_cache_write(ctx: LowerCtx, op: Op) -> None:
    a = op.attrs
    k = len(op.outputs)
    caches, news = op.inputs[:k], op.inputs[k:]
    B, H, S, start = a["batch"], a["heads"], a["new_len"], a["start"]
    N = op.outputs[0].shape[2]
    for cache, present in zip(caches, op.outputs):
        if is_symbolic(present.shape) or present.shape != cache.shape or present.shape[:3] != (B, H, N):
            raise ctx.error("KVCacheWrite needs caches of fixed batch, heads, length and head size, each "
                            "present of its cache's shape", hint="bind the dims with --dim NAME=N")  # fmt: skip
    sizes = [B * H * S * present.shape[3] for present in op.outputs]
    kb = KernelBuilder(ctx, (sum(sizes),))
    lines = []
    first = 0
    for c, (new, present) in enumerate(zip(news, op.outputs)):
        D = present.shape[3]
        offset = a.get("new_offset", [0] * k)[c]
        at = f"(b * {u32(S)} + s) * {a['new_row'][c]}u + {f'{offset}u + ' if offset else ''}h * {D}u + d"
        at = at if a["new_3d"][c] else "e"
        body = [
            f"let e = i - {u32(first)};" if first else "let e = i;",
            f"let d = e % {D}u;",
            f"let s = (e / {D}u) % {u32(S)};",
            f"let h = (e / {u32(S, D)}) % {H}u;",
            f"let b = e / {u32(H, S, D)};",
            # (never negative in a run: the past is total - sequence)
            f"let j = u32({i32(start)} + i32(s));",
            f"if (j < {N}u) {{",
            f"  {kb.store_at(present, f'((b * {H}u + h) * {N}u + j) * {D}u + d', kb.element(new, at))}",
            "}",
        ]
        first += sizes[c]
        if c < k - 1:
            lines += [f"if (i < {u32(first)}) {{", *("  " + x for x in body), "  return;", "}"]
        else:
            lines += body
    kb.add(*lines)
    dispatch = kb.dispatch()
    # the caches are not bound apart: their bytes are the presents'
    ctx.kernel(list(op.inputs), list(op.outputs), [dispatch] if dispatch else [],
               in_place=[[c, c] for c in range(k)])  # fmt: skip

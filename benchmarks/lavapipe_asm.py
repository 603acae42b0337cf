"""What lavapipe makes of an artifact's shaders: the x86 instructions of each one's hottest loop.

    python benchmarks/lavapipe_asm.py DIR [--shader NAME]

Runs the artifact once (``onnx2wgsl bench DIR --iters 1``) in a process with Mesa's shader
cache off and ``GALLIVM_DEBUG=asm``, which makes llvmpipe print the machine code of each
compute shader it compiles (a Mesa build that keeps that option: the benchmarks' Mesa 25 does;
run it with that adapter's VK_ICD_FILENAMES and LD_LIBRARY_PATH, as in benchmarks/run.py).
lavapipe compiles a pipeline at its first dispatch, so the k-th shader printed is the k-th
distinct shader in dispatch order. For each, the loop with the most instructions (a backward
jump's span) is counted: its instructions, the float multiplies and adds (llvmpipe emits a
multiply and an add where WGSL has fma), and the bounds-checked loads (a compare and a jump
per loaded 32-bit word and lane), with the most frequent instructions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

INSTR = re.compile(r"\s*([0-9a-f]+):\s+(\S+)\s*(.*)")


def sections(text: str) -> list[list[tuple[int, str, str]]]:
    """Each compute shader's coroutine (``cs_co_variant``) as (address, mnemonic, operands)."""
    out: list[list[tuple[int, str, str]]] = []
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = [] if line.startswith("cs_co_variant:") else None
            if current is not None:
                out.append(current)
            continue
        m = INSTR.match(line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return out


def hottest_loop(ins: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The instructions of the widest loop: the backward jump spanning the most."""
    best: list = []
    for k, (addr, op, arg) in enumerate(ins[:-1]):
        if not op.startswith("j"):
            continue
        try:
            target = ins[k + 1][0] + int(arg)
        except ValueError:
            continue
        if target <= addr:
            body = [x for x in ins if target <= x[0] <= addr]
            if len(body) > len(best):
                best = body
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="a compiled artifact")
    ap.add_argument("--shader", help="only the shader of this name")
    args = ap.parse_args(argv)
    manifest = json.loads((args.dir / "manifest.json").read_text())
    order = list(dict.fromkeys(d["shader"] for d in manifest["dispatches"]))
    names = [manifest["shaders"][k]["name"] for k in order]
    env = {**os.environ, "GALLIVM_DEBUG": "asm", "MESA_SHADER_CACHE_DISABLE": "true"}
    cmd = [sys.executable, "-m", "onnx2wgsl", "bench", str(args.dir), "--iters", "1", "--warmup", "0"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = sections(run.stdout + run.stderr)
    if run.returncode != 0 or not found:
        print(run.stderr[-2000:], file=sys.stderr)
        print("no compute shader code was printed: run it with a Mesa whose llvmpipe keeps GALLIVM_DEBUG=asm")
        return 1
    for name, ins in zip(names, found):
        if args.shader and name != args.shader:
            continue
        loop = hottest_loop(ins)
        mix = Counter(op for _, op, _ in loop)
        math = sum(n for op, n in mix.items() if re.match(r"v(mul|add|sub|fmadd|fnmadd)[ps]s", op))
        checks = mix["cmpl"]
        if len(loop) < len(ins) // 10:  # (its loops unrolled, or none of them heavy)
            print(f"{name}: {len(ins)} instructions; no loop holds a tenth of them")
            continue
        print(
            f"{name}: {len(ins)} instructions; hottest loop {len(loop)}, {math} of them float multiplies and adds"
        )
        print(f"  bounds-checked loads (a compare and a jump per 32-bit word and lane): {checks}")
        print("  most frequent: " + ", ".join(f"{op} {n}" for op, n in mix.most_common(12)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

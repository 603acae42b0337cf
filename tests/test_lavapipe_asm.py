"""benchmarks/lavapipe_asm.py's reading of llvmpipe's printed machine code (the tool itself
needs a Mesa whose llvmpipe prints it: the benchmarks' Mesa 25)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "benchmarks" / "lavapipe_asm.py"
spec = importlib.util.spec_from_file_location("lavapipe_asm", TOOL)
asm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(asm)

# two shaders as llvmpipe prints them (a sampler function and the entry first, then each
# compute shader's coroutine); in the second, the jump at 0x2a spans the most (back to 0x06)
DUMP = """sample:
     0:\tpushq\t%rbp
cs_variant:
     0:\tretq
cs_co_variant:
     0:\tpushq\t%rbp
     4:\tjmp\t-6
     6:\tretq
cs_co_variant.resume:
     0:\tretq
cs_co_variant:
     0:\tpushq\t%rbp
    10:\tvmulps\t%ymm1, %ymm2, %ymm3
    14:\tvaddps\t%ymm3, %ymm4, %ymm4
    18:\tcmpl\t%ecx, %edx
    1a:\tjae\t8
    1c:\tvmovd\t(%rax,%rsi,4), %xmm4
    22:\tcmpl\t%ecx, %esi
    24:\tjb\t-26
    26:\tvxorps\t%xmm0, %xmm0, %xmm0
    2a:\tjne\t-42
    30:\tretq
"""


def test_sections_are_the_coroutines_in_order():
    found = asm.sections(DUMP)
    assert [len(s) for s in found] == [3, 11]
    assert found[1][1] == (0x10, "vmulps", "%ymm1, %ymm2, %ymm3")


def test_the_hottest_loop_is_the_widest_backward_jump():
    loop = asm.hottest_loop(asm.sections(DUMP)[1])
    assert [a for a, _, _ in loop] == [0x10, 0x14, 0x18, 0x1A, 0x1C, 0x22, 0x24, 0x26, 0x2A]
    assert len(asm.hottest_loop(asm.sections(DUMP)[0])) == 2

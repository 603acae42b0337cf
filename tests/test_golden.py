"""Golden IR tests: each tests/golden/<group>/<case>.ir holds IR text, the passes to run on it,
and the IR they must produce, in this form:

    // passes: canonicalize, dce
    // what the case shows (any comment lines)
    graph @g(%x: f32[2]) -> (%y: f32[2]) { ... }
    // expected:
    graph @g(%x: f32[2]) -> (%y: f32[2]) { ... }

A pass name is any name in ``compiler.passes.PASSES``, or ``lower`` / ``plan`` (the default
webgpu target). The result is printed and compared as text. To add a case, write the part
above ``// expected:`` and run ``pytest tests/test_golden.py --update-golden`` (or set
ONNX2WGSL_UPDATE_GOLDEN=1): it fills in or rewrites the expected IR; review the diff.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

from onnx2wgsl.compiler.lowering import lower
from onnx2wgsl.compiler.memory import check_plan, plan_memory
from onnx2wgsl.compiler.passes import PASSES
from onnx2wgsl.compiler.target import get_target
from onnx2wgsl.ir import Graph, graph_diff, parse_ir, print_ir, verify
from onnx2wgsl.ir.printer import HEADER

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(GOLDEN.rglob("*.ir"))
EXPECTED = "// expected:"
_PASSES_LINE = re.compile(r"^// passes:(.*)$", re.M)


def _stage(g: Graph, name: str) -> Graph:
    target = get_target(None)
    if name in PASSES:
        return PASSES[name]().run(g).graph
    if name == "lower":
        return lower(g, target)
    if name == "plan":
        plan_memory(g, target)
        check_plan(g, target.alignment)
        return g
    raise ValueError(f"unknown pass {name!r}; the passes are {sorted(PASSES)}, lower, plan")


def _split(text: str) -> tuple[list[str], str, str | None]:
    m = _PASSES_LINE.search(text)
    if not m:
        raise ValueError("no '// passes: a, b' line")
    passes = [p.strip() for p in m[1].split(",") if p.strip()]
    before, sep, expected = text.partition("\n" + EXPECTED + "\n")
    return passes, before + "\n", expected if sep else None


def _result(path: Path) -> tuple[list[str], str, str, str | None]:
    text = path.read_text(encoding="utf-8")
    passes, before, expected = _split(text)
    g = parse_ir(before, source=str(path))
    verify(g)
    for name in passes:
        g = _stage(g, name)
        verify(g)
    out = print_ir(g)
    assert out.startswith(HEADER + "\n")
    return passes, before, out[len(HEADER) + 1 :], expected


def _updating(request) -> bool:
    return (
        bool(request.config.getoption("--update-golden")) or os.environ.get("ONNX2WGSL_UPDATE_GOLDEN") == "1"
    )


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(GOLDEN).with_suffix("")) for p in CASES])
def test_golden(path, request):
    passes, before, got, expected = _result(path)
    if _updating(request):
        if got != expected:
            path.write_text(before.rstrip("\n") + "\n" + EXPECTED + "\n" + got, encoding="utf-8")
        return
    assert expected is not None, f"{path.name} has no '{EXPECTED}' part; run pytest --update-golden"
    if got != expected:
        diff = "".join(
            difflib.unified_diff(expected.splitlines(True), got.splitlines(True), "expected", "got")
        )
        pytest.fail(f"{path.relative_to(GOLDEN)} after {', '.join(passes)}:\n{diff}", pytrace=False)
    # the expected text is itself valid IR that means the same graph
    assert graph_diff(parse_ir(expected), parse_ir(got)) is None


def test_every_pass_has_a_golden_case():
    covered = set()
    for path in CASES:
        covered.update(_split(path.read_text(encoding="utf-8"))[0])
    missing = sorted((set(PASSES) | {"lower", "plan"}) - covered)
    assert not missing, f"no golden case runs {missing}: add tests/golden/<pass>/<case>.ir"
    assert len(CASES) >= 10


def test_a_wrong_expectation_fails(tmp_path, request):
    src = GOLDEN / "canonicalize" / "identity_removed.ir"
    text = src.read_text().replace("%z = Relu(%x)", "%z = Relu(%y)", 1)
    bad = tmp_path / "bad.ir"
    bad.write_text(text)
    passes, before, got, expected = _result(bad)
    assert got != expected

"""The ONNX backend test suite on the GPU: every node case (generated into the cache folder
at collection), the simple, pytorch-converted and pytorch-operator model suites and the nine
light CNNs. Each case passes, or fails exactly as tests/conformance/expected_failures.txt
lists it (then it is reported as xfail); a listed case that passes fails the run.

Run one family with e.g. ``pytest tests/test_conformance.py -k test_cast``; the same cases
and table come from ``python tools/conformance.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import conformance  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.conformance]

CASES = conformance.collect()
EXPECTED = conformance.read_expected()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, device):
    result = conformance.run_case(case, device)
    ok, why = conformance.verdict(result, EXPECTED)
    if not ok:
        pytest.fail(why, pytrace=False)
    if not result.ok:
        pytest.xfail(why)


# -- the mechanism itself (no GPU work beyond two small cases) -----------------------------------
def test_expected_failures_file_is_well_formed_and_names_real_cases():
    ids = {c.id for c in CASES}
    stale = sorted(set(EXPECTED) - ids)
    assert not stale, f"expected_failures.txt lists cases that do not exist: {stale[:10]}"
    assert all(reason.strip() for _, reason in EXPECTED.values())


def _case(case_id: str) -> conformance.Case:
    return next(c for c in CASES if c.id == case_id)


def test_a_listed_case_that_passes_fails_the_run(tmp_path, device):
    """The real pytest module, pointed at an expected-failures file that lists a passing case."""
    listed = tmp_path / "expected_failures.txt"
    listed.write_text("test_abs\tunsupported-op\tpretends Abs has no lowering\n")
    assert conformance.run_case(_case("test_abs"), device).ok
    env = {**os.environ, "ONNX2WGSL_EXPECTED_FAILURES": str(listed)}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
         "-k", "test_case and test_abs and not test_abs_", "-rf"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "test_abs passes now: remove it from expected_failures.txt" in r.stdout


def test_verdicts(tmp_path, monkeypatch, device):
    """Unlisted failures fail; listed ones pass only with the listed category."""
    monkeypatch.setenv("ONNX2WGSL_EXPECTED_FAILURES", str(tmp_path / "x.txt"))
    failing = conformance.run_case(_case("test_identity_sequence"), device)
    assert not failing.ok and failing.category == "sequence-type"
    ok, why = conformance.verdict(failing, {})
    assert not ok and "fix it, or list it in" in why
    ok, _ = conformance.verdict(failing, {"test_identity_sequence": ("sequence-type", "sequences")})
    assert ok
    ok, why = conformance.verdict(failing, {"test_identity_sequence": ("unsupported-op", "no lowering")})
    assert not ok and "lists it as unsupported-op: update its entry" in why


def test_write_expected_keeps_human_reasons(tmp_path):
    path = tmp_path / "expected.txt"
    path.write_text(
        "test_a\tunsupported-op\ta reason a person wrote\n"
        "test_b\tunsupported-op\tstale: b passes now\n"
        "test_c\tfloat8\tkept: c was not run\n"
    )
    R = conformance.Result
    results = [
        R(
            conformance.Case("node", "test_a", tmp_path),
            False,
            "unsupported-op",
            "UnsupportedError: no lowering",
            0,
        ),
        R(conformance.Case("node", "test_b", tmp_path), True, "pass", "", 0),
        R(
            conformance.Case("node", "test_d", tmp_path),
            False,
            "wrong-result",
            "AssertionError: output 0: off",
            0,
        ),
    ]
    conformance.write_expected(results, path)
    assert conformance.read_expected(path) == {
        "test_a": ("unsupported-op", "a reason a person wrote"),
        "test_c": ("float8", "kept: c was not run"),
        "test_d": ("wrong-result", "output 0: off"),
    }
    path.write_text("test_a\tno-such-category\tx\n")
    with pytest.raises(ValueError, match="unknown category"):
        conformance.read_expected(path)

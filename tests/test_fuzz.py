"""The fuzzer (tools/fuzz.py): a short run of each target, and every finding it ever kept
(tests/fuzz_regressions/) run again. Each must succeed or raise one of onnx2wgsl's errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import fuzz  # noqa: E402

SMOKE_SEED = 20261202
# An artifact whose grid is legal but enormous runs as long as its GPU work takes: no check of
# the manifest can tell that from a big model, so that finding is kept, not replayed.


def _gpu() -> bool:
    """Whether the fuzz cases can run on a GPU; under CI=true a missing adapter fails the run."""
    from onnx2wgsl.errors import DeviceError
    from onnx2wgsl.runtime import request_device

    try:
        request_device()
    except DeviceError as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # as conftest.IN_CI
            pytest.fail(f"CI=true but no WebGPU adapter: {e}", pytrace=False)
        return False
    return True


@pytest.mark.parametrize("target, cases", [("models", 300), ("ir", 300)])
def test_a_short_fuzz_run_finds_nothing(target, cases):
    """Seconds a target on two cores; `python tools/fuzz.py` runs the long ones (docs/fuzzing.md)."""
    counts, findings = fuzz.fuzz((target,), cases, SMOKE_SEED, timeout=60, out_dir=None, gpu=_gpu())
    assert sum(counts.values()) == cases
    assert not findings, "\n".join(
        f"case {c.index}: {o.kind}: {o.detail} [{', '.join(c.what)}]" for c, o in findings
    )


def test_each_case_is_made_again_from_its_seed_and_index():
    for target in ("models", "ir"):
        a, b = fuzz.MAKERS[target](3, 17), fuzz.MAKERS[target](3, 17)
        assert a.files == b.files and a.what == b.what


def _kept() -> list:
    """The kept findings (those of artifacts are the runtime's)."""
    return [pytest.param(path, id=path.name) for path in fuzz.findings_in(fuzz.REGRESSIONS)]


@pytest.fixture(scope="module")
def worker():
    """One worker process for the replays (a crash or a hang of one is caught, as in a run)."""
    pool = fuzz.Pool(timeout=60, gpu=_gpu())
    yield pool
    pool.close()


@pytest.mark.parametrize("path", _kept())
def test_a_kept_finding_is_fixed(path, worker):
    if path.name.startswith("artifacts-") and not worker.gpu:
        pytest.skip("no WebGPU adapter")
    outcome, _ = worker.run(("case", fuzz.load_finding(path)))
    assert outcome.kind not in fuzz.FINDINGS, f"{outcome.kind}: {outcome.detail}"


def test_a_finding_is_kept_as_a_small_file_and_replays(tmp_path):
    case = fuzz.Case("models", 1, 2, {"model.onnx": b"not a model"}, ["bytes"])
    path = fuzz.save_finding(case, fuzz.Outcome("foreign", "ValueError: x"), tmp_path)
    assert path.read_bytes() == b"not a model" and fuzz.findings_in(tmp_path) == [path]
    assert "foreign\tValueError: x" in (tmp_path / "FOUND.tsv").read_text()
    ((_, outcome),) = fuzz.replay([path], gpu=False)
    assert outcome.kind == "error" and outcome.detail.startswith("CompileError")


def test_a_short_artifact_fuzz_run(tmp_path):
    """Mutated artifacts load and run or raise onnx2wgsl's errors."""
    counts, findings = fuzz.fuzz(("artifacts",), 100, SMOKE_SEED, timeout=60, out_dir=tmp_path, gpu=True)
    assert not findings

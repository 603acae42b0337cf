"""benchmarks/run.py end to end on the system lavapipe (no Mesa 25, no onnxruntime-webgpu):
its quick mode writes the results table with both engines. Nothing here is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.mark.gpu
def test_quick_benchmark_writes_the_table_with_both_engines(tmp_path, device):
    out = tmp_path / "RESULTS.md"
    cmd = [sys.executable, str(RUN), "--quick", "--adapter", "mesa22", "--engines", "onnx2wgsl,ort-cpu",
           "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text()
    summary = [line for line in text.splitlines() if line.startswith("| ")]
    head = summary[0]
    assert "onnx2wgsl warm" in head and "ORT-CPU warm" in head and "ours / ORT-WebGPU" in head
    (row,) = [line for line in summary if line.startswith("| squeezenet |") and "n/a (no ORT-WebGPU)" in line]
    assert row.rstrip(" |").endswith("yes")  # the outputs agree
    engines = {line.split("|")[2].strip() for line in summary if line.startswith("| squeezenet |")}
    assert {"onnx2wgsl", "ort-cpu"} <= engines
    assert "Mesa 22" in text and "onnxruntime: " in text and "--quick" in text

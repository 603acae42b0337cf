"""benchmarks/run.py's browser pair end to end: the JS package and onnxruntime-web's WebGPU
backend in headless Chromium on squeezenet, one run each, written into the results table.
Nothing here is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from browser_support import JSTOOLS

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


def test_quick_browser_pair_writes_its_table(tmp_path, playwright):
    assert (JSTOOLS / "node_modules" / "onnxruntime-web").is_dir(), "bash scripts/setup-browser.sh"
    out = tmp_path / "RESULTS.md"
    cmd = [sys.executable, str(RUN), "--quick", "--adapter", "mesa22", "--engines", "onnx2wgsl-js,ort-web",
           "--browser-models", "squeezenet", "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text()
    assert "## In the browser" in text and "onnxruntime-web: " in text and "chromium: " in text
    (row,) = [line for line in text.splitlines() if line.startswith("| squeezenet |") and "onnx2wgsl JS" not in line
              and line.count("|") == 8]  # fmt: skip
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-1] == "yes", row  # both engines ran and agree
    assert float(cells[3]) > 0  # a ratio of two measured medians
    assert "Browser adapter: " in text

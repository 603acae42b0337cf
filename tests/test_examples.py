"""The examples run as tests, so the README's commands stay true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.gpu
def test_digits_example_end_to_end(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits" / "run.py"), "--out", str(tmp_path / "digits")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "agreement with the reference" in r.stdout and "-> OK" in r.stdout
    accuracy = float(r.stdout.split("accuracy ")[1].split()[0])
    assert accuracy > 0.95


@pytest.mark.gpu
def test_readme_cli_example(tmp_path):
    model = ROOT / "examples" / "digits" / "model.onnx"
    c = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnx2wgsl",
            "compile",
            str(model),
            "-o",
            str(tmp_path / "d"),
            "--dim",
            "batch=1",
        ],
        capture_output=True,
        text=True,
    )
    assert c.returncode == 0, c.stderr
    r = subprocess.run(
        [sys.executable, "-m", "onnx2wgsl", "run", str(tmp_path / "d"), "--repeat", "3"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "probabilities: float32[1, 10]" in r.stdout


@pytest.mark.gpu
def test_readme_python_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Python")[1].split("```python")[1].split("```")[0]
    code = block.replace(
        '"examples/digits/model.onnx"', repr(str(ROOT / "examples" / "digits" / "model.onnx"))
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "dispatches" in r.stdout

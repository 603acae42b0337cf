"""The nine light CNNs of the onnx wheel, end to end: CLI, Python API, and random weights vs onnxruntime."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
from helpers import cli, ort_run
from light_models import LIGHT_MODELS, light_input, light_path, light_reference, random_input, randomized

import onnx2wgsl

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
RTOL, ATOL = 1e-3, 1e-4


def test_nine_models_present():
    assert len(LIGHT_MODELS) == 9, LIGHT_MODELS


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_cli_matches_shipped_reference(name, tmp_path):
    input_name, x = light_input(name)
    np.save(tmp_path / "input.npy", x)
    ref = tmp_path / "ref.npy"
    np.save(ref, light_reference(name))
    out = tmp_path / "artifact"
    c = cli("compile", str(light_path(name)), "-o", str(out))
    assert c.returncode == 0, c.stderr
    assert "dispatches" in c.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    r = cli(
        "run",
        str(out),
        "--input",
        f"{input_name}={tmp_path / 'input.npy'}",
        "--expect",
        f"{manifest['outputs'][0]['name']}={ref}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert ": match" in r.stdout


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_api_matches_shipped_reference(name, tmp_path, device):
    report = onnx2wgsl.compile(str(light_path(name)), tmp_path / "a")
    assert report.dispatches > 0
    input_name, x = light_input(name)
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        (y,) = sess.run(None, {input_name: x})
    np.testing.assert_allclose(y, light_reference(name), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_random_weights_match_onnxruntime(name, tmp_path, device):
    model = randomized(name, seed=1)
    onnx2wgsl.compile(model, tmp_path / "a")
    input_name, x = random_input(name, seed=2)
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        got = sess.run(None, {input_name: x})
    want = ort_run(model, {input_name: x})
    assert len(got) == len(want) >= 1
    if name != "densenet121":  # densenet has no Softmax: its only output is the logits already
        assert len(got) == 2, "the logits were added as a second output"
    for g, w in zip(got, want):
        assert np.abs(w).max() > 1e-3, "the reference is informative"
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    gc.collect()


# vgg19 takes a minute and a half at -O0 on lavapipe (2 cores), and its op types are a subset
# of bvlc_alexnet's; its -O2 compile is checked against onnxruntime by the two tests above
O0_MODELS = [m for m in LIGHT_MODELS if m != "vgg19"]


@pytest.mark.parametrize("name", O0_MODELS)
def test_o0_and_o2_give_the_same_outputs(name, tmp_path, device):
    """-O0 (no folding or fusion) against -O2 on the random-weight model, both against onnxruntime."""
    model = randomized(name, seed=3)
    input_name, x = random_input(name, seed=4)
    outs = {}
    for level in (0, 2):
        report = onnx2wgsl.compile(model, tmp_path / f"O{level}", opt_level=level)
        with onnx2wgsl.load(tmp_path / f"O{level}", device=device) as sess:
            outs[level] = (report.dispatches, sess.run(None, {input_name: x}))
    assert outs[2][0] <= outs[0][0]
    for a, b in zip(outs[0][1], outs[2][1]):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    gc.collect()

"""Session creation checks weights.bin's sha256 while it uploads the weights and makes the
pipelines: a file changed in place (same size) is still refused, and an intact one loads and
runs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import two_layer_model

import onnx2wgsl
from onnx2wgsl.errors import ManifestError


@pytest.mark.gpu
def test_weights_changed_in_place_are_refused(tmp_path, device):
    onnx2wgsl.compile(two_layer_model(), tmp_path / "a")
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    want = onnx2wgsl.load(tmp_path / "a", device=device).run(None, {"x": x})
    path = tmp_path / "a" / "weights.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="weights.bin does not match the manifest"):
        onnx2wgsl.load(tmp_path / "a", device=device)
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    got = onnx2wgsl.load(tmp_path / "a", device=device).run(None, {"x": x})
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert np.abs(want[0]).max() > 0  # the weights reached the device

"""Models from strangers: external data is read only from beside the model file, within the
file's bounds, and never through a ModelProto (which has no folder to confine it to)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from helpers import node_model
from onnx import numpy_helper

import onnx2wgsl
from onnx2wgsl.errors import CompileError

SECRET = b"secret bytes that must never reach weights.bin or an output" * 4


def _external_model(location: str, offset: int | None = 0, length: int | None = 16) -> onnx.ModelProto:
    """y = x + w, where w (4 floats) points at external data ``location``."""
    x = np.zeros(4, np.float32)
    m = node_model("Add", {"x": x}, initializers={"w": np.ones(4, np.float32)})
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    entries = {"location": location, "offset": offset, "length": length}
    for k, v in entries.items():
        if v is not None:
            w.external_data.add(key=k, value=str(v))
    return m


@pytest.fixture
def outside(tmp_path):
    """A model folder, and beside it a folder with a secret file the model must not reach."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.bin").write_bytes(SECRET)
    (tmp_path / "model").mkdir()
    return tmp_path


def _save(m: onnx.ModelProto, folder) -> str:
    path = os.path.join(folder, "model.onnx")
    onnx.save(m, path)
    return path


def test_external_data_beside_the_model_is_read(tmp_path, device):
    w = np.arange(4, dtype=np.float32)
    (tmp_path / "w.bin").write_bytes(b"\0" * 8 + w.tobytes())
    path = _save(_external_model("w.bin", offset=8, length=16), tmp_path)
    onnx2wgsl.compile(path, tmp_path / "out")
    with onnx2wgsl.load(tmp_path / "out", device=device) as sess:
        (y,) = sess.run(None, {"x": np.ones(4, np.float32)})
    np.testing.assert_array_equal(y, w + 1)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "linked-folder", "linked-file"])
def test_external_data_outside_the_model_folder_is_refused(outside, how):
    model_dir = outside / "model"
    secret = outside / "elsewhere" / "secret.bin"
    location = {
        "dotdot": "../elsewhere/secret.bin",
        "absolute": str(secret),
        "linked-folder": "dirlink/secret.bin",
        "linked-file": "filelink.bin",
    }[how]
    (model_dir / "dirlink").symlink_to(outside / "elsewhere", target_is_directory=True)
    (model_dir / "filelink.bin").symlink_to(secret)
    path = _save(_external_model(location), model_dir)
    with pytest.raises(CompileError, match="outside the model's folder") as e:
        onnx2wgsl.compile(path, outside / "out")
    assert "\n" not in str(e.value)
    assert not (outside / "out").exists()


def test_a_model_proto_pointing_at_external_data_is_refused(outside, monkeypatch):
    """onnx itself resolves a proto's external data against the working directory and lets a
    linked folder through: a proto is never read from files at all."""
    monkeypatch.chdir(outside / "model")
    (outside / "model" / "dirlink").symlink_to(outside / "elsewhere", target_is_directory=True)
    proto = _external_model("dirlink/secret.bin")
    with pytest.raises(CompileError, match="has no folder to read it from") as e:
        onnx2wgsl.compile(proto, outside / "out")
    assert "file path" in e.value.hint
    import onnx2wgsl.backend as backend

    with pytest.raises(CompileError, match="has no folder"):
        backend.prepare(proto)


@pytest.mark.parametrize(
    "offset,length,message",
    [
        (0, 1 << 40, "past the end"),
        (1 << 40, 16, "past the end"),
        (-8, 16, "bad offset"),
        (0, "x", "bad length"),
    ],
)
def test_external_data_bounds_are_checked_before_reading(tmp_path, offset, length, message):
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    path = _save(_external_model("w.bin", offset=offset, length=length), tmp_path)
    with pytest.raises(CompileError, match=message):
        onnx2wgsl.compile(path, tmp_path / "out")


def test_external_data_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.bin")  # reading would block forever
    path = _save(_external_model("fifo.bin"), tmp_path)
    with pytest.raises(CompileError, match="not a regular file"):
        onnx2wgsl.compile(path, tmp_path / "out")


def test_onnx_load_then_compile_still_works(tmp_path, device):
    """The hint's way out: onnx.load reads the external data into the proto."""
    w = np.arange(4, dtype=np.float32)
    (tmp_path / "w.bin").write_bytes(w.tobytes())
    path = _save(_external_model("w.bin"), tmp_path)
    proto = onnx.load(path)
    assert numpy_helper.to_array(proto.graph.initializer[0]).tolist() == w.tolist()
    onnx2wgsl.compile(proto, tmp_path / "out")
    with onnx2wgsl.load(tmp_path / "out", device=device) as sess:
        (y,) = sess.run(None, {"x": np.ones(4, np.float32)})
    np.testing.assert_array_equal(y, w + 1)

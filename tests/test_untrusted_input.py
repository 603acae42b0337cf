"""Models from strangers: external data is read only from beside the model file, within the
file's bounds, and never through a ModelProto (which has no folder to confine it to)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import cli, node_model
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


# -- careless use: output folders -----------------------------------------------------------------
def test_compile_refuses_a_folder_of_other_files_and_keeps_them(tmp_path):
    m = node_model("Relu", {"x": np.zeros(4, np.float32)})
    out = tmp_path / "mine"
    (out / "shaders").mkdir(parents=True)
    (out / "shaders" / "notes.wgsl").write_text("// a user's file")
    (out / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(CompileError, match="holds no onnx2wgsl artifact") as e:
        onnx2wgsl.compile(m, out)
    assert "--force" in e.value.hint
    assert sorted(p.name for p in out.rglob("*")) == ["notes.wgsl", "photo.jpg", "shaders"]
    onnx2wgsl.compile(m, out, force=True)  # writes the artifact beside them, deletes nothing
    assert (out / "shaders" / "notes.wgsl").exists() and (out / "photo.jpg").exists()
    assert (out / "manifest.json").exists()


def test_recompiling_into_an_artifact_replaces_only_its_own_shaders(tmp_path):
    import json

    out = tmp_path / "a"
    x = np.zeros((2, 4), np.float32)
    w = np.ones((4, 4), np.float32)
    onnx2wgsl.compile(node_model("MatMul", {"x": x}, initializers={"w": w}), out, opt_level=0)
    onnx2wgsl.compile(node_model("Softmax", {"x": x}), tmp_path / "b", opt_level=0)
    before = {p.name for p in (out / "shaders").glob("*.wgsl")}
    (out / "shaders" / "mine.wgsl").write_text("// kept")
    onnx2wgsl.compile(node_model("Softmax", {"x": x}), out, opt_level=0)
    listed = {Path(s["file"]).name for s in json.loads((out / "manifest.json").read_text())["shaders"]}
    assert before - listed, "the two models should not share every shader name"
    assert {p.name for p in (out / "shaders").glob("*.wgsl")} == listed | {"mine.wgsl"}


def test_compile_refuses_an_output_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CompileError, match="not a folder"):
        onnx2wgsl.compile(node_model("Relu", {"x": np.zeros(4, np.float32)}), tmp_path / "f")


def test_dump_ir_refuses_a_folder_of_other_files(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(node_model("Relu", {"x": np.zeros(4, np.float32)}), model)
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "01-notes.ir").write_text("my notes, not IR")
    (dump / "weights.bin").write_bytes(b"precious")

    r = cli("compile", str(model), "-o", str(tmp_path / "out"), "--dump-ir", str(dump))
    assert r.returncode == 1 and "holds no IR dump" in r.stderr and r.stderr.count("\n") == 1
    assert (dump / "weights.bin").read_bytes() == b"precious" and not (tmp_path / "out").exists()
    r = cli("compile", str(model), "-o", str(tmp_path / "out"), "--dump-ir", str(dump), "--force")
    assert r.returncode == 0, r.stderr
    assert (dump / "01-notes.ir").read_text() == "my notes, not IR"  # not a dump file: kept
    assert (dump / "00-import.ir").exists()
    # a second dump into the first one's folder replaces its IR files, and keeps the notes
    r = cli("compile", str(model), "-o", str(tmp_path / "out"), "--dump-ir", str(dump))
    assert r.returncode == 0, r.stderr
    assert (dump / "01-notes.ir").read_text() == "my notes, not IR"


# -- memory amplification at compile time ---------------------------------------------------------
def _constant_of_shape_model(n: int) -> onnx.ModelProto:
    """A hundred-byte model whose folded constant would take 4 * n * n bytes."""
    from onnx import helper

    shape = numpy_helper.from_array(np.array([n, n], np.int64), "shape")
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        helper.make_node("Add", ["x", "big"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "amplify",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, n])],
        [shape],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("n", [20000, 100000])
def test_a_planted_huge_constant_is_refused_before_it_is_allocated(tmp_path, n):
    import tracemalloc

    model = _constant_of_shape_model(n)
    assert model.ByteSize() < 300
    tracemalloc.start()
    try:
        with pytest.raises(CompileError, match="over the fold limit") as e:
            onnx2wgsl.compile(model, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak:,} bytes allocated before the refusal"
    assert e.value.op == "ConstantOfShape" and "--fold-limit" in e.value.hint
    assert "\n" not in str(e.value)


def test_the_fold_limit_can_be_raised_and_lowered(tmp_path):
    model = _constant_of_shape_model(64)  # a 16 KiB constant
    with pytest.raises(CompileError, match="over the fold limit of 1,024 bytes"):
        onnx2wgsl.compile(model, tmp_path / "a", fold_limit=1024)
    onnx2wgsl.compile(model, tmp_path / "b", fold_limit=16384)


def test_a_broadcast_that_folds_into_a_huge_constant_is_refused(tmp_path):
    """Two small constants whose sum broadcasts to [n, n] (the IR fold pass's check)."""
    from onnx import helper

    n = 30000
    col = numpy_helper.from_array(np.ones((n, 1), np.float32), "col")
    row = numpy_helper.from_array(np.ones((1, n), np.float32), "row")
    g = helper.make_graph(
        [helper.make_node("Add", ["col", "row"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
        "broadcast",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, n])],
        [col, row],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CompileError, match="over the fold limit"):
        onnx2wgsl.compile(model, tmp_path / "out")


# -- artifacts from strangers ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "a"
    x = np.zeros((2, 8), np.float32)
    onnx2wgsl.compile(
        node_model("MatMul", {"x": x}, initializers={"w": np.arange(32, dtype=np.float32).reshape(8, 4)}), out
    )
    return out


def _tampered(artifact, tmp_path, edit=None, files=None):
    import json
    import shutil

    out = tmp_path / "t"
    shutil.copytree(artifact, out)
    m = json.loads((out / "manifest.json").read_text())
    if edit is not None:
        edit(m)
    (out / "manifest.json").write_text(json.dumps(m))
    for name, make in (files or {}).items():
        (out / name).unlink()
        make(out / name)
    return out


TAMPERED = {
    # manifest edit -> the words of the one-line ManifestError
    "shader outside": (lambda m: m["shaders"][0].update(file="../../../../etc/passwd"), "shaders/NAME.wgsl"),
    "shader absolute": (lambda m: m["shaders"][0].update(file="/etc/passwd"), "shaders/NAME.wgsl"),
    "weights device": (lambda m: m["weights"].update(file="/dev/zero"), "plain NAME.bin"),
    "weights up": (lambda m: m["weights"].update(file="../weights.bin"), "plain NAME.bin"),
    "grid zero": (lambda m: m["dispatches"][0].update(grid=[0, 0, 0]), "grid must be 3 numbers"),
    "grid float": (lambda m: m["dispatches"][0].update(grid=[1.5, 1, 1]), "grid must be 3 numbers"),
    "grid huge": (lambda m: m["dispatches"][0].update(grid=[65535, 65535, 64]), "workgroups, more than the"),
    "input too big": (lambda m: m["inputs"][0].update(shape=[2, 80]), "has size 64 for shape [2, 80]"),
    "input past buffer": (lambda m: m["inputs"][0].update(offset=1 << 30), "lies outside buffer"),
    "segment huge": (lambda m: m["weights"]["segments"][0].update(size=1 << 40), "lies outside buffer"),
    "segment past file": (lambda m: m["weights"]["segments"][0].update(file_offset=1 << 20), "past the end"),
    "binding past buffer": (
        lambda m: m["dispatches"][0]["bindings"][0].update(offset=1 << 20),
        "outside buffer",
    ),
    "binding unaligned": (lambda m: m["dispatches"][0]["bindings"][0].update(offset=4), "bad offset or size"),
    "buffer huge": (lambda m: m["buffers"][0].update(size=1 << 50), "not a multiple of 4 from 4"),
    "number too big": (lambda m: m["buffers"][0].update(size=1 << 60), "at most 2^53 - 1"),
    "missing key": (lambda m: m.pop("dispatches"), "dispatches is missing"),
    "entry point": (lambda m: m["shaders"][0].update(entry="main; evil"), "bad entry point"),
    "shader hash": (lambda m: m["shaders"][0].update(sha256="0" * 64), "does not match the manifest"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_manifest_is_one_clear_error(artifact, tmp_path, case, device):
    from onnx2wgsl.errors import ManifestError

    edit, words = TAMPERED[case]
    out = _tampered(artifact, tmp_path, edit)
    with pytest.raises(ManifestError) as e:
        onnx2wgsl.load(out, device=device)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("how", ["link-out", "fifo", "grown"])
def test_weights_and_shader_files_are_read_only_as_declared(artifact, tmp_path, how, device):
    """A weights file that is a link out of the folder, a FIFO (reading would hang) or longer
    than declared is refused before it is read; so is a shader file that links out."""
    from onnx2wgsl.errors import ManifestError

    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    make = {
        "link-out": lambda p: p.symlink_to(secret),
        "fifo": lambda p: os.mkfifo(p),
        "grown": lambda p: p.write_bytes((artifact / "weights.bin").read_bytes() + b"\0" * 64),
    }[how]
    out = _tampered(artifact, tmp_path, files={"weights.bin": make})
    with pytest.raises(ManifestError, match="weights.bin"):
        onnx2wgsl.load(out, device=device)
    (shader,) = (artifact / "shaders").glob("*.wgsl")
    out2 = _tampered(
        artifact, tmp_path / "s", files={f"shaders/{shader.name}": lambda p: p.symlink_to(secret)}
    )
    with pytest.raises(ManifestError, match="outside the artifact folder"):
        onnx2wgsl.load(out2, device=device)


def test_run_misuse_is_an_input_error(artifact, device):
    from onnx2wgsl.errors import InputError

    sess = onnx2wgsl.load(artifact, device=device)
    with pytest.raises(InputError, match="must map input names to arrays, not a list"):
        sess.run(None, [np.zeros((2, 8), np.float32)])
    sess.release()
    with pytest.raises(InputError, match="released"):
        sess.run(None, {"x": np.zeros((2, 8), np.float32)})

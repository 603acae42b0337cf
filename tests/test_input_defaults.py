"""Inputs with a default: from IR version 4 an initializer named like a graph input is only that
input's default, which a feed overrides (onnxruntime's overridable initializers). The artifact
keeps such an input and its default; a run that omits it uses the default. One whose value an
op needs at compile time (a Reshape's shape) is compiled in with its initializer's value;
``freeze_initializers`` compiles them all in."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from helpers import (
    DEFAULT_W,
    assert_close,
    assert_ir_round_trips,
    cli,
    defaults_graph,
    defaults_model,
    ort_run,
    rand,
    tampered_defaults,
)
from onnx import helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import InputError, ManifestError
from onnx2wgsl.runtime.manifest import validate


def reproducer():
    """The report's model: Reshape(x, s) @ w, with s and w initializers listed as inputs."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    defaults = {"s": np.array([2, 4], np.int64), "w": np.ones((4, 2), np.float32)}
    return defaults_graph(nodes, {"x": rand(2, 4)}, defaults, ["y"])


def _inputs(res) -> dict[str, dict]:
    return {io["name"]: io for io in res.artifact.manifest["inputs"]}


# -- the compiler (no device) -----------------------------------------------------------------
def test_a_shape_deciding_default_is_compiled_in_and_the_others_stay_inputs():
    res = compile_model(defaults_model())
    ins = _inputs(res)
    assert list(ins) == ["x", "w", "b", "k"]
    assert "default" not in ins["x"]
    assert ins["w"]["default"] == {"size": 48, "file_offset": ins["w"]["default"]["file_offset"]}
    assert ins["b"]["default"] == {"size": 12, "fill": 0}
    assert ins["k"]["default"]["size"] == 8 and ins["k"]["storage"] == "i32"
    w_at = ins["w"]["default"]["file_offset"]
    assert res.artifact.weights[w_at : w_at + 48] == DEFAULT_W.tobytes()  # covered by weights.sha256
    (frozen,) = [w for w in res.report.warnings if "'s'" in w]
    assert "Reshape node" in frozen and "compiled in with its initializer's value and cannot be fed" in frozen
    (kept,) = [w for w in res.report.warnings if "have an initializer of the same name" in w]
    assert "'w', 'b', 'k'" in kept and "--freeze-initializers" in kept and "freeze_initializers=True" in kept


def test_a_default_reaching_a_shape_through_shape_math_is_compiled_in():
    """s2 = s * c feeds the Reshape: no pre-scan sees it, the import finds it and starts again."""
    nodes = [
        helper.make_node("Mul", ["s", "c"], ["s2"]),
        helper.make_node("Reshape", ["x", "s2"], ["y"]),
    ]
    m = defaults_graph(nodes, {"x": rand(2, 4)}, {"s": np.array([4, 1], np.int64)}, ["y"])
    m.graph.initializer.append(numpy_helper.from_array(np.array([1, 2], np.int64), "c"))
    res = compile_model(m)
    assert list(_inputs(res)) == ["x"]
    assert any("input 's' decides a shape" in w for w in res.report.warnings)


def test_an_axes_default_is_compiled_in():
    m = defaults_graph(
        [helper.make_node("ReduceSum", ["x", "a"], ["y"])], {"x": rand(2, 4)}, {"a": np.array([1])}, ["y"]
    )
    res = compile_model(m)
    assert list(_inputs(res)) == ["x"]
    assert any("input 'a' decides a shape" in w and "ReduceSum" in w for w in res.report.warnings)


def test_freeze_initializers_compiles_every_default_in():
    res = compile_model(defaults_model(), freeze_initializers=True)
    assert list(_inputs(res)) == ["x"]
    assert not res.report.warnings
    assert res.artifact.weights  # w is a weight now


def test_the_defaults_survive_the_ir_text_of_every_stage():
    assert_ir_round_trips(defaults_model())


def test_a_default_that_does_not_fill_the_bound_shape_is_dropped():
    """--shape gives w another shape than its initializer's: w stays an input, with no default."""
    m = defaults_graph([helper.make_node("Relu", ["w"], ["y"])], {}, {"w": rand(2, 3)}, ["y"])
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    res = compile_model(m, shapes={"w": (5, 3)})
    assert "default" not in _inputs(res)["w"]
    assert any("does not fill" in w and "every run must feed it" in w for w in res.report.warnings)


# -- the manifest: both validators check the field (the JS one in tests/browser) -----------------
TAMPERED = tampered_defaults()


@pytest.fixture(scope="module")
def manifest():
    return compile_model(defaults_model()).artifact.manifest


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_the_validator_refuses_a_bad_default(manifest, case):
    edit, words = TAMPERED[case]
    m = copy.deepcopy(manifest)
    edit(m)
    with pytest.raises(ManifestError) as e:
        validate(m)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_bad_default_on_disk_is_refused_at_load(tmp_path, device):
    onnx2wgsl.compile(defaults_model(), tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["inputs"][1]["default"]["file_offset"] = 1 << 20
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="input 'w' default is unaligned or reads past the end"):
        onnx2wgsl.load(tmp_path, device=device)


# -- the Python runtime ----------------------------------------------------------------------
def test_the_reproducer_runs_without_its_defaults_as_onnxruntime_does(tmp_path, device):
    m = reproducer()
    onnx2wgsl.compile(m, tmp_path)
    sess = onnx2wgsl.load(tmp_path, device=device)
    x, w = rand(2, 4, seed=2), rand(4, 2, seed=3)
    assert_close(sess.run(None, {"x": x}), ort_run(m, {"x": x}))
    assert_close(sess.run(None, {"x": x, "w": w}), ort_run(m, {"x": x, "w": w}))  # a feed overrides
    assert_close(sess.run(None, {"x": x}), ort_run(m, {"x": x}))  # and the next run has the default again
    # as in onnxruntime: get_inputs() lists what every run feeds, so feeds made from it keep defaults
    ort_sess = ort_session(m)
    assert [i.name for i in sess.get_inputs()] == [i.name for i in ort_sess.get_inputs()] == ["x"]
    assert [(i.name, i.optional) for i in sess.get_overridable_initializers()] == [("w", True)]
    assert [i.name for i in ort_sess.get_overridable_initializers()] == ["s", "w"]  # s is compiled in here


def ort_session(model):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_defaults_in_the_weights_file_as_fills_and_as_int64(tmp_path, device):
    m = defaults_model()
    onnx2wgsl.compile(m, tmp_path)
    sess = onnx2wgsl.load(tmp_path, device=device)
    x = rand(8, seed=4)
    assert_close(sess.run(None, {"x": x}), ort_run(m, {"x": x}))
    feeds = {"x": x, "w": rand(4, 3, seed=5), "b": rand(3, seed=6), "k": np.array([1, 1], np.int64)}
    assert_close(sess.run(None, feeds), ort_run(m, feeds))
    with pytest.raises(InputError, match=r"missing inputs \['x'\].*w \(float32\[4, 3\], optional\)"):
        sess.run(None, {"w": DEFAULT_W})
    with pytest.raises(InputError, match=r"unknown input names \['s'\]"):  # compiled in
        sess.run(None, {"x": x, "s": np.array([2, 4], np.int64)})


def test_freeze_initializers_gives_the_same_numbers(tmp_path, device):
    m = defaults_model()
    onnx2wgsl.compile(m, tmp_path, freeze_initializers=True)
    sess = onnx2wgsl.load(tmp_path, device=device)
    assert [i.name for i in sess.get_inputs()] == ["x"]
    x = rand(8, seed=7)
    assert_close(sess.run(None, {"x": x}), ort_run(m, {"x": x}))


def test_the_command_line_freezes_initializers_and_runs_on_defaults(tmp_path):
    import onnx

    onnx.save(defaults_model(), tmp_path / "m.onnx")
    r = cli("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    assert "--freeze-initializers" in r.stdout
    r = cli("run", str(tmp_path / "a"))  # w, b and k keep their defaults, x is random
    assert r.returncode == 0, r.stderr
    r = cli("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "f"), "--freeze-initializers")
    assert r.returncode == 0, r.stderr
    inputs = json.loads((tmp_path / "f" / "manifest.json").read_text())["inputs"]
    assert [io["name"] for io in inputs] == ["x"]


def test_the_backend_compiles_again_for_a_feed_that_overrides_a_compiled_in_default(device):
    """onnxruntime lets a feed override s even though it decides a shape; the backend compiles
    the model again with that value, as it does for any input the compiler needs."""
    import onnx2wgsl.backend as backend

    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Add", ["r", "b"], ["y"])]
    defaults = {"s": np.array([2, 4], np.int64), "b": np.ones(1, np.float32)}
    m = defaults_graph(nodes, {"x": rand(2, 4)}, defaults, ["y"])
    x, s = rand(2, 4, seed=8), np.array([4, 2], np.int64)
    rep = backend.prepare(m, webgpu_device=device)
    try:
        assert_close(list(rep.run([x])), ort_run(m, {"x": x}))
        assert_close(list(rep.run({"x": x, "s": s})), ort_run(m, {"x": x, "s": s}))
        b = np.full(1, 3, np.float32)
        assert_close(list(rep.run({"x": x, "b": b})), ort_run(m, {"x": x, "b": b}))
    finally:
        rep.release()


def test_the_backend_honours_such_a_feed_when_it_compiles_at_run_too(device):
    """t (no default) defers the compile to run; s, fed there, still overrides its default."""
    import onnx2wgsl.backend as backend

    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Expand", ["r", "t"], ["y"])]
    m = defaults_graph(nodes, {"x": rand(2, 4), "t": np.ones(3, np.int64)}, {"s": np.array([2, 4])}, ["y"])
    x, t = rand(2, 4, seed=9), np.array([3, 1, 1], np.int64)
    rep = backend.prepare(m, webgpu_device=device)
    try:
        assert rep.session is None and rep.frozen == ("t",)
        assert_close(list(rep.run({"x": x, "t": t})), ort_run(m, {"x": x, "t": t}))
        feeds = {"x": x, "t": t, "s": np.array([4, 2], np.int64)}
        assert_close(list(rep.run(feeds)), ort_run(m, feeds))
    finally:
        rep.release()


def test_onnxruntime_agrees_on_which_inputs_are_overridable():
    import onnxruntime as ort

    sess = ort.InferenceSession(defaults_model().SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [i.name for i in sess.get_overridable_initializers()] == ["s", "w", "b", "k"]

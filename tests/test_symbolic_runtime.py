"""The runtime side of dims chosen at run time (manifest format version 3), on a hand-made
artifact: any size up to the bounds in one session, nothing created on the GPU per run, the
symbols written only when they change, zero-work dispatches skipped, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hand_artifacts import MALFORMED, expected, symbolic_manifest, write_artifact
from test_runtime import COUNTED, count_gpu_creations

import onnx2wgsl
from onnx2wgsl.errors import InputError, ManifestError
from onnx2wgsl.runtime import manifest as mf


def feeds(seq, k=1, seed=0):
    r = np.random.default_rng(seed)
    return {
        "x": r.standard_normal((seq, 4)).astype(np.float32),
        "t": r.standard_normal(seq).astype(np.float32),
        "p": np.zeros(2 * seq, np.float32),
        "q": np.zeros(k, np.int32),
    }


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_manifests_are_refused_in_one_line(case):
    m = symbolic_manifest()
    edit, words = MALFORMED[case]
    edit(m)
    with pytest.raises(ManifestError) as e:
        mf.validate(json.loads(json.dumps(m)))
    assert str(e.value).startswith(words) and "\n" not in str(e.value), str(e.value)


def test_the_hand_made_manifest_is_valid_and_expressions_evaluate():
    mf.validate(symbolic_manifest())
    env = {"seq": 7, "k": 2}
    assert mf.evaluate(["//", ["+", ["*", 4, "seq"], 63], 64], env) == 1
    assert mf.evaluate(["tdiv", -7, 2], env) == -3 and mf.evaluate(["//", -7, 2], env) == -4
    assert mf.evaluate(["%", -7, "k"], env) == 1 and mf.evaluate(["max", "seq", ["min", "k", 9]], env) == 7
    assert (
        mf.show_shape(["seq", ["*", 2, ["+", "seq", 1]], ["max", "k", 1], 3])
        == "[seq, 2*(seq + 1), max(k, 1), 3]"
    )


@pytest.fixture
def session(tmp_path, device):
    with onnx2wgsl.load(write_artifact(tmp_path / "sym"), device=device) as s:
        yield s


@pytest.mark.gpu
def test_any_size_up_to_the_bound_in_one_session(session, monkeypatch):
    assert session.symbols == {"seq": (0, 128), "k": (1, 5)}
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("x", ["seq", 4]), ("t", ["seq"]), ("p", ["2*seq"]), ("q", ["k"])]  # fmt: skip
    assert [o.shape for o in session.get_outputs()] == [["seq", 4], ["seq"]]
    session.run(None, feeds(3))  # the first run of a value set; the counted ones follow
    calls = count_gpu_creations(session.device, monkeypatch)
    dims_writes = []
    q_cls = type(session.device.queue)
    write = q_cls.write_buffer
    monkeypatch.setattr(
        q_cls, "write_buffer",
        lambda self, buf, *a, **k: (dims_writes.append(a[1].tolist()) if buf is session._dims else None)
        or write(self, buf, *a, **k),
    )  # fmt: skip
    runs = [(1, 1), (17, 2), (17, 2), (128, 5), (64, 3), (17, 2), (0, 4)]
    for seq, k in runs:
        f = feeds(seq, k, seed=seq)
        y, z = session.run(None, f)
        want_y, want_z = expected(f["x"], f["t"], k)
        assert y.shape == (seq, 4) and z.shape == (seq,)
        np.testing.assert_array_equal(y, want_y.astype(np.float32))
        np.testing.assert_array_equal(z, want_z)
    assert calls == {name: 0 for name in COUNTED}
    # written when the values change, not on the repeated (17, 2)
    assert dims_writes == [
        [1, 1, 0, 0],
        [17, 2, 0, 0],
        [128, 5, 0, 0],
        [64, 3, 0, 0],
        [17, 2, 0, 0],
        [0, 4, 0, 0],
    ]
    # evaluated once per distinct values; seq = 0 leaves no dispatch to run
    assert len(session._plans) == 6
    assert [g for _, _, g, _ in session._plans[(128, 5)][0]] == [(8, 1, 1), (2, 1, 1)]
    assert session._plans[(0, 4)][0] == []


@pytest.mark.gpu
def test_bad_feeds_are_one_line_input_errors(session):
    def bad(**changes):
        return {**feeds(4), **changes}

    f4 = feeds(4)
    cases = [
        (bad(x=np.zeros((129, 4), np.float32)), "input 'x' dim 0 (seq) is 129, outside seq's range 0..128"),
        (bad(q=np.zeros(6, np.int32)), "input 'q' dim 0 (k) is 6, outside k's range 1..5"),
        (bad(q=np.zeros(0, np.int32)), "input 'q' dim 0 (k) is 0, outside k's range 1..5"),
        (bad(t=np.zeros(5, np.float32)), "input 't' dim 0 (seq) must be 4 for seq=4, k=1, got 5"),
        (bad(p=np.zeros(9, np.float32)), "input 'p' dim 0 (2*seq) must be 8 for seq=4, k=1, got 9"),
        (bad(x=np.zeros((4, 5), np.float32)), "input 'x' must have shape [seq, 4], got [4, 5]"),
        (bad(x=np.zeros(16, np.float32)), "input 'x' must have shape [seq, 4], got [16]"),
        (
            {"x": f4["x"]},
            "missing inputs ['t', 'p', 'q']; the model expects: x (float32[seq, 4]), t (float32[seq])",
        ),
    ]
    for feed, words in cases:
        with pytest.raises(InputError) as e:
            session.run(None, feed)
        assert str(e.value).startswith(words) and "\n" not in str(e.value), str(e.value)
    y, z = session.run(None, f4)  # a good run after the bad ones
    np.testing.assert_array_equal(z, f4["t"] + 1)


@pytest.mark.gpu
def test_grids_beyond_the_limit_at_run_time_fail_clearly(tmp_path, device):
    # a non-monotone grid: fine at the bound (seq = 128), too many workgroups at seq = 127
    m = symbolic_manifest()
    m["dispatches"][1]["grid"] = [["*", ["%", "seq", 2], 70000], 1, 1]
    m["dispatches"][1]["bindings"][2]["size"] = 512  # (the workgroup rule: one per element at most)
    with onnx2wgsl.load(write_artifact(tmp_path / "g", m), device=device) as s:
        s.run(None, feeds(128))
        with pytest.raises(
            InputError,
            match=r"^dispatch 1 grid \[70000, 1, 1\] at seq=127, k=1 is beyond the artifact's bounds$",
        ):
            s.run(None, feeds(127))


@pytest.mark.gpu
def test_a_version_2_artifact_loads_and_runs_unchanged(tmp_path, device):
    from helpers import ort_run, rand, two_layer_model

    onnx2wgsl.compile(two_layer_model(), tmp_path / "a")
    path = tmp_path / "a" / "manifest.json"
    m = json.loads(path.read_text())
    assert m["version"] == 3 and "symbols" not in m
    path.write_text(json.dumps({**m, "version": 2}))
    x = rand(2, 8)
    with onnx2wgsl.load(tmp_path / "a", device=device) as s:
        assert s.symbols == {} and s.manifest["version"] == 2
        for got, want in zip(s.run(None, {"x": x}), ort_run(two_layer_model(), {"x": x})):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_shapes_beyond_their_slot_at_run_time_fail_clearly(tmp_path, device):
    # a non-monotone shape: p has 0 elements at the bound, 300 (more than its slot's 256) at seq = 127
    m = symbolic_manifest()
    m["inputs"][2]["shape"] = [["*", 300, ["%", "seq", 2]]]
    with onnx2wgsl.load(write_artifact(tmp_path / "s", m), device=device) as s:
        s.run(None, {**feeds(128), "p": np.zeros(0, np.float32)})
        with pytest.raises(InputError) as e:
            s.run(None, {**feeds(127), "p": np.zeros(300, np.float32)})
        assert str(e.value) == "input/output 'p' shape [300] at seq=127, k=1 is beyond the artifact's bounds"


def test_inspect_shows_symbols_and_symbolic_shapes_and_grids():
    from onnx2wgsl.compiler.cli import schedule_summary

    text = schedule_summary(symbolic_manifest())
    assert "symbols  seq=0..128, k=1..5" in text and "'p': float32[2*seq] at in[2560:3584]" in text
    assert "grid (seq + 63) // 64 x 1 x 1" in text and "dims dims[0:16]" in text

"""Tunable kernel forms (compiler/tune.py): every candidate form of the matmul and conv tiles
computes what onnxruntime does; ``--tune`` measures them on the device and records its table
in the manifest, from which ``--tuning`` builds the same artifact again; a table's entries
that are not this model's, or name forms that are not candidates, are reported and cost
nothing."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import bn_params, cli, graph_model, ort_run, rand
from onnx import helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.target import get_target
from onnx2wgsl.compiler.tune import read_tuning, tunes
from onnx2wgsl.errors import CompileError


def _model():
    """Two convs (3x3 on conv_rows; an 11-tap row through a BN-Relu prologue on conv_gemm) and
    four matmuls (a constant B, a run-time B read as vec4 along n, ragged sizes read one f32 at
    a time, and a constant B by an A whose rows are not whole vec4s), sizes that leave every
    tile a ragged edge."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y1", "scale", "bias", "mean", "var"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y2"], pads=[0, 5, 0, 5]),
        helper.make_node("MatMul", ["a", "bc"], ["m1"]),
        helper.make_node("MatMul", ["a", "b"], ["m2"]),
        helper.make_node("MatMul", ["a2", "b2"], ["m3"]),
        helper.make_node("MatMul", ["a2", "b3"], ["m4"]),
    ]
    feeds = {
        "x": rand(2, 8, 12, 12),
        "a": rand(70, 24, seed=1),
        "b": rand(24, 20, seed=2),
        "a2": rand(9, 13, seed=3),
        "b2": rand(13, 6, seed=4),
    }
    inits = {
        "w1": rand(12, 8, 3, 3, seed=5),
        "b1": rand(12, seed=6),
        "w2": rand(16, 12, 1, 11, seed=7),
        "bc": rand(24, 18, seed=8),
        "b3": rand(13, 8, seed=9),
        **bn_params(12),
    }
    return graph_model(nodes, feeds, ["y1", "y2", "m1", "m2", "m3", "m4"], inits), feeds


def _close(got, want):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max())))


@pytest.mark.parametrize("subgroups", [False, True], ids=["plain", "subgroups"])
def test_every_candidate_form_is_right(subgroups, device, device_sg, tmp_path):
    """A tuning run's rounds give each tunable kernel each of its candidate forms in turn:
    all of them match onnxruntime, and every candidate of every problem is taken once."""
    model, feeds = _model()
    want = ort_run(model, feeds)
    seen: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    r, rounds = 0, 1
    while r < rounds:
        out = tmp_path / f"r{r}"
        res = compile_model(
            model, out, verify_ir=True, subgroups=subgroups, target=replace(get_target(None), explore=r)
        )
        records = [t for t in tunes(res.graph) if t is not None]
        kinds = {t.key.split("(")[0] for t in records}
        assert kinds == {"conv_rows", "conv_gemm", "matmul"}, kinds
        rounds = max(t.candidates for t in records)
        for t in records:
            seen.setdefault(t.key, set()).add(t.choice)
            counts[t.key] = t.candidates
        with onnx2wgsl.load(out, device=device_sg if subgroups else device) as sess:
            _close(sess.run(None, feeds), want)
        r += 1
    assert {k: len(v) for k, v in seen.items()} == counts
    forms = {json.loads(c)["sg"] for k, v in seen.items() if k.startswith("matmul") for c in v}
    assert forms == ({0, 1} if subgroups else {0})
    assert max(counts.values()) >= 8


def test_tune_records_a_table_that_rebuilds_the_artifact(device, tmp_path):
    """--tune measures on the device, records its table in the manifest (one entry per tunable
    problem), and the outputs are right; compiling with that table again, with no device
    involved, writes the same bytes."""
    model, feeds = _model()
    tuned, again = tmp_path / "tuned", tmp_path / "again"
    report = onnx2wgsl.compile(model, tuned, tune=True, tune_runs=1)
    note = next(n for n in report.notes if n.startswith("--tune:"))
    assert "kernel problems measured (1 passes" in note, note
    table = json.loads((tuned / "manifest.json").read_text())["tuning"]
    assert {k.split("(")[0] for k in table} == {"conv_rows", "conv_gemm", "matmul"}
    assert len(table) == 6  # two convs, four matmuls of different sizes
    with onnx2wgsl.load(tuned, device=device) as sess:
        _close(sess.run(None, feeds), ort_run(model, feeds))
    r2 = onnx2wgsl.compile(model, again, tuning=tuned)
    assert "tuning table: 6 of 6 tunable kernel problems take its forms" in r2.notes
    files = sorted(p.relative_to(tuned) for p in tuned.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        assert (tuned / f).read_bytes() == (again / f).read_bytes(), f
    # the table as a JSON file of its own does the same
    (tmp_path / "table.json").write_text(json.dumps(table))
    r3 = compile_model(model, tmp_path / "third", tuning=tmp_path / "table.json")
    assert (tmp_path / "third" / "manifest.json").read_bytes() == (tuned / "manifest.json").read_bytes()
    assert r3.report.notes == r2.notes


def test_a_table_form_is_taken_and_recorded(tmp_path):
    """An entry picks its kernel's form (the shader shows the tile) and the manifest records it;
    without a table the manifest has no tuning record (plain artifacts are unchanged)."""
    model, _ = _model()
    plain = compile_model(model, tmp_path / "plain")
    assert "tuning" not in plain.artifact.manifest
    key = next(t.key for t in tunes(plain.graph) if t is not None and t.key.startswith("conv_rows"))
    res = compile_model(model, tmp_path / "t", tuning={key: {"tw": 2, "oct": 8}})
    assert res.artifact.manifest["tuning"] == {key: {"oct": 8, "tw": 2}}
    tile = "computes 2 adjacent output pixels of one row x 8 output channels"
    assert any(tile in text for text in res.artifact.shaders.values())
    assert not any(tile in text for text in plain.artifact.shaders.values())
    assert [t.choice for t in tunes(res.graph) if t is not None and t.key == key] == ['{"oct":8,"tw":2}']


def test_entries_that_are_not_candidates_or_not_this_models(tmp_path):
    """A form that is not a candidate here is refused (the default is taken, the report says
    so); an entry for a problem the model lacks is counted as unused."""
    model, _ = _model()
    plain = compile_model(model)
    key = next(t.key for t in tunes(plain.graph) if t is not None and t.key.startswith("matmul"))
    res = compile_model(model, tuning={key: {"rows": 3, "cols": 1, "sg": 0}, "matmul(M=5)": {"rows": 1}})
    notes = " ".join(res.report.notes)
    assert "1 entries name a form that is not a candidate here" in notes and key in notes
    assert "1 entries are for problems this model does not have" in notes
    assert "tuning" not in res.artifact.manifest
    assert res.artifact.shaders == plain.artifact.shaders


def test_bad_tables(tmp_path):
    model, _ = _model()
    with pytest.raises(CompileError, match="not found"):
        compile_model(model, tuning=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CompileError, match="not valid JSON"):
        compile_model(model, tuning=tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(CompileError, match="not a tuning table"):
        read_tuning(tmp_path / "list.json")
    with pytest.raises(CompileError, match="not a tuning table"):
        read_tuning({"matmul(M=1)": 4})
    with pytest.raises(ValueError, match="give one"):
        onnx2wgsl.compile(model, tune=True, tuning={})
    with pytest.raises(ValueError, match="tune_runs applies"):
        onnx2wgsl.compile(model, tune_runs=2)


def test_cli_tune_and_tuning(tmp_path):
    model, _ = _model()
    import onnx

    onnx.save(model, tmp_path / "m.onnx")
    p = cli("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a"), "--tune", "--tune-runs", "1")
    assert p.returncode == 0, p.stderr
    assert "--tune: " in p.stdout and "kernel problems measured" in p.stdout
    p = cli("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "b"), "--tuning", str(tmp_path / "a"))
    assert p.returncode == 0, p.stderr
    assert "tuning table: 6 of 6" in p.stdout
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    p = cli(
        "compile",
        str(tmp_path / "m.onnx"),
        "-o",
        str(tmp_path / "c"),
        "--tune",
        "--tuning",
        str(tmp_path / "a"),
    )
    assert p.returncode != 0 and "give one" in p.stderr
    p = cli("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "c"), "--tune-runs", "2")
    assert p.returncode != 0 and "--tune-runs applies to --tune" in p.stderr

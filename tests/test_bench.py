"""`onnx2wgsl bench` and per-dispatch GPU profiles (timestamp queries)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import cli, rand, two_layer_model

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import DeviceError


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "a"
    compile_model(two_layer_model(), out, opt_level=0)
    return out


def test_run_profiled_times_every_dispatch_and_gives_the_same_outputs(artifact):
    with onnx2wgsl.load(artifact, profile=True) as s:
        x = rand(2, 8)
        want = s.run(None, {"x": x})
        got, times = s.run_profiled(None, {"x": x})
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert [k for k, _ in times] == list(range(len(s.manifest["dispatches"])))
        assert all(0 <= t < 1 for _, t in times) and sum(t for _, t in times) > 0


def test_profiling_needs_a_session_made_for_it(artifact, device):
    with onnx2wgsl.load(artifact, device=device) as s:
        with pytest.raises(DeviceError, match="timestamp-query.*profile=True"):
            s.run_profiled(None, {"x": rand(2, 8)})


def test_bench_command_prints_times_and_the_kernel_table(artifact):
    res = cli("bench", str(artifact), "--warmup", "1", "--iters", "2", "--profile")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "first run" in out and "warm runs (2)  median" in out
    assert (
        "GPU ms" in out and "GFLOP/s" in out and "GPU total" in out and "of the median run's wall time" in out
    )
    assert (
        len([line for line in out.splitlines() if "Gemm" in line or "MatMul" in line or "Relu" in line]) >= 1
    )


def test_bench_takes_symbol_values(tmp_path):
    from test_symbolic_compile import _positions_model

    compile_model(_positions_model(), tmp_path / "p", dims={"seq": (1, 128)})
    with onnx2wgsl.load(tmp_path / "p") as s:
        assert s.symbol_values({"x": rand(2, 17)}) == {"seq": 17}
    res = cli("bench", str(tmp_path / "p"), "--iters", "1", "--dim", "seq=17", "--profile")
    assert res.returncode == 0, res.stderr
    assert "x=(2, 17)" in res.stdout
    res = cli("bench", str(tmp_path / "p"), "--dim", "len=3")
    assert res.returncode != 0 and "--dim names ['len'], not the artifact's symbols ['seq']" in res.stderr


def test_the_manifest_records_each_ops_work_on_its_heaviest_dispatch(tmp_path):
    """MatMul [2,8] x [8,16]: 2*2*16*8 operations; the profile's GFLOP/s divides them by GPU time."""
    import json

    from helpers import node_model

    model = node_model("MatMul", {"a": rand(2, 8)}, initializers={"b": rand(8, 16, seed=1)})
    compile_model(model, tmp_path / "m", opt_level=0)
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert sum(d["flops"] for d in m["dispatches"]) == 2 * 2 * 16 * 8


def test_a_conv_reading_its_input_through_a_prologue_counts_its_multiply_adds(tmp_path):
    """BatchNormalization -> Relu -> Conv fuses into one kernel whose input 0 is the prologue's
    result (its operands come first): 2 per multiply-add of the conv, plus the prologue's."""
    import json

    from helpers import graph_model
    from onnx import helper

    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    consts = {
        "s": rand(4, seed=1),
        "b": rand(4, seed=2),
        "m": rand(4, seed=3),
        "v": rand(4, seed=4) + 1,
        "w": rand(8, 4, 3, 3, seed=5),
    }
    compile_model(graph_model(nodes, {"x": rand(1, 4, 6, 6)}, ["y"], consts), tmp_path / "c")
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    (d,) = [d for d in m["dispatches"] if d["flops"]]
    assert (
        len(m["dispatches"]) == 1 and "P0" in (tmp_path / "c" / m["shaders"][d["shader"]]["file"]).read_text()
    )
    conv = 2 * 8 * 6 * 6 * 4 * 3 * 3
    assert conv < d["flops"] <= conv + 4 * 6 * 6 * 8, d["flops"]


def test_roofline_measures_the_adapter_and_bench_reports_against_it(artifact):
    from onnx2wgsl.compiler.roofline import measure

    roof = measure(repeats=1, copy_mib=4)
    assert roof.gflops > 0.1 and roof.gbps > 0.01, roof
    res = cli("bench", str(artifact), "--iters", "1", "--profile", "--roofline")
    assert res.returncode == 0, res.stderr
    assert "roofline of" in res.stdout and "of the peak" in res.stdout and " roof " in res.stdout

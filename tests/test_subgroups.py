"""Subgroup kernels (``--subgroups``): the matmul's lanes share each load of A's rows, and
conv_rows' lanes each load of the weights, by subgroupBroadcast. Against onnxruntime's CPU
kernels, over the shapes the tiles must clamp (rows, columns and tasks past the end), batches,
Gemm's forms, conv geometry, fused prologues and epilogues, f16 storage and symbolic dims; the
plain path each such shader keeps for subgroups narrower than 8; and what the artifact asks of
the device."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from helpers import ort_run, rand
from onnx import TensorProto, helper, numpy_helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import DeviceError
from onnx2wgsl.runtime.manifest import SUBGROUPS_FEATURE

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, s) for n, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _shaders(path) -> list[str]:
    return [p.read_text() for p in sorted((path / "shaders").glob("*.wgsl"))]


def _check(model, feeds, path, device, **options) -> None:
    """Compiled with --subgroups, the model's matmul broadcasts rows, the artifact asks for
    subgroups, and the outputs match onnxruntime's."""
    compile_model(model, path, subgroups=True, **options)
    assert any("subgroupBroadcast(" in s for s in _shaders(path)), "no subgroup kernel"
    assert json.loads((path / "manifest.json").read_text())["target"]["features"] == [SUBGROUPS_FEATURE]
    with onnx2wgsl.load(path, device=device) as sess:
        got = sess.run(None, feeds)
    for g, w in zip(got, ort_run(model, feeds), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max())))


CONST_SHAPES = [
    (1024, 64, 256),  # 32-row tiles, whole workgroups of columns
    (300, 36, 200),  # rows past the end of the last 32-row tile, a partial vec4 column group
    (70, 8, 10),  # 16-row tiles (M under 256), N under one vec4 per lane
]


@pytest.mark.parametrize("M,K,N", CONST_SHAPES)
def test_matmul_with_constant_weights(M, K, N, device_sg, tmp_path):
    w = rand(K, N, seed=1)
    model = _model([helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", [M, K])], [("y", [M, N])], [("w", w)])
    _check(model, {"a": rand(M, K)}, tmp_path, device_sg)


def test_batched_matmul_of_two_inputs_with_a_fused_epilogue(device_sg, tmp_path):
    # B read at run time as vec4 along n, a broadcast batch dim, then Add and Relu fused in
    model = _model(
        [
            helper.make_node("MatMul", ["a", "b"], ["p"]),
            helper.make_node("Add", ["p", "c"], ["q"]),
            helper.make_node("Relu", ["q"], ["y"]),
        ],
        [("a", [2, 3, 130, 40]), ("b", [3, 40, 48])],
        [("y", [2, 3, 130, 48])],
        [("c", rand(48, seed=3))],
    )
    feeds = {"a": rand(2, 3, 130, 40), "b": rand(3, 40, 48, seed=2)}
    _check(model, feeds, tmp_path, device_sg)


def test_gemm_with_transposed_weights_alpha_beta_and_bias(device_sg, tmp_path):
    model = _model(
        [helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)],
        [("a", [257, 24])],
        [("y", [257, 33])],
        [("w", rand(33, 24, seed=1)), ("c", rand(1, 33, seed=2))],
    )
    _check(model, {"a": rand(257, 24)}, tmp_path, device_sg)


def test_symbolic_rows_take_the_tile_of_their_bound(device_sg, tmp_path):
    w = rand(32, 20, seed=1)
    model = _model([helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", ["m", 32])], [("y", ["m", 20])], [("w", w)])
    compile_model(model, tmp_path, subgroups=True, dims={"m": (1, 600)})
    assert any("subgroupBroadcast(x" in s or "subgroupBroadcast(own" in s for s in _shaders(tmp_path))
    with onnx2wgsl.load(tmp_path, device=device_sg) as sess:
        for m in (1, 33, 300, 600):  # fewer rows than one tile, and a partial last tile
            a = rand(m, 32, seed=m)
            np.testing.assert_allclose(sess.run(None, {"a": a})[0], a @ w, rtol=1e-4, atol=1e-4)


def _conv(x_shape, w_shape, y_shape, **attrs) -> onnx.ModelProto:
    w = rand(*w_shape, seed=1) / np.sqrt(np.prod(w_shape[1:]))
    return _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs), helper.make_node("Relu", ["c"], ["y"])],
        [("x", x_shape)],
        [("y", y_shape)],
        [("w", w.astype(np.float32)), ("b", rand(w_shape[0], seed=2))],
    )


CONVS = {
    # 3x3 padded, 3 x 4 = 12 weight vec4s a step: two loads a lane, the second clamped
    "3x3": (([1, 8, 20, 20], [16, 8, 3, 3], [1, 16, 20, 20]), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    # stride 2, dilation, two groups, asymmetric pads; 7 x 13 tasks, none a whole workgroup
    "strided": (
        ([2, 8, 15, 27], [8, 4, 3, 3], [2, 8, 7, 13]),
        dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[1, 2], group=2, pads=[1, 1, 0, 1]),
    ),
    "1d": (([1, 6, 50], [12, 6, 5], [1, 12, 46]), dict(kernel_shape=[5])),
    "1x1": (([1, 32, 40, 40], [64, 32, 1, 1], [1, 64, 40, 40]), dict(kernel_shape=[1, 1])),
}


@pytest.mark.parametrize("name", CONVS)
def test_conv_rows_share_the_weights(name, device_sg, tmp_path):
    shapes, attrs = CONVS[name]
    model = _conv(*shapes, **attrs)
    _check(model, {"x": rand(*shapes[0])}, tmp_path, device_sg)
    assert any("conv_rows" in p.name and "subgroupBroadcast(" in p.read_text() for p in (tmp_path / "shaders").iterdir())


def test_folded_grids(device_sg, tmp_path):
    """Under a limit of 4 workgroups a grid dimension, the matmul's and the conv's grids fold
    (each workgroup unfolds its index, and one past the grid leaves as a whole)."""
    from onnx2wgsl.compiler.target import Target, get_target

    target = Target("grid4", {**get_target("webgpu").limits, "maxComputeWorkgroupsPerDimension": 4})
    model = _model(
        [
            helper.make_node("MatMul", ["a", "w"], ["m"]),
            helper.make_node("Reshape", ["m", "s"], ["r"]),
            helper.make_node("Conv", ["r", "cw"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        ],
        [("a", [600, 20])],
        [("y", [1, 12, 50, 80])],
        [("w", rand(20, 80, seed=1)), ("s", np.array([1, 12, 50, 80], np.int64)), ("cw", rand(12, 12, 3, 3, seed=3))],
    )
    _check(model, {"a": rand(600, 20)}, tmp_path, device_sg, target=target)
    grids = [d["grid"] for d in json.loads((tmp_path / "manifest.json").read_text())["dispatches"]]
    assert all(max(g) <= 4 for g in grids) and any(g[1] * g[2] > 4 for g in grids), grids


def test_subgroup_kernels_at_fp16(tmp_path):
    from test_fp16 import _assert_scaled_close

    w = rand(256, 64, seed=1) / 16
    model = _model(
        [
            helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Reshape", ["c", "s"], ["r"]),
            helper.make_node("MatMul", ["r", "w"], ["m"]),
            helper.make_node("LayerNormalization", ["m", "g"], ["n"], axis=-1),
            helper.make_node("Softmax", ["n"], ["y"], axis=-1),
        ],
        [("x", [1, 8, 16, 16])],
        [("y", [16, 64])],
        [("cw", rand(16, 8, 3, 3, seed=3) / 8), ("s", np.array([16, 256], np.int64)), ("w", w), ("g", rand(64, seed=4))],
    )
    # (a Reshape's shape is int64: make_tensor_value_info's float type does not apply to it)
    feeds = {"x": rand(1, 8, 16, 16)}
    compile_model(model, tmp_path, subgroups=True, precision="fp16")
    assert any("subgroupBroadcast(" in s for s in _shaders(tmp_path))
    assert sum("a subgroup per row" in s and "enable f16;" in s for s in _shaders(tmp_path)) == 2
    with onnx2wgsl.load(tmp_path) as sess:  # a device with shader-f16 and subgroups
        _assert_scaled_close(sess.run(None, feeds), ort_run(model, feeds))


def test_subgroup_matmul_at_fp16(tmp_path):
    """The matmul's broadcast rows of A are widened from f16 before the broadcast (naga refused
    an f16 row multiplied into f32 columns)."""
    from test_fp16 import _assert_scaled_close

    model = _model(
        [helper.make_node("MatMul", ["a", "w"], ["y"])],
        [("a", [256, 64])],
        [("y", [256, 128])],
        [("w", rand(64, 128, seed=1) / 8)],
    )
    feeds = {"a": rand(256, 64)}
    compile_model(model, tmp_path, subgroups=True, precision="fp16")
    (mm,) = [s for s in _shaders(tmp_path) if "subgroupBroadcast(" in s]
    assert "enable f16;" in mm
    with onnx2wgsl.load(tmp_path) as sess:  # a device with shader-f16 and subgroups
        _assert_scaled_close(sess.run(None, feeds), ort_run(model, feeds))


def test_the_plain_path_serves_narrow_subgroups(device_sg, tmp_path):
    """Each subgroup shader keeps the plain tile's loads for subgroups under 8 lanes (a branch
    on sg_size, uniform across the dispatch): forced onto it, the artifact still matches."""
    M, K, N = 300, 36, 200
    w = rand(K, N, seed=1)
    model = _model(
        [
            helper.make_node("MatMul", ["a", "w"], ["m"]),
            helper.make_node("Reshape", ["m", "s"], ["r"]),
            helper.make_node("Conv", ["r", "cw"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        ],
        [("a", [M, K])],
        [("y", [1, 8, 75, 100])],
        [("w", w), ("s", np.array([1, 8, 75, 100], np.int64)), ("cw", rand(8, 8, 3, 3, seed=3))],
    )
    compile_model(model, tmp_path, subgroups=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    forced = 0
    for s in manifest["shaders"]:
        path = tmp_path / s["file"]
        text = path.read_text()
        if "sg_size >= 8u" in text:
            text = text.replace("sg_size >= 8u", "sg_size >= 4096u")
            path.write_text(text)
            s["sha256"] = hashlib.sha256(text.encode()).hexdigest()
            forced += 1
    assert forced == 2  # the matmul and the conv
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    feeds = {"a": rand(M, K)}
    with onnx2wgsl.load(tmp_path, device=device_sg) as sess:
        got = sess.run(None, feeds)[0]
    np.testing.assert_allclose(got, ort_run(model, feeds)[0], rtol=1e-4, atol=1e-3)


def test_only_artifacts_with_subgroup_kernels_ask_for_the_feature(tmp_path):
    w = rand(16, 8, seed=1)
    one_row = _model([helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", [1, 16])], [("y", [1, 8])], [("w", w)])
    many = _model([helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", [512, 16])], [("y", [512, 8])], [("w", w)])
    features = lambda r: r.artifact.manifest["target"]["features"]  # noqa: E731
    r = compile_model(one_row, subgroups=True)
    assert features(r) == []  # one row: the plain tile
    assert any("no kernel of this model uses subgroup operations" in n for n in r.report.notes)
    assert features(compile_model(many)) == []  # not asked for
    plain = compile_model(many)
    assert not any(k.uses_subgroups or "subgroup" in k.text for k in plain.graph.shaders.values())
    assert features(compile_model(many, subgroups=True)) == [SUBGROUPS_FEATURE]


def test_a_device_without_subgroups_is_told_so(device32, tmp_path):
    w = rand(16, 8, seed=1)
    model = _model([helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", [512, 16])], [("y", [512, 8])], [("w", w)])
    onnx2wgsl.compile(model, tmp_path, subgroups=True)
    with pytest.raises(DeviceError, match="lacks features \\['subgroups'\\].*required_features \\['subgroup'\\]"):
        onnx2wgsl.load(tmp_path, device=device32)


def test_the_cli_compiles_with_subgroups(tmp_path, capsys):
    from onnx2wgsl.compiler.cli import main

    w = rand(16, 8, seed=1)
    model = _model([helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", [512, 16])], [("y", [512, 8])], [("w", w)])
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a"), "--subgroups"]) == 0
    assert "--subgroups: 1 of 1 shaders use subgroup operations" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["target"]["features"] == [SUBGROUPS_FEATURE]
    text = _shaders(tmp_path / "a")[0]
    assert text.startswith("enable subgroups;") and "@builtin(subgroup_size) sg_size: u32" in text


def test_a_transformer_with_subgroups(device_sg, tmp_path):
    """llama_tiny's projections take the subgroup tile (rows: batch x seq = 200, 16-row tiles
    with a partial last one); every output within 1e-5 of the scale of onnxruntime's."""
    from pathlib import Path

    from test_transformers import _feeds

    model = onnx.load(Path(__file__).parent / "models" / "llama_tiny_torchscript.onnx")
    dims = {"batch": 2, "seq": 100}
    compile_model(model, tmp_path, subgroups=True, dims=dims)
    assert sum("subgroupBroadcast(" in s for s in _shaders(tmp_path)) >= 4
    feeds = _feeds(model, dims)
    with onnx2wgsl.load(tmp_path, device=device_sg) as sess:
        got = sess.run(None, feeds)
    for g, w in zip(got, ort_run(model, feeds), strict=True):
        assert np.abs(g - w).max() <= 1e-5 * max(1.0, float(np.abs(w).max()))


# -- row reductions: a subgroup per row ----------------------------------------------------------
def _nan_rows(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[3, 17] = np.nan  # a NaN row: a float max or min over it is NaN, as numpy's (and the
    return x  # workgroup tree's; onnxruntime's CPU kernel skips it: numpy is the reference here)


NUMPY = {"max_nan": lambda x: np.max(x, axis=1, keepdims=True), "min_nan": lambda x: np.min(x, axis=1, keepdims=True)}


ROW_CASES = {
    # 74 rows (a partial last workgroup of 8) of 300 points, scale and bias
    "layer_norm": (
        [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)],
        [2, 37, 300], [2, 37, 300], [("g", rand(300, seed=4)), ("b", rand(300, seed=5))], None,
    ),
    # two reduced axes around a kept one: the rows' points are strided
    "sum_outer_axes": (
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        [16, 9, 40], [9], [("axes", np.array([0, 2], np.int64))], None,
    ),
    "max_nan": ([helper.make_node("ReduceMax", ["x", "axes"], ["y"])], [24, 100], [24, 1],
                [("axes", np.array([1], np.int64))], _nan_rows),
    "min_nan": ([helper.make_node("ReduceMin", ["x", "axes"], ["y"])], [24, 100], [24, 1],
                [("axes", np.array([1], np.int64))], _nan_rows),
    "prod": ([helper.make_node("ReduceProd", ["x", "axes"], ["y"])], [16, 64], [16, 1],
             [("axes", np.array([1], np.int64))], lambda x: 1.0 + x / 64),
    "log_sum_exp": ([helper.make_node("ReduceLogSumExp", ["x", "axes"], ["y"])], [12, 500], [12, 1],
                    [("axes", np.array([1], np.int64))], lambda x: 40 * x),
    "l2": ([helper.make_node("ReduceL2", ["x", "axes"], ["y"])], [40, 96], [40, 1],
           [("axes", np.array([1], np.int64))], None),
    # 40000 points a row: chunks of 4096 a subgroup each, then a second pass over the partials
    "split": ([helper.make_node("ReduceSum", ["x", "axes"], ["y"])], [8, 40000], [8, 1],
              [("axes", np.array([1], np.int64))], None),
    # the normalized row written over the Add's output (in place) by the lanes that read it
    "add_layer_norm": (
        [helper.make_node("Add", ["x", "c"], ["s"]), helper.make_node("LayerNormalization", ["s", "g"], ["y"], axis=-1)],
        [64, 768], [64, 768], [("c", rand(64, 768, seed=6)), ("g", rand(768, seed=7))], None,
    ),
    # Softmax's family along a strided axis (7 rows of 300 in each of 2 batches), in place
    "softmax": ([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [2, 300, 7], [2, 300, 7], [], lambda x: 30 * x),
    "log_softmax": ([helper.make_node("LogSoftmax", ["x"], ["y"], axis=-1)], [50, 1000], [50, 1000], [], None),
    # ties: the first index of the row's max wins
    "hardmax": ([helper.make_node("Hardmax", ["x"], ["y"], axis=-1)], [16, 200], [16, 200], [], lambda x: np.round(x * 3)),
}  # fmt: skip


@pytest.mark.parametrize("name", ROW_CASES)
def test_row_reductions_fold_in_a_subgroup(name, device_sg, tmp_path):
    """Rows of 32 or more points (any length, for Softmax's family), 8 or more of them: each row
    is one subgroup's, its lanes folded by subgroupAdd/Mul/Max/Min (a reduction's float max and
    min keep NaNs), with no workgroup tree; onnxruntime agrees."""
    nodes, x_shape, y_shape, inits, prep = ROW_CASES[name]
    model = _model(nodes, [("x", x_shape)], [("y", y_shape)], inits, opset=18)
    compile_model(model, tmp_path, subgroups=True)
    rows = [s for s in _shaders(tmp_path) if "a subgroup per row" in s or "one workgroup per row" in s]
    assert rows and all("a subgroup per row" in s and "workgroupBarrier();\n  for" not in s for s in rows)
    assert json.loads((tmp_path / "manifest.json").read_text())["target"]["features"] == [SUBGROUPS_FEATURE]
    x = rand(*x_shape, seed=2)
    feeds = {"x": (prep(x) if prep else x).astype(np.float32)}
    with onnx2wgsl.load(tmp_path, device=device_sg) as sess:
        got = sess.run(None, feeds)[0]
    want = NUMPY[name](feeds["x"]) if name in NUMPY else ort_run(model, feeds)[0]
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.nanmax(np.abs(want)))))


def test_symbolic_rows_fold_in_a_subgroup_at_every_count(device_sg, tmp_path):
    """Rows kept symbolic over 8..200: a subgroup per row at every count the range allows, the
    last workgroup's extra subgroups claiming no row."""
    model = _model(
        [helper.make_node("LayerNormalization", ["x", "g"], ["y"], axis=-1)],
        [("x", ["n", 130])], [("y", ["n", 130])], [("g", rand(130, seed=1))], opset=18,
    )  # fmt: skip
    compile_model(model, tmp_path, subgroups=True, dims={"n": (8, 200)})
    assert any("a subgroup per row" in s for s in _shaders(tmp_path))
    with onnx2wgsl.load(tmp_path, device=device_sg) as sess:
        for n in (8, 13, 200):
            feeds = {"x": rand(n, 130, seed=n) * 5}
            np.testing.assert_allclose(sess.run(None, feeds)[0], ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_few_rows_and_other_merges_keep_the_tree(tmp_path):
    """Under 8 rows (most subgroups would idle) and merges no subgroup operation makes (ArgMax's
    index tie-break) keep the workgroup tree, with or without --subgroups."""
    few = _model([helper.make_node("LayerNormalization", ["x", "g"], ["y"], axis=-1)],
                 [("x", [4, 768])], [("y", [4, 768])], [("g", rand(768, seed=1))], opset=18)  # fmt: skip
    arg = _model([helper.make_node("ArgMax", ["x"], ["i"], axis=1)], [("x", [64, 500])], [], opset=18)
    arg.graph.output.append(helper.make_tensor_value_info("i", TensorProto.INT64, [64, 1]))
    for model in (few, arg):
        r = compile_model(model, subgroups=True)
        texts = [k.text for k in r.graph.shaders.values()]
        assert any("for (var half" in t for t in texts) and not any("a subgroup per row" in t for t in texts)

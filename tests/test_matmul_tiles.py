"""The matmul template's paths, each checked against onnxruntime and identified by the comment
its shader carries: A read as vec4 along k (K a multiple of 4) or one f32 at a time, B read as
vec4 along n (constant B's compile-time layout, or a run-time B with N a multiple of 4), as
vec4 along k (a run-time B stored transposed) or one f32 at a time; ragged row, column and k
tiles, one-row and vector operands, batch broadcast, transA/transB, Gemm's alpha/beta/C, fused
epilogues and biases, dims kept symbolic, and the split over a workgroup when K is too long
for the loop budget or the tiles too few for a GPU's lanes."""

from __future__ import annotations

import json

import pytest
from helpers import assert_close, graph_model, node_model, ort_run, rand, with_dim_params
from onnx import helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model

A_VEC4 = "four k a trip (A read as vec4 along k)"
B_N4 = "(B read as vec4 along n)"
B_K4 = "(B read as vec4 along k)"
TREE = "sum in a tree"


def _matmul_shaders(tmp_path) -> list[str]:
    return [f.read_text() for f in (tmp_path / "shaders").iterdir() if f.read_text().count("sum_k")]


def _check(model, feeds, device, tmp_path, has=(), lacks=(), dims=None, runs=None, atol=1e-4, target=None):
    """Compile, check the matmul shaders' comments name (or do not name) each path, run every
    feed and compare with onnxruntime."""
    compile_model(model, tmp_path, verify_ir=True, dims=dims, target=target)
    shaders = _matmul_shaders(tmp_path)
    assert shaders, "no matmul shader"
    for marker in has:
        assert any(marker in s for s in shaders), f"no matmul shader has {marker!r}"
    for marker in lacks:
        assert not any(marker in s for s in shaders), f"a matmul shader has {marker!r}"
    with onnx2wgsl.load(tmp_path, device=device) as sess:
        for f in runs or [feeds]:
            assert_close(sess.run(None, f), ort_run(model, f), 1e-4, atol)


def _matmul(a, b, const_b: bool):
    feeds = {"a": a} if const_b else {"a": a, "b": b}
    return node_model(
        "MatMul", feeds, initializers={"b": b} if const_b else None, input_order=["a", "b"]
    ), feeds


# (M, K, N): ragged M, N and K against every tile; K % 4 picks how A is read
SHAPES = [(1, 16, 4), (1, 12, 36), (3, 8, 5), (7, 20, 10), (9, 13, 8), (65, 24, 18), (70, 7, 3), (2, 1, 6)]


@pytest.mark.parametrize("const_b", [False, True], ids=["runtime", "const"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_shapes(shape, const_b, device, tmp_path):
    M, K, N = shape
    model, feeds = _matmul(rand(M, K), rand(K, N, seed=1), const_b)
    has = [A_VEC4] if K % 4 == 0 else []
    if const_b or N % 4 == 0:
        has.append(B_N4)
    _check(model, feeds, device, tmp_path, has=has, lacks=[] if K % 4 == 0 else [A_VEC4])


WIDE = "8 rows x 8"  # an invocation's tile of 8 rows by two vec4 column groups


@pytest.mark.parametrize("const_b", [False, True], ids=["runtime", "const"])
@pytest.mark.parametrize(
    "shape", [(130, 20, 516), (129, 7, 520), (128, 4, 1024)], ids=lambda s: "x".join(map(str, s))
)
def test_wide_tiles(shape, const_b, device, tmp_path):
    """M >= 128 and N >= 512: 8 rows x 2 vec4 column groups, the second group ragged (clamped
    reads, guarded stores) where N / 4 is not a multiple of 128."""
    M, K, N = shape
    model, feeds = _matmul(rand(M, K), rand(K, N, seed=1), const_b)
    _check(model, feeds, device, tmp_path, has=[WIDE, B_N4] + ([A_VEC4] if K % 4 == 0 else []))


def test_wide_tiles_batched_and_fused(device, tmp_path):
    """[2, 130, 8] x [2, 8, 512] (run-time B per batch), and [2, 70, 24] x [24, 600] + bias +
    Relu (the batch folds into 140 rows against a constant B) at the wide tile."""
    model, feeds = _matmul(rand(2, 130, 8), rand(2, 8, 512, seed=1), False)
    _check(model, feeds, device, tmp_path / "batched", has=[WIDE])
    a, w, bias = rand(2, 70, 24), rand(24, 600, seed=1), rand(600, seed=2)
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["h"]),
        helper.make_node("Add", ["h", "bias"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["y"]),
    ]
    model = graph_model(nodes, {"a": a}, ["y"], {"w": w, "bias": bias})
    _check(model, {"a": a}, device, tmp_path / "fused", has=[WIDE])


def test_constant_b_chunks_under_the_binding_limit(device, tmp_path):
    """A 256 x 1100 constant B under a 1 MiB binding limit: a chunk of 256 vec4 columns at the
    wide tile, then one of 19 at 4 x 4."""
    from onnx2wgsl.compiler.target import WEBGPU_DEFAULT_LIMITS, Target

    target = Target("small-bindings", {**WEBGPU_DEFAULT_LIMITS, "maxStorageBufferBindingSize": 1 << 20})
    model, feeds = _matmul(rand(130, 256), rand(256, 1100, seed=1), True)
    _check(model, feeds, device, tmp_path, has=[WIDE, "4 rows x 4"], target=target, atol=1e-3)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["dispatches"]) == 2  # one per chunk


def test_symbolic_wide_tiles(device, tmp_path):
    """[batch, seq, 12] x [12, 512] with seq up to 160: the tile is chosen at the bound and is
    right at every size (rows past M clamp their reads)."""
    x, w = rand(1, 5, 12), rand(12, 512, seed=1)
    model = node_model("MatMul", {"x": x}, initializers={"w": w}, input_order=["x", "w"])
    model = with_dim_params(model, {"x": ["batch", "seq", 12], "y0": ["batch", "seq", 512]})
    runs = [{"x": rand(b, s, 12, seed=s)} for b, s in [(1, 1), (2, 9), (1, 160)]]
    _check(model, None, device, tmp_path, has=[WIDE], dims={"batch": (1, 2), "seq": (1, 160)}, runs=runs)


@pytest.mark.parametrize("const_b", [False, True], ids=["runtime", "const"])
@pytest.mark.parametrize("K", [16, 15])
def test_vector_operands(K, const_b, device, tmp_path):
    """[K] x [K, N] (one row), [M, K] x [K] (one column) and [b, M, K] x [K]."""
    model, feeds = _matmul(rand(K), rand(K, 12, seed=1), const_b)
    _check(model, feeds, device, tmp_path / "row")
    model, feeds = _matmul(rand(5, K), rand(K, seed=1), const_b)
    _check(model, feeds, device, tmp_path / "col")
    model, feeds = _matmul(rand(2, 3, K), rand(K, seed=1), const_b)
    _check(model, feeds, device, tmp_path / "batched-col")


@pytest.mark.parametrize(
    "a_shape,b_shape",
    [
        ((2, 3, 5, 16), (3, 16, 12)),
        ((1, 3, 5, 12), (2, 1, 12, 7)),
        ((2, 4, 9), (2, 9, 8)),
        ((3, 6, 8), (8, 10)),
    ],
    ids=["bcast-b", "bcast-both", "k9", "rows-fold"],
)
def test_batched(a_shape, b_shape, device, tmp_path):
    model, feeds = _matmul(rand(*a_shape), rand(*b_shape, seed=1), False)
    _check(model, feeds, device, tmp_path)


@pytest.mark.parametrize("K", [16, 10])
def test_transposed_b_attention_scores(K, device, tmp_path):
    """q k^T with a run-time k: fold-transpose makes it transB, read as vec4 along k when
    K % 4 == 0."""
    q, k = rand(2, 3, 7, K), rand(2, 3, 9, K, seed=1)
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["y"]),
    ]
    model = graph_model(nodes, {"q": q, "k": k}, ["y"])
    if K % 4 == 0:
        _check(model, {"q": q, "k": k}, device, tmp_path, has=[A_VEC4, B_K4])
    else:
        _check(model, {"q": q, "k": k}, device, tmp_path, lacks=[A_VEC4, B_K4])


@pytest.mark.parametrize("const_b", [False, True], ids=["runtime", "const"])
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("c_shape", [(11,), (6, 1), (1,), (6, 11)], ids=["row", "col", "scalar", "full"])
def test_gemm(ta, tb, c_shape, const_b, device, tmp_path):
    M, K, N = 6, 8, 11
    a = rand(*((K, M) if ta else (M, K)))
    b = rand(*((N, K) if tb else (K, N)), seed=1)
    c = rand(*c_shape, seed=2)
    feeds = {"a": a, "c": c} if const_b else {"a": a, "b": b, "c": c}
    attrs = {"transA": ta, "transB": tb, "alpha": 0.5, "beta": 2.0}
    model = node_model(
        "Gemm", feeds, attrs, initializers={"b": b} if const_b else None, input_order=["a", "b", "c"]
    )
    _check(model, feeds, device, tmp_path, lacks=[A_VEC4] if ta else [])


@pytest.mark.parametrize("const_b", [False, True], ids=["runtime", "const"])
@pytest.mark.parametrize("K", [24, 21])
def test_bias_and_epilogue(K, const_b, device, tmp_path):
    """MatMul + bias + Relu + residual Add: the bias and the tail fuse at the store."""
    a, w, bias, r = rand(2, 9, K), rand(K, 14, seed=1), rand(14, seed=2), rand(2, 9, 14, seed=3)
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["h"]),
        helper.make_node("Add", ["h", "bias"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["g"]),
        helper.make_node("Add", ["g", "r"], ["y"]),
    ]
    feeds = {"a": a, "r": r} if const_b else {"a": a, "w": w, "r": r}
    inits = {"bias": bias, **({"w": w} if const_b else {})}
    model = graph_model(nodes, feeds, ["y"], inits)
    _check(model, feeds, device, tmp_path)


def test_symbolic_m_n_k(device, tmp_path):
    """[batch, seq, 16] x [batch, 16, seq] (M and N symbolic, A read as vec4), then
    [batch, seq, seq] x [batch, seq, 12] (K symbolic, read one f32 at a time)."""
    x, v = rand(2, 5, 16), rand(2, 5, 12, seed=1)
    w = rand(2, 16, 5, seed=2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("MatMul", ["s", "v"], ["y"])]
    model = graph_model(nodes, {"x": x, "w": w, "v": v}, ["y"])
    model = with_dim_params(
        model,
        {
            "x": ["batch", "seq", 16],
            "w": ["batch", 16, "seq"],
            "v": ["batch", "seq", 12],
            "y": ["batch", "seq", 12],
        },
    )
    runs = [
        {"x": rand(b, s, 16, seed=s), "w": rand(b, 16, s, seed=s + 1), "v": rand(b, s, 12, seed=s + 2)}
        for b, s in [(1, 1), (2, 7), (3, 33)]
    ]
    _check(model, None, device, tmp_path, has=[A_VEC4], dims={"batch": (1, 3), "seq": (1, 40)}, runs=runs)


def test_symbolic_transposed_b(device, tmp_path):
    """q k^T over a symbolic seq: B read as vec4 along k with a symbolic column count."""
    q, k = rand(1, 2, 5, 8), rand(1, 2, 5, 8, seed=1)
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["y"]),
    ]
    model = graph_model(nodes, {"q": q, "k": k}, ["y"])
    model = with_dim_params(model, {"q": [1, 2, "seq", 8], "k": [1, 2, "seq", 8], "y": [1, 2, "seq", "seq"]})
    runs = [{"q": rand(1, 2, s, 8, seed=s), "k": rand(1, 2, s, 8, seed=s + 1)} for s in (1, 6, 20)]
    _check(model, None, device, tmp_path, has=[A_VEC4, B_K4], dims={"seq": (1, 24)}, runs=runs)


SPLIT = {
    # K / 4 trips (A as vec4) over the budget, and K trips (K % 4 != 0)
    "runtime-vec4": (lambda: _matmul(rand(3, 300), rand(300, 8, seed=1), False), [A_VEC4, B_N4, TREE]),
    "runtime-scalar-k": (lambda: _matmul(rand(3, 130), rand(130, 6, seed=1), False), [TREE]),
    "const-vec4": (lambda: _matmul(rand(5, 400), rand(400, 6, seed=1), True), [A_VEC4, B_N4, TREE]),
    "const-scalar-k": (lambda: _matmul(rand(2, 131), rand(131, 9, seed=1), True), [B_N4, TREE]),
}


@pytest.mark.parametrize("name", list(SPLIT))
def test_split_k_under_small_budget(name, device, monkeypatch, tmp_path):
    from onnx2wgsl.compiler import lowering

    monkeypatch.setattr(lowering, "LOOP_BUDGET", lowering.LOOP_SLACK + 64)
    build, has = SPLIT[name]
    model, feeds = build()
    _check(model, feeds, device, tmp_path, has=has)


def test_split_k_transposed_b(device, monkeypatch, tmp_path):
    from onnx2wgsl.compiler import lowering

    monkeypatch.setattr(lowering, "LOOP_BUDGET", lowering.LOOP_SLACK + 64)
    q, k = rand(1, 4, 300), rand(1, 6, 300, seed=1)
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["y"]),
    ]
    model = graph_model(nodes, {"q": q, "k": k}, ["y"])
    _check(model, {"q": q, "k": k}, device, tmp_path, has=[A_VEC4, B_K4, TREE])


@pytest.mark.parametrize("const_b", [True, False])
def test_a_gemv_splits_k_over_a_workgroup(const_b, device, tmp_path):
    """One row (an LLM decode step's linear layer): its plain tiles would fill few of a GPU's
    lanes, so each takes a workgroup whose lanes split K and sum in a tree (gemm.few_tiles);
    the cpu target keeps the plain loop."""
    a, b = rand(1, 1024), rand(1024, 96, seed=1)
    m, feeds = _matmul(a, b, const_b)
    _check(m, feeds, device, tmp_path / "gpu", has=[TREE])
    _check(m, feeds, device, tmp_path / "cpu", lacks=[TREE], target="cpu")


def test_symbolic_rows_take_both_forms_for_a_gpu(device, tmp_path):
    """Rows kept symbolic from 1 (a prompt and its decode steps in one artifact): runs of up to
    lanes / (4 x 512 column groups) = 8 rows take the split form, longer ones the plain tiles,
    each dispatch gated to an empty grid in the other's runs."""
    m, _ = _matmul(rand(4, 1024), rand(1024, 2048, seed=1) / 32, const_b=True)
    m = with_dim_params(m, {"a": ["m", 1024], "y0": ["m", 2048]})
    compile_model(m, tmp_path, dims={"m": (1, 64)}, verify_ir=True)
    man = json.loads((tmp_path / "manifest.json").read_text())
    texts = [(tmp_path / man["shaders"][d["shader"]]["file"]).read_text() for d in man["dispatches"]]
    assert [TREE in t for t in texts] == [True, False]
    from onnx2wgsl.runtime.manifest import evaluate

    for rows in (1, 8, 9, 64):  # the profile's work sits on the dispatch that runs
        work = [evaluate(d["flops"], {"m": rows}) for d in man["dispatches"]]
        assert sum(work) == 2 * rows * 1024 * 2048 and work[rows > 8] == sum(work)
    with onnx2wgsl.load(tmp_path, device=device) as sess:
        for rows in (1, 8, 9, 64):
            feeds = {"a": rand(rows, 1024, seed=rows)}
            assert_close(sess.run(None, feeds), ort_run(m, feeds), 1e-4, 1e-4)


def test_deterministic(tmp_path):
    model, _ = _matmul(rand(7, 20), rand(20, 10, seed=1), True)
    compile_model(model, tmp_path / "a")
    compile_model(model, tmp_path / "b")
    for f in (tmp_path / "a").rglob("*"):
        if f.is_file():
            assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f.name

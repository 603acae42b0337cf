"""Data-movement ops on the GPU against onnxruntime (CPU), or onnx.reference where onnxruntime
lacks the case: gathers, scatters, slices, pads, tiles, resizes and their kin, on float, int
and bool data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import assert_close, assert_ir_round_trips, gpu_run, node_model, ort_run, rand, reference_run
from onnx import TensorProto, helper

from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import CompileError, UnsupportedError

pytestmark = pytest.mark.gpu

I64 = np.int64
INT_MAX = np.iinfo(np.int64).max


def data(shape, dtype=np.float32, seed=0):
    """Random data of a dtype: floats in [-1, 1), ints in [-50, 50), bools."""
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.dtype(dtype).kind in "iu":
        lo = 0 if np.dtype(dtype).kind == "u" else -50
        return rng.integers(lo, 50, shape).astype(dtype)
    return rng.uniform(-1, 1, shape).astype(dtype)


def check(model, feeds, device, ref="ort", rtol=1e-4, atol=1e-5):
    """Compare the GPU with onnxruntime (ref="ort"), or onnx.reference (ref="onnx")."""
    want = ort_run(model, feeds) if ref == "ort" else reference_run(model, feeds)
    assert_close(gpu_run(model, feeds, device), want, rtol, atol)


def compiled(model):
    return compile_model(model, None, verify_ir=True)


DTYPES = [np.float32, np.int64, np.int32, np.bool_]
DT_IDS = ["f32", "i64", "i32", "bool"]


# -- Gather family ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize(
    "shape,axis,idx",
    [
        ((5, 4), 0, [0, 4, -1, 2]),
        ((3, 6, 2), 1, [[0, -6], [5, 3]]),
        ((3, 6, 2), -1, [1, 0, -2]),
        ((4, 3), 0, 2),  # a scalar index drops the axis
        ((2, 3, 4, 5), 2, [[[3]], [[-4]]]),
    ],
    ids=str,
)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_gather(shape, axis, idx, dtype, idx_dtype, device):
    x = data(shape, dtype)
    i = np.array(idx, idx_dtype)
    check(node_model("Gather", {"x": x, "i": i}, {"axis": axis}), {"x": x, "i": i}, device)


def test_gather_constant_indices(device):
    x = rand(6, 7)
    model = node_model("Gather", {"x": x}, {"axis": 1}, initializers={"i": np.array([6, 0, -7], I64)})
    check(model, {"x": x}, device)


def _small_bindings():
    from onnx2wgsl.compiler.target import WEBGPU_DEFAULT_LIMITS, Target

    return Target("small-bindings", {**WEBGPU_DEFAULT_LIMITS, "maxStorageBufferBindingSize": 4096})


@pytest.mark.parametrize(
    "op,table_shape,axis,idx",
    [
        ("Gather", (100, 24), 0, [[0, 41, 42, 99, -1, -100], [83, 84, 1, 50, 98, 200]]),
        ("Gather", (3, 100, 8), 1, [[0, 41, 42, 99, -1, -100], [83, 84, 1, 50, 98, -101]]),
        ("Gather", (100, 24), 0, 5),
        ("GatherElements", (3, 100, 8), 1, "random"),
    ],
    ids=["embedding", "axis1", "scalar", "elements"],
)
def test_a_constant_table_over_the_binding_limit_is_split(op, table_shape, axis, idx, device):
    """Each part of the table gets a dispatch that writes the points whose index falls in it
    (the first also out-of-range ones, as zeros), as a 50k-token vocabulary's embeddings need."""
    table = rand(*table_shape)
    if idx == "random":
        idx = np.random.default_rng(1).integers(-100, 100, (3, 7, 8))
    i = np.array(idx, I64)
    model = node_model(op, {"i": i}, {"axis": axis}, initializers={"t": table}, input_order=["t", "i"])
    res = compile_model(model, target=_small_bindings())
    (kernel,) = [k for k in res.graph.kernels() if k.attrs.get("op") == op]
    assert len(kernel.dispatches) == 3  # 9,600 bytes in parts of at most 4,096
    (got,) = gpu_run(model, {"i": i}, device, target=_small_bindings())
    n = table.shape[axis]
    ok = (i >= -n) & (i < n)
    (want,) = ort_run(model, {"i": np.where(ok, i, 0)})  # onnxruntime refuses indices out of range
    if op == "Gather":  # which read 0 here
        ok = ok.reshape((1,) * axis + i.shape + (1,) * (table.ndim - axis - 1))
    assert_close([got], [np.where(ok, want, np.float32(0))])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize(
    "shape,ishape,axis",
    [((3, 4), (3, 4), 1), ((3, 4), (2, 4), 0), ((2, 5, 3), (2, 3, 3), 1), ((4, 3, 2), (4, 3, 5), -1)],
    ids=str,
)
def test_gather_elements(shape, ishape, axis, dtype, device):
    x = data(shape, dtype)
    n = shape[axis]
    i = np.random.default_rng(1).integers(-n, n, ishape).astype(I64)
    check(node_model("GatherElements", {"x": x, "i": i}, {"axis": axis}), {"x": x, "i": i}, device)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize(
    "shape,idx,batch_dims",
    [
        ((2, 2), [[0, 0], [1, 1]], 0),
        ((2, 2), [[1], [0]], 0),
        ((2, 2, 2), [[0, 1], [1, 0]], 0),
        ((2, 2, 2), [[[0, 1]], [[1, 0]]], 0),
        ((2, 2, 2), [[1], [0]], 1),
        ((3, 4, 5, 2), [[[1, -1], [0, 2]], [[2, 0], [1, 1]], [[0, 0], [-1, -2]]], 1),
        ((2, 3, 4), [[[-1, 2]], [[0, 0]]], 0),
    ],
    ids=str,
)
def test_gather_nd(shape, idx, batch_dims, dtype, device):
    x = data(shape, dtype)
    i = np.array(idx, I64)
    model = node_model("GatherND", {"x": x, "i": i}, {"batch_dims": batch_dims}, opset=13)
    check(model, {"x": x, "i": i}, device, ref="onnx" if (np.asarray(idx) < 0).any() else "ort")


# -- Scatter family ---------------------------------------------------------------------------
REDUCTIONS = ["none", "add", "mul", "max", "min"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "shape,ishape,axis",
    [((5, 4), (3, 4), 0), ((3, 6), (3, 5), 1), ((2, 4, 3), (2, 6, 3), 1), ((4, 4), (2, 3), -1)],
    ids=str,
)
@pytest.mark.parametrize("dtype", [np.float32, np.int64], ids=["f32", "i64"])
def test_scatter_elements_duplicates(shape, ishape, axis, reduction, dtype, device):
    """Indices with many duplicates (and negatives): every reduction is exact and in order."""
    x = data(shape, dtype)
    n = shape[axis]
    i = np.random.default_rng(2).integers(-n, n, ishape).astype(I64)
    u = data(ishape, dtype, seed=3)
    model = node_model(
        "ScatterElements", {"x": x, "i": i, "u": u}, {"axis": axis, "reduction": reduction}, opset=18
    )
    # onnx.reference applies updates in index order: the definition with duplicates
    check(model, {"x": x, "i": i, "u": u}, device, ref="onnx")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scatter_elements_unique_against_ort(reduction, device):
    x = rand(4, 6)
    i = np.array([[5, 0, 2], [1, 3, 4], [0, 2, 1], [-1, -2, -3]], I64)
    u = rand(4, 3, seed=1)
    model = node_model(
        "ScatterElements", {"x": x, "i": i, "u": u}, {"axis": 1, "reduction": reduction}, opset=18
    )
    check(model, {"x": x, "i": i, "u": u}, device)


@pytest.mark.parametrize("opset", [9, 10])
def test_scatter_deprecated(opset, device):
    x = rand(3, 5)
    i = np.array([[1, 0, 2], [4, 3, 0]], I64)
    u = rand(2, 3, seed=1)
    model = node_model("Scatter", {"x": x, "i": i, "u": u}, {"axis": 1}, opset=opset)
    check(model, {"x": x, "i": i, "u": u}, device)


def test_scatter_elements_bool(device):
    x = data((4, 5), np.bool_)
    i = np.array([[0, 1, 2, 3, 0], [3, 2, 1, 0, 1]], I64)
    u = data((2, 5), np.bool_, seed=1)
    check(node_model("ScatterElements", {"x": x, "i": i, "u": u}, opset=13), {"x": x, "i": i, "u": u}, device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "shape,idx",
    [
        ((8,), [[4], [3], [1], [7], [4], [-1]]),
        ((4, 4, 4), [[0], [2], [0]]),
        ((4, 4, 4), [[0, 1], [2, -1], [0, 1], [3, 3]]),
        ((3, 4, 2), [[[1, 2, 0], [1, 2, 0]], [[0, 0, 1], [2, 3, 1]]]),
    ],
    ids=str,
)
@pytest.mark.parametrize("dtype", [np.float32, np.int32], ids=["f32", "i32"])
def test_scatter_nd(shape, idx, reduction, dtype, device):
    x = data(shape, dtype)
    i = np.array(idx, I64)
    ushape = i.shape[:-1] + tuple(shape[i.shape[-1] :])
    u = data(ushape, dtype, seed=4)
    model = node_model("ScatterND", {"x": x, "i": i, "u": u}, {"reduction": reduction}, opset=18)
    check(model, {"x": x, "i": i, "u": u}, device, ref="onnx")


def test_scatter_nd_against_ort(device):
    x = rand(4, 4, 4)
    i = np.array([[0], [2]], I64)
    u = rand(2, 4, 4, seed=1)
    check(node_model("ScatterND", {"x": x, "i": i, "u": u}, opset=16), {"x": x, "i": i, "u": u}, device)


@pytest.mark.parametrize("reduction,ufunc", [("add", np.add), ("mul", np.multiply), ("max", np.maximum)])
def test_scatter_reductions_fold_in_index_order(reduction, ufunc, device):
    """Thousands of updates to few slots: each slot folds its updates in index order, so the
    result equals numpy's sequential ufunc.at bit for bit, run after run."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0.5, 1.5, (40, 8)).astype(np.float32)
    i = rng.integers(-40, 40, (3000, 1)).astype(I64)
    u = rng.uniform(0.99, 1.01, (3000, 8)).astype(np.float32)
    want = x.copy()
    ufunc.at(want, i[:, 0], u)
    model = node_model("ScatterND", {"x": x, "i": i, "u": u}, {"reduction": reduction}, opset=18)
    for _ in range(2):
        np.testing.assert_array_equal(gpu_run(model, {"x": x, "i": i, "u": u}, device)[0], want)
    iu = np.broadcast_to(i, (3000, 8)).copy()
    want = x.copy()
    ufunc.at(want, (iu, np.broadcast_to(np.arange(8), (3000, 8))), u)
    model = node_model("ScatterElements", {"x": x, "i": iu, "u": u}, {"reduction": reduction}, opset=18)
    np.testing.assert_array_equal(gpu_run(model, {"x": x, "i": iu, "u": u}, device)[0], want)


def test_scatter_last_update_wins(device):
    """reduction=none with duplicates: the last update in index order wins, every run."""
    rng = np.random.default_rng(6)
    x = rng.random((50, 16), dtype=np.float32)
    i = rng.integers(0, 50, (5000, 1)).astype(I64)
    u = rng.random((5000, 16), dtype=np.float32)
    want = x.copy()
    for n in range(len(i)):
        want[i[n, 0]] = u[n]
    model = node_model("ScatterND", {"x": x, "i": i, "u": u}, opset=16)
    for _ in range(2):
        np.testing.assert_array_equal(gpu_run(model, {"x": x, "i": i, "u": u}, device)[0], want)


@pytest.mark.parametrize(
    "past,seq,axis,where",
    [
        ((2, 3, 6, 4), 2, -2, [1, 4]),
        ((3, 7, 5), 3, 1, [0, 4, 2]),
        ((2, 5, 2, 3), 1, 1, None),  # no write_indices: every batch entry writes at 0
        ((2, 8), 8, 1, [0, 0]),  # the whole cache replaced
    ],
    ids=str,
)
@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64], ids=["f32", "i64"])
def test_tensor_scatter(past, seq, axis, where, mode, dtype, device):
    cache = data(past, dtype)
    upd_shape = list(past)
    upd_shape[axis] = seq
    feeds = {"past": cache, "update": data(upd_shape, dtype, seed=1)}
    if where is not None:
        if mode == "circular":  # indices wrap around the end of the cache
            where = [(w + past[axis] - 1) for w in where]
        feeds["where"] = np.array(where, I64)
    check(node_model("TensorScatter", feeds, {"axis": axis, "mode": mode}, opset=24), feeds, device)


def test_tensor_scatter_ir_round_trips():
    feeds = {"past": rand(2, 5, 3), "update": rand(2, 2, 3), "where": np.array([4, 1], I64)}
    assert_ir_round_trips(node_model("TensorScatter", feeds, {"axis": 1, "mode": "circular"}, opset=24))


def test_tensor_scatter_mismatched_update_is_a_clear_error():
    feeds = {"past": rand(2, 4, 3), "update": rand(2, 5, 3)}
    with pytest.raises(CompileError, match="does not fit past_cache"):
        compiled(node_model("TensorScatter", feeds, {"axis": 1}, opset=24))


# -- Slice / Split ----------------------------------------------------------------------------
SLICES = [
    # starts, ends, axes, steps
    ([0, 1], [3, 3], None, None),
    ([1], [-1], [1], None),
    ([-1], [-INT_MAX], [0], [-1]),  # reversed
    ([INT_MAX], [-INT_MAX], [2], [-2]),
    ([0, 0, 3], [20, 10, 4], [0, 1, 2], [1, 1, 1]),  # clamping
    ([1, -5], [1000, INT_MAX], [-3, -1], [2, 3]),
    ([1], [2], [0], [1]),
    ([-2], [-4], [2], [-1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES, ids=[f"s{i}" for i in range(len(SLICES))])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_], ids=["f32", "i64", "bool"])
def test_slice(starts, ends, axes, steps, dtype, device):
    x = data((4, 5, 6), dtype)
    inits = {"s": np.array(starts, I64), "e": np.array(ends, I64)}
    order = ["x", "s", "e"]
    if axes is not None:
        inits["a"] = np.array(axes, I64)
        order.append("a")
    if steps is not None:
        if axes is None:
            order.append("")
        inits["st"] = np.array(steps, I64)
        order.append("st")
    model = node_model("Slice", {"x": x}, initializers=inits, input_order=order, opset=13)
    check(model, {"x": x}, device)


def test_slice_opset1_attributes(device):
    x = rand(4, 6, 5)
    attrs = {"starts": [1, 0], "ends": [3, -1], "axes": [0, 2]}
    check(node_model("Slice", {"x": x}, attrs, opset=9), {"x": x}, device)


def test_slice_contiguous_is_a_view(device):
    """A slice of whole rows, 64 elements (256 bytes) in, aliases its input: no dispatch."""
    x = rand(8, 64)
    model = node_model(
        "Slice", {"x": x}, initializers={"s": np.array([1], I64), "e": np.array([5], I64)}, opset=13
    )
    res = compiled(model)
    assert [op.kind for op in res.graph.ops] == ["view"]
    check(model, {"x": x}, device)
    # a misaligned start needs a copy
    model = node_model(
        "Slice",
        {"x": x},
        initializers={"s": np.array([1], I64), "e": np.array([5], I64), "a": np.array([1], I64)},
    )
    assert compiled(model).graph.dispatch_count() == 1
    check(model, {"x": x}, device)


def test_split_outer_axis_is_views(device):
    x = rand(128, 3)
    model = node_model("Split", {"x": x}, {"axis": 0}, n_outputs=2, opset=13)
    res = compiled(model)
    assert [op.kind for op in res.graph.ops] == ["view", "view"]
    offsets = sorted(v.placement.offset - res.graph.inputs[0].placement.offset for v in res.graph.outputs)
    assert offsets == [0, 64 * 3 * 4]
    check(model, {"x": x}, device)


def test_slice_view_feeds_another_op(device):
    x = rand(4, 64)
    s = helper.make_node("Slice", ["x", "s", "e"], ["v"])
    r = helper.make_node("Relu", ["v"], ["y"])
    graph = helper.make_graph(
        [s, r],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            onnx.numpy_helper.from_array(np.array([2], I64), "s"),
            onnx.numpy_helper.from_array(np.array([4], I64), "e"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    check(model, {"x": x}, device)


@pytest.mark.parametrize(
    "shape,axis,split,opset,outs",
    [
        ((6, 4), 0, None, 13, 3),
        ((4, 6), 1, [1, 2, 3], 13, 3),
        ((4, 6), 1, [1, 2, 3], 11, 3),  # split as an attribute
        ((2, 7, 3), -2, None, 18, 3),  # num_outputs with a smaller last chunk
        ((2, 8, 3), 1, [4, 4], 13, 2),
        ((128, 3), 0, [64, 64], 13, 2),  # both halves are aligned views
    ],
    ids=str,
)
@pytest.mark.parametrize("dtype", [np.float32, np.int64], ids=["f32", "i64"])
def test_split(shape, axis, split, opset, outs, dtype, device):
    x = data(shape, dtype)
    attrs, inits, order = {"axis": axis}, {}, ["x"]
    if split is not None and opset < 13:
        attrs["split"] = split
    elif split is not None:
        inits["split"] = np.array(split, I64)
        order.append("split")
    elif opset >= 18:
        attrs["num_outputs"] = outs
    model = node_model(
        "Split", {"x": x}, attrs, opset=opset, initializers=inits, input_order=order, n_outputs=outs
    )
    check(model, {"x": x}, device)


# -- Pad / CenterCropPad ----------------------------------------------------------------------
PADS = [
    [0, 1, 2, 1, 0, 3],
    [2, 0, 0, 0, 2, 1],
    [1, 2, 1, 1, 2, 1],
    [0, -1, 1, 0, 1, -2],  # negative pads crop
    [3, 4, 0, 2, 5, 0],  # wider than the input (reflect folds back repeatedly)
]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", PADS, ids=[f"p{i}" for i in range(len(PADS))])
def test_pad(mode, pads, device):
    x = rand(2, 3, 4)
    inits = {"p": np.array(pads, I64), "v": np.array(1.5, np.float32)}
    model = node_model("Pad", {"x": x}, {"mode": mode}, initializers=inits, opset=19)
    if mode in ("reflect", "wrap") and any(p >= n for p, n in zip(pads, x.shape * 2)):
        assert min(pads) >= 0  # onnxruntime bounds these pads; numpy's pad takes no negative ones
        check(model, {"x": x}, device, ref="onnx")
    else:
        check(model, {"x": x}, device)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_], ids=["i64", "i32", "bool"])
@pytest.mark.parametrize("mode", ["constant", "edge"])
def test_pad_int(dtype, mode, device):
    x = data((3, 5), dtype)
    inits = {"p": np.array([1, 2, 2, 0], I64)}
    if dtype != np.bool_:
        inits["v"] = np.array(7, dtype)
    check(node_model("Pad", {"x": x}, {"mode": mode}, initializers=inits, opset=18), {"x": x}, device)


def test_pad_opset2_attributes(device):
    x = rand(3, 4)
    check(node_model("Pad", {"x": x}, {"pads": [1, 0, 2, 3], "value": -2.0}, opset=2), {"x": x}, device)


def test_pad_runtime_value(device):
    x, v = rand(3, 4), np.array(4.25, np.float32)
    model = node_model("Pad", {"x": x, "v": v}, initializers={"p": np.array([1, 1, 0, 2], I64)},
                       input_order=["x", "p", "v"], opset=13)  # fmt: skip
    check(model, {"x": x, "v": v}, device)


@pytest.mark.parametrize("axes", [[1], [-1, 0]], ids=str)
def test_pad_axes(axes, device):
    x = rand(3, 4, 5)
    pads = np.array([1, 2] * len(axes), I64)
    model = node_model("Pad", {"x": x}, {"mode": "edge"}, initializers={"p": pads, "a": np.array(axes, I64)},
                       input_order=["x", "p", "", "a"], opset=18)  # fmt: skip
    check(model, {"x": x}, device)


@pytest.mark.parametrize(
    "shape,target,axes",
    [((20, 10, 3), [10, 7, 3], None), ((10, 7, 3), [20, 10, 3], None), ((5, 8, 3), [6, 5], [0, 1]),
     ((3, 20, 9), [11, 10], [-2, -1]), ((4, 5), [3], [1])],
    ids=str,
)  # fmt: skip
def test_center_crop_pad(shape, target, axes, device):
    x = rand(*shape)
    attrs = {"axes": axes} if axes else {}
    model = node_model("CenterCropPad", {"x": x}, attrs, initializers={"s": np.array(target, I64)}, opset=18)
    check(model, {"x": x}, device, ref="onnx")


# -- Tile / Expand ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape,repeats", [((3,), [4]), ((2, 3), [2, 3]), ((2, 1, 4), [1, 5, 2]), ((2, 3), [1, 1])],
                         ids=str)  # fmt: skip
def test_tile(shape, repeats, dtype, device):
    x = data(shape, dtype)
    check(node_model("Tile", {"x": x}, initializers={"r": np.array(repeats, I64)}), {"x": x}, device)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize(
    "shape,target", [((3, 1), [2, 3, 4]), ((1, 4), [3, 1]), ((2, 3), [2, 3]), ((), [2, 2])], ids=str
)
def test_expand(shape, target, dtype, device):
    x = data(shape, dtype)
    check(node_model("Expand", {"x": x}, initializers={"s": np.array(target, I64)}), {"x": x}, device)


# -- rearrangements ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("shape,b", [((1, 8, 2, 3), 2), ((2, 18, 3, 2), 3)], ids=str)
def test_depth_to_space(shape, b, mode, device):
    x = rand(*shape)
    check(node_model("DepthToSpace", {"x": x}, {"blocksize": b, "mode": mode}), {"x": x}, device)


@pytest.mark.parametrize("shape,b", [((1, 2, 4, 6), 2), ((2, 3, 6, 3), 3)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.int64], ids=["f32", "i64"])
def test_space_to_depth(shape, b, dtype, device):
    x = data(shape, dtype)
    ref = "ort" if dtype == np.float32 else "onnx"  # onnxruntime has float kernels only
    check(node_model("SpaceToDepth", {"x": x}, {"blocksize": b}), {"x": x}, device, ref=ref)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_modes(mode, device):
    """SpaceToDepth-28's modes invert DepthToSpace's: their round trip is the identity."""
    x = rand(2, 3, 4, 6)
    sd = helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=2, mode=mode)
    ds = helper.make_node("DepthToSpace", ["s"], ["y"], blocksize=2, mode=mode)
    graph = helper.make_graph(
        [sd, ds], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 28)])
    model.ir_version = 11
    assert_close(gpu_run(model, {"x": x}, device), [x])
    single = node_model("SpaceToDepth", {"x": x}, {"blocksize": 2, "mode": mode}, opset=28)
    check(single, {"x": x}, device, ref="onnx")


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1, -7, 9])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 6, 4), (1, 5)], ids=str)
def test_trilu(upper, k, shape, device):
    x = rand(*shape)
    inits = {} if k is None else {"k": np.array(k, I64)}
    check(node_model("Trilu", {"x": x}, {"upper": upper}, initializers=inits, opset=14), {"x": x}, device)


@pytest.mark.parametrize("k", [-2, 0, 3])
def test_trilu_runtime_k(k, device):
    x, kk = rand(2, 4, 5), np.array(k, I64)
    check(node_model("Trilu", {"x": x, "k": kk}, {"upper": 1}, opset=14), {"x": x, "k": kk}, device)


def test_trilu_huge_k(device):
    x = rand(3, 4)
    model = node_model("Trilu", {"x": x}, {"upper": 0}, initializers={"k": np.array(2**40, I64)}, opset=14)
    check(model, {"x": x}, device)


def test_trilu_int(device):
    x = data((3, 4), np.int64)
    check(node_model("Trilu", {"x": x}, {"upper": 0}, opset=14), {"x": x}, device)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32, np.float32], ids=["i64", "i32", "f32"])
def test_one_hot(axis, idx_dtype, device):
    i = np.array([[1, 9, -2], [0, -10, 11], [3, 4, 5]], idx_dtype)  # out of range -> all off
    inits = {"depth": np.array(10, I64), "v": np.array([-1.0, 3.0], np.float32)}
    model = node_model("OneHot", {"i": i}, {"axis": axis}, initializers=inits, opset=11)
    check(model, {"i": i}, device, ref="ort" if idx_dtype == np.int64 else "onnx")


def test_one_hot_runtime_values(device):
    i = np.array([0, 2, -1], I64)
    v = np.array([5, 7], I64)
    model = node_model("OneHot", {"i": i, "v": v}, initializers={"depth": np.array(4.0, np.float32)},
                       input_order=["i", "depth", "v"], opset=11)  # fmt: skip
    check(model, {"i": i, "v": v}, device, ref="onnx")  # onnxruntime lacks float depth


@pytest.mark.parametrize("k", [0, 1, -2, 7])
@pytest.mark.parametrize("dtype", [None, TensorProto.INT32, TensorProto.BOOL], ids=["same", "i32", "bool"])
def test_eye_like(k, dtype, device):
    x = rand(4, 6)
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    model = node_model("EyeLike", {"x": x}, attrs, opset=9)
    check(model, {"x": x}, device, ref="onnx" if dtype == TensorProto.BOOL else "ort")


@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis, time_axis, device):
    x = rand(4, 4, 3) if batch_axis == 1 else rand(4, 5, 2)
    lens = np.array([4, 1, 0, 2] if batch_axis == 1 else [1, 5, 3, 2], I64)
    attrs = {"batch_axis": batch_axis, "time_axis": time_axis}
    model = node_model("ReverseSequence", {"x": x, "l": lens}, attrs, opset=10)
    check(model, {"x": x, "l": lens}, device)


# -- any dtype through the existing data ops --------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_int_bool_data_movement(dtype, device):
    a, b = data((2, 3), dtype), data((2, 5), dtype, seed=1)
    check(node_model("Concat", {"a": a, "b": b}, {"axis": 1}), {"a": a, "b": b}, device)
    check(node_model("Transpose", {"a": a}, {"perm": [1, 0]}), {"a": a}, device)
    check(node_model("Reshape", {"a": a}, initializers={"s": np.array([3, 2], I64)}), {"a": a}, device)
    check(node_model("Identity", {"a": a}), {"a": a}, device)


def _typed_model(op, inputs, attrs=None, inits=None, opset=17):
    """A one-node model for any numpy dtype (the shared helper knows the common ones only)."""
    inits = inits or {}
    node = helper.make_node(op, list(inputs) + list(inits), ["y"], **(attrs or {}))
    graph = helper.make_graph(
        [node],
        op.lower(),
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs.items()
        ],
        [helper.make_value_info("y", onnx.TypeProto())],
        [onnx.numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    return onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    )


SMALL = [np.uint8, np.int8, np.int16, np.uint16, np.uint32, np.float16, np.float64]


@pytest.mark.parametrize("dtype", SMALL, ids=lambda d: np.dtype(d).name)
def test_data_movement_on_every_storage_type(dtype, device):
    """Values pass through gathers, slices, pads, transposes and scatters unchanged."""
    x = data((4, 5), dtype)
    i = np.array([[3, 0], [-1, 2]], I64)
    cases = [
        _typed_model("Gather", {"x": x, "i": i}, {"axis": 1}),
        _typed_model("Slice", {"x": x}, inits={"s": np.array([3, 1], I64), "e": np.array([0, 5], I64),
                                               "a": np.array([0, 1], I64), "st": np.array([-1, 2], I64)}),
        _typed_model("Pad", {"x": x}, {"mode": "edge"}, inits={"p": np.array([1, 0, 0, 2], I64)}),
        _typed_model("Transpose", {"x": x}, {"perm": [1, 0]}),
        _typed_model("Tile", {"x": x}, inits={"r": np.array([2, 1], I64)}),
    ]  # fmt: skip
    for model in cases:
        feeds = {n.name: v for n, v in zip(model.graph.input, (x, i))}
        check(model, feeds, device, ref="onnx")
    u = data((2, 5), dtype, seed=1)
    j = np.array([[0, 1, 2, 3, 0], [3, 2, 1, 0, 1]], I64)
    model = _typed_model("ScatterElements", {"x": x, "j": j, "u": u}, opset=13)
    check(model, {"x": x, "j": j, "u": u}, device, ref="onnx")


# -- Resize / Upsample ------------------------------------------------------------------------
TRANSFORMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]


def _resize(x, attrs, scales=None, sizes=None, roi=None, axes=None, opset=19):
    inits = {}
    order = ["x", "", "", ""]
    if roi is not None:
        inits["roi"] = np.array(roi, np.float32)
        order[1] = "roi"
    if scales is not None:
        inits["scales"] = np.array(scales, np.float32)
        order[2] = "scales"
    if sizes is not None:
        inits["sizes"] = np.array(sizes, I64)
        order[3] = "sizes"
    while order[-1] == "":
        order.pop()
    if axes is not None:
        attrs = {**attrs, "axes": axes}
    return node_model("Resize", {"x": x}, attrs, initializers=inits, input_order=order, opset=opset)


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 1.5], [1, 1, 0.6, 0.5], [1, 1, 1.7, 0.8]], ids=str)
def test_resize_scales(mode, transform, scales, device):
    x = rand(1, 2, 5, 6)
    model = _resize(x, {"mode": mode, "coordinate_transformation_mode": transform}, scales=scales)
    check(model, {"x": x}, device, ref="onnx", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("transform", ["half_pixel", "asymmetric", "align_corners"])
@pytest.mark.parametrize("sizes", [[1, 1, 9, 10], [2, 3, 3, 4]], ids=str)
def test_resize_nearest_modes_against_ort(nearest_mode, transform, sizes, device):
    x = rand(2, 3, 4, 5)
    attrs = {"mode": "nearest", "nearest_mode": nearest_mode, "coordinate_transformation_mode": transform}
    check(_resize(x, attrs, sizes=sizes), {"x": x}, device)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("transform", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"])
@pytest.mark.parametrize("sizes", [[1, 2, 8, 12], [1, 2, 3, 5]], ids=str)
def test_resize_against_ort(mode, transform, sizes, device):
    x = rand(1, 2, 4, 6)
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    check(_resize(x, attrs, sizes=sizes), {"x": x}, device, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "attrs",
    [
        {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1},
        {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 0},
        {"mode": "linear", "antialias": 1},
        {"mode": "cubic", "antialias": 1},
    ],
    ids=str,
)
@pytest.mark.parametrize("scales", [[1, 1, 0.6, 0.8], [1, 1, 1.6, 2.0]], ids=str)
def test_resize_filters(attrs, scales, device):
    x = rand(1, 1, 8, 9)
    check(_resize(x, attrs, scales=scales), {"x": x}, device, ref="onnx", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "policy,axes",
    [
        ("stretch", None),
        *((p, a) for p in ("stretch", "not_larger", "not_smaller") for a in ([2, 3], [3, 2])),
    ],
    ids=str,
)
def test_resize_sizes_axes_policy(policy, axes, device):
    x = rand(1, 2, 6, 4)
    sizes = [7, 3] if axes else [1, 2, 7, 3]
    attrs = {"mode": "nearest", "keep_aspect_ratio_policy": policy}
    check(_resize(x, attrs, sizes=sizes, axes=axes), {"x": x}, device, ref="onnx")


@pytest.mark.parametrize("extrapolation", [0.0, 10.0])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_tf_crop_and_resize(extrapolation, mode, device):
    x = rand(1, 1, 4, 4)
    attrs = {
        "mode": mode,
        "coordinate_transformation_mode": "tf_crop_and_resize",
        "extrapolation_value": extrapolation,
    }
    model = _resize(x, attrs, sizes=[3, 3], roi=[0.4, 0.6, 1.2, 1.7], axes=[2, 3])
    check(model, {"x": x}, device, ref="onnx")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_], ids=["i64", "i32", "bool"])
def test_resize_nearest_is_exact_on_ints(dtype, device):
    x = data((1, 1, 3, 4), dtype)
    model = _resize(x, {"mode": "nearest"}, scales=[1, 1, 2.5, 1.5], opset=13)
    # the reference resizes numbers only: compare bool with the same resize of 0/1 ints
    xi = x.astype(np.int32)
    want = reference_run(_resize(xi, {"mode": "nearest"}, scales=[1, 1, 2.5, 1.5], opset=13), {"x": xi})[0]
    assert_close(gpu_run(model, {"x": x}, device), [want.astype(dtype)])


@pytest.mark.parametrize("dtype,elem", [(np.uint8, TensorProto.UINT8), (np.int8, TensorProto.INT8)])
def test_resize_linear_small_ints(dtype, elem, device):
    """Linear resizes of 8-bit images round to the nearest integer and saturate."""
    x = (
        np.random.default_rng(0)
        .integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (1, 1, 4, 5))
        .astype(dtype)
    )
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", elem, x.shape)],
        [helper.make_tensor_value_info("y", elem, None)],
        [onnx.numpy_helper.from_array(np.array([1, 1, 2, 1.5], np.float32), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    got = gpu_run(model, {"x": x}, device)[0]
    want = ort_run(model, {"x": x})[0]
    assert got.dtype == dtype and got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # f32 sums may round the other way


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize(
    "opset,scales", [(7, [1, 1, 2, 3]), (9, [1, 1, 1.7, 2.5]), (10, [1, 1, 2.2, 1.5])], ids=str
)
def test_upsample_and_resize10(mode, opset, scales, device):
    x = rand(1, 2, 3, 4)
    if opset == 7:
        model = node_model(
            "Upsample", {"x": x}, {"mode": mode, "scales": [float(s) for s in scales]}, opset=7
        )
    else:
        op = "Upsample" if opset == 9 else "Resize"
        model = node_model(
            op, {"x": x}, {"mode": mode}, initializers={"s": np.array(scales, np.float32)}, opset=opset
        )
    check(model, {"x": x}, device)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize11_tf_half_pixel_for_nn(mode, device):
    x = rand(1, 1, 4, 6)
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_half_pixel_for_nn"}
    inits = {"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 1.5, 0.5], np.float32)}
    check(node_model("Resize", {"x": x}, attrs, initializers=inits, opset=11), {"x": x}, device)


def test_resize_downsample_resize10_nearest(device):
    x = rand(1, 1, 6, 7)
    model = node_model("Resize", {"x": x}, {"mode": "nearest"}, opset=10,
                       initializers={"s": np.array([1, 1, 0.6, 0.45], np.float32)})  # fmt: skip
    check(model, {"x": x}, device)


# -- GridSample / RoiAlign / Col2Im ----------------------------------------------------------
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample(mode, padding, align, device):
    x = rand(2, 3, 5, 6)
    grid = rand(2, 4, 7, 2, seed=1, low=-1.4, high=1.4)
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    check(
        node_model("GridSample", {"x": x, "g": grid}, attrs, opset=20),
        {"x": x, "g": grid},
        device,
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_opset16(mode, device):
    x = rand(1, 2, 4, 4)
    grid = rand(1, 3, 5, 2, seed=2, low=-1.2, high=1.2)
    check(
        node_model("GridSample", {"x": x, "g": grid}, {"mode": mode}, opset=16),
        {"x": x, "g": grid},
        device,
        atol=1e-4,
    )


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_volumetric(mode, padding, align, device):
    x = rand(1, 2, 3, 4, 5)
    grid = rand(1, 2, 3, 4, 3, seed=3, low=-1.3, high=1.3)
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    model = node_model("GridSample", {"x": x, "g": grid}, attrs, opset=20)
    check(model, {"x": x, "g": grid}, device, ref="onnx", atol=1e-4)


def test_grid_sample_cubic_5d_is_a_clear_error():
    x, grid = rand(1, 1, 2, 3, 4), rand(1, 2, 2, 2, 3)
    model = node_model("GridSample", {"x": x, "g": grid}, {"mode": "cubic"}, opset=20)
    with pytest.raises(UnsupportedError, match="cubic sampling is defined for 4-D"):
        compiled(model)


# boxes inside, across the border, beyond the map, degenerate (x2 < x1) and sub-pixel
ROIS = np.array(
    [[0, 0, 9, 7], [1, 5, 4, 9], [-3, -2, 12, 4.5], [3.3, 1.2, 3.5, 8], [6, 6, 2, 1], [10.5, 0, 14, 3]],
    np.float32,
)


def _roi_model(mode, ratio, opset, transform=None, scale=1.0, shape=(2, 3, 8, 10), out=(3, 4)):
    x = rand(*shape)
    rois = ROIS * np.float32(1 / scale)
    batch = np.array([0, 1, 1, 0, 1, 0], I64)
    attrs = {"mode": mode, "output_height": out[0], "output_width": out[1], "sampling_ratio": ratio,
             "spatial_scale": scale}  # fmt: skip
    if transform:
        attrs["coordinate_transformation_mode"] = transform
    feeds = {"x": x, "rois": rois, "batch": batch}
    return node_model("RoiAlign", feeds, attrs, opset=opset), feeds


@pytest.mark.parametrize("opset,transform", [(10, None), (16, "half_pixel"), (16, "output_half_pixel")])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ratio", [0, 2])
def test_roi_align(opset, transform, mode, ratio, device):
    # opset 10 shifts nothing (output_half_pixel); max takes the largest weighted tap
    model, feeds = _roi_model(mode, ratio, opset, transform)
    check(model, feeds, device, atol=1e-5)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_opset22_scaled(mode, device):
    # onnxruntime has no RoiAlign-22: onnx.reference; a spatial_scale and a 1-row map
    model, feeds = _roi_model(mode, 0, 22, "half_pixel", scale=0.25, shape=(2, 2, 1, 9), out=(2, 5))
    check(model, feeds, device, ref="onnx", atol=1e-5)


def test_roi_align_ir_round_trips():
    assert_ir_round_trips(_roi_model("max", 0, 16, "output_half_pixel", scale=0.5)[0])


def test_roi_align_bad_rois_is_a_clear_error():
    x, rois, batch = rand(1, 1, 4, 4), rand(2, 5), np.zeros(2, I64)
    model = node_model("RoiAlign", {"x": x, "rois": rois, "batch": batch}, {}, opset=16)
    with pytest.raises(CompileError, match=r"rois must be \[num_rois, 4\]"):
        compiled(model)


@pytest.mark.parametrize(
    "image,block,attrs",
    [
        ([5, 5], [1, 5], {}),
        ([5, 5], [2, 2], {"strides": [2, 2]}),
        ([5, 5], [3, 3], {"pads": [1, 0, 1, 2]}),
        ([6, 6], [2, 2], {"dilations": [2, 2]}),
        ([4, 5, 3], [2, 2, 1], {"strides": [1, 2, 1]}),
    ],
    ids=str,
)
def test_col2im(image, block, attrs, device):
    nd = len(image)
    pads = attrs.get("pads", [0] * 2 * nd)
    st, dl = attrs.get("strides", [1] * nd), attrs.get("dilations", [1] * nd)
    L = int(
        np.prod(
            [(image[i] + pads[i] + pads[i + nd] - dl[i] * (block[i] - 1) - 1) // st[i] + 1 for i in range(nd)]
        )
    )
    x = rand(2, 3 * int(np.prod(block)), L)
    inits = {"image": np.array(image, I64), "block": np.array(block, I64)}
    model = node_model("Col2Im", {"x": x}, attrs, initializers=inits, opset=18)
    check(model, {"x": x}, device, ref="onnx")


# -- what folds, and what cannot run ----------------------------------------------------------
def _graph_model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_constant_data_dependent_ops_fold(device):
    """NonZero, Range, Compress and Unique on constants fold: the GPU sees their results only."""
    c = onnx.numpy_helper.from_array(np.array([[1, 0], [0, 3]], np.float32), "c")
    nodes = [
        helper.make_node("NonZero", ["c"], ["nz"]),  # [[0, 1], [0, 1]]
        helper.make_node("Range", ["s", "l", "d"], ["r"]),  # [1, 3, 5, 7]
        helper.make_node("Compress", ["r", "keep"], ["rc"], axis=0),  # [1, 5, 7]
        helper.make_node("Unique", ["u"], ["uq"], sorted=1),  # [2, 4, 9]
        helper.make_node("Concat", ["rc", "uq"], ["cat"], axis=0),
        helper.make_node("Reshape", ["nz", "flat"], ["nzr"]),
        helper.make_node("Concat", ["cat", "nzr"], ["all"], axis=0),
        helper.make_node("Cast", ["all"], ["allf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "allf"], ["y"]),
    ]
    consts = {"s": np.array(1, I64), "l": np.array(9, I64), "d": np.array(2, I64),
              "keep": np.array([1, 0, 1, 1], np.bool_), "u": np.array([9, 2, 9, 4], I64),
              "flat": np.array([-1], I64)}  # fmt: skip
    inits = [c] + [onnx.numpy_helper.from_array(v, n) for n, v in consts.items()]
    model = _graph_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    x = rand(10)
    check(model, {"x": x}, device)
    assert compiled(model).graph.dispatch_count() == 1


@pytest.mark.parametrize(
    "op,inputs,attrs",
    [
        ("NonZero", {"x": np.ones((2, 3), np.float32)}, {}),
        ("Compress", {"x": np.ones((3, 2), np.float32), "c": np.array([1, 0, 1], np.bool_)}, {"axis": 0}),
        ("Unique", {"x": np.ones(5, np.float32)}, {}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_data_dependent_shapes_are_clear_errors(op, inputs, attrs):
    model = node_model(op, inputs, attrs, opset=13)
    with pytest.raises(UnsupportedError, match="output shape depends on the run-time values"):
        compiled(model)


def test_range_of_run_time_scalars_asks_for_them():
    """Range's scalars decide its length: graph inputs are named, to be frozen (then it folds)."""
    from onnx2wgsl.errors import ConstantRequiredError

    inputs = {"s": np.array(0, I64), "l": np.array(5, I64), "d": np.array(1, I64)}
    with pytest.raises(ConstantRequiredError, match="its start input 's' is computed at run time") as e:
        compiled(node_model("Range", inputs, {}, opset=13))
    assert e.value.inputs == ("s",)


def test_nms_runtime_is_a_clear_error():
    boxes = np.zeros((1, 3, 4), np.float32)
    scores = np.zeros((1, 1, 3), np.float32)
    model = node_model("NonMaxSuppression", {"b": boxes, "s": scores}, opset=11)
    with pytest.raises(UnsupportedError, match="NonMaxSuppression.*run-time values"):
        compiled(model)


@pytest.mark.parametrize(
    "op,inputs,what",
    [
        (
            "Slice",
            {"x": np.ones((4, 3), np.float32), "s": np.array([1], I64), "e": np.array([3], I64)},
            "starts",
        ),
        ("Tile", {"x": np.ones((4, 3), np.float32), "r": np.array([1, 2], I64)}, "repeats"),
        ("Expand", {"x": np.ones((4, 1), np.float32), "s": np.array([4, 3], I64)}, "shape"),
        ("Pad", {"x": np.ones((4, 3), np.float32), "p": np.array([0, 1, 0, 1], I64)}, "pads"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_runtime_shape_inputs_are_clear_errors(op, inputs, what):
    model = node_model(op, inputs, opset=13)
    with pytest.raises(UnsupportedError, match=f"its {what} input .* computed at run time"):
        compiled(model)


def test_shape_and_size_fold(device):
    """y = reshape(x, [-1] + shape(x)[1:]) * size(x): all the shape math folds."""
    x = rand(2, 3, 4)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], start=1),
        helper.make_node("Concat", ["m1", "s"], ["s2"], axis=0),
        helper.make_node("Reshape", ["x", "s2"], ["r"]),
        helper.make_node("Size", ["x"], ["n"]),
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["r", "nf"], ["y"]),
    ]
    model = _graph_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array([-1], I64), "m1")],
    )
    check(model, {"x": x}, device)
    assert compiled(model).graph.dispatch_count() == 1


def test_pad_of_an_empty_axis(device):
    x = np.zeros((0, 3), np.float32)
    inits = {"p": np.array([2, 1, 0, 0], I64), "v": np.array(2.5, np.float32)}
    check(node_model("Pad", {"x": x}, initializers=inits, opset=13), {"x": x}, device, ref="onnx")

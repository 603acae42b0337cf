"""Conv with constant weights as conv_rows: tiles of pixels along an output row x output
channels (compiler/lowering/conv.py: row_tile). Shapes that hit every edge of the tiling: rows
cut into ragged tiles, channel counts not a multiple of the channel block, groups with odd
channels per group, strides, dilations, asymmetric pads, 1-D and 3-D windows, prologues and
epilogues, dims kept symbolic, and the split path a small loop budget forces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_close, bn_params, check_symbolic, graph_model, ort_run, rand, with_dim_params
from onnx import helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model

ROWS = "tiled along output rows"  # conv_rows.wgsl.j2's comment
SPLIT = "too many for one invocation"  # conv_split.wgsl.j2's


def _conv_model(x_shape, w_shape, bias=True, **attrs):
    w = rand(*w_shape, seed=1) / np.sqrt(np.prod(w_shape[1:]))
    consts = {"w": w.astype(np.float32)}
    if bias:
        consts["b"] = rand(w_shape[0], seed=2)
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], **attrs)
    return graph_model([node], {"x": rand(*x_shape)}, ["y"], consts)


def _run(model, feeds, device, tmp_path, marker=ROWS, **kwargs):
    compile_model(model, tmp_path, verify_ir=True, **kwargs)
    assert any(marker in s for s in _shader_texts(tmp_path)), f"no shader has {marker!r}"
    with onnx2wgsl.load(tmp_path, device=device) as sess:
        got = sess.run(None, feeds)
    assert_close(got, ort_run(model, feeds), rtol=1e-4, atol=1e-4)


CASES = {
    # 3x3 pad 1: rows of 37 in tiles of 13 (the last one ragged), 20 channels in blocks of 16 or 8
    "3x3-pad-ragged": ((2, 5, 7, 37), (20, 5, 3, 3), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    # a row of 17: tiles of 9, the last one 8 pixels; 6 output channels (a block of 8, ragged)
    "3x3-row17-oc6": ((1, 3, 5, 17), (6, 3, 3, 3), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "strided-dilated-asym": (
        (1, 4, 13, 19),
        (12, 4, 3, 2),
        dict(kernel_shape=[3, 2], strides=[2, 3], dilations=[2, 1], pads=[2, 0, 1, 3]),
    ),  # fmt: skip
    "7x7-stem": ((1, 3, 40, 40), (16, 3, 7, 7), dict(kernel_shape=[7, 7], strides=[2, 2], pads=[3, 3, 3, 3])),
    "pointwise": ((2, 9, 6, 11), (36, 9, 1, 1), dict(kernel_shape=[1, 1])),
    "pointwise-strided": ((1, 8, 9, 9), (8, 8, 1, 1), dict(kernel_shape=[1, 1], strides=[2, 2])),
    "valid-no-pads": ((1, 4, 10, 23), (8, 4, 3, 3), dict(kernel_shape=[3, 3])),
    "pads-only-at-ends": ((1, 4, 6, 6), (4, 4, 2, 2), dict(kernel_shape=[2, 2], pads=[0, 0, 1, 1])),
    # groups: 2 groups of 3 input channels and 6 outputs (odd ICG, OCG not a multiple of 4)
    "groups-odd": ((1, 6, 7, 9), (12, 3, 3, 3), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2)),
    "groups-4": ((1, 16, 5, 5), (32, 4, 3, 3), dict(kernel_shape=[3, 3], pads=[0, 1, 0, 1], group=4)),
    "1d": ((2, 5, 50), (10, 5, 5), dict(kernel_shape=[5], pads=[2, 4], dilations=[2])),
    "3d": ((1, 3, 5, 6, 7), (5, 3, 2, 3, 3), dict(kernel_shape=[2, 3, 3], pads=[1, 1, 0, 0, 1, 1])),
    "one-pixel": ((1, 7, 1, 1), (9, 7, 1, 1), dict(kernel_shape=[1, 1])),
    "wide-channels": ((1, 64, 4, 4), (96, 64, 3, 3), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv_rows(name, device, tmp_path):
    x_shape, w_shape, attrs = CASES[name]
    m = _conv_model(x_shape, w_shape, **attrs)
    _run(m, {"x": rand(*x_shape, seed=3)}, device, tmp_path)


def test_conv_rows_without_bias(device, tmp_path):
    m = _conv_model((1, 4, 9, 9), (8, 4, 3, 3), bias=False, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _run(m, {"x": rand(1, 4, 9, 9, seed=3)}, device, tmp_path)


def _pre_and_post(c, oc, h, w, scale):
    """BatchNorm + Relu, a padded 3x3 conv of c -> oc channels, a residual Add + Relu: (model,
    feeds) for a batch of 2 at h x w."""
    nodes = [
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Conv", ["r", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "skip"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    consts = {"w": rand(oc, c, 3, 3, seed=1) * scale, "b": rand(oc, seed=2), **bn_params(c)}
    feeds = {"x": rand(2, c, h, w, seed=3), "skip": rand(2, oc, h, w, seed=4)}
    return graph_model(nodes, feeds, ["y"], consts), feeds


def test_conv_rows_prologue_and_epilogue(device, tmp_path):
    """DenseNet's BatchNorm + Relu before a padded conv (the padding is zeros after the
    prologue) and ResNet's residual Add + Relu after it."""
    m, feeds = _pre_and_post(6, 10, 8, 19, 1 / 4)
    _run(m, feeds, device, tmp_path)


def test_conv_rows_over_symbolic_batch_and_spatial_dims(device):
    m = _conv_model((2, 5, 12, 30), (12, 5, 3, 3), kernel_shape=[3, 3], strides=[1, 2], pads=[1, 1, 1, 1])
    m = with_dim_params(m, {"x": ["batch", 5, "h", "w"]})
    feeds = [{"x": rand(b, 5, h, w, seed=h)} for b, h, w in [(1, 1, 1), (2, 7, 30), (3, 12, 17)]]
    check_symbolic(m, {"batch": (1, 3), "h": (1, 12), "w": (1, 30)}, feeds, device)


def test_conv_rows_pointwise_over_a_symbolic_batch(device):
    m = _conv_model((2, 8, 5, 5), (20, 8, 1, 1), kernel_shape=[1, 1])
    m = with_dim_params(m, {"x": ["batch", 8, 5, 5]})
    feeds = [{"x": rand(b, 8, 5, 5, seed=b)} for b in (1, 4)]
    check_symbolic(m, {"batch": (1, 4)}, feeds, device)


PARTS = "partial sums meet in workgroup memory"  # conv_rows' split form

SPLIT_LANES = {
    # ResNet's and DenseNet's last stage: 7 rows of one tile each
    "late-3x3": ((1, 64, 7, 7), (32, 64, 3, 3), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    # a classifier as a 1x1 conv on one pixel: one tile per channel block
    "logits-1x1": ((1, 256, 1, 1), (100, 256, 1, 1), dict(kernel_shape=[1, 1])),
    # a batch of 2, stride 2, rows of 6 in tiles of 8 (ragged), 20 channels in blocks of 8
    "ragged-strided": (
        (2, 48, 9, 11),
        (20, 48, 3, 3),
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    ),
    # 37 input channels over 4 lanes (10, 9, 9, 9 each), 1x1
    "channels-uneven": ((1, 37, 6, 6), (12, 37, 1, 1), dict(kernel_shape=[1, 1])),
    "groups-2": ((1, 64, 5, 5), (24, 32, 3, 3), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2)),
    "3d": ((1, 32, 3, 4, 4), (8, 32, 2, 3, 3), dict(kernel_shape=[2, 3, 3], pads=[1, 1, 1, 0, 1, 1])),
}


@pytest.mark.parametrize("name", list(SPLIT_LANES))
def test_few_tiles_split_their_input_channels_over_lanes(name, device, tmp_path):
    """A conv with few tiles gives each tile several lanes, each over every such-th input
    channel, summed through workgroup memory (compiler/lowering/conv.py: row_split)."""
    x_shape, w_shape, attrs = SPLIT_LANES[name]
    m = _conv_model(x_shape, w_shape, **attrs)
    _run(m, {"x": rand(*x_shape, seed=3)}, device, tmp_path, marker=PARTS)


def test_split_lanes_with_a_prologue_an_epilogue_and_subgroups(device_sg, tmp_path):
    """BatchNorm + Relu read per channel through the prologue while the lanes of one tile take
    different channels; a residual Add + Relu after the sum; with --subgroups, a subgroup
    within one part of the workgroup shares its weights' loads by broadcast."""
    m, feeds = _pre_and_post(48, 16, 5, 7, 1 / 16)
    _run(m, feeds, device_sg, tmp_path, marker=PARTS, subgroups=True)
    assert any(PARTS in t and "subgroupBroadcast(" in t for t in _shader_texts(tmp_path))


def test_split_lanes_at_fp16(device16, tmp_path):
    """f16 storage: the split lanes widen their loads and their partial sums stay f32."""
    from test_fp16 import _assert_scaled_close

    x_shape, w_shape, attrs = SPLIT_LANES["late-3x3"]
    m = _conv_model(x_shape, w_shape, **attrs)
    feeds = {"x": rand(*x_shape, seed=3)}
    compile_model(m, tmp_path, precision="fp16")
    assert any(PARTS in t and "enable f16;" in t for t in _shader_texts(tmp_path))
    with onnx2wgsl.load(tmp_path, device=device16) as sess:
        _assert_scaled_close(sess.run(None, feeds), ort_run(m, feeds))


def test_split_lanes_over_a_symbolic_batch(device):
    """The tile count is taken at the batch's bound; every batch size runs right."""
    m = _conv_model((2, 64, 4, 4), (16, 64, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    m = with_dim_params(m, {"x": ["batch", 64, 4, 4]})
    feeds = [{"x": rand(b, 64, 4, 4, seed=b)} for b in (1, 3)]
    res = check_symbolic(m, {"batch": (1, 3)}, feeds, device)
    assert any("1 of 1 shaders split reductions" in n for n in res.report.notes)  # (the split form ran)


@pytest.mark.parametrize(
    "shape, tile, lanes",
    [
        # (N, C, H, W, OC, K), (tw, oct): tiles = N * H * ceil(W / tw) * ceil(OC / oct); the
        # default target's 16,384 lanes
        ((1, 512, 7, 7, 512, 3), (8, 16), 16),  # 224 tiles
        ((1, 1024, 1, 1, 1000, 1), (1, 32), 16),  # 32 tiles
        ((1, 64, 56, 56, 64, 3), (8, 16), 8),  # 1,568 tiles: 8 lanes each, 64 channels allow it
        ((1, 24, 7, 7, 16, 3), (8, 16), 2),  # 7 tiles, but 24 channels: 2 lanes of 12
        ((1, 3, 224, 224, 64, 7), (8, 16), 1),  # 3 input channels stay in one lane
        ((1, 256, 56, 56, 256, 1), (8, 16), 2),  # 6,272 tiles
        ((1, 256, 112, 112, 256, 1), (8, 16), 1),  # 25,088 tiles
    ],
)
def test_row_split_rule(shape, tile, lanes):
    from onnx2wgsl.compiler.lowering.conv import row_split
    from onnx2wgsl.compiler.target import CPU_LANES, TARGETS

    n, c, h, w, oc, k = shape
    p = dict(N=n, OD=1, OH=h, OW=w, G=1, OCG=oc, ICG=c)
    assert row_split(p, *tile, TARGETS["webgpu"].lanes) == lanes
    assert row_split(p, *tile, CPU_LANES) == 1  # a CPU adapter's target never splits


def test_the_cpu_target_keeps_one_lane_per_tile(device, tmp_path):
    """--limits cpu: the late-stage conv that splits for a GPU keeps conv_rows' plain form."""
    x_shape, w_shape, attrs = SPLIT_LANES["late-3x3"]
    m = _conv_model(x_shape, w_shape, **attrs)
    _run(m, {"x": rand(*x_shape, seed=3)}, device, tmp_path, target="cpu")
    assert not any(PARTS in t for t in _shader_texts(tmp_path))


def test_split_convs_of_different_sizes_share_one_shader(device, tmp_path):
    """The lanes per tile come from the table: split convs of other sizes (16 and 4 lanes
    here) share the shader."""
    m = _chain((1, 64, 7, 7), [(32, [3, 3], dict(pads=[1, 1, 1, 1])), (16, [3, 3], dict(pads=[1, 1, 1, 1]))])
    _run(m, {"x": rand(1, 64, 7, 7, seed=3)}, device, tmp_path, marker=PARTS)
    shaders = _rows_dispatches(tmp_path)
    assert len(shaders) == 2 and len(set(shaders)) == 1


def test_long_reduction_takes_the_split_path(device, tmp_path, monkeypatch):
    """Under a small loop budget the (input channel, kd, kh) loop no longer fits an
    invocation: conv_split sums the products in a workgroup."""
    from onnx2wgsl.compiler import lowering

    monkeypatch.setattr(lowering, "LOOP_BUDGET", lowering.LOOP_SLACK + 64)
    m = _conv_model((1, 40, 5, 6), (12, 40, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _run(m, {"x": rand(1, 40, 5, 6, seed=3)}, device, tmp_path, marker=SPLIT)


def test_reduction_at_the_budget_stays_on_rows(device, tmp_path, monkeypatch):
    """The rows kernel's loops are (input channels) x (kd) x (kh): a budget that a loop over
    kw too would exceed still fits it."""
    from onnx2wgsl.compiler import lowering

    monkeypatch.setattr(lowering, "LOOP_BUDGET", lowering.LOOP_SLACK + 200)
    m = _conv_model((1, 40, 5, 6), (12, 40, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _run(m, {"x": rand(1, 40, 5, 6, seed=3)}, device, tmp_path)


def test_long_kernel_rows_keep_the_gather_kernel(device, tmp_path):
    """A kernel row longer than ROW_KW is looped over, not unrolled."""
    m = _conv_model((1, 2, 90), (5, 2, 70), kernel_shape=[70], pads=[3, 3])
    _run(m, {"x": rand(1, 2, 90, seed=3)}, device, tmp_path, marker="Implicit-GEMM")


def test_run_time_weights_keep_the_gather_kernel(device, tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    feeds = {"x": rand(1, 4, 6, 7, seed=3), "w": rand(8, 4, 3, 3, seed=1)}
    m = graph_model([node], feeds, ["y"])
    _run(m, feeds, device, tmp_path, marker="Implicit-GEMM")


@pytest.mark.parametrize(
    "shape, tile",
    [
        # (N, OD, OH, OW, OCG, G, KW, SW) -> (pixels, channels)
        ((1, 1, 56, 56, 256, 1, 3, 1), (8, 16)),
        ((1, 1, 7, 7, 512, 1, 3, 1), (8, 16)),
        ((1, 1, 7, 7, 6, 1, 1, 1), (8, 4)),  # 6 channels in a block of 8, halved for workgroups
        ((1, 1, 112, 112, 64, 1, 7, 2), (2, 16)),  # 4 pixels would read 13 columns
        ((1, 1, 55, 55, 64, 1, 3, 2), (4, 16)),  # 8 pixels would read 17 columns
        ((1, 1, 1, 300, 4, 1, 3, 1), (8, 4)),
        ((1, 1, 3, 3, 64, 1, 3, 1), (4, 4)),  # a row of 3: 4 pixels (a power of two)
        ((1, 1, 1, 1, 64, 1, 1, 1), (1, 4)),
        ((1, 1, 20, 20, 64, 1, 5, 1), (4, 4)),  # 5 taps: 4 pixels (8 columns)
    ],
)
def test_row_tile_rule(shape, tile):
    from onnx2wgsl.compiler.lowering.conv import ROW_ACCS, ROW_BODY, ROW_COLS, row_cols, row_tile

    N, OD, OH, OW, OCG, G, KW, SW = shape
    p = dict(N=N, OD=OD, OH=OH, OW=OW, OCG=OCG, G=G, KW=KW, SW=SW, DW=1)
    tw, oct = row_tile(p)
    assert (tw, oct) == tile
    assert oct % 4 == 0 and tw * oct <= ROW_ACCS and tw * KW * oct // 4 <= ROW_BODY
    assert len(row_cols(p, tw)) <= ROW_COLS


def test_row_tile_rule_with_a_prologue():
    from onnx2wgsl.compiler.lowering.conv import row_tile

    assert row_tile(dict(N=1, OD=1, OH=56, OW=56, OCG=128, G=1, KW=1, SW=1, DW=1), prologue=True) == (4, 32)
    assert row_tile(dict(N=1, OD=1, OH=7, OW=7, OCG=128, G=1, KW=1, SW=1, DW=1), prologue=True) == (4, 8)


def test_artifact_is_deterministic(tmp_path):
    m = _conv_model((1, 5, 9, 20), (10, 5, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    for d in ("a", "b"):
        compile_model(m, tmp_path / d)
    for f in sorted((tmp_path / "a").rglob("*")):
        if f.is_file():
            assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()


def _shader_texts(out) -> list[str]:
    return [f.read_text() for f in sorted((out / "shaders").iterdir())]


def _rows_dispatches(out) -> list[int]:
    """The shader index of each conv_rows dispatch of the artifact in ``out``."""
    m = json.loads((out / "manifest.json").read_text())
    rows = {k for k, sh in enumerate(m["shaders"]) if ROWS in (out / sh["file"]).read_text()}
    return [d["shader"] for d in m["dispatches"] if d["shader"] in rows]


def _chain(x_shape, convs, relu_between=False):
    """Convs one after another: each (out channels, kernel, attrs); weights and biases seeded."""
    nodes, consts, c, prev = [], {}, x_shape[1], "x"
    for k, (oc, kernel, attrs) in enumerate(convs):
        consts[f"w{k}"] = rand(oc, c, *kernel, seed=10 + k) / np.float32(np.sqrt(c * np.prod(kernel)))
        consts[f"b{k}"] = rand(oc, seed=20 + k)
        conv = helper.make_node("Conv", [prev, f"w{k}", f"b{k}"], [f"c{k}"], kernel_shape=kernel, **attrs)
        nodes.append(conv)
        prev, c = f"c{k}", oc
        if relu_between and k < len(convs) - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"r{k}"]))
            prev = f"r{k}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return graph_model(nodes, {"x": rand(*x_shape)}, ["y"], consts)


SHARED = {
    # channels 6 -> 20 -> 12 -> 9, spatial 13x21 -> 13x21 -> 7x11 (stride 2 along H only: the
    # kernel row's stride stays 1) -> 7x11; ragged tiles (rows of 21 and 11 in tiles of 8) and
    # channel counts that are not multiples of the block
    "channels-and-sizes": (
        (1, 6, 13, 21),
        [
            (20, [3, 3], dict(pads=[1, 1, 1, 1])),
            (12, [3, 3], dict(pads=[1, 1, 1, 1], strides=[2, 1])),
            (9, [3, 3], dict(pads=[1, 1, 1, 1])),
        ],
    ),
    # pointwise convs: a batch of 2, 16 -> 24 -> 8 channels
    "pointwise": ((2, 16, 9, 17), [(24, [1, 1], {}), (8, [1, 1], {})]),
    # 1-D convs of 5 taps, dilation 1, different pads (both nonzero) and lengths
    "1d": ((1, 4, 40), [(8, [5], dict(pads=[2, 2])), (12, [5], dict(pads=[4, 0]))]),
}


@pytest.mark.parametrize("name", list(SHARED))
def test_convs_of_different_sizes_share_one_shader(name, device, tmp_path):
    """Convs that differ only in channels, spatial sizes, strides along H and pads read those
    sizes from their dispatch's table: one shader for all, each dispatch right."""
    x_shape, convs = SHARED[name]
    m = _chain(x_shape, convs)
    # (for a CPU adapter: for a GPU, a conv with few tiles takes the split form, a shader of its own)
    _run(m, {"x": rand(*x_shape, seed=3)}, device, tmp_path, target="cpu")
    shaders = _rows_dispatches(tmp_path)
    assert len(shaders) == len(convs) and len(set(shaders)) == 1


def test_a_stride_along_the_row_is_a_shader_of_its_own(tmp_path):
    """The kernel row's stride indexes the unrolled body: another shader."""
    m = _chain(
        (1, 4, 10, 12),
        [(8, [3, 3], dict(pads=[1, 1, 1, 1])), (8, [3, 3], dict(pads=[1, 1, 1, 1], strides=[1, 2]))],
    )
    compile_model(m, tmp_path)
    shaders = _rows_dispatches(tmp_path)
    assert len(shaders) == 2 and len(set(shaders)) == 2


def test_shared_shader_over_symbolic_dims(device):
    """Sizes over dims kept symbolic come from the dims uniform, the static ones from the table:
    convs of different channel counts still share the shader."""
    m = _chain((2, 5, 12, 30), [(12, [3, 3], dict(pads=[1, 1, 1, 1])), (7, [3, 3], dict(pads=[1, 1, 1, 1]))])
    m = with_dim_params(m, {"x": ["batch", 5, "h", "w"], "y": ["batch", 7, "h", "w"]})
    feeds = [{"x": rand(b, 5, h, w, seed=h)} for b, h, w in [(1, 1, 1), (2, 7, 30), (1, 12, 17), (2, 3, 9)]]
    res = check_symbolic(m, {"batch": (1, 2), "h": (1, 12), "w": (1, 30)}, feeds, device)
    rows = [k for k in res.graph.shaders.values() if ROWS in k.text]
    assert len(rows) == 1


def test_a_prologue_with_the_table_of_sizes_fits_the_bindings(device, tmp_path):
    """DenseNet's BatchNorm + Relu before a conv is read through a prologue of several buffers;
    the bias goes with the weights, so the table still has a binding and two such convs of
    different channel counts (over inputs of one spatial size) share a shader."""
    nodes, consts, feeds = [], {}, {}
    for k, (c, oc) in enumerate(((6, 10), (9, 14))):
        bn = tuple(f"{n}{k}" for n in ("scale", "bias", "mean", "var"))
        consts.update(bn_params(c, seed=k, names=bn))
        consts[f"w{k}"] = rand(oc, c, 1, 1, seed=10 + k) / np.float32(3)
        consts[f"b{k}"] = rand(oc, seed=20 + k)
        feeds[f"x{k}"] = rand(1, c, 8, 19, seed=3 + k)
        nodes += [
            helper.make_node("BatchNormalization", [f"x{k}", *bn], [f"bn{k}"]),
            helper.make_node("Relu", [f"bn{k}"], [f"r{k}"]),
            helper.make_node("Conv", [f"r{k}", f"w{k}", f"b{k}"], [f"y{k}"], kernel_shape=[1, 1]),
        ]
    m = graph_model(nodes, feeds, ["y0", "y1"], consts)
    _run(m, feeds, device, tmp_path)
    shaders = _rows_dispatches(tmp_path)
    assert len(shaders) == 2 and len(set(shaders)) == 1
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    text = (tmp_path / manifest["shaders"][shaders[0]]["file"]).read_text()
    assert "fn load_x(i: u32) -> f32 {\n  return X[i];" not in text  # (read through the prologue)


def test_without_a_binding_for_the_table_the_sizes_are_written_in(device, tmp_path):
    """A target with fewer storage bindings: no room for the table; the shader holds the sizes."""
    from onnx2wgsl.compiler.target import TARGETS, Target

    m = _chain((1, 6, 13, 21), [(20, [3, 3], dict(pads=[1, 1, 1, 1])), (12, [3, 3], dict(pads=[1, 1, 1, 1]))])
    limits = {**TARGETS["webgpu"].limits, "maxStorageBuffersPerShaderStage": 3}  # X, weights, Y
    target = Target("three-bindings", limits)
    _run(m, {"x": rand(1, 6, 13, 21, seed=3)}, device, tmp_path, target=target)
    shaders = _rows_dispatches(tmp_path)
    assert len(shaders) == 2 and len(set(shaders)) == 2


def test_a_limits_file_sets_the_lanes(device, tmp_path):
    """A limits file's "lanes" (as `onnx2wgsl limits` writes it) sets the split; a bad count is
    refused by name."""
    from onnx2wgsl.compiler.target import get_target
    from onnx2wgsl.errors import CompileError

    x_shape, w_shape, attrs = SPLIT_LANES["late-3x3"]
    m = _conv_model(x_shape, w_shape, **attrs)
    (tmp_path / "cpu.json").write_text(json.dumps({"name": "mine", "lanes": 0}))
    assert get_target(str(tmp_path / "cpu.json")).lanes == 0
    _run(m, {"x": rand(*x_shape, seed=3)}, device, tmp_path / "a", target=str(tmp_path / "cpu.json"))
    assert not any(PARTS in t for t in _shader_texts(tmp_path / "a"))
    (tmp_path / "bad.json").write_text(json.dumps({"lanes": -1}))
    with pytest.raises(CompileError, match="lanes must be a count"):
        get_target(str(tmp_path / "bad.json"))


def test_the_report_says_which_shaders_split_across_lanes(tmp_path):
    """For a GPU target the compile report counts the shaders that split across lanes and names
    --limits cpu for a CPU adapter; the cpu target's report has no such note."""
    x_shape, w_shape, attrs = SPLIT_LANES["late-3x3"]
    m = _conv_model(x_shape, w_shape, **attrs)
    gpu = compile_model(m, tmp_path / "gpu").report.notes
    assert any(
        "1 of 1 shaders split reductions across a workgroup's lanes" in n and "--limits cpu" in n for n in gpu
    )
    assert not any("lanes" in n for n in compile_model(m, tmp_path / "cpu", target="cpu").report.notes)

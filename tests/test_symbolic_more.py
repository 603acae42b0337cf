"""Pooling, resizing, transposed and deformable convolutions, recurrences, quantized ops and
signal ops compiled once with dims kept symbolic and run at many sizes in one session, each
run compared with onnxruntime."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from helpers import (
    assert_close,
    assert_ir_round_trips,
    check_symbolic,
    graph_model,
    rand,
    reference_run,
    with_dim_params,
)
from onnx import helper

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.errors import CompileError

B = {"batch": (1, 4)}


def _pool_model(op: str, c: int, hw: tuple, out_hw: tuple, **attrs):
    nodes = [helper.make_node(op, ["x"], ["y"], **attrs)]
    m = graph_model(nodes, {"x": rand(2, c, 12, 12)}, ["y"])
    return with_dim_params(m, {"x": ["batch", c, *hw], "y": ["batch", c, *out_hw]})


POOLS = [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], count_include_pad=1, pads=[0, 0, 1, 1])),
    ("LpPool", dict(kernel_shape=[2, 2], strides=[1, 1], p=2)),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
]


@pytest.mark.parametrize("op,attrs", POOLS, ids=[f"{o}{i}" for i, (o, _) in enumerate(POOLS)])
def test_pools_over_a_symbolic_batch(device, op, attrs):
    m = _pool_model(op, 3, (12, 12), ("oh", "ow"), **attrs)
    m = with_dim_params(m, {"x": ["batch", 3, 12, 12]})
    feeds = [{"x": rand(b, 3, 12, 12, seed=b)} for b in (1, 2, 4)]
    check_symbolic(m, B, feeds, device)


@pytest.mark.parametrize("op,attrs", POOLS, ids=[f"{o}{i}" for i, (o, _) in enumerate(POOLS)])
def test_pools_over_symbolic_batch_and_spatial_dims(device, op, attrs):
    m = _pool_model(op, 4, ("h", "w"), ("oh", "ow"), **attrs)
    dims = {"batch": (1, 3), "h": (8, 40), "w": (5, 33)}
    sizes = [(1, 8, 5), (2, 17, 16), (3, 40, 33)]
    feeds = [{"x": rand(b, 4, h, w, seed=h)} for b, h, w in sizes]
    check_symbolic(m, dims, feeds, device)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_indices_over_symbolic_dims(device, storage_order):
    nodes = [
        helper.make_node(
            "MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2], storage_order=storage_order
        )
    ]
    m = graph_model(nodes, {"x": rand(2, 3, 12, 12)}, ["y", "i"])
    m = with_dim_params(m, {"x": ["batch", 3, "h", 12]})
    feeds = [{"x": rand(b, 3, h, 12, seed=h)} for b, h in [(1, 2), (2, 9), (4, 32)]]
    check_symbolic(m, {"batch": (1, 4), "h": (2, 32)}, feeds, device)


@pytest.mark.parametrize("level", [0, 2])
def test_conv_relu_maxpool_1d_over_symbolic_time(device, level):
    """An audio front end: Conv1d, Relu, MaxPool1d over a symbolic batch and time length."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3], strides=[2]),
    ]
    m = graph_model(nodes, {"x": rand(2, 4, 16)}, ["y"], {"w": rand(8, 4, 3, seed=1)})
    m = with_dim_params(m, {"x": ["batch", 4, "t"]})
    feeds = [{"x": rand(b, 4, t, seed=t)} for b, t in [(1, 3), (2, 50), (4, 100)]]
    check_symbolic(m, {"batch": (1, 4), "t": (3, 100)}, feeds, device, opt_level=level)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
def test_global_pools_over_symbolic_dims(device, op):
    nodes = [helper.make_node(op, ["x"], ["y"])]
    m = graph_model(nodes, {"x": rand(2, 5, 12, 12)}, ["y"])
    m = with_dim_params(m, {"x": ["batch", 5, "h", "w"]})
    sizes = [(1, 1, 1), (2, 7, 9), (3, 96, 96)]  # 96 x 96: a window one invocation cannot loop over
    feeds = [{"x": rand(b, 5, h, w, seed=h)} for b, h, w in sizes]
    check_symbolic(m, {"batch": (1, 3), "h": (1, 96), "w": (1, 96)}, feeds, device)


def test_pool_window_longer_than_the_range_is_a_clear_error(device):
    m = _pool_model("MaxPool", 3, ("h", "w"), ("oh", "ow"), kernel_shape=[5, 5])
    with pytest.raises(CompileError, match="longer than the padded input"):
        check_symbolic(m, {"batch": (1, 4), "h": (2, 16), "w": (8, 16)}, [], device)


def test_pool_ceil_mode_past_the_input_is_a_clear_error(device):
    m = _pool_model("MaxPool", 3, ("h", "w"), ("oh", "ow"), kernel_shape=[2, 2], strides=[3, 3], ceil_mode=1)
    with pytest.raises(CompileError, match="ceil_mode"):
        check_symbolic(m, {"batch": (1, 4), "h": (4, 16), "w": (8, 16)}, [], device)


# -- Resize, GridSample, RoiAlign, Col2Im ------------------------------------------------------
RESIZES = [
    dict(mode="linear"),
    dict(mode="nearest"),
    dict(mode="cubic", coordinate_transformation_mode="pytorch_half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="align_corners"),
    dict(mode="linear", antialias=1),
]


@pytest.mark.parametrize("attrs", RESIZES, ids=lambda a: "-".join(str(v) for v in a.values()))
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 0.5, 0.75]], ids=["up", "down"])
def test_resize_scales_over_a_symbolic_batch(device, attrs, scales):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)]
    consts = {"scales": np.array(scales, np.float32)}
    m = graph_model(nodes, {"x": rand(2, 3, 8, 8)}, ["y"], consts, opset=18)
    m = with_dim_params(m, {"x": ["batch", 3, 8, 8]})
    feeds = [{"x": rand(b, 3, 8, 8, seed=b)} for b in (1, 2, 4)]
    check_symbolic(m, B, feeds, device)


@pytest.mark.parametrize("level", [0, 2])
def test_resize_sizes_on_static_axes_over_symbolic_batch_and_channels(device, level):
    """sizes over the spatial axes alone (opset 18's axes), then a Relu; batch and channels
    symbolic (two symbols)."""
    nodes = [
        helper.make_node("Resize", ["x", "", "", "sizes"], ["r"], mode="linear", axes=[2, 3]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    m = graph_model(nodes, {"x": rand(2, 3, 7, 5)}, ["y"], {"sizes": np.array([14, 9], np.int64)}, opset=18)
    m = with_dim_params(m, {"x": ["batch", "c", 7, 5]})
    feeds = [{"x": rand(b, c, 7, 5, seed=c)} for b, c in [(1, 1), (2, 5), (4, 8)]]
    check_symbolic(m, {"batch": (1, 4), "c": (1, 8)}, feeds, device, opt_level=level)


def test_upsample_over_a_symbolic_batch(device):
    nodes = [helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")]
    m = graph_model(
        nodes, {"x": rand(2, 3, 4, 4)}, ["y"], {"scales": np.array([1, 1, 2, 3], np.float32)}, opset=9
    )
    m = with_dim_params(m, {"x": ["batch", 3, 4, 4]})
    feeds = [{"x": rand(b, 3, 4, 4, seed=b)} for b in (1, 3, 4)]
    check_symbolic(m, B, feeds, device)


SPATIAL_RESIZES = [
    dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="nearest"),
    dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil"),
    dict(mode="linear"),
    dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="align_corners"),
    dict(mode="linear", coordinate_transformation_mode="asymmetric"),
]


@pytest.mark.parametrize("attrs", SPATIAL_RESIZES, ids=lambda a: "-".join(str(v) for v in a.values()))
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 0.5, 0.25]], ids=["up", "down"])
def test_resize_over_symbolic_spatial_dims(device, attrs, scales):
    """An FPN's or a U-Net's upsampling over symbolic heights and widths: the kernel computes
    each resized axis' source coordinate (the host cannot table taps of a symbolic axis)."""
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)]
    m = graph_model(nodes, {"x": rand(2, 3, 8, 8)}, ["y"], {"scales": np.array(scales, np.float32)})
    m = with_dim_params(m, {"x": ["batch", 3, "h", "w"]})
    sizes = [(1, 4, 4), (2, 9, 13), (3, 16, 24)]
    if attrs.get("coordinate_transformation_mode") == "align_corners":
        # sizes the scales divide: onnxruntime's align_corners divides by the output length,
        # the ONNX definition (and this compiler, static or not) by scale * input length
        sizes[1] = (2, 10, 12)
    feeds = [{"x": rand(b, 3, h, w, seed=h)} for b, h, w in sizes]
    check_symbolic(m, {"batch": (1, 3), "h": (4, 16), "w": (4, 24)}, feeds, device)


@pytest.mark.parametrize("level", [0, 2])
def test_upsample_after_conv_over_symbolic_spatial_dims(device, level):
    """YOLO's neck: Conv, then a nearest x2 Upsample (opset 9), then a Concat with the skip."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Upsample", ["c", "scales"], ["u"], mode="nearest"),
        helper.make_node("Concat", ["u", "skip"], ["y"], axis=1),
    ]
    consts = {"w": rand(4, 3, 1, 1, seed=1), "scales": np.array([1, 1, 2, 2], np.float32)}
    m = graph_model(nodes, {"x": rand(1, 3, 4, 4), "skip": rand(1, 2, 8, 8)}, ["y"], consts, opset=9)
    m = with_dim_params(m, {"x": ["batch", 3, "h", "w"], "skip": ["batch", 2, "h2", "w2"]})
    # (the skip's dims are their own symbols: the feeds keep them twice the input's)
    sizes = [(1, 2, 2), (2, 5, 7), (2, 10, 12)]
    feeds = [{"x": rand(b, 3, h, w, seed=h), "skip": rand(b, 2, 2 * h, 2 * w, seed=w)} for b, h, w in sizes]
    dims = {"batch": (1, 2), "h": (2, 10), "w": (2, 12), "h2": (4, 20), "w2": (4, 24)}
    check_symbolic(m, dims, feeds, device, opt_level=level)


def test_resize_of_a_symbolic_axis_by_an_odd_scale_is_a_clear_error(device):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")]
    m = graph_model(nodes, {"x": rand(2, 3, 8, 8)}, ["y"], {"scales": np.array([1, 1, 1.5, 2], np.float32)})
    m = with_dim_params(m, {"x": ["batch", 3, "h", 8]})
    with pytest.raises(CompileError, match="resizes the symbolic dim"):
        check_symbolic(m, {"batch": (1, 4), "h": (2, 16)}, [], device)


def test_cubic_resize_of_a_symbolic_axis_is_a_clear_error(device):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")]
    m = graph_model(nodes, {"x": rand(2, 3, 8, 8)}, ["y"], {"scales": np.array([1, 1, 2, 2], np.float32)})
    m = with_dim_params(m, {"x": ["batch", 3, "h", 8]})
    with pytest.raises(CompileError, match="a resized axis is nearest, or linear"):
        check_symbolic(m, {"batch": (1, 4), "h": (2, 16)}, [], device)


def test_grid_sample_over_a_symbolic_batch(device):
    nodes = [helper.make_node("GridSample", ["x", "g"], ["y"], mode="bilinear", padding_mode="border")]
    m = graph_model(
        nodes, {"x": rand(2, 3, 6, 7), "g": rand(2, 4, 5, 2, low=-1.1, high=1.1)}, ["y"], opset=16
    )
    m = with_dim_params(m, {"x": ["batch", 3, 6, 7], "g": ["batch", "gh", 5, 2]})
    sizes = [(1, 1), (2, 3), (4, 6)]
    feeds = [
        {"x": rand(b, 3, 6, 7, seed=b), "g": rand(b, h, 5, 2, seed=h, low=-1.1, high=1.1)} for b, h in sizes
    ]
    check_symbolic(m, {"batch": (1, 4), "gh": (1, 6)}, feeds, device)


def test_roi_align_over_symbolic_batch_and_rois(device):
    nodes = [helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=3, output_width=2)]
    ins = {"x": rand(2, 3, 10, 9), "rois": rand(2, 4), "idx": np.zeros(2, np.int64)}
    m = graph_model(nodes, ins, ["y"], opset=16)
    m = with_dim_params(m, {"x": ["batch", 3, 10, 9], "rois": ["r", 4], "idx": ["r"]})
    rng = np.random.default_rng(0)

    def feeds(b, r):
        lo = rng.uniform(0, 4, (r, 2))
        rois = np.concatenate([lo, lo + rng.uniform(1, 5, (r, 2))], axis=1).astype(np.float32)
        return {"x": rand(b, 3, 10, 9, seed=b), "rois": rois, "idx": rng.integers(0, b, r).astype(np.int64)}

    check_symbolic(m, {"batch": (1, 4), "r": (1, 8)}, [feeds(1, 1), feeds(2, 5), feeds(4, 8)], device)


def test_col2im_over_a_symbolic_batch(device):
    nodes = [helper.make_node("Col2Im", ["x", "image", "block"], ["y"], strides=[2, 2])]
    consts = {"image": np.array([6, 7], np.int64), "block": np.array([2, 3], np.int64)}
    m = graph_model(nodes, {"x": rand(2, 12, 9)}, ["y"], consts, opset=18)
    m = with_dim_params(m, {"x": ["batch", 12, 9]})
    check_symbolic(m, B, [{"x": rand(b, 12, 9, seed=b)} for b in (1, 2, 4)], device)


# -- ConvTranspose, DeformConv -----------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_over_a_symbolic_batch(device, level, group):
    """A decoder's upsampling: ConvTranspose (stride 2, pads, output_padding), then a Relu
    (fused into its epilogue at -O2)."""
    nodes = [
        helper.make_node(
            "ConvTranspose", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
            output_padding=[1, 1], group=group,
        ),
        helper.make_node("Relu", ["c"], ["y"]),
    ]  # fmt: skip
    consts = {"w": rand(4, 6 // group, 3, 3, seed=1), "b": rand(6, seed=2)}
    m = graph_model(nodes, {"x": rand(2, 4, 5, 6)}, ["y"], consts)
    m = with_dim_params(m, {"x": ["batch", 4, 5, 6]})
    check_symbolic(m, B, [{"x": rand(b, 4, 5, 6, seed=b)} for b in (1, 3, 4)], device, opt_level=level)


def test_conv_transpose_1d_long_reduction_over_a_symbolic_batch(device):
    """Many input channels: each output takes a workgroup (the split kernel)."""
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[4], strides=[2])]
    m = graph_model(nodes, {"x": rand(2, 1024, 3)}, ["y"], {"w": rand(1024, 2, 4, seed=1)})
    m = with_dim_params(m, {"x": ["batch", 1024, 3]})
    check_symbolic(m, B, [{"x": rand(b, 1024, 3, seed=b)} for b in (1, 2, 4)], device, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("masked", [False, True])
def test_deform_conv_over_a_symbolic_batch(device, masked):
    ins = {"x": rand(2, 4, 6, 6), "w": rand(6, 4, 3, 3, seed=1), "off": rand(2, 2 * 2 * 9, 4, 4, seed=2)}
    names = ["x", "w", "off", "b"] + (["mask"] if masked else [])
    if masked:
        ins["mask"] = rand(2, 2 * 9, 4, 4, seed=3, low=0, high=1)
    nodes = [helper.make_node("DeformConv", names, ["y"], kernel_shape=[3, 3], offset_group=2)]
    m = graph_model(nodes, ins, ["y"], {"b": rand(6, seed=4)}, opset=19)
    shapes = {
        "x": ["batch", 4, 6, 6],
        "w": [6, 4, 3, 3],
        "off": ["batch", 36, 4, 4],
        "mask": ["batch", 18, 4, 4],
    }
    m = with_dim_params(m, {k: v for k, v in shapes.items() if k in ins})

    def feeds(b):
        f = {"x": rand(b, 4, 6, 6, seed=b), "w": ins["w"], "off": rand(b, 36, 4, 4, seed=b + 5)}
        if masked:
            f["mask"] = rand(b, 18, 4, 4, seed=b + 6, low=0, high=1)
        return f

    check_symbolic(m, B, [feeds(b) for b in (1, 2, 4)], device)


@pytest.mark.parametrize("level", [0, 2])
def test_conv_transpose_over_symbolic_spatial_dims(device, level):
    """A U-Net decoder's upsampling over symbolic heights and widths: stride 2, pads and
    output_padding; then a Relu (fused at -O2)."""
    nodes = [
        helper.make_node(
            "ConvTranspose", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
            output_padding=[1, 1],
        ),
        helper.make_node("Relu", ["c"], ["y"]),
    ]  # fmt: skip
    consts = {"w": rand(4, 5, 3, 3, seed=1), "b": rand(5, seed=2)}
    m = graph_model(nodes, {"x": rand(1, 4, 5, 6)}, ["y"], consts)
    m = with_dim_params(m, {"x": ["batch", 4, "h", "w"]})
    sizes = [(1, 1, 1), (2, 7, 4), (3, 16, 20)]
    feeds = [{"x": rand(b, 4, h, w, seed=h)} for b, h, w in sizes]
    check_symbolic(m, {"batch": (1, 3), "h": (1, 16), "w": (1, 20)}, feeds, device, opt_level=level)


@pytest.mark.parametrize("auto_pad", ["NOTSET", "SAME_UPPER", "VALID"])
def test_conv_transpose_1d_over_a_symbolic_time_length(device, auto_pad):
    """A vocoder's upsampling layer: ConvTranspose1d (stride 4, kernel 8) over a symbolic
    number of frames."""
    pads = {"pads": [2, 2]} if auto_pad == "NOTSET" else {"auto_pad": auto_pad}
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[8], strides=[4], **pads)]
    m = graph_model(nodes, {"x": rand(1, 6, 5)}, ["y"], {"w": rand(6, 3, 8, seed=1)})
    m = with_dim_params(m, {"x": ["batch", 6, "t"]})
    feeds = [{"x": rand(b, 6, t, seed=t)} for b, t in [(1, 1), (2, 33), (2, 100)]]
    check_symbolic(m, {"batch": (1, 2), "t": (1, 100)}, feeds, device)


# -- RNN, GRU, LSTM ----------------------------------------------------------------------------
def _rnn_model(
    kind: str, hidden: int, inp: int, direction="forward", layout=0, seq_lens=False, w=0.5, **attrs
):
    G = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    dirs = 2 if direction == "bidirectional" else 1
    consts = {
        "W": rand(dirs, G * hidden, inp, seed=1, low=-w, high=w),
        "R": rand(dirs, G * hidden, hidden, seed=2, low=-w, high=w),
        "B": rand(dirs, 2 * G * hidden, seed=3, low=-w, high=w),
    }
    x_shape = ["seq", "batch", inp] if layout == 0 else ["batch", "seq", inp]
    ins = {"X": rand(*[3 if d == "seq" else 2 if d == "batch" else d for d in x_shape])}
    names = ["X", "W", "R", "B"]
    if seq_lens:
        ins["sl"] = np.array([3, 2], np.int32)
        names.append("sl")
    outs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    nodes = [
        helper.make_node(kind, names, outs, hidden_size=hidden, direction=direction, layout=layout, **attrs)
    ]
    m = graph_model(nodes, ins, outs, consts, opset=14)
    shapes = {"X": x_shape}
    if seq_lens:
        shapes["sl"] = ["batch"]
    return with_dim_params(m, shapes)


def _rnn_feeds(sizes, inp, layout=0, seq_lens=False):
    out = []
    for t, b in sizes:
        f = {"X": rand(*((t, b, inp) if layout == 0 else (b, t, inp)), seed=t)}
        if seq_lens:
            f["sl"] = np.random.default_rng(t).integers(1, t + 1, b).astype(np.int32)
        out.append(f)
    return out


RNN_SIZES = [(1, 1), (7, 2), (24, 3)]  # (seq, batch), both ends of both ranges
RNN_DIMS = {"seq": (1, 24), "batch": (1, 3)}


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_recurrences_over_symbolic_seq_and_batch(device, kind, direction):
    m = _rnn_model(kind, 16, 8, direction)
    check_symbolic(m, RNN_DIMS, _rnn_feeds(RNN_SIZES, 8), device, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_reverse_recurrences_with_sequence_lens(device, kind):
    m = _rnn_model(kind, 12, 5, "reverse", seq_lens=True)
    feeds = _rnn_feeds(RNN_SIZES, 5, seq_lens=True)
    check_symbolic(m, RNN_DIMS, feeds, device, rtol=1e-3, atol=1e-4)


def test_batch_first_lstm_against_the_reference(device):
    """layout 1 (onnxruntime runs only layout 0): against onnx's reference implementation."""
    m = _rnn_model("LSTM", 12, 5, "bidirectional", layout=1)
    with tempfile.TemporaryDirectory() as out:
        compile_model(m, out, dims=RNN_DIMS, verify_ir=True)
        with onnx2wgsl.load(out, device=device) as sess:
            for feeds in _rnn_feeds(RNN_SIZES, 5, layout=1):
                assert_close(sess.run(None, feeds), reference_run(m, feeds), 1e-3, 1e-4)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_long_recurrences_chunked_over_a_symbolic_length(device, kind):
    """A sequence too long for one dispatch at its bound: dispatches planned at the bound,
    those past a shorter run's last step write nothing (small weights: a contracting
    recurrence, whose rounding does not grow over 300 steps)."""
    m = _rnn_model(kind, 256, 256, "bidirectional", w=0.06)
    sizes = [(1, 1), (40, 2), (300, 2)]
    feeds = _rnn_feeds(sizes, 256)
    check_symbolic(m, {"seq": (1, 300), "batch": (1, 2)}, feeds, device, rtol=1e-3, atol=1e-4)


# -- quantization ------------------------------------------------------------------------------
BS = {"batch": (1, 4), "seq": (1, 40)}
BS_SIZES = [(1, 1), (2, 17), (4, 40)]


def _q(seed, *shape, dtype=np.uint8):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dtype)


@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_dequantize_over_symbolic_batch_and_seq(device, per_axis):
    c = 16
    scale = rand(c, seed=1, low=0.01, high=0.1) if per_axis else np.array(0.05, np.float32)
    zp = _q(2, c, dtype=np.int8) if per_axis else np.array(3, np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=-1),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=-1),
    ]
    m = graph_model(nodes, {"x": rand(2, 3, c, low=-5, high=5)}, ["q", "y"], {"s": scale, "z": zp})
    m = with_dim_params(m, {"x": ["batch", "seq", c]})
    feeds = [{"x": rand(b, s, c, seed=s, low=-5, high=5)} for b, s in BS_SIZES]
    check_symbolic(m, BS, feeds, device)


@pytest.mark.parametrize("level", [0, 2])
def test_dynamic_quantized_linear_as_optimum_exports_it(device, level):
    """An int8 BERT's linear layer from dynamic quantization: DynamicQuantizeLinear of the
    activations, MatMulInteger with uint8 weights and their zero point, Cast, and the two
    scales multiplied back in, then the bias."""
    k, n = 32, 24
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=1),
        helper.make_node("Mul", ["xs", "ws"], ["sc"]),
        helper.make_node("Mul", ["accf", "sc"], ["lin"]),
        helper.make_node("Add", ["lin", "b"], ["y"]),
    ]
    consts = {
        "w": _q(1, k, n), "wz": np.array(128, np.uint8), "ws": np.array(0.02, np.float32), "b": rand(n, seed=3),
    }  # fmt: skip
    m = graph_model(nodes, {"x": rand(2, 3, k)}, ["y"], consts)
    m = with_dim_params(m, {"x": ["batch", "seq", k]})
    feeds = [{"x": rand(b, s, k, seed=s)} for b, s in BS_SIZES]
    check_symbolic(m, BS, feeds, device, rtol=1e-4, atol=1e-4, opt_level=level)


def test_matmul_integer_over_a_symbolic_contraction(device):
    """Both operands run-time: [batch, seq, seq] x [batch, seq, 8] (K symbolic), with zero
    points."""
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])]
    consts = {"az": np.array(9, np.uint8), "bz": np.array(200, np.uint8)}
    m = graph_model(nodes, {"a": _q(0, 2, 3, 3), "b": _q(1, 2, 3, 8)}, ["y"], consts)
    m = with_dim_params(m, {"a": ["batch", "seq", "seq"], "b": ["batch", "seq", 8]})
    feeds = [{"a": _q(b, b, s, s), "b": _q(s, b, s, 8)} for b, s in BS_SIZES]
    check_symbolic(m, BS, feeds, device)


def test_matmul_integer_over_a_contraction_too_long_for_one_invocation(device):
    """K's bound (70,000) is past the loop budget: a workgroup per tile splits it, at every K."""
    nodes = [helper.make_node("MatMulInteger", ["a", "b"], ["y"])]
    m = graph_model(nodes, {"a": _q(0, 1, 2, 3), "b": _q(1, 1, 3, 8)}, ["y"])
    m = with_dim_params(m, {"a": ["batch", 2, "k"], "b": ["batch", "k", 8]})
    feeds = [{"a": _q(k, b, 2, k), "b": _q(k + 1, b, k, 8)} for b, k in [(1, 1), (2, 5000), (2, 70000)]]
    check_symbolic(m, {"batch": (1, 2), "k": (1, 70000)}, feeds, device)


def test_qlinear_matmul_over_symbolic_batch_and_seq(device):
    nodes = [helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])]
    consts = {
        "as": np.array(0.05, np.float32), "az": np.array(7, np.int8), "b": _q(1, 16, 12, dtype=np.int8),
        "bs": np.array(0.03, np.float32), "bz": np.array(-2, np.int8), "ys": np.array(0.2, np.float32),
        "yz": np.array(5, np.int8),
    }  # fmt: skip
    m = graph_model(nodes, {"a": _q(0, 2, 3, 16, dtype=np.int8)}, ["y"], consts)
    m = with_dim_params(m, {"a": ["batch", "seq", 16]})
    feeds = [{"a": _q(s, b, s, 16, dtype=np.int8)} for b, s in BS_SIZES]
    check_symbolic(m, BS, feeds, device, atol=1)  # (a rounding tie may land one step apart)


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv"])
def test_integer_convolutions_over_a_symbolic_batch(device, op):
    w = _q(1, 6, 3, 3, 3)
    if op == "ConvInteger":
        names, consts = (
            ["x", "w", "xz", "wz"],
            {"w": w, "xz": np.array(100, np.uint8), "wz": np.array(120, np.uint8)},
        )
    else:
        names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
        consts = {
            "xs": np.array(0.02, np.float32), "xz": np.array(100, np.uint8), "w": w,
            "ws": rand(6, seed=2, low=0.01, high=0.03), "wz": np.full(6, 120, np.uint8),
            "ys": np.array(0.5, np.float32), "yz": np.array(10, np.uint8),
        }  # fmt: skip
    nodes = [helper.make_node(op, names, ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 1])]
    m = graph_model(nodes, {"x": _q(0, 2, 3, 7, 6)}, ["y"], consts)
    m = with_dim_params(m, {"x": ["batch", 3, 7, 6]})
    check_symbolic(m, B, [{"x": _q(b, b, 3, 7, 6)} for b in (1, 2, 4)], device, atol=1)


# -- DFT, STFT ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "attrs", [{}, {"inverse": 1}, {"onesided": 1}], ids=["forward", "inverse", "onesided"]
)
def test_dft_over_a_symbolic_batch(device, attrs):
    cplx = 1 if attrs.get("onesided") else 2
    nodes = [helper.make_node("DFT", ["x", "", "axis"], ["y"], **attrs)]
    m = graph_model(nodes, {"x": rand(2, 3, 12, cplx)}, ["y"], {"axis": np.array(2, np.int64)}, opset=20)
    m = with_dim_params(m, {"x": ["batch", 3, 12, cplx]})
    feeds = [{"x": rand(b, 3, 12, cplx, seed=b)} for b in (1, 2, 4)]
    check_symbolic(m, B, feeds, device, rtol=1e-3, atol=1e-4)


def test_stft_over_symbolic_batch_and_signal_length(device):
    nodes = [helper.make_node("STFT", ["x", "step", "win", "len"], ["y"])]
    consts = {
        "step": np.array(4, np.int64),
        "win": np.hanning(16).astype(np.float32),
        "len": np.array(16, np.int64),
    }
    m = graph_model(nodes, {"x": rand(2, 64, 1)}, ["y"], consts, opset=17)
    m = with_dim_params(m, {"x": ["batch", "samples", 1]})
    sizes = [(1, 16), (2, 61), (3, 200)]
    feeds = [{"x": rand(b, n, 1, seed=n)} for b, n in sizes]
    check_symbolic(m, {"batch": (1, 3), "samples": (16, 200)}, feeds, device, rtol=1e-3, atol=1e-4)


def test_align_corners_resize_of_symbolic_dims_against_the_reference(device):
    """At sizes the scale does not divide, against ONNX's definition (scale * input length)."""
    attrs = dict(mode="linear", coordinate_transformation_mode="align_corners")
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)]
    m = graph_model(
        nodes, {"x": rand(1, 3, 8, 8)}, ["y"], {"scales": np.array([1, 1, 0.5, 0.25], np.float32)}
    )
    m = with_dim_params(m, {"x": ["batch", 3, "h", "w"]})
    with tempfile.TemporaryDirectory() as out:
        compile_model(m, out, dims={"batch": (1, 3), "h": (4, 16), "w": (4, 24)}, verify_ir=True)
        with onnx2wgsl.load(out, device=device) as sess:
            for b, h, w in [(1, 5, 7), (2, 9, 13), (3, 15, 23)]:
                feeds = {"x": rand(b, 3, h, w, seed=h)}
                assert_close(sess.run(None, feeds), reference_run(m, feeds), 1e-4, 1e-5)


# -- whole small models, and the IR text ---------------------------------------------------------
@pytest.mark.parametrize("level", [0, 2])
def test_cnn_classifier_over_symbolic_batch_and_image_size(device, level):
    """A CNN classifier: Conv-BN-Relu, MaxPool, Conv, GlobalAveragePool, Flatten, Gemm, Softmax,
    compiled once for any batch and image size in the ranges."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"]),
    ]  # fmt: skip
    consts = {
        "w1": rand(8, 3, 3, 3, seed=1), "b1": rand(8, seed=2), "w2": rand(16, 8, 3, 3, seed=3),
        "wf": rand(10, 16, seed=4), "bf": rand(10, seed=5),
    }  # fmt: skip
    m = graph_model(nodes, {"x": rand(1, 3, 32, 32)}, ["y"], consts)
    m = with_dim_params(m, {"x": ["batch", 3, "h", "w"], "y": ["batch", 10]})
    sizes = [(1, 8, 8), (3, 29, 40), (4, 64, 64)]
    feeds = [{"x": rand(b, 3, h, w, seed=h)} for b, h, w in sizes]
    check_symbolic(m, {"batch": (1, 4), "h": (8, 64), "w": (8, 64)}, feeds, device, opt_level=level)


def test_symbolic_kernels_round_trip_through_the_ir_text():
    pool = _pool_model("AveragePool", 4, ("h", "w"), ("oh", "ow"), kernel_shape=[3, 3], strides=[2, 2])
    assert_ir_round_trips(pool, dims={"batch": (1, 3), "h": (8, 40), "w": (5, 33)})
    assert_ir_round_trips(
        _rnn_model("LSTM", 256, 256, "bidirectional", w=0.06), dims={"seq": (1, 300), "batch": (1, 2)}
    )
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")]
    m = graph_model(nodes, {"x": rand(2, 3, 8, 8)}, ["y"], {"scales": np.array([1, 1, 2, 0.5], np.float32)})
    m = with_dim_params(m, {"x": ["batch", 3, "h", "w"]})
    assert_ir_round_trips(m, dims={"batch": (1, 3), "h": (4, 16), "w": (4, 24)})


def test_ranges_that_hold_zero(device):
    """A batch range from 0: a run with no images dispatches nothing and returns empty outputs."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["p", "", "scales"], ["r"], mode="nearest"),
        helper.make_node("ConvTranspose", ["r", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    consts = {"scales": np.array([1, 1, 2, 2], np.float32), "w": rand(3, 2, 2, 2, seed=1)}
    m = graph_model(nodes, {"x": rand(2, 3, 8, 8)}, ["y"], consts)
    m = with_dim_params(m, {"x": ["batch", 3, "h", "w"]})
    sizes = [(0, 4, 4), (1, 2, 6), (4, 16, 16)]
    feeds = [{"x": rand(b, 3, h, w, seed=h)} for b, h, w in sizes]
    check_symbolic(m, {"batch": (0, 4), "h": (2, 16), "w": (2, 16)}, feeds, device)


def test_maxpool_then_maxunpool_over_a_symbolic_batch(device):
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxUnpool", ["p", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    m = graph_model(nodes, {"x": rand(2, 3, 6, 8)}, ["y"])
    m = with_dim_params(m, {"x": ["batch", 3, 6, 8]})
    check_symbolic(m, B, [{"x": rand(b, 3, 6, 8, seed=b)} for b in (1, 2, 4)], device)


def test_dynamic_quantize_linear_over_a_long_symbolic_tensor(device):
    """BERT-base activations ([batch, seq, 768] up to 4 x 128): one range over every element."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])]
    m = graph_model(nodes, {"x": rand(1, 2, 768)}, ["y", "s", "z"])
    m = with_dim_params(m, {"x": ["batch", "seq", 768]})
    feeds = [{"x": rand(b, s, 768, seed=s, low=-3, high=5)} for b, s in [(1, 1), (2, 77), (4, 128)]]
    check_symbolic(m, {"batch": (1, 4), "seq": (1, 128)}, feeds, device)


@pytest.mark.parametrize(
    "attrs",
    [
        dict(mode="bilinear", padding_mode="zeros"),
        dict(mode="bilinear", padding_mode="reflection", align_corners=1),
        dict(mode="nearest", padding_mode="border"),
        dict(mode="bicubic", padding_mode="reflection"),
    ],
    ids=lambda a: "-".join(str(v) for v in a.values()),
)
def test_grid_sample_over_symbolic_image_sizes(device, attrs):
    """A spatial transformer's sampler: the image's height and width kept symbolic."""
    nodes = [helper.make_node("GridSample", ["x", "g"], ["y"], **attrs)]
    m = graph_model(nodes, {"x": rand(2, 3, 6, 7), "g": rand(2, 4, 5, 2)}, ["y"], opset=16)
    m = with_dim_params(m, {"x": ["batch", 3, "h", "w"], "g": ["batch", 4, 5, 2]})
    sizes = [(1, 1, 1), (2, 5, 9), (3, 16, 12)]
    feeds = [
        {"x": rand(b, 3, h, w, seed=h), "g": rand(b, 4, 5, 2, seed=w, low=-1.3, high=1.3)}
        for b, h, w in sizes
    ]
    check_symbolic(m, {"batch": (1, 3), "h": (1, 16), "w": (1, 12)}, feeds, device)

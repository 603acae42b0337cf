"""Legalize rules: data movement (slices, pads, gathers, scatters, resizes and their kin).

Each rule resolves the op's per-opset spelling into one IR form with every compile-time
number in attributes: Slice gets a start and a step per dim, Pad a begin and an end per dim,
Resize a scale and a region of interest per dim. Secondary inputs that decide an output
shape (starts, pads, repeats, sizes, depth, ...) must be constants; their absence is a clear
error naming the input.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.errors import UnsupportedError
from onnx2wgsl.ir import TensorType
from onnx2wgsl.ir.symbolic import Expr, SymbolicError, as_expr, simplify
from onnx2wgsl.ir.types import dim_bound

from ..shape_rules import resized_dim
from ..symbolic_fold import slice_extent, slice_index
from . import _axis, _ints, emit, rule


def _opt(info, i: int, what: str) -> np.ndarray | None:
    """A constant optional input, None when omitted or empty (ONNX's "not given")."""
    data = info.const_input(i, what)
    if data is None or np.asarray(data).size == 0:
        return None
    return np.asarray(data)


def _scalar(data) -> float | int:
    return np.asarray(data).reshape(-1)[0].item()


# -- slices -----------------------------------------------------------------------------------
def slice_bounds(n: int, start: int, end: int, step: int) -> tuple[int, int]:
    """ONNX Slice on one dim of size n: the clamped first index and the element count."""
    if isinstance(n, Expr):  # the int start, which the lowering clamps (see slice_start)
        return start, slice_extent(n, start, end, step)[1]
    if start < 0:
        start += n
    if end < 0:
        end += n
    if step > 0:
        start, end = min(max(start, 0), n), min(max(end, 0), n)
    else:
        start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
    count = max(0, -(-(end - start) // step))
    return (start if count else 0), count


@rule("Slice")
def _slice(g, info):
    x = info.inputs[0]
    rank = x.type.rank
    if info.opset < 10:
        starts, ends = _ints(info.attrs["starts"]), _ints(info.attrs["ends"])
        axes = info.attrs.get("axes")
        steps = None
    elif info.const_input(1, "starts").dtype == object:
        return _slice_symbolic_start(g, info)
    elif info.const_input(2, "ends").dtype == object:
        # ends over dims kept symbolic: the output type holds them (symbolic_fold.slice_type)
        starts = _ints(info.const_input(1, "starts"))
        axes = _opt(info, 3, "axes")
        first = [0] * rank
        for a, s in zip(_ints(axes) if axes is not None else range(len(starts)), starts):
            first[_axis(info, a, rank)] = s
        return emit(g, info, "Slice", [x], {"starts": first, "steps": [1] * rank})
    else:
        starts = _ints(info.const_input(1, "starts"))
        ends = _ints(info.const_input(2, "ends"))
        axes = _opt(info, 3, "axes")
        steps = _opt(info, 4, "steps")
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise info.error("starts, ends, axes and steps differ in length")
    first, step, shape = [0] * rank, [1] * rank, list(x.shape)
    seen = set()
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = _axis(info, a, rank)
        if a in seen:
            raise info.error(f"axis {a} is sliced twice")
        if st == 0:
            raise info.error("a slice step is 0")
        seen.add(a)
        first[a], shape[a] = slice_bounds(x.shape[a], s, e, st)
        step[a] = st
    out = TensorType(x.dtype, tuple(shape))
    return emit(g, info, "Slice", [x], {"starts": first, "steps": step}, [out])


def _slice_symbolic_start(g, info):
    """A Slice whose starts depend on the dims (T5 slices its position bias as
    ``bias[:, :, -seq:]``): unit steps; each such start is stored as its clamped first index,
    an expression of the dims (see lower_slice); the output type holds the counts."""
    x = info.inputs[0]
    rank = x.type.rank
    starts = list(info.const_input(1, "starts").reshape(-1))
    axes = _opt(info, 3, "axes")
    steps = _opt(info, 4, "steps")
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    if steps is not None and any(int(st) != 1 for st in steps.reshape(-1)):
        raise info.error(
            "a slice whose starts depend on the dims takes unit steps only",
            hint="bind the dims with --dim NAME=N",
        )
    first = [0] * rank
    for a, s in zip(axes, starts):
        a = _axis(info, a, rank)
        n = x.shape[a]
        if isinstance(s, Expr):
            first[a] = simplify(Expr.const(0) + slice_index(s, n))
        elif isinstance(n, Expr):
            first[a] = int(s)  # ONNX's start, which the lowering clamps (see slice_start)
        else:
            first[a] = min(max(int(s) + (n if int(s) < 0 else 0), 0), n)
    return emit(g, info, "Slice", [x], {"starts": first, "steps": [1] * rank})


@rule("Split")
def _split(g, info):
    x = info.inputs[0]
    rank = x.type.rank
    axis = _axis(info, int(info.attrs.get("axis", 0)), rank)
    n = x.shape[axis]
    outs = len(info.out_names)
    split = info.attrs.get("split") if info.opset < 13 else _opt(info, 1, "split")
    if split is not None and len(_ints(split)):
        split = _ints(split)
    elif info.opset >= 18 and "num_outputs" in info.attrs:
        k = int(info.attrs["num_outputs"])
        chunk = -(-n // k)
        split = [min(chunk, max(n - chunk * i, 0)) for i in range(k)]
    else:
        if n % outs:
            raise info.error(f"axis {axis} of size {n} does not split into {outs} equal parts")
        split = [n // outs] * outs
    if len(split) != outs or sum(split) != n or min(split) < 0:
        raise info.error(f"split {split} does not cover axis {axis} of size {n} with {outs} outputs")
    types = [TensorType(x.dtype, tuple(s if d == axis else m for d, m in enumerate(x.shape))) for s in split]
    return emit(g, info, "Split", [x], {"axis": axis, "split": split}, types)


# -- pads -------------------------------------------------------------------------------------
PAD_MODES = ("constant", "reflect", "edge", "wrap")


@rule("Pad")
def _pad(g, info):
    x = info.inputs[0]
    rank = x.type.rank
    mode = info.attrs.get("mode", "constant")
    value = None
    operands = [x]
    if info.opset < 11:
        pads = _ints(info.attrs.get("pads", info.attrs.get("paddings")))
        value = float(info.attrs.get("value", 0.0))
        axes = list(range(rank))
    else:
        pads = _ints(info.const_input(1, "pads"))
        v = info.inputs[2] if len(info.inputs) > 2 else None
        if v is not None and v.is_const:
            value = _scalar(v.data) if v.data.size else 0
        elif v is not None:
            operands.append(v)  # a run-time pad value decides no shape: read it on the GPU
        else:
            value = 0
        axes = _opt(info, 3, "axes") if info.opset >= 18 else None
        axes = [_axis(info, a, rank) for a in _ints(axes)] if axes is not None else list(range(rank))
    if len(pads) != 2 * len(axes):
        raise info.error(f"{len(pads)} pads for {len(axes)} axes")
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a], full[a + rank] = pads[i], pads[i + len(axes)]
    return _emit_pad(g, info, operands, mode, full, value)


def _emit_pad(g, info, operands, mode: str, pads: list[int], value):
    x = operands[0]
    rank = x.type.rank
    if mode not in PAD_MODES:
        raise info.error(f"unknown pad mode {mode!r}", hint=f"modes: {', '.join(PAD_MODES)}")
    shape = tuple(n + pads[d] + pads[d + rank] for d, n in enumerate(x.shape))
    if any((n.bounds[0] if isinstance(n, Expr) else n) < 0 for n in shape):  # at any size
        raise info.error(f"pads {pads} remove more than the input's shape {x.shape}")
    if mode != "constant":
        for d, n in enumerate(x.shape):
            kept = n - max(0, -pads[d]) - max(0, -pads[d + rank])  # what negative pads leave
            if kept <= 0 and shape[d] > 0:
                raise info.error(f"{mode} padding of an empty extent on axis {d}", cls=UnsupportedError)
    attrs = {"mode": mode, "pads": pads}
    if value is not None:
        attrs["value"] = value
    return emit(g, info, "Pad", operands, attrs, [TensorType(x.dtype, shape)])


@rule("CenterCropPad")
def _center_crop_pad(g, info):
    x = info.inputs[0]
    rank = x.type.rank
    shape = _ints(info.const_input(1, "shape"))
    axes = info.attrs.get("axes")
    axes = [_axis(info, a, rank) for a in _ints(axes)] if axes else list(range(rank))
    if len(axes) != len(shape):
        raise info.error(f"shape has {len(shape)} entries for {len(axes)} axes")
    pads = [0] * (2 * rank)
    for a, want in zip(axes, shape):
        d = want - x.shape[a]  # > 0 pads, < 0 crops; the odd element goes to the end
        lo = d // 2 if d >= 0 else -((-d) // 2)
        pads[a], pads[a + rank] = lo, d - lo
    return _emit_pad(g, info, [x], "constant", pads, 0)


# -- repeats and broadcasts -------------------------------------------------------------------
@rule("Tile")
def _tile(g, info):
    x = info.inputs[0]
    given = info.const_input(1, "repeats")
    # (repeats computed from dims kept symbolic are expressions of them: a symbolic output shape)
    repeats = [simplify(r) for r in given.reshape(-1)] if given.dtype == object else _ints(given)
    if len(repeats) != x.type.rank or any(r < 0 for r in repeats):
        raise info.error(f"repeats {repeats} do not match rank {x.type.rank}")
    out = TensorType(x.dtype, tuple(simplify(n * r) for n, r in zip(x.shape, repeats)))
    return emit(g, info, "Tile", [x], {"repeats": repeats}, [out])


@rule("Expand")
def _expand(g, info):
    x = info.inputs[0]
    shape = info.const_input(1, "shape")
    if shape.dtype == object or x.type.is_symbolic:  # dims kept symbolic
        return emit(g, info, "Expand", [x], {})
    shape = _ints(shape)
    try:
        out = np.broadcast_shapes(tuple(x.shape), tuple(shape))
    except ValueError:
        raise info.error(f"shape {shape} does not broadcast with the input's {x.shape}") from None
    return emit(g, info, "Expand", [x], {}, [TensorType(x.dtype, tuple(out))])


# -- gathers and scatters ---------------------------------------------------------------------
@rule("Gather", "GatherElements")
def _gather(g, info):
    rank = info.inputs[0].type.rank
    axis = _axis(info, int(info.attrs.get("axis", 0)), rank)
    if info.op_type == "GatherElements":
        _same_rank(info, info.inputs[0], info.inputs[1])
    _check_indices(info, info.inputs[1], info.inputs[0].shape[axis] if rank else 0, axis)
    return emit(g, info, info.op_type, info.inputs[:2], {"axis": axis})


def _check_indices(info, indices, n, axis: int) -> None:
    """Constant indices within [-n, n) (onnxruntime refuses others when it runs). Over a dim
    kept symbolic, within its largest value: an index out of range at some smaller sizes
    reads 0 there, like any index out of range on the GPU."""
    if indices.is_const and indices.data.size:
        lo, hi = int(indices.data.min()), int(indices.data.max())
        most = dim_bound(n)
        if lo < -most or hi >= most:
            raise info.error(
                f"index {lo if lo < -most else hi} is out of range for axis {axis} of size {n}",
                hint="fix the model",
            )


def _same_rank(info, data, indices, updates=None) -> None:
    """GatherElements' and ScatterElements' indices (and updates) have the data's rank."""
    if indices.type.rank != data.type.rank or (updates is not None and updates.shape != indices.shape):
        shapes = [list(v.shape) for v in (data, indices, updates) if v is not None]
        raise info.error(
            f"data, indices{' and updates' if updates is not None else ''} of shapes {shapes} do not "
            "fit: indices have the data's rank"
            + (" and updates the indices' shape" if updates is not None else ""),
            hint="fix the model",
        )


def _nd_shapes(info, data, indices, batch_dims: int, updates=None) -> None:
    """GatherND / ScatterND: indices [..., k] with 1 <= k <= rank - batch_dims, batch dims
    that agree, and (ScatterND) updates of shape indices[:-1] + data[k:], as the spec says."""
    r, q = data.type.rank, indices.type.rank
    k = indices.shape[-1] if q else 0
    ok = r >= 1 and q >= 1 and 0 <= batch_dims < min(q, r) and 1 <= k <= r - batch_dims
    ok = ok and tuple(data.shape[:batch_dims]) == tuple(indices.shape[:batch_dims])
    if ok and updates is not None:
        ok = tuple(updates.shape) == tuple(indices.shape[:-1]) + tuple(data.shape[k:])
    if not ok:
        shapes = [list(v.shape) for v in (data, indices, updates) if v is not None]
        names = "data, indices and updates" if updates is not None else "data and indices"
        raise info.error(
            f"{names} of shapes {shapes} do not fit (batch_dims {batch_dims})", hint="fix the model"
        )


@rule("GatherND")
def _gather_nd(g, info):
    batch_dims = int(info.attrs.get("batch_dims", 0))
    _nd_shapes(info, info.inputs[0], info.inputs[1], batch_dims)
    return emit(g, info, "GatherND", info.inputs[:2], {"batch_dims": batch_dims})


REDUCTIONS = ("none", "add", "mul", "max", "min")


def _reduction(info) -> str:
    r = info.attrs.get("reduction", "none") or "none"
    if r not in REDUCTIONS:
        raise info.error(f"unknown reduction {r!r}", hint=f"reductions: {', '.join(REDUCTIONS)}")
    return r


@rule("ScatterElements", "Scatter")
def _scatter_elements(g, info):
    rank = info.inputs[0].type.rank
    axis = _axis(info, int(info.attrs.get("axis", 0)), rank)
    _same_rank(info, *info.inputs[:3])
    attrs = {"axis": axis, "reduction": _reduction(info)}
    return emit(g, info, "ScatterElements", info.inputs[:3], attrs)


@rule("ScatterND")
def _scatter_nd(g, info):
    _nd_shapes(info, info.inputs[0], info.inputs[1], 0, info.inputs[2])
    return emit(g, info, "ScatterND", info.inputs[:3], {"reduction": _reduction(info)})


@rule("TensorScatter")
def _tensor_scatter(g, info):
    past, update = info.inputs[:2]
    where = info.inputs[2] if len(info.inputs) > 2 else None
    rank = past.type.rank
    axis = _axis(info, int(info.attrs.get("axis", -2)), rank)
    if axis == 0:
        raise info.error("axis 0 is the batch axis, not a sequence axis", hint="use axis >= 1 (default -2)")
    mode = info.attrs.get("mode", "linear")
    if mode not in ("linear", "circular"):
        raise info.error(f"unknown mode {mode!r}", hint="use 'linear' or 'circular'")
    ps, us = tuple(past.shape), tuple(update.shape)
    if (
        len(us) != rank
        or any(p != u for d, (p, u) in enumerate(zip(ps, us)) if d != axis)
        or _above(us[axis], ps[axis])
    ):
        raise info.error(
            f"update {us} does not fit past_cache {ps}: the shapes must agree except on axis {axis}, "
            "where the update may not be longer"
        )
    if where is not None and tuple(where.shape) != (ps[0],):
        raise info.error(f"write_indices must be [{ps[0]}] (one per batch entry), got {where.type}")
    attrs = {"axis": axis, "mode": mode, "has_write_indices": int(where is not None)}
    return emit(g, info, "TensorScatter", [v for v in (past, update, where) if v is not None], attrs)


def _above(a, b) -> bool:
    """``a > b`` for every value of the dims kept symbolic; an error when only some values
    make it so. (Ranges decide ``seq + 1 > seq`` and ``1 > past`` for past >= 1.)"""
    lo, hi = (as_expr(a) - as_expr(b)).bounds
    if lo > 0 or hi <= 0:
        return lo > 0
    raise SymbolicError(f"whether {a} > {b} depends on the dims' values")


# -- rearrangements ---------------------------------------------------------------------------
@rule("DepthToSpace", "SpaceToDepth")
def _depth_space(g, info):
    # SpaceToDepth took a mode (DCR, CRD) like DepthToSpace's in later opsets
    attrs = {"blocksize": int(info.attrs["blocksize"]), "mode": info.attrs.get("mode", "DCR")}
    if attrs["mode"] not in ("DCR", "CRD"):
        raise info.error(f"unknown mode {attrs['mode']!r}")
    x = info.inputs[0]
    if x.type.rank != 4:
        raise info.error(f"{info.op_type} needs a 4-D input, got rank {x.type.rank}")
    b = attrs["blocksize"]
    if b < 1:
        raise info.error(f"blocksize {b} must be at least 1")
    split = x.shape[1] % (b * b) if info.op_type == "DepthToSpace" else x.shape[2] % b or x.shape[3] % b
    if split:
        what = "channels" if info.op_type == "DepthToSpace" else "height and width"
        raise info.error(
            f"blocksize {b} does not divide the input's {what} {list(x.shape)}", hint="fix the model"
        )
    return emit(g, info, info.op_type, info.inputs[:1], attrs)


@rule("Trilu")
def _trilu(g, info):
    attrs = {"upper": int(info.attrs.get("upper", 1))}
    k = info.inputs[1] if len(info.inputs) > 1 else None
    if k is not None and not k.is_const:
        return emit(g, info, "Trilu", info.inputs[:2], attrs)  # a run-time k is read on the GPU
    attrs["k"] = int(_scalar(k.data)) if k is not None and k.data.size else 0
    return emit(g, info, "Trilu", info.inputs[:1], attrs)


@rule("OneHot")
def _one_hot(g, info):
    depth = int(_scalar(info.const_input(1, "depth")))
    if depth < 1:
        raise info.error(f"depth {depth} is not positive")
    rank = info.inputs[0].type.rank + 1
    axis = _axis(info, int(info.attrs.get("axis", -1)), rank)
    idx = info.inputs[0]
    shape = tuple(idx.shape[:axis]) + (depth,) + tuple(idx.shape[axis:])
    values = info.inputs[2]
    out = TensorType(values.dtype, shape)
    return emit(g, info, "OneHot", [idx, values], {"axis": axis, "depth": depth}, [out])


@rule("EyeLike")
def _eye_like(g, info):
    if info.inputs[0].type.rank != 2:
        raise info.error("EyeLike needs a 2-D input")
    return emit(g, info, "EyeLike", info.inputs[:1], {"k": int(info.attrs.get("k", 0))})


@rule("ReverseSequence")
def _reverse_sequence(g, info):
    attrs = {
        "batch_axis": int(info.attrs.get("batch_axis", 1)),
        "time_axis": int(info.attrs.get("time_axis", 0)),
    }
    if sorted((attrs["batch_axis"], attrs["time_axis"])) != [0, 1]:
        raise info.error("batch_axis and time_axis must be 0 and 1")
    return emit(g, info, "ReverseSequence", info.inputs[:2], attrs)


# -- sampling ---------------------------------------------------------------------------------
_GRID_MODES = {
    "bilinear": "linear",
    "linear": "linear",
    "nearest": "nearest",
    "bicubic": "cubic",
    "cubic": "cubic",
}


@rule("GridSample")
def _grid_sample(g, info):
    mode = info.attrs.get("mode", "linear" if info.opset >= 20 else "bilinear")
    if mode not in _GRID_MODES:
        raise info.error(f"unknown mode {mode!r}")
    pad = info.attrs.get("padding_mode", "zeros")
    if pad not in ("zeros", "border", "reflection"):
        raise info.error(f"unknown padding_mode {pad!r}")
    x = info.inputs[0]
    if _GRID_MODES[mode] == "cubic" and x.type.rank != 4:
        raise info.error("cubic sampling is defined for 4-D inputs only", cls=UnsupportedError)
    attrs = {
        "mode": _GRID_MODES[mode],
        "padding_mode": pad,
        "align_corners": int(info.attrs.get("align_corners", 0)),
    }
    return emit(g, info, "GridSample", info.inputs[:2], attrs)


@rule("RoiAlign")
def _roi_align(g, info):
    x, rois, batch = info.inputs[:3]
    if x.type.rank != 4:
        raise info.error(f"X must be [N, C, H, W], got {x.type}")
    if rois.type.rank != 2 or rois.shape[1] != 4:
        raise info.error(f"rois must be [num_rois, 4] boxes (x1, y1, x2, y2), got {rois.type}")
    if batch.type.rank != 1 or batch.shape[0] != rois.shape[0]:
        raise info.error(f"batch_indices must be [{rois.shape[0]}] (one per roi), got {batch.type}")
    if x.type.numel == 0 and rois.shape[0] and x.shape[1]:
        raise info.error(f"X of shape {x.shape} holds no pixels to sample for {rois.shape[0]} rois")
    a = info.attrs
    mode = a.get("mode", "avg")
    if mode not in ("avg", "max"):
        raise info.error(f"unknown mode {mode!r}", hint="use 'avg' or 'max'")
    # Opset 10 had no coordinate_transformation_mode: its boxes were not shifted by half a pixel.
    transform = (
        a.get("coordinate_transformation_mode", "half_pixel") if info.opset >= 16 else "output_half_pixel"
    )
    if transform not in ("half_pixel", "output_half_pixel"):
        raise info.error(
            f"unknown coordinate_transformation_mode {transform!r}",
            hint="use 'half_pixel' or 'output_half_pixel'",
        )
    attrs = {
        "mode": mode,
        "coordinate_transformation_mode": transform,
        "output_height": int(a.get("output_height", 1)),
        "output_width": int(a.get("output_width", 1)),
        "sampling_ratio": int(a.get("sampling_ratio", 0)),
        "spatial_scale": float(a.get("spatial_scale", 1.0)),
    }
    if attrs["output_height"] < 1 or attrs["output_width"] < 1 or attrs["sampling_ratio"] < 0:
        raise info.error("output_height and output_width must be positive and sampling_ratio not negative")
    return emit(g, info, "RoiAlign", [x, rois, batch], attrs)


@rule("Col2Im")
def _col2im(g, info):
    image = _ints(info.const_input(1, "image_shape"))
    block = _ints(info.const_input(2, "block_shape"))
    nd = len(image)
    a = info.attrs
    attrs = {
        "image_shape": image,
        "block_shape": block,
        "dilations": _ints(a.get("dilations") or [1] * nd),
        "pads": _ints(a.get("pads") or [0] * (2 * nd)),
        "strides": _ints(a.get("strides") or [1] * nd),
    }
    x = info.inputs[0]
    blocks = [
        (image[i] + attrs["pads"][i] + attrs["pads"][i + nd] - attrs["dilations"][i] * (block[i] - 1) - 1)
        // attrs["strides"][i]
        + 1
        for i in range(nd)
    ]
    if x.type.rank != 3 or x.shape[1] % math.prod(block) or x.shape[2] != math.prod(blocks):
        raise info.error(f"input shape {x.shape} does not match blocks {block} over image {image}")
    out = TensorType(x.dtype, (x.shape[0], x.shape[1] // math.prod(block), *image))
    return emit(g, info, "Col2Im", [x], attrs, [out])


# -- resize -----------------------------------------------------------------------------------
_TRANSFORMS = (
    "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
    "tf_crop_and_resize", "tf_half_pixel_for_nn",
)  # fmt: skip
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@rule("Resize", "Upsample")
def _resize(g, info):
    x = info.inputs[0]
    rank = x.type.rank
    a = info.attrs
    mode = a.get("mode", "nearest")
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    if mode not in ("nearest", "linear", "cubic"):
        raise info.error(f"unknown mode {mode!r}")
    roi = sizes = None
    if info.op_type == "Upsample" or info.opset < 11:
        # Upsample and Resize-10: asymmetric coordinates, and nearest rounds down when
        # upsampling and up when downsampling (what onnxruntime does for these versions).
        scales = (
            a["scales"] if info.op_type == "Upsample" and info.opset < 9 else info.const_input(1, "scales")
        )
        scales = [float(s) for s in np.asarray(scales).reshape(-1)]
        transform, nearest = "asymmetric", ["floor" if s >= 1 else "ceil" for s in scales]
        attrs = {"cubic_coeff_a": -0.75, "exclude_outside": 0, "extrapolation_value": 0.0, "antialias": 0}
    else:
        transform = a.get("coordinate_transformation_mode", "half_pixel")
        # roi matters to tf_crop_and_resize alone; elsewhere it may even be a run-time input
        roi = _opt(info, 1, "roi") if transform == "tf_crop_and_resize" else None
        scales = _opt(info, 2, "scales")
        sizes = _opt(info, 3, "sizes") if len(info.inputs) > 3 else None
        nearest = [a.get("nearest_mode", "round_prefer_floor")] * rank
        attrs = {
            "cubic_coeff_a": float(a.get("cubic_coeff_a", -0.75)),
            "exclude_outside": int(a.get("exclude_outside", 0)),
            "extrapolation_value": float(a.get("extrapolation_value", 0.0)),
            "antialias": int(a.get("antialias", 0)),
        }
    if transform not in _TRANSFORMS:
        raise info.error(f"unknown coordinate_transformation_mode {transform!r}")
    if nearest[0] not in _NEAREST:
        raise info.error(f"unknown nearest_mode {nearest[0]!r}")
    axes = a.get("axes")
    axes = [_axis(info, d, rank) for d in _ints(axes)] if axes else list(range(rank))
    policy = a.get("keep_aspect_ratio_policy", "stretch")
    full_roi = [0.0] * rank + [1.0] * rank
    if roi is not None:
        roi = [float(r) for r in roi.reshape(-1)]
        if len(roi) != 2 * len(axes):
            raise info.error(f"roi has {len(roi)} values for {len(axes)} axes")
        for i, d in enumerate(axes):
            full_roi[d], full_roi[d + rank] = roi[i], roi[i + len(axes)]
    shape = list(x.shape)
    full_scales = [1.0] * rank
    symbolic_sizes = sizes is not None and any(
        isinstance(v, Expr) or not isinstance(x.shape[d], int) for v, d in zip(sizes.reshape(-1), axes)
    )
    if symbolic_sizes:
        # sizes over dims kept symbolic (a feature map resized to its skip connection's size,
        # read with Shape): the scale of such an axis, size / input size, is computed in the
        # kernel from the dims (None here; see lowering/resize.py)
        sizes = [simplify(v) if isinstance(v, Expr) else int(v) for v in sizes.reshape(-1)]
        if len(sizes) != len(axes):
            raise info.error(f"sizes has {len(sizes)} values for {len(axes)} axes")
        if policy != "stretch":
            raise info.error(
                f"keep_aspect_ratio_policy {policy!r} with sizes over dims kept symbolic",
                hint="bind the dims with --dim NAME=N",
            )
        for v, d in zip(sizes, axes):
            n = x.shape[d]
            if isinstance(v, Expr) or isinstance(n, Expr):
                full_scales[d], shape[d] = None, v
            else:
                full_scales[d], shape[d] = v / n, v
    elif sizes is not None:
        sizes = _ints(sizes)
        if len(sizes) != len(axes):
            raise info.error(f"sizes has {len(sizes)} values for {len(axes)} axes")
        ratios = [sizes[i] / x.shape[d] for i, d in enumerate(axes)]
        if policy in ("not_larger", "not_smaller"):
            s = min(ratios) if policy == "not_larger" else max(ratios)
            for d in axes:
                full_scales[d] = s
                shape[d] = int(s * x.shape[d] + 0.5)  # round half up, as the spec does
        elif policy == "stretch":
            for i, d in enumerate(axes):
                full_scales[d], shape[d] = ratios[i], sizes[i]
        else:
            raise info.error(f"unknown keep_aspect_ratio_policy {policy!r}")
    elif scales is not None:
        scales = [float(s) for s in np.asarray(scales).reshape(-1)]
        if len(scales) != len(axes):
            raise info.error(f"scales has {len(scales)} values for {len(axes)} axes")
        for s, d in zip(scales, axes):
            if s <= 0:
                raise info.error(f"scale {s} is not positive")
            full_scales[d], shape[d] = s, resized_dim(x.shape[d], s)
    else:
        raise info.error("neither scales nor sizes is given")
    if attrs["antialias"] and mode == "nearest":
        raise info.error("antialias applies to linear and cubic modes only")
    attrs.update(
        mode=mode,
        coordinate_transformation_mode=transform,
        nearest_mode=nearest,
        scales=full_scales,
        roi=full_roi,
    )
    return emit(g, info, "Resize", [x], attrs, [TensorType(x.dtype, tuple(shape))])

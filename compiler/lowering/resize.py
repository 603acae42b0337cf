"""Resampling: Resize (and Upsample), GridSample, RoiAlign, Col2Im.

Resize is separable and linear in its input, and every number that decides it (shapes,
scales, region of interest, mode) is known at compile time. So the compiler computes, per
resized axis and output position, the taps (source index, weight) on the host in float64,
exactly as the ONNX definition does, and the kernel only sums ``prod(weights) * x[taps]``.
One table serves every mode, coordinate transform, nearest rounding, cubic coefficient,
exclude_outside and antialias; nearest resizes become exact gathers (one tap, no float math).
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import DType, Op
from onnx2wgsl.ir.symbolic import smax

from ..elementwise_ops import f32
from . import LowerCtx, i32, is_symbolic, lowers, nested_loops, split_workgroup, u32, wgsl_type
from .builder import KernelBuilder, literal
from .indexing import View, contiguous_strides


# -- per-axis taps ----------------------------------------------------------------------------
def _source_coords(transform: str, out_len: int, in_len: int, scale: float, roi: tuple[float, float]):
    """Source coordinate of each output position (float64), and which fall outside the input
    (tf_crop_and_resize only). ``length_resized`` is scale * in_len, as ONNX defines it."""
    y = np.arange(out_len, dtype=np.float64)
    resized = scale * in_len
    outside = np.zeros(out_len, dtype=bool)
    if transform == "align_corners":
        x = np.zeros(out_len) if resized == 1 else y * (in_len - 1) / (resized - 1)
    elif transform == "asymmetric":
        x = y / scale
    elif transform == "pytorch_half_pixel":
        x = np.full(out_len, -0.5) if resized == 1 else (y + 0.5) / scale - 0.5
    elif transform == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif transform == "tf_half_pixel_for_nn":  # opset 11 only
        x = (y + 0.5) / scale
    elif transform == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / resized)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # tf_crop_and_resize
        lo, hi = roi
        if resized == 1:
            x = np.full(out_len, (hi - lo) * (in_len - 1) / 2)
        else:
            x = y * (hi - lo) * (in_len - 1) / (resized - 1)
        x = x + lo * (in_len - 1)
        outside = (x < 0) | (x > in_len - 1)
    return x, outside


def _keys(d: np.ndarray, A: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter A at distances d."""
    d = np.abs(d)
    near = ((A + 2) * d - (A + 3)) * d * d + 1
    far = ((A * d - 5 * A) * d + 8 * A) * d - 4 * A
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _coefficients(mode: str, ratio: np.ndarray, scale: float, a: dict, nearest: str) -> np.ndarray:
    """Filter weights [out, n] for taps at offsets start.. of each position (ratio in (0, 1])."""
    r = ratio[:, None]
    if mode == "nearest":
        up = {
            "round_prefer_floor": r > 0.5,
            "round_prefer_ceil": r >= 0.5,
            "floor": r >= 1,  # ratio 1 is an exact integer: its own pixel (the second tap)
            "ceil": np.ones_like(r, dtype=bool),
        }[nearest]
        up = up | (r >= 1)
        return np.concatenate([~up, up], axis=1).astype(np.float64)
    s = min(scale, 1.0) if a["antialias"] else 1.0
    if mode == "linear":
        start = math.floor(-1 / s) + 1
        taps = np.arange(start, 2 - start, dtype=np.float64)[None, :]
        w = np.clip(1 - np.abs((taps - r) * s), 0, 1)
    else:
        start = math.floor(-2 / s) + 1
        taps = np.arange(start, 2 - start, dtype=np.float64)[None, :]
        w = _keys((taps - r) * s, a["cubic_coeff_a"])
    if a["antialias"]:
        w = w / w.sum(axis=1, keepdims=True)
    return w


def axis_taps(op_attrs: dict, d: int, in_len: int, out_len: int):
    """(indices [out, T], weights [out, T], outside [out]) of one axis of a Resize."""
    a = op_attrs
    rank = len(a["scales"])
    x, outside = _source_coords(
        a["coordinate_transformation_mode"],
        out_len,
        in_len,
        a["scales"][d],
        (a["roi"][d], a["roi"][d + rank]),
    )
    base = np.floor(x)
    ratio = np.where(x == base, 1.0, x - base)  # prefer the pixel left of x: ratio in (0, 1]
    w = _coefficients(a["mode"], ratio, a["scales"][d], a, a["nearest_mode"][d])
    n = w.shape[1]
    # The n taps nearest x (ties to the smaller index), counted in an edge-padded frame.
    pad = -(-n // 2)
    xp = x + pad
    p = np.floor(xp)
    frac = xp - p
    if n % 2 == 0:
        first = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        first = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    idx = (p + first)[:, None].astype(np.int64) + np.arange(n)[None, :] - pad
    if a["exclude_outside"]:
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, in_len - 1)
    if a["mode"] == "nearest":  # one tap: the one with weight 1
        pick = np.argmax(w, axis=1)
        idx, w = idx[np.arange(out_len), pick][:, None], np.ones((out_len, 1))
    return idx, w, outside


@lowers("Resize", "Upsample")
def lower_resize(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    a = op.attrs
    ty = wgsl_type(y)
    exact = a["mode"] == "nearest"
    if ty != "f32" and not exact and y.dtype not in (DType.i8, DType.u8, DType.i16, DType.u16, DType.i32):
        raise ctx.error(f"{a['mode']} resize of {y.dtype.name} is not supported", hint="use a float input")
    tables, axes = [], []  # axes: (dim, taps, word offset in the table, any extrapolation)
    computed = {}  # dims kept symbolic that resize: their taps computed in the kernel
    at = 0
    for d, (n_in, n_out) in enumerate(zip(x.shape, y.shape)):
        if is_symbolic(n_in, n_out):
            if _keeps(a, d, n_in, n_out):
                continue  # a dim kept symbolic keeps its coordinate
            computed[d] = _computed_axis(ctx, a, d, n_in)
            axes.append((d, computed[d][0], None, False))
            continue
        idx, w, outside = axis_taps(a, d, n_in, n_out)
        if not outside.any() and idx.shape[1] == 1 and np.array_equal(idx[:, 0], np.arange(n_out)):
            continue  # an identity axis: read straight through
        idx = np.where(outside[:, None], -1, idx)
        words = np.stack([idx.astype(np.int32), w.astype(np.float32).view(np.int32)], axis=2)
        tables.append(words.reshape(-1))
        axes.append((d, idx.shape[1], at, bool(outside.any())))
        at += words.size
    # taps too many for one invocation (a wide antialiasing filter): a workgroup per output
    taps = [T for _, T, _, _ in axes]
    group = None if exact else split_workgroup(nested_loops(*taps), math.prod(taps))
    k = KernelBuilder(ctx, y.shape, group=group)
    X = k.reader(x)  # (x's element at an index, widened from f16 storage)
    xs = contiguous_strides(x.shape)
    resized = {d for d, *_ in axes}
    base = k.at(View(0, tuple(0 if d in resized else s for d, s in enumerate(xs))))
    inputs = [x]
    if not axes:  # every axis keeps its coordinate (a crop at most)
        k.store(X(base), y)
    else:
        TAB = None
        if tables:
            table = ctx.const(np.concatenate(tables), f"{y.name}.taps", dtype=DType.i32)
            inputs.append(table)
            TAB = k.read(table)
        k.add(f"let base = {base};")
        outside = []  # (an extrapolated point's taps read index -1: in a group kernel, clamped)
        for d, T, off, extrapolates in axes:
            if d in computed:
                k.add(f"let x{d} = {computed[d][1](k.c(d))};")
                continue
            k.add(f"let row{d} = {off}u + {k.c(d)} * {2 * T}u;")
            if extrapolates:  # (only on static axes: a symbolic one keeps its coordinate)
                value = literal(a["extrapolation_value"], ty)
                outside.append(f"if ({TAB}[row{d}] < 0i) {{ {k.store_at(y, 'i', value)} return; }}")
        if not group:
            k.add(*outside)
        if exact:
            addr = " + ".join(
                ["base"]
                + [
                    f"{computed[d][2]('0u')} * {u32(xs[d])}"
                    if d in computed
                    else f"u32({TAB}[row{d}]) * {u32(xs[d])}"
                    for d, *_ in axes
                ]
            )
            k.store(X(addr), y)
        else:
            weight = " * ".join(f"w{d}" for d, *_ in axes)
            addr = " + ".join(["base"] + [f"j{d}" for d, *_ in axes])
            value = X(addr) if ty == "f32" else f"f32({X(addr)})"

            def tap(d: int) -> list[str]:  # tap t<d> of axis d: its source offset and weight
                if d in computed:
                    return [
                        f"let j{d} = {computed[d][2](f't{d}')} * {u32(xs[d])};",
                        f"let w{d} = select(1.0f - (x{d} - floor(x{d})), x{d} - floor(x{d}), t{d} == 1u);",
                    ]
                index = f"{TAB}[row{d} + 2u * t{d}]"
                index = f"max({index}, 0i)" if group else index
                return [
                    f"let j{d} = u32({index}) * {u32(xs[d])};",
                    f"let w{d} = bitcast<f32>({TAB}[row{d} + 2u * t{d} + 1u]);",
                ]

            k.add("var acc = 0.0f;")
            if group:  # invocation lid takes every group-th point of the flattened tap grid
                k.add(f"for (var t = lid; t < {math.prod(taps)}u; t += {group}u) {{")
                inner = 1
                for d, T, _, _ in reversed(axes):
                    k.add(f"let t{d} = (t / {inner}u) % {T}u;", *tap(d))
                    inner *= T
                k.add(f"acc += {weight} * {value};", "}")
                k.tree([("acc", "f32")], ["red_acc[lid] += red_acc[lid + half];"])
                k.add(*outside)
            else:
                for d, T, _, _ in axes:
                    k.add(f"for (var t{d} = 0u; t{d} < {T}u; t{d}++) {{", *tap(d))
                k.add(f"acc += {weight} * {value};", *["}"] * len(axes))
            k.store(_to_storage("acc", y), y)
    ctx.kernel(inputs, [y], [d for d in [k.dispatch()] if d])


def _keeps(a: dict, d: int, n_in, n_out) -> bool:
    """Whether axis d maps each position to itself at every size: scale 1 reads the same pixel
    under every coordinate transform but tf_half_pixel_for_nn (half a pixel off) and
    tf_crop_and_resize over a roi other than (0, 1) (at a single pixel, pytorch_half_pixel's
    -0.5 reads only that pixel)."""
    rank = len(a["scales"])
    transform = a["coordinate_transformation_mode"]
    roi = (a["roi"][d], a["roi"][d + rank])
    return not (
        n_in != n_out
        or a["scales"][d] != 1.0
        or transform == "tf_half_pixel_for_nn"
        or (transform == "tf_crop_and_resize" and roi != (0.0, 1.0))
    )


# a nearest source coordinate's rounding, in f32 (ties as the ONNX definition breaks them)
_ROUND = {
    "round_prefer_floor": lambda x: f"ceil({x} - 0.5f)",
    "round_prefer_ceil": lambda x: f"floor({x} + 0.5f)",
    "floor": lambda x: f"floor({x})",
    "ceil": lambda x: f"ceil({x})",
}


def _computed_axis(ctx: LowerCtx, a: dict, d: int, n_in) -> tuple:
    """A resized axis over a dim kept symbolic: its taps cannot be tabled on the host, so the
    kernel computes the source coordinate in f32 from the output coordinate (nearest, or linear
    without antialiasing when shrinking). Returns (taps, the source coordinate from the output
    coordinate, tap t's source index (u32) from t)."""
    mode, transform, scale = a["mode"], a["coordinate_transformation_mode"], a["scales"][d]
    if (
        mode == "cubic"
        or (mode == "linear" and a["antialias"] and (scale is None or scale < 1))
        or transform == "tf_crop_and_resize"
        or (mode == "nearest" and a["nearest_mode"][d] not in _ROUND)
    ):
        raise ctx.error(
            f"Resize of the symbolic dim {n_in} (axis {d}, {mode}, {transform}): over dims kept symbolic "
            "a resized axis is nearest, or linear without antialiasing, and not tf_crop_and_resize",
            hint="bind the dim with --dim NAME=N",
        )
    n = f"f32({u32(n_in)})"
    # sizes over dims kept symbolic: the scale is output size / input size, in f32 as
    # onnxruntime computes it
    s = f32(scale) if scale is not None else f"(f32({u32(ctx.current.outputs[0].shape[d])}) / {n})"
    resized = f"({s} * {n})"

    def coord(y: str) -> str:
        yf = f"f32({y})"
        return {
            "asymmetric": f"{yf} / {s}",
            "half_pixel": f"({yf} + 0.5f) / {s} - 0.5f",
            "tf_half_pixel_for_nn": f"({yf} + 0.5f) / {s}",
            "pytorch_half_pixel": f"select(({yf} + 0.5f) / {s} - 0.5f, -0.5f, {resized} == 1.0f)",
            "align_corners": f"select({yf} * ({n} - 1.0f) / ({resized} - 1.0f), 0.0f, {resized} == 1.0f)",
            "half_pixel_symmetric": f"{n} / 2.0f * (1.0f - f32({u32(ctx.current.outputs[0].shape[d])}) / {resized}) "
            f"+ ({yf} + 0.5f) / {s} - 0.5f",
        }[transform]

    last = i32(smax(n_in, 1) - 1)
    if mode == "nearest":
        rnd = _ROUND[a["nearest_mode"][d]]
        return 1, coord, lambda t: f"u32(clamp(i32({rnd(f'x{d}')}), 0i, {last}))"
    return 2, coord, lambda t: f"u32(clamp(i32(floor(x{d})) + i32({t}), 0i, {last}))"


def _to_storage(expr: str, y) -> str:
    """An f32 result in y's storage type; integers round half to even and saturate."""
    ty = wgsl_type(y)
    if ty == "f32":
        return expr
    info = np.iinfo(y.dtype.numpy)
    lo, hi = max(int(info.min), -(2**31)), min(int(info.max), 2**31 - 1)
    return f"{ty}(clamp(round({expr}), {f32(lo)}, {f32(hi)}))"


# -- GridSample -------------------------------------------------------------------------------
_GS_REFLECT = """fn gs_reflect(x: f32, lo: f32, hi: f32) -> f32 {
  let span = hi - lo;
  if (span <= 0.0f) { return lo; }
  if (x < lo) {
    let dx = lo - x;
    let n = floor(dx / span);
    let r = dx - n * span;
    return select(hi - r, lo + r, u32(n) % 2u == 0u);
  }
  if (x > hi) {
    let dx = x - hi;
    let n = floor(dx / span);
    let r = dx - n * span;
    return select(lo + r, hi - r, u32(n) % 2u == 0u);
  }
  return x;
}"""
_GS_CUBIC = """fn gs_cubic(t: f32) -> vec4<f32> {
  let A = -0.75f;
  let a = t + 1.0f;
  let b = 1.0f - t;
  let c = 2.0f - t;
  return vec4<f32>(((A * a - 5.0f * A) * a + 8.0f * A) * a - 4.0f * A,
                   ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f,
                   ((A + 2.0f) * b - (A + 3.0f)) * b * b + 1.0f,
                   ((A * c - 5.0f * A) * c + 8.0f * A) * c - 4.0f * A);
}"""


def _size_f32(n, less: int = 0) -> str:
    """``n - less`` as an f32 in shader text (a literal, or for a dim kept symbolic converted
    from the dims uniform)."""
    return (
        f32(n - less)
        if isinstance(n, int)
        else (f"(f32({u32(n)}) - {f32(less)})" if less else f"f32({u32(n)})")
    )


def _gs_bounds(n, align: int) -> tuple[str, str]:
    """The f32 range a GridSample coordinate reflects into along an axis of n pixels."""
    if isinstance(n, int):
        lo, hi = (0.0, n - 1.0) if align else (-0.5, n - 0.5)
        return f32(lo), f32(hi)
    return (f32(0.0), f"(f32({u32(n)}) - 1.0f)") if align else (f32(-0.5), f"(f32({u32(n)}) - 0.5f)")


@lowers("GridSample")
def lower_grid_sample(ctx: LowerCtx, op: Op) -> None:
    """Sample x[n, c] at the grid's normalized points (last grid component = first spatial
    dim's partner reversed: grid[..., 0] is the innermost dim), any number of spatial dims."""
    x, grid = op.inputs[:2]
    y = op.outputs[0]
    mode, pad, align = op.attrs["mode"], op.attrs["padding_mode"], op.attrs["align_corners"]
    if wgsl_type(y) != "f32":
        raise ctx.error(f"GridSample of {y.dtype.name} is not supported", hint="use a float input")
    dims = tuple(x.shape[2:])
    nd = len(dims)
    xs, gs = contiguous_strides(x.shape), contiguous_strides(grid.shape)
    k = KernelBuilder(ctx, y.shape)
    X, G = k.read(x), k.read(grid)
    k.helper(_GS_REFLECT)
    gbase = k.at(View(0, (gs[0], 0) + gs[1:-1]))
    k.add(f"let g = {gbase};", f"let xb = {k.at(View(0, (xs[0], xs[1]) + (0,) * nd))};")
    for j, n in enumerate(dims):
        lo, hi = _gs_bounds(n, align)
        v = f"{G}[g + {nd - 1 - j}u]"
        if align:
            k.add(f"var x{j} = ({v} + 1.0f) * 0.5f * {_size_f32(n, 1)};")
        else:
            k.add(f"var x{j} = (({v} + 1.0f) * {_size_f32(n)} - 1.0f) * 0.5f;")
        if mode == "nearest":
            k.add(f"x{j} = round(x{j});")  # half to even
        if pad == "border" and mode != "cubic":
            # cubic clamps each tap instead, as onnxruntime and PyTorch do (onnx.reference
            # clamps the coordinate first, which moves the cubic's weights)
            k.add(f"x{j} = clamp(x{j}, 0.0f, {_size_f32(n, 1)});")
        elif pad == "reflection":
            k.add(f"x{j} = gs_reflect(x{j}, {lo}, {hi});")

    def fetch(taps: list[str]) -> tuple[str, str]:
        """(address, in-range condition) of integer tap coordinates (i32 expressions)."""
        terms, ok = [], []
        for j, (t, n) in enumerate(zip(taps, dims)):
            lo, hi = _gs_bounds(n, align)
            last = i32(n - 1 if isinstance(n, int) else smax(n, 1) - 1)
            if pad == "zeros":
                ok.append(f"{t} >= 0i && {t} < {i32(n)}")
                t = f"clamp({t}, 0i, {last})"
            elif pad == "border":
                t = f"clamp({t}, 0i, {last})"
            else:
                t = f"clamp(i32(gs_reflect(f32({t}), {lo}, {hi})), 0i, {last})"
            terms.append(f"u32({t}) * {u32(xs[2 + j])}")
        return "xb + " + " + ".join(terms), " && ".join(f"({c})" for c in ok) or "true"

    if mode == "nearest":
        addr, ok = fetch([f"i32(x{j})" for j in range(nd)])
        k.store(f"select(0.0f, {X}[{addr}], {ok})", y)
    else:
        n_taps = 2 if mode == "linear" else 4
        first = 0 if mode == "linear" else -1
        for j in range(nd):
            k.add(f"let f{j} = floor(x{j});", f"let b{j} = i32(f{j}) + {first}i;")
            if mode == "linear":
                k.add(f"let w{j} = vec2<f32>(1.0f - (x{j} - f{j}), x{j} - f{j});")
            else:
                k.helper(_GS_CUBIC)
                k.add(f"let w{j} = gs_cubic(x{j} - f{j});")
        k.add("var acc = 0.0f;")
        for j in range(nd):
            k.add(f"for (var t{j} = 0; t{j} < {n_taps}; t{j}++) {{")
        addr, ok = fetch([f"(b{j} + t{j})" for j in range(nd)])
        weight = " * ".join(f"w{j}[t{j}]" for j in range(nd))
        k.add(f"if ({ok}) {{ acc += {weight} * {X}[{addr}]; }}", *["}"] * nd)
        k.store("acc", y)
    ctx.kernel([x, grid], [y], [d for d in [k.dispatch()] if d])


# -- RoiAlign ---------------------------------------------------------------------------------
_ROI_CORNERS = """fn roi_corners(xb: u32, y_in: f32, x_in: f32) -> vec4<f32> {{
  // The four bilinear taps around (y, x), each already times its weight; a point more than
  // a pixel outside the map contributes nothing, and one up to a pixel outside is clamped.
  if (y_in < -1.0f || y_in > {Hf} || x_in < -1.0f || x_in > {Wf}) {{
    return vec4<f32>(0.0f);
  }}
  var y = max(y_in, 0.0f);
  var x = max(x_in, 0.0f);
  var y0 = u32(y);
  var x0 = u32(x);
  var y1 = y0 + 1u;
  var x1 = x0 + 1u;
  if (y0 >= {H1}u) {{
    y0 = {H1}u;
    y1 = {H1}u;
    y = f32(y0);
  }}
  if (x0 >= {W1}u) {{
    x0 = {W1}u;
    x1 = {W1}u;
    x = f32(x0);
  }}
  let ly = y - f32(y0);
  let lx = x - f32(x0);
  let hy = 1.0f - ly;
  let hx = 1.0f - lx;
  return vec4<f32>(
    hy * hx * {X}[xb + y0 * {W}u + x0], hy * lx * {X}[xb + y0 * {W}u + x1],
    ly * hx * {X}[xb + y1 * {W}u + x0], ly * lx * {X}[xb + y1 * {W}u + x1]);
}}"""


@lowers("RoiAlign")
def lower_roi_align(ctx: LowerCtx, op: Op) -> None:
    """Each output bin averages (or maxes) a grid of bilinear samples inside its roi's bin.
    The grid is sampling_ratio per side, or ceil(bin size) when it is 0: that depends on the
    roi, so the loops' bounds are computed per invocation. "max" takes the largest weighted
    tap (not the largest interpolated value), as onnx.reference and onnxruntime define it.
    A batch index outside [0, N) reads the nearest image (ONNX leaves it undefined). When a
    bin's grid may be too big for one invocation to loop over (a fixed ratio that large, or an
    adaptive grid over a roi as big as the map), each bin gets a workgroup sharing its samples;
    the bound assumes rois inside the feature map."""
    x, rois, batch = op.inputs[:3]
    y = op.outputs[0]
    a = op.attrs
    if wgsl_type(y) != "f32":
        raise ctx.error(f"RoiAlign of {y.dtype.name} is not supported", hint="use a float input")
    N, C, H, W = x.shape
    oh, ow, ratio = a["output_height"], a["output_width"], a["sampling_ratio"]
    half = a["coordinate_transformation_mode"] == "half_pixel"
    gh_max, gw_max = (ratio, ratio) if ratio > 0 else (math.ceil(H / oh) + 1, math.ceil(W / ow) + 1)
    group = split_workgroup(nested_loops(gh_max, gw_max), gh_max * gw_max)
    k = KernelBuilder(ctx, y.shape, group=group)
    X, B, Rs = k.read(x), k.read(batch), k.read(rois)
    k.helper(_ROI_CORNERS.format(X=X, H=H, W=W, H1=H - 1, W1=W - 1, Hf=f32(H), Wf=f32(W)))
    scale, shift = f32(a["spatial_scale"]), f32(0.5 if half else 0.0)
    k.add(
        f"let n = u32(clamp({B}[{k.c(0)}], 0i, {i32(N - 1 if isinstance(N, int) else smax(N, 1) - 1)}));",
        f"let xb = (n * {C}u + {k.c(1)}) * {H * W}u;",
        *[f"let r{j} = {Rs}[{k.c(0)} * 4u + {j}u] * {scale} - {shift};" for j in range(4)],
        "var rw = r2 - r0;",
        "var rh = r3 - r1;",
    )
    if not half:
        k.add("rw = max(rw, 1.0f);", "rh = max(rh, 1.0f);")  # malformed rois become 1x1
    k.add(f"let bh = rh / {f32(oh)};", f"let bw = rw / {f32(ow)};")
    if ratio > 0:
        k.add(f"let gh = {ratio}i;", f"let gw = {ratio}i;")
    else:
        k.add("let gh = max(i32(ceil(bh)), 0i);", "let gw = max(i32(ceil(bw)), 0i);")
    k.add(f"let ys = r1 + f32({k.c(2)}) * bh;", f"let xs = r0 + f32({k.c(3)}) * bw;")
    if group:
        # invocation lid takes every group-th sample of the bin's grid
        neg_inf = f32(-math.inf)
        k.add(
            f"var acc = {neg_inf if a['mode'] == 'max' else '0.0f'};",
            f"for (var s = lid; s < u32(gh * gw); s += {group}u) {{",
            "  let iy = i32(s) / gw;",
            "  let ix = i32(s) % gw;",
            "  let t = roi_corners(xb, ys + (f32(iy) + 0.5f) * bh / f32(gh), xs + (f32(ix) + 0.5f) * bw / f32(gw));",
        )
        if a["mode"] == "avg":
            k.add("  acc += t.x + t.y + t.z + t.w;", "}")
            k.tree([("acc", "f32")], ["red_acc[lid] += red_acc[lid + half];"])
            k.store("acc / f32(max(gh * gw, 1i))", y)
        else:
            k.add("  acc = max(acc, max(max(t.x, t.y), max(t.z, t.w)));", "}")
            k.tree([("acc", "f32")], ["red_acc[lid] = max(red_acc[lid], red_acc[lid + half]);"])
            k.store("select(acc, 0.0f, gh * gw == 0i)", y)  # an empty grid gives 0, as serially
        ctx.kernel([x, rois, batch], [y], [d for d in [k.dispatch()] if d])
        return
    k.add(
        "var acc = 0.0f;",
        "for (var iy = 0i; iy < gh; iy++) {",
        "  let yy = ys + (f32(iy) + 0.5f) * bh / f32(gh);",
        "  for (var ix = 0i; ix < gw; ix++) {",
        "    let t = roi_corners(xb, yy, xs + (f32(ix) + 0.5f) * bw / f32(gw));",
    )
    if a["mode"] == "avg":
        k.add("    acc += t.x + t.y + t.z + t.w;", "  }", "}")
        k.store("acc / f32(max(gh * gw, 1i))", y)
    else:
        k.add(
            "    let m = max(max(t.x, t.y), max(t.z, t.w));",
            "    acc = select(max(acc, m), m, iy == 0i && ix == 0i);",
            "  }",
            "}",
        )
        k.store("acc", y)
    ctx.kernel([x, rois, batch], [y], [d for d in [k.dispatch()] if d])


# -- Col2Im -----------------------------------------------------------------------------------
@lowers("Col2Im")
def lower_col2im(ctx: LowerCtx, op: Op) -> None:
    """Each image pixel sums the column entries of every block position that covers it
    (owner computes: no atomics, a fixed summation order); a workgroup per pixel when its
    block is too big for one invocation to loop over."""
    x, y = op.inputs[0], op.outputs[0]
    a = op.attrs
    image, block = a["image_shape"], a["block_shape"]
    nd = len(image)
    pads, strides, dil = a["pads"], a["strides"], a["dilations"]
    blocks = [
        (image[i] + pads[i] + pads[i + nd] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(nd)
    ]
    K = math.prod(block)
    ks, ls = contiguous_strides(block), contiguous_strides(blocks)
    xs = contiguous_strides(x.shape)
    ty = wgsl_type(y)
    group = split_workgroup(nested_loops(*block), K)
    k = KernelBuilder(ctx, y.shape, group=group)
    X = k.reader(x)  # (x's element at an index, widened from f16 storage)
    k.add(f"let xb = {k.c(0)} * {u32(xs[0])} + {k.c(1)} * {K * xs[1]}u;", f"var acc = {literal(0, ty)};")
    if group:  # invocation lid takes every group-th block position
        k.add(f"for (var kf = lid; kf < {K}u; kf += {group}u) {{")
    for j in range(nd):
        k.add(
            f"let k{j} = i32(kf / {ks[j]}u % {block[j]}u);"
            if group
            else f"for (var k{j} = 0i; k{j} < {block[j]}i; k{j}++) {{",
            f"let q{j} = i32({k.c(2 + j)}) + {pads[j]}i - k{j} * {dil[j]}i;",
            f"if (q{j} < 0i || q{j} % {strides[j]}i != 0i || q{j} / {strides[j]}i >= {blocks[j]}i) {{ continue; }}",
        )
    kk = " + ".join(f"u32(k{j}) * {ks[j]}u" for j in range(nd))
    ll = " + ".join(f"u32(q{j} / {strides[j]}i) * {ls[j]}u" for j in range(nd))
    k.add(f"acc += {X(f'xb + ({kk}) * {xs[1]}u + {ll}')};", *["}"] * (1 if group else nd))
    if group:
        k.tree([("acc", ty)], ["red_acc[lid] += red_acc[lid + half];"])
    k.store("acc", y)
    ctx.kernel([x], [y], [d for d in [k.dispatch()] if d])

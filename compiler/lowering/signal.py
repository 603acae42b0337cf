"""Signal processing: DFT and STFT as direct transforms, one invocation per output value.

Each output bin k sums x[n] * exp(-+2 pi i k n / N) over its samples n in f32: O(N) work per
bin, which is plenty for the lengths models use (spectrograms, small FFT layers). The
twiddle factors come from a table of cos/sin(2 pi j / N) computed on the host in float64,
indexed by k * n mod N kept in integers as n advances, so no angle ever loses precision
and no GPU's sin/cos accuracy matters. A signal too long for one invocation to loop over
(target.LOOP_BUDGET) gets a workgroup per bin, its invocations taking every 64th sample.
"""

from __future__ import annotations

import numpy as np

from onnx2wgsl.ir import Op, Value

from ..elementwise_ops import f32
from . import LowerCtx, lowers, split_workgroup, wgsl_type
from .builder import KernelBuilder
from .indexing import View, contiguous_strides


def _twiddles(ctx: LowerCtx, n: int, hint: str) -> Value:
    """[n, 2]: cos and sin of 2 pi j / n, from float64 (sin(pi) is 0 up to 1e-16)."""
    angle = 2.0 * np.pi * np.arange(n, dtype=np.float64) / n
    return ctx.const(np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32), hint)


_ACCUMULATE = {
    "forward": lambda n: ["  re += xr * c + xi * s;", "  im += xi * c - xr * s;"],  # x * exp(-i a)
    "inverse": lambda n: ["  re += xr * c - xi * s;", "  im += xi * c + xr * s;"],  # x * exp(+i a)
    # a one-sided spectrum's bins 1.. stand for themselves and their mirror images (conjugates);
    # bin 0 and bin N/2 are their own mirrors, and only their real parts count
    "irfft": lambda n: [f"  re += select(2.0f * (xr * c - xi * s), xr * c, n == 0u || 2u * n == {n}u);"],
}


def _transform(
    ctx: LowerCtx,
    x: Value,
    y: Value,
    inputs: list[Value],
    *,
    axis: int,
    base: View,
    stride: int,
    count: int,
    length: int,
    mode: str,
    window: Value | None = None,
) -> None:
    """y over its space less the complex dim; coordinate ``axis`` of that space is the output
    bin. Sample n of a bin's sum is x at ``base`` (an affine view of the space) + n * stride,
    for n below ``count`` (the rest of the N points is zero padding). ``mode``: forward (exp -i), inverse (exp +i,
    divided by N) or irfft (a one-sided spectrum's inverse: real, the bins mirrored)."""
    if wgsl_type(y) != "f32":
        raise ctx.error(f"{ctx.current.kind} of {y.dtype.name} is not supported", hint="use a float input")
    if count == 0:  # an empty signal padded to N points: all zeros, and x is never read
        zeros = KernelBuilder(ctx, y.shape)
        zeros.store("0.0f", y)
        ctx.kernel(inputs, [y], [zeros.dispatch()])
        return
    space = tuple(y.shape[:-1])
    cplx = x.shape[-1] == 2
    table = _twiddles(ctx, length, f"{y.name}.twiddles")
    group = split_workgroup(count)
    if group and length * group >= 2**32:  # k * lid would wrap: keep one invocation per bin
        group = None
    k = KernelBuilder(ctx, space, group=group)
    X, T, Y = k.read(x), k.read(table), k.write(y)
    kk = k.c(axis)
    weight = f" * {k.read(window)}[n]" if window is not None else ""
    first, step, advance = "0u", "n++", kk  # sample n and its twiddle t = k * n mod N
    if group:  # invocation lid takes every group-th sample
        first, step, advance = "lid", f"n += {group}u", f"{kk} * {group}u % {length}u"
    k.add(
        f"let b = {k.at(base)};",
        "var re = 0.0f;",
        "var im = 0.0f;",
        f"var t = {kk} * {first} % {length}u;  // k * n mod N" if group else "var t = 0u;  // k * n mod N",
        f"let dt = {advance};",
        f"for (var n = {first}; n < {count}u; {step}) {{",
        f"  let p = b + n * {stride}u;",
        f"  let xr = {X}[p]{weight};",
        f"  let xi = {X}[p + 1u]{weight};" if cplx else "  let xi = 0.0f;",
        f"  let c = {T}[2u * t];",
        f"  let s = {T}[2u * t + 1u];",
    )
    k.add(*_ACCUMULATE[mode](length))
    k.add("  t += dt;", f"  if (t >= {length}u) {{ t -= {length}u; }}", "}")
    if group:
        k.tree(
            [("re", "f32"), ("im", "f32")], [f"red_{n}[lid] += red_{n}[lid + half];" for n in ("re", "im")]
        )
    scale = "" if mode == "forward" else f" * {f32(1.0 / length)}"
    if mode == "irfft":
        k.add(f"{Y}[i] = re{scale};")
    else:
        k.add(f"{Y}[2u * i] = re{scale};", f"{Y}[2u * i + 1u] = im{scale};")
    ctx.kernel([*inputs, table], [y], [d for d in [k.dispatch()] if d])


@lowers("DFT")
def lower_dft(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    a, length, mode = op.attrs["axis"], op.attrs["length"], op.attrs["mode"]
    xs = contiguous_strides(x.shape)
    n = x.shape[a]
    used = min(n, length // 2 + 1) if mode == "irfft" else min(n, length)
    base = View(0, tuple(0 if d == a else s for d, s in enumerate(xs[:-1])))
    _transform(ctx, x, y, [x], axis=a, base=base, stride=xs[a], count=used, length=length, mode=mode)


@lowers("STFT")
def lower_stft(ctx: LowerCtx, op: Op) -> None:
    x, y = op.inputs[0], op.outputs[0]
    window = op.inputs[1] if op.attrs["has_window"] else None
    step, length = op.attrs["frame_step"], op.attrs["frame_length"]
    xs = contiguous_strides(x.shape)
    base = View(0, (xs[0], step * xs[1], 0))  # frame f of batch b starts at sample f * step
    _transform(
        ctx, x, y, list(op.inputs), axis=2, base=base, stride=xs[1], count=length, length=length,
        mode="forward", window=window,
    )  # fmt: skip

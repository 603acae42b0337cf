"""The elementwise op table: for each op, its WGSL expression and its numpy meaning.

One table serves lowering (WGSL text, fused or not) and constant folding (numpy), so the
two cannot drift apart. An entry's ``wgsl`` takes the argument expressions, the op's
attributes and the WGSL scalar type and returns an expression; helpers it calls are named
in ``helpers`` and emitted once per shader.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def f32(v: float) -> str:
    """A WGSL f32 literal for v (inf and nan through bitcasts; WGSL has no literals for them)."""
    v32 = np.float32(v)
    if math.isnan(v32):
        return "bitcast<f32>(0x7fc00000u)"
    if math.isinf(v32):
        return "bitcast<f32>(0x7f800000u)" if v32 > 0 else "bitcast<f32>(0xff800000u)"
    return f"{v32}f" if "e" in str(v32) or "." in str(v32) else f"{v32}.0f"


def i32(v: int) -> str:
    return f"{int(v)}i" if int(v) != -(2**31) else "i32(-2147483647i - 1i)"


@dataclass(frozen=True)
class Elementwise:
    """How one elementwise op computes: WGSL expression builder and numpy function."""

    wgsl: Callable[..., str]
    numpy: Callable[..., Any]
    helpers: tuple[str, ...] = ()
    types: tuple[str, ...] = ("f32",)  # WGSL storage types the expression is written for
    arity: tuple[int, int] = (1, 1)  # min, max inputs
    extra: dict[str, Any] = field(default_factory=dict)


HELPERS: dict[str, str] = {
    # Abramowitz-Stegun 7.1.26 has 1.5e-7 absolute error: within f32 rounding of erf.
    "erf": """fn erf_f32(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0f / (1.0f + 0.3275911f * a);
  let y = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t * exp(-a * a);
  return select(-y, y, x >= 0.0f);
}""",
    # WGSL's pow is undefined for a negative base; ONNX defines it for integral exponents.
    "pow": """fn pow_f32(a: f32, b: f32) -> f32 {
  if (b == 0.0f) { return 1.0f; }
  if (b == 1.0f) { return a; }
  if (b == 2.0f) { return a * a; }
  let r = pow(abs(a), b);
  if (a >= 0.0f) { return r; }
  if (fract(b) != 0.0f) { return bitcast<f32>(0x7fc00000u); }
  return select(r, -r, fract(b * 0.5f) != 0.0f);
}""",
    # tanh of a large argument overflows exp in some backends; it is +-1 in f32 past |x| = 9.
    "tanh": """fn tanh_f32(x: f32) -> f32 {
  return tanh(clamp(x, -10.0f, 10.0f));
}""",
}


def _sum(args, *_):
    return "(" + " + ".join(args) + ")"


def _fold(fn: str):
    def build(args, *_):
        out = args[0]
        for a in args[1:]:
            out = f"{fn}({out}, {a})"
        return out

    return build


def _variadic_np(fn):
    def run(*xs, **_):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return run


def _np_pow(a, b, **_):
    with np.errstate(all="ignore"):
        return np.power(a, b).astype(a.dtype)


def _np_erf(x, **_):
    from math import erf

    return np.vectorize(erf, otypes=[x.dtype])(x)


TABLE: dict[str, Elementwise] = {
    "Relu": Elementwise(lambda a, at, t: f"max({a[0]}, {'0.0f' if t == 'f32' else '0i'})", lambda x, **_: np.maximum(x, 0), types=("f32", "i32")),
    "Sigmoid": Elementwise(lambda a, at, t: f"(1.0f / (1.0f + exp(-{a[0]})))", lambda x, **_: 1 / (1 + np.exp(-x))),
    "Tanh": Elementwise(lambda a, at, t: f"tanh_f32({a[0]})", lambda x, **_: np.tanh(x), helpers=("tanh",)),
    "Exp": Elementwise(lambda a, at, t: f"exp({a[0]})", lambda x, **_: np.exp(x)),
    "Log": Elementwise(lambda a, at, t: f"log({a[0]})", lambda x, **_: np.log(x)),
    "Sqrt": Elementwise(lambda a, at, t: f"sqrt({a[0]})", lambda x, **_: np.sqrt(x)),
    "Abs": Elementwise(lambda a, at, t: f"abs({a[0]})", lambda x, **_: np.abs(x), types=("f32", "i32", "u32")),
    "Neg": Elementwise(lambda a, at, t: f"(-{a[0]})", lambda x, **_: -x, types=("f32", "i32")),
    "Erf": Elementwise(lambda a, at, t: f"erf_f32({a[0]})", _np_erf, helpers=("erf",)),
    "LeakyRelu": Elementwise(
        lambda a, at, t: f"select({f32(at['alpha'])} * {a[0]}, {a[0]}, {a[0]} >= 0.0f)",
        lambda x, alpha=0.01, **_: np.where(x >= 0, x, x * np.float32(alpha)),
    ),
    "Clip": Elementwise(
        lambda a, at, t: f"min(max({a[0]}, {a[1] if len(a) > 1 else f32(at['min'])}), {a[2] if len(a) > 2 else f32(at['max'])})",
        lambda x, lo=None, hi=None, min=-np.inf, max=np.inf, **_: np.minimum(np.maximum(x, min if lo is None else lo), max if hi is None else hi).astype(x.dtype),
        arity=(1, 3),
    ),
    "Add": Elementwise(lambda a, at, t: f"({a[0]} + {a[1]})", lambda x, y, **_: x + y, types=("f32", "i32", "u32"), arity=(2, 2)),
    "Sub": Elementwise(lambda a, at, t: f"({a[0]} - {a[1]})", lambda x, y, **_: x - y, types=("f32", "i32", "u32"), arity=(2, 2)),
    "Mul": Elementwise(lambda a, at, t: f"({a[0]} * {a[1]})", lambda x, y, **_: x * y, types=("f32", "i32", "u32"), arity=(2, 2)),
    "Div": Elementwise(lambda a, at, t: f"({a[0]} / {a[1]})", lambda x, y, **_: (x / y).astype(x.dtype), arity=(2, 2)),
    "Pow": Elementwise(lambda a, at, t: f"pow_f32({a[0]}, {a[1]})", _np_pow, helpers=("pow",), arity=(2, 2)),
    "Sum": Elementwise(_sum, _variadic_np(np.add), types=("f32", "i32", "u32"), arity=(1, 64)),
    "Max": Elementwise(_fold("max"), _variadic_np(np.maximum), types=("f32", "i32", "u32"), arity=(1, 64)),
    "Min": Elementwise(_fold("min"), _variadic_np(np.minimum), types=("f32", "i32", "u32"), arity=(1, 64)),
    "Mean": Elementwise(
        lambda a, at, t: f"({_sum(a)} * {f32(1.0 / len(a))})",
        lambda *xs, **_: (sum(xs) / len(xs)).astype(xs[0].dtype),
        arity=(1, 64),
    ),
    "Identity": Elementwise(lambda a, at, t: a[0], lambda x, **_: x, types=("f32", "i32", "u32")),
}  # fmt: skip

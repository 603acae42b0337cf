"""The elementwise op table: for each op, its WGSL expression and its numpy meaning.

One table serves lowering (WGSL text, fused or not) and constant folding (numpy), so the
two cannot drift apart. An entry's ``wgsl`` takes the argument expressions, the op's
attributes and the WGSL compute type of its operands and returns an expression; helpers it
calls are named in ``helpers`` and emitted once per shader.

dtypes. Every GPU tensor is stored as 32-bit scalars (``ir.types.storage_dtype``). An
expression computes in a *compute type*: ``f32`` for every float dtype, ``i32`` for signed
ints, ``u32`` for unsigned ints and ``bool`` for bool (stored as u32 0/1). ``load`` turns a
stored scalar into its compute value, ``store`` turns a result into what its output dtype
stores (bool -> 0/1, int8/int16/uint8/uint16 wrapped into their range like C and numpy), and
``convert`` is a value conversion between compute types with ONNX Cast semantics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnx2wgsl.ir import DType
from onnx2wgsl.ir.kernel import F32_BITS, slot
from onnx2wgsl.ir.types import storage_dtype


def f32_bits(bits: str) -> str:
    """The f32 with these bits (a u32 literal), bit-cast at run time: WGSL makes a constant
    expression that evaluates to inf or nan a shader-creation error (ir/kernel.py)."""
    return f"{slot(F32_BITS)}({bits})"


NAN, POS_INF, NEG_INF = f32_bits("0x7fc00000u"), f32_bits("0x7f800000u"), f32_bits("0xff800000u")


def f32(v: float) -> str:
    """A WGSL f32 literal for v (inf and nan through bitcasts; WGSL has no literals for them)."""
    v32 = np.float32(v)
    if math.isnan(v32):
        return NAN
    if math.isinf(v32):
        return POS_INF if v32 > 0 else NEG_INF
    return f"{v32}f" if "e" in str(v32) or "." in str(v32) else f"{v32}.0f"


def i32(v: int) -> str:
    return f"{int(v)}i" if int(v) != -(2**31) else "i32(-2147483647i - 1i)"


def u32(v: int) -> str:
    return f"{int(v)}u"


def literal(v: float | int | bool, t: str) -> str:
    """A WGSL literal of compute type ``t``."""
    if t == "f32":
        return f32(v)
    if t == "bool":
        return "true" if v else "false"
    return i32(v) if t == "i32" else u32(v)


# -- compute types, loads, stores and conversions ----------------------------------------------
FLOAT = ("f32",)
INT = ("i32", "u32")
SIGNED = ("f32", "i32")
NUM = ("f32", "i32", "u32")
BOOL = ("bool",)
ANY = NUM + BOOL


def compute_type(dt: DType) -> str:
    """The WGSL type a value of ``dt`` is computed in: f32, i32, u32 or bool."""
    if dt == DType.bool:
        return "bool"
    st = storage_dtype(dt)
    if st is None:
        raise ValueError(f"dtype {dt.name} has no GPU storage")
    return st.value


def load(expr: str, dt: DType) -> str:
    """A stored scalar of ``dt`` as its compute value."""
    return f"({expr} != 0u)" if dt == DType.bool else expr


# Results of narrow integer dtypes wrap into their range (as C casts and numpy do).
_NARROW = {
    DType.i8: "(({e} << 24u) >> 24u)", DType.i16: "(({e} << 16u) >> 16u)",
    DType.u8: "({e} & 0xffu)", DType.u16: "({e} & 0xffffu)",
    DType.i4: "(({e} << 28u) >> 28u)", DType.i2: "(({e} << 30u) >> 30u)",
    DType.u4: "({e} & 0xfu)", DType.u2: "({e} & 0x3u)",
}  # fmt: skip


def store(expr: str, dt: DType) -> str:
    """A compute value of ``dt`` as the scalar its storage holds."""
    if dt == DType.bool:
        return f"select(0u, 1u, {expr})"
    wrap = _NARROW.get(dt)
    return wrap.format(e=expr) if wrap else expr


def convert(expr: str, src: str, dst: str) -> str:
    """Value conversion between compute types, as ONNX Cast does it.

    float -> int truncates toward zero; NaN and values outside int32 become INT32_MIN (what
    C casts give on x86, and so numpy and onnxruntime); negative floats -> unsigned wrap
    through int32; anything -> bool is ``!= 0``; bool -> numbers is 0 or 1."""
    if src == dst:
        return expr
    if dst == "bool":
        return f"({expr} != {literal(0, src)})"
    if src == "bool":
        return f"select({literal(0, dst)}, {literal(1, dst)}, {expr})"
    if src == "f32" and dst == "i32":
        return f"f32_to_i32({expr})"
    if src == "f32" and dst == "u32":
        return f"f32_to_u32({expr})"
    if dst == "f32":
        return f"f32({expr})"
    return f"bitcast<{dst}>({expr})"  # i32 <-> u32: two's complement reinterpretation


def convert_helpers(src: str, dst: str) -> tuple[str, ...]:
    if src == "f32" and dst in INT:
        return ("f32_to_i32", "f32_to_u32") if dst == "u32" else ("f32_to_i32",)
    return ()


HELPERS: dict[str, str] = {
    # Abramowitz-Stegun 7.1.26 has 1.5e-7 absolute error: within f32 rounding of erf.
    "erf": """fn erf_f32(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0f / (1.0f + 0.3275911f * a);
  let y = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t * exp(-a * a);
  return select(-y, y, x >= 0.0f);
}""",
    # WGSL's pow is exp2(b * log2(a)): undefined for a < 0 and inexact for integral results.
    # Integral exponents multiply by squaring (exact where the result fits in f32's mantissa).
    "pow": """fn pow_f32(a: f32, b: f32) -> f32 {
  if (fract(b) == 0.0f && abs(b) <= 64.0f) {
    var r = 1.0f;
    var p = a;
    var e = u32(abs(b));
    loop {
      if (e == 0u) { break; }
      if ((e & 1u) == 1u) { r = r * p; }
      p = p * p;
      e = e >> 1u;
    }
    return select(r, 1.0f / r, b < 0.0f);
  }
  let r = exp(b * log_f32(abs(a)));
  if (a >= 0.0f || isnan_f32(a)) { return r; }
  return """
    + NAN
    + """;
}""",
    "pow_int": """fn pow_i32(a: i32, b: i32) -> i32 {
  if (b < 0) { return select(select(0i, select(1i, -1i, (b & 1) == 1), a == -1i), 1i, a == 1i); }
  var r = 1i;
  var p = a;
  var e = u32(b);
  loop {
    if (e == 0u) { break; }
    if ((e & 1u) == 1u) { r = r * p; }
    p = p * p;
    e = e >> 1u;
  }
  return r;
}
fn pow_u32(a: u32, b: u32) -> u32 {
  var r = 1u;
  var p = a;
  var e = b;
  loop {
    if (e == 0u) { break; }
    if ((e & 1u) == 1u) { r = r * p; }
    p = p * p;
    e = e >> 1u;
  }
  return r;
}""",
    # tanh through expm1: exact near 0 (where (e^2x - 1) / (e^2x + 1) cancels) and no
    # overflow for large |x| (it is +-1 in f32 past |x| = 9).
    "tanh": """fn tanh_f32(x: f32) -> f32 {
  if (isnan_f32(x)) { return x; }
  let e = expm1_f32(2.0f * clamp(x, -10.0f, 10.0f));
  return e / (e + 2.0f);
}""",
    # Bit tests: WGSL lets implementations assume that NaN and inf never occur, so
    # `x != x` may fold away; the bit patterns cannot.
    "isnan": """fn isnan_f32(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}""",
    "isinf": """fn isinf_f32(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}""",
    # Logarithms and exponentials that stay relatively exact near 0 and 1. WGSL's log may
    # be off by 2^-21 absolute near 1 (and is, on Mesa: 16% relative at 1 + 1e-7), and
    # exp(x) - 1 or e^x - e^-x cancel for small x; these are what the ONNX reference
    # computes in double precision. log: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
    # log1p(m - 1) by the atanh series 2 * (s + s^3/3 + ... + s^11/11), s = f / (2 + f),
    # |s| <= 0.172 (truncation below 2e-10 relative).
    "log1p_series": """fn log1p_series(f: f32) -> f32 {
  let s = f / (2.0f + f);
  let s2 = s * s;
  return 2.0f * s + 2.0f * s * s2 * (0.33333333f + s2 * (0.2f + s2 * (0.14285714f + s2 * (0.11111111f + s2 * 0.09090909f))));
}""",
    "log": """fn log_f32(x: f32) -> f32 {
  if (!(x > 0.0f)) { return select("""
    + NAN
    + """, """
    + NEG_INF
    + """, x == 0.0f); }
  var b = bitcast<u32>(x);
  if (b >= 0x7f800000u) { return x; }
  var e = i32(b >> 23u) - 127;
  if (e == -127) {
    b = bitcast<u32>(x * 8388608.0f);
    e = i32(b >> 23u) - 150;
  }
  var m = bitcast<f32>((b & 0x007fffffu) | 0x3f800000u);
  if (m > 1.4142135f) {
    m = m * 0.5f;
    e = e + 1;
  }
  return f32(e) * 0.6931471805599453f + log1p_series(m - 1.0f);
}""",
    "log1p": """fn log1p_f32(u: f32) -> f32 {
  if (u > -0.29289323f && u < 0.41421356f) { return log1p_series(u); }
  return log_f32(1.0f + u);
}""",
    # exp(x) - 1: the Taylor series to x^9/9! for |x| < 1/2 (truncation below 6e-10 relative).
    "expm1": """fn expm1_f32(x: f32) -> f32 {
  if (abs(x) < 0.5f) {
    return x * (1.0f + x * 0.5f * (1.0f + x * 0.33333333f * (1.0f + x * 0.25f * (1.0f + x * 0.2f * (1.0f + x * 0.16666667f * (1.0f + x * 0.14285714f * (1.0f + x * 0.125f * (1.0f + x * 0.11111111f))))))));
  }
  return exp(x) - 1.0f;
}""",
    "sinh": """fn sinh_f32(x: f32) -> f32 {
  return 0.5f * (expm1_f32(x) - expm1_f32(-x));
}""",
    "asinh": """fn asinh_f32(x: f32) -> f32 {
  let a = abs(x);
  var r: f32;
  if (a > 4096.0f) {
    r = log_f32(a) + 0.6931471805599453f;
  } else {
    r = log1p_f32(a + a * a / (1.0f + sqrt(1.0f + a * a)));
  }
  return select(r, -r, x < 0.0f);
}""",
    "acosh": """fn acosh_f32(x: f32) -> f32 {
  if (x > 4096.0f) { return log_f32(x) + 0.6931471805599453f; }
  let t = x - 1.0f;
  return log1p_f32(t + sqrt(t * (2.0f + t)));
}""",
    "atanh": """fn atanh_f32(x: f32) -> f32 {
  let a = abs(x);
  let r = 0.5f * log1p_f32(2.0f * a / (1.0f - a));
  return select(r, -r, x < 0.0f);
}""",
    # atan: reduced to |z| <= tan(pi/8) by atan(a) = pi/4 + atan((a-1)/(a+1)) and
    # pi/2 - atan(1/a), then its Taylor series to z^15 (truncation below 5e-8 relative).
    # asin and acos through the half-angle identities, which need no other approximation.
    "atan": """fn atan_f32(x: f32) -> f32 {
  let a = abs(x);
  var base = 0.0f;
  var z = a;
  if (a > 2.4142135f) {
    base = 1.5707963267948966f;
    z = -1.0f / a;
  } else if (a > 0.41421356f) {
    base = 0.7853981633974483f;
    z = (a - 1.0f) / (a + 1.0f);
  }
  let z2 = z * z;
  let p = 1.0f - z2 * (0.33333333f - z2 * (0.2f - z2 * (0.14285714f - z2 * (0.11111111f - z2 * (0.09090909f - z2 * (0.07692308f - z2 * 0.06666667f))))));
  let r = base + z * p;
  return select(r, -r, x < 0.0f);
}""",
    "asin": """fn asin_f32(x: f32) -> f32 {
  return 2.0f * atan_f32(x / (1.0f + sqrt((1.0f - x) * (1.0f + x))));
}""",
    "acos": """fn acos_f32(x: f32) -> f32 {
  return 2.0f * atan_f32(sqrt((1.0f - x) / (1.0f + x)));
}""",
    "softplus": """fn softplus_f32(x: f32) -> f32 {
  return max(x, 0.0f) + log1p_f32(exp(-abs(x)));
}""",
    # numpy's float -> int32 conversion on x86: truncation; NaN and out-of-range -> INT32_MIN.
    "f32_to_i32": """fn f32_to_i32(x: f32) -> i32 {
  if (abs(x) < 2147483648.0f) { return i32(x); }
  return i32(-2147483647i - 1i);
}""",
    # float -> uint32 goes through int64 in C and numpy: negatives wrap, NaN -> 0.
    "f32_to_u32": """fn f32_to_u32(x: f32) -> u32 {
  if (x >= 0.0f) { return u32(min(x, 4294967040.0f)); }
  if (x > -2147483648.0f) { return bitcast<u32>(i32(x)); }
  return 0u;
}""",
    # C fmod (sign of the dividend) and numpy mod (sign of the divisor) on f32.
    "fmod": """fn fmod_f32(a: f32, b: f32) -> f32 {
  if (isinf_f32(b) && !isinf_f32(a) && !isnan_f32(a)) { return a; }
  return a - b * trunc(a / b);
}""",
    "mod": """fn mod_f32(a: f32, b: f32) -> f32 {
  var r = fmod_f32(a, b);
  if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) { r = r + b; }
  if (r == 0.0f) { r = bitcast<f32>(bitcast<u32>(b) & 0x80000000u); }
  return r;
}""",
    "mod_int": """fn mod_i32(a: i32, b: i32) -> i32 {
  if (b == 0i) { return 0i; }
  var r = a % b;
  if (r != 0i && ((r < 0i) != (b < 0i))) { r = r + b; }
  return r;
}""",
    # Rounding to float16 / bfloat16 precision (round to nearest even), for Cast to them.
    "round_f16": """fn round_f16(x: f32) -> f32 {
  if (isnan_f32(x)) { return x; }
  let a = abs(x);
  var r: f32;
  if (a < 6.103515625e-05f) {
    r = round(a * 16777216.0f) / 16777216.0f;
  } else {
    let b = bitcast<u32>(a);
    r = bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
  }
  if (r > 65504.0f) { r = """
    + POS_INF
    + """; }
  return select(r, -r, x < 0.0f);
}""",
    # Rounding to a float format with m mantissa bits, smallest normal exponent emin and
    # largest finite value maxv (float8 and float4 types), to nearest even; results past
    # maxv (and infinities) become ``overflow``: maxv when saturating, else inf or NaN.
    "round_small_float": """fn round_small_float(x: f32, m: i32, emin: i32, maxv: f32, overflow: f32) -> f32 {
  if (isnan_f32(x)) { return x; }
  let a = abs(x);
  var r = overflow;
  if (!isinf_f32(a)) {
    let e = max(i32(bitcast<u32>(a) >> 23u) - 127, emin);
    let q = bitcast<f32>(u32(e - m + 127) << 23u);
    r = round(a / q) * q;
    if (r > maxv) { r = overflow; }
  }
  return select(r, -r, x < 0.0f);
}""",
    # float8e8m0 holds 2^(k - 127), k in 0..254 (255 is NaN): the f32 exponent field, rounded
    # by round_mode (0 up, 1 down, 2 nearest) and saturated at 2^127 unless ``sat`` is false.
    "round_e8m0": """fn round_e8m0(x: f32, mode: u32, sat: bool) -> f32 {
  let b = bitcast<u32>(x);
  var k = (b >> 23u) & 0xffu;
  if (k == 0xffu) { return """
    + NAN
    + """; }
  var up = false;
  if (mode == 0u) {
    up = (b & 0x7fffffu) != 0u;
  } else if (mode == 2u) {
    up = (b & 0x400000u) != 0u && ((b & 0x3fffffu) != 0u || k > 0u);
  }
  if (up && !(sat && k == 0xfeu)) { k = k + 1u; }
  if (k == 0xffu) { return """
    + NAN
    + """; }
  if (k == 0u) { return """
    + f32_bits("0x00400000u")
    + """; }
  return bitcast<f32>(k << 23u);
}""",
    # float16 bit patterns of f32-widened float16 values (exact: they were float16), and back
    "f16_bits": """fn f32_to_f16_bits(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  let sign = (b >> 16u) & 0x8000u;
  let e = i32((b >> 23u) & 0xffu) - 127;
  let m = b & 0x7fffffu;
  if (e == 128) { return sign | 0x7c00u | select(0u, 0x200u | (m >> 13u), m != 0u); }
  if (e >= -14) { return sign | (u32(e + 15) << 10u) | (m >> 13u); }
  if (e < -24) { return sign; }
  return sign | ((m | 0x800000u) >> u32(-e - 1));
}
fn f16_bits_to_f32(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0x1fu) { return bitcast<f32>(sign | 0x7f800000u | (m << 13u)); }
  if (e == 0u) {
    let v = f32(m) * 5.9604644775390625e-08f;
    return select(v, -v, sign != 0u);
  }
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}""",
    "round_bf16": """fn round_bf16(x: f32) -> f32 {
  if (isnan_f32(x)) { return x; }
  let b = bitcast<u32>(x);
  return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}""",
}

# Helpers that call other helpers (emitted before them).
HELPER_DEPS: dict[str, tuple[str, ...]] = {
    "tanh": ("expm1", "isnan"),
    "log": ("log1p_series",),
    "log1p": ("log1p_series", "log"),
    "sinh": ("expm1",),
    "asinh": ("log1p",),
    "acosh": ("log1p",),
    "atanh": ("log1p",),
    "asin": ("atan",),
    "acos": ("atan",),
    "pow": ("log", "isnan"),
    "softplus": ("log1p",),
    "fmod": ("isinf", "isnan"),
    "mod": ("fmod",),
    "round_f16": ("isnan",),
    "round_small_float": ("isnan", "isinf"),
    "round_bf16": ("isnan",),
}


def helper_closure(names) -> list[str]:
    """Helper names with their dependencies, dependencies first, each once, in a stable order."""
    out: list[str] = []

    def add(n: str) -> None:
        for d in HELPER_DEPS.get(n, ()):
            add(d)
        if n not in out:
            out.append(n)

    for n in names:
        add(n)
    return out


def helper_code(*names: str) -> list[str]:
    """The WGSL of helpers ``names`` and everything they call, ready to paste into a shader."""
    return [HELPERS[h] for h in helper_closure(names)]


# -- operand typing ----------------------------------------------------------------------------
Signature = Callable[[list, DType, dict], tuple[list, str, str]]


def same_types(dts: list, out: DType, attrs: dict) -> tuple[list, str, str]:
    """Every operand in one compute type (ONNX's single type variable T); result in it too."""
    types = {compute_type(d) for d in dts if d is not None}
    if len(types) != 1:
        raise TypeError(f"operands have mixed types {sorted(types)}")
    (t,) = types
    return [None if d is None else t for d in dts], t, t


def _predicate(dts, out, attrs):
    args, t, _ = same_types(dts, out, attrs)
    return args, t, "bool"


def _where(dts, out, attrs):
    args, t, _ = same_types(dts[1:], out, attrs)
    return ["bool", *args], t, t


def _pow(dts, out, attrs):
    base, expo = compute_type(dts[0]), compute_type(dts[1])
    if base == "f32" or expo == "f32":  # float on either side: compute in f32, truncate for int bases
        return ["f32", "f32"], "f32", "f32"
    return [base, base], base, base


def _as_float(dts, out, attrs):
    """Ops defined by float formulas but typed for ints too: compute in f32, then convert back."""
    return ["f32" if d is not None else None for d in dts], "f32", "f32"


def _first_type(dts, out, attrs):
    """The first operand's type; the others (bounds, slopes) are converted to it."""
    t = compute_type(dts[0])
    return [None if d is None else t for d in dts], t, t


@dataclass(frozen=True)
class Elementwise:
    """How one elementwise op computes: WGSL expression builder and numpy function.

    ``signature`` maps the operands' dtypes (None for an omitted optional input), the output
    dtype and the attributes to (the compute type each operand is converted to, the compute
    type ``t`` handed to ``wgsl``, the compute type of the expression's result)."""

    wgsl: Callable[..., str]
    numpy: Callable[..., Any]
    helpers: tuple[str, ...] = ()
    types: tuple[str, ...] = FLOAT  # compute types the expression is written for
    arity: tuple[int, int] = (1, 1)  # min, max inputs
    extra: dict[str, Any] = field(default_factory=dict)
    signature: Signature = same_types
    helpers_for: Callable[[str], tuple[str, ...]] | None = None  # helpers that depend on t

    def helpers_of(self, t: str) -> tuple[str, ...]:
        return self.helpers + (self.helpers_for(t) if self.helpers_for else ())


# -- numpy meanings ------------------------------------------------------------------------------
def _variadic_np(fn):
    def run(*xs, **_):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return run


def _np_pow(a, b, **_):
    with np.errstate(all="ignore"):
        if a.dtype.kind in "iu" and b.dtype.kind in "iu":
            return np.power(a.astype(np.int64), np.maximum(b, 0).astype(np.int64)).astype(a.dtype)
        return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


def _np_erf(x, **_):
    from math import erf

    return np.vectorize(erf, otypes=[x.dtype])(x)


def _np_div(a, b, **_):
    if a.dtype.kind in "iu":
        with np.errstate(all="ignore"):
            q = np.trunc(a.astype(np.float64) / b.astype(np.float64))
        return q.astype(a.dtype)
    return (a / b).astype(a.dtype)


def _np_mod(a, b, fmod=0, **_):
    with np.errstate(all="ignore"):
        return (np.fmod(a, b) if fmod else np.mod(a, b)).astype(a.dtype)


def _np_clip(x, lo=None, hi=None, min=-np.inf, max=np.inf, **_):
    lo = min if lo is None else lo
    hi = max if hi is None else hi
    return np.minimum(np.maximum(x, lo), hi).astype(x.dtype)


def _np_gelu(x, approximate="none", **_):
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        y = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))
    else:
        y = 0.5 * x64 * (1 + _np_erf(x64 / np.sqrt(2)))
    return y.astype(x.dtype)


def _np_softplus(x, **_):
    return np.logaddexp(0, x.astype(np.float64)).astype(x.dtype)


def _np_shrink(x, bias=0.0, lambd=0.5, **_):
    return np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0)).astype(x.dtype)


def _np_isinf(x, detect_negative=1, detect_positive=1, **_):
    return (
        np.isinf(x) & ((x > 0) if not detect_negative else True) & ((x < 0) if not detect_positive else True)
    )


def _np_bitshift(a, b, direction="LEFT", **_):
    return (np.left_shift(a, b) if direction == "LEFT" else np.right_shift(a, b)).astype(a.dtype)


# -- WGSL builders ---------------------------------------------------------------------------------
def _unary(fn: str):
    return lambda a, at, t: f"{fn}({a[0]})"


def _binop(sym: str):
    return lambda a, at, t: f"({a[0]} {sym} {a[1]})"


def _sum(a, at, t):
    return "(" + " + ".join(a) + ")"


def _minmax(fn: str):
    """Max/Min of any arity; for floats a NaN operand gives NaN (as numpy and onnxruntime do)."""

    def build(a, at, t):
        out = a[0]
        for b in a[1:]:
            if t == "f32":
                out = f"select({fn}({out}, {b}), {out} + {b}, isnan_f32({out}) || isnan_f32({b}))"
            else:
                out = f"{fn}({out}, {b})"
        return out

    return build


def _clip(a, at, t):
    x = a[0]
    lo = a[1] if len(a) > 1 and a[1] else _bound(at.get("min"), t, -1)
    hi = a[2] if len(a) > 2 and a[2] else _bound(at.get("max"), t, 1)
    if lo is not None:
        x = f"max({x}, {lo})"
    if hi is not None:
        x = f"min({x}, {hi})"
    return _keep_nan(x, a[0], t)


def _bound(v, t: str, side: int) -> str | None:
    if v is None or (isinstance(v, float) and math.isinf(v) and (v > 0) == (side > 0)):
        return None  # no bound on this side
    if t == "f32":
        return f32(v)
    info = np.iinfo(np.int32 if t == "i32" else np.uint32)
    return literal(int(np.clip(v, info.min, info.max)), t)


def _mod(a, at, t):
    if t == "f32":
        return f"{'fmod' if at.get('fmod', 0) else 'mod'}_f32({a[0]}, {a[1]})"
    if at.get("fmod", 0) or t == "u32":
        return f"select({a[0]} % {a[1]}, {literal(0, t)}, {a[1]} == {literal(0, t)})"
    return f"mod_i32({a[0]}, {a[1]})"


def _pow_wgsl(a, at, t):
    return {"f32": "pow_f32", "i32": "pow_i32", "u32": "pow_u32"}[t] + f"({a[0]}, {a[1]})"


def _sign(a, at, t):
    if t == "u32":
        return f"select(0u, 1u, {a[0]} > 0u)"
    if t == "f32":
        return f"select(sign({a[0]}), {a[0]}, isnan_f32({a[0]}))"
    return f"sign({a[0]})"


def _isinf(a, at, t):
    x = a[0]
    test = f"isinf_f32({x})"
    if not at.get("detect_negative", 1):
        test += f" && {x} > 0.0f"
    if not at.get("detect_positive", 1):
        test += f" && {x} < 0.0f"
    return f"({test})"


def _keep_nan(expr: str, x: str, t: str) -> str:
    """``expr`` of ``x``, or ``x`` when it is a NaN: max, min and clamp may drop a NaN operand,
    where onnxruntime and onnx's reference (Relu, Clip, HardSigmoid, Celu) give NaN."""
    return f"select({expr}, {x}, isnan_f32({x}))" if t == "f32" else expr


def _relu(a, at, t):
    return _keep_nan(f"max({a[0]}, {literal(0, t)})", a[0], t)


def _shift(a, at, t):
    """Shifts by the bit width or more (or by a negative amount) give 0, or -1 for a right
    shift of a negative value. Narrow types are sign/zero-extended in 32 bits and wrapped by
    their store, so shifting the 32-bit word is exact for them too."""
    x, n = a[0], (a[1] if t == "u32" else f"bitcast<u32>({a[1]})")
    if at.get("direction", "LEFT") == "LEFT":
        return f"select({literal(0, t)}, {x} << {n}, {n} < 32u)"
    if t == "i32":
        return f"({x} >> min({n}, 31u))"  # arithmetic: the sign fills in
    return f"select(0u, {x} >> {n}, {n} < 32u)"


def _gelu(a, at, t):
    x = a[0]
    if at.get("approximate", "none") == "tanh":
        return f"(0.5f * {x} * (1.0f + tanh_f32(0.7978845608f * ({x} + 0.044715f * {x} * {x} * {x}))))"
    return f"(0.5f * {x} * (1.0f + erf_f32({x} * 0.7071067811865476f)))"


def _shrink(a, at, t):
    x, lam, bias = a[0], f32(at.get("lambd", 0.5)), f32(at.get("bias", 0.0))
    return f"select(select(0.0f, {x} - {bias}, {x} > {lam}), {x} + {bias}, {x} < -{lam})"


def _a(at, key, default):
    return f32(at.get(key, default))


_F = np.float32
TABLE: dict[str, Elementwise] = {
    # -- unary math ---------------------------------------------------------------------------
    "Relu": Elementwise(_relu, lambda x, **_: np.maximum(x, 0).astype(x.dtype), types=SIGNED, helpers=("isnan",)),
    "Sigmoid": Elementwise(lambda a, at, t: f"(1.0f / (1.0f + exp(-{a[0]})))", lambda x, **_: 1 / (1 + np.exp(-x))),
    "Tanh": Elementwise(lambda a, at, t: f"tanh_f32({a[0]})", lambda x, **_: np.tanh(x), helpers=("tanh",)),
    "Exp": Elementwise(_unary("exp"), lambda x, **_: np.exp(x)),
    "Log": Elementwise(_unary("log_f32"), lambda x, **_: np.log(x), helpers=("log",)),
    "Sqrt": Elementwise(_unary("sqrt"), lambda x, **_: np.sqrt(x)),
    "Sin": Elementwise(_unary("sin"), lambda x, **_: np.sin(x)),
    "Cos": Elementwise(_unary("cos"), lambda x, **_: np.cos(x)),
    "Tan": Elementwise(_unary("tan"), lambda x, **_: np.tan(x)),
    "Asin": Elementwise(_unary("asin_f32"), lambda x, **_: np.arcsin(x), helpers=("asin",)),
    "Acos": Elementwise(_unary("acos_f32"), lambda x, **_: np.arccos(x), helpers=("acos",)),
    "Atan": Elementwise(_unary("atan_f32"), lambda x, **_: np.arctan(x), helpers=("atan",)),
    "Sinh": Elementwise(_unary("sinh_f32"), lambda x, **_: np.sinh(x), helpers=("sinh",)),
    "Cosh": Elementwise(_unary("cosh"), lambda x, **_: np.cosh(x)),
    "Asinh": Elementwise(_unary("asinh_f32"), lambda x, **_: np.arcsinh(x), helpers=("asinh",)),
    "Acosh": Elementwise(_unary("acosh_f32"), lambda x, **_: np.arccosh(x), helpers=("acosh",)),
    "Atanh": Elementwise(_unary("atanh_f32"), lambda x, **_: np.arctanh(x), helpers=("atanh",)),
    "Floor": Elementwise(_unary("floor"), lambda x, **_: np.floor(x)),
    "Ceil": Elementwise(_unary("ceil"), lambda x, **_: np.ceil(x)),
    "Round": Elementwise(_unary("round"), lambda x, **_: np.round(x)),  # both round half to even
    "Reciprocal": Elementwise(lambda a, at, t: f"(1.0f / {a[0]})", lambda x, **_: (1 / x).astype(x.dtype)),
    "Sign": Elementwise(_sign, lambda x, **_: np.sign(x), types=NUM, helpers=("isnan",)),
    "Abs": Elementwise(_unary("abs"), lambda x, **_: np.abs(x), types=NUM),
    "Neg": Elementwise(lambda a, at, t: f"(-{a[0]})", lambda x, **_: -x, types=SIGNED),
    "Erf": Elementwise(lambda a, at, t: f"erf_f32({a[0]})", _np_erf, helpers=("erf",)),
    "IsNaN": Elementwise(lambda a, at, t: f"isnan_f32({a[0]})", lambda x, **_: np.isnan(x), helpers=("isnan",), signature=_predicate),
    "IsInf": Elementwise(_isinf, _np_isinf, helpers=("isinf",), signature=_predicate),
    # -- activations -------------------------------------------------------------------------
    "LeakyRelu": Elementwise(
        lambda a, at, t: f"select({_a(at, 'alpha', 0.01)} * {a[0]}, {a[0]}, {a[0]} >= 0.0f)",
        lambda x, alpha=0.01, **_: np.where(x >= 0, x, x * _F(alpha)),
    ),
    "Elu": Elementwise(
        lambda a, at, t: f"select({_a(at, 'alpha', 1.0)} * expm1_f32({a[0]}), {a[0]}, {a[0]} >= 0.0f)",
        lambda x, alpha=1.0, **_: np.where(x >= 0, x, _F(alpha) * np.expm1(x)).astype(x.dtype),
        helpers=("expm1",),
    ),
    "Selu": Elementwise(
        lambda a, at, t: f"({_a(at, 'gamma', 1.0507009873554805)} * select({_a(at, 'alpha', 1.6732632423543772)} * expm1_f32({a[0]}), {a[0]}, {a[0]} > 0.0f))",
        lambda x, alpha=1.6732632423543772, gamma=1.0507009873554805, **_: (
            _F(gamma) * np.where(x > 0, x, _F(alpha) * np.expm1(x))).astype(x.dtype),
        helpers=("expm1",),
    ),
    "Celu": Elementwise(
        lambda a, at, t: _keep_nan(f"(max({a[0]}, 0.0f) + min(0.0f, {_a(at, 'alpha', 1.0)} * expm1_f32({a[0]} / {_a(at, 'alpha', 1.0)})))", a[0], t),
        lambda x, alpha=1.0, **_: (np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(x / alpha))).astype(x.dtype),
        helpers=("expm1", "isnan"),
    ),
    "ThresholdedRelu": Elementwise(
        lambda a, at, t: f"select(0.0f, {a[0]}, {a[0]} > {_a(at, 'alpha', 1.0)})",
        lambda x, alpha=1.0, **_: np.where(x > alpha, x, 0).astype(x.dtype),
    ),
    "HardSigmoid": Elementwise(
        lambda a, at, t: _keep_nan(f"clamp({_a(at, 'alpha', 0.2)} * {a[0]} + {_a(at, 'beta', 0.5)}, 0.0f, 1.0f)", a[0], t),
        lambda x, alpha=0.2, beta=0.5, **_: np.clip(_F(alpha) * x + _F(beta), 0, 1).astype(x.dtype),
        helpers=("isnan",),
    ),
    "HardSwish": Elementwise(
        lambda a, at, t: f"({a[0]} * clamp({a[0]} * {f32(1 / 6)} + 0.5f, 0.0f, 1.0f))",
        lambda x, **_: (x * np.clip(x / 6 + 0.5, 0, 1)).astype(x.dtype),
    ),
    "Softplus": Elementwise(lambda a, at, t: f"softplus_f32({a[0]})", _np_softplus, helpers=("softplus",)),
    "Softsign": Elementwise(lambda a, at, t: f"({a[0]} / (1.0f + abs({a[0]})))", lambda x, **_: x / (1 + np.abs(x))),
    "Mish": Elementwise(
        lambda a, at, t: f"({a[0]} * tanh_f32(softplus_f32({a[0]})))",
        lambda x, **_: (x * np.tanh(_np_softplus(x))).astype(x.dtype),
        helpers=("softplus", "tanh"),
    ),
    "Gelu": Elementwise(_gelu, _np_gelu, helpers=("erf", "tanh")),
    "Swish": Elementwise(
        lambda a, at, t: f"({a[0]} / (1.0f + exp(-{_a(at, 'alpha', 1.0)} * {a[0]})))",
        lambda x, alpha=1.0, **_: (x / (1 + np.exp(-alpha * x))).astype(x.dtype),
    ),
    "Shrink": Elementwise(_shrink, _np_shrink, types=FLOAT, signature=_as_float),
    "PRelu": Elementwise(
        lambda a, at, t: f"select({a[1]} * {a[0]}, {a[0]}, {a[0]} >= {literal(0, t)})",
        lambda x, s, **_: np.where(x >= 0, x, x * s).astype(x.dtype),
        types=NUM, arity=(2, 2), signature=_first_type,
    ),
    "Clip": Elementwise(_clip, _np_clip, types=NUM, arity=(1, 3), signature=_first_type, helpers=("isnan",)),
    # -- arithmetic --------------------------------------------------------------------------
    "Add": Elementwise(_binop("+"), lambda x, y, **_: x + y, types=NUM, arity=(2, 2)),
    "Sub": Elementwise(_binop("-"), lambda x, y, **_: x - y, types=NUM, arity=(2, 2)),
    "Mul": Elementwise(_binop("*"), lambda x, y, **_: x * y, types=NUM, arity=(2, 2)),
    # WGSL's integer division truncates toward zero, as onnxruntime's does.
    "Div": Elementwise(_binop("/"), _np_div, types=NUM, arity=(2, 2)),
    "Mod": Elementwise(
        _mod, _np_mod, types=NUM, arity=(2, 2),
        helpers_for=lambda t: ("mod", "fmod") if t == "f32" else ("mod_int",) if t == "i32" else (),
    ),
    "Pow": Elementwise(
        _pow_wgsl, _np_pow, types=NUM, arity=(2, 2), signature=_pow,
        helpers_for=lambda t: ("pow",) if t == "f32" else ("pow_int",),
    ),
    "Sum": Elementwise(_sum, _variadic_np(np.add), types=NUM, arity=(1, 64)),
    "Max": Elementwise(_minmax("max"), _variadic_np(np.maximum), types=NUM, arity=(1, 64), helpers=("isnan",)),
    "Min": Elementwise(_minmax("min"), _variadic_np(np.minimum), types=NUM, arity=(1, 64), helpers=("isnan",)),
    "Mean": Elementwise(
        lambda a, at, t: f"({_sum(a, at, t)} * {f32(1.0 / len(a))})",
        lambda *xs, **_: (sum(xs) / len(xs)).astype(xs[0].dtype),
        arity=(1, 64),
    ),
    # -- comparisons and logic ---------------------------------------------------------------
    "Equal": Elementwise(_binop("=="), lambda x, y, **_: np.equal(x, y), types=ANY, arity=(2, 2), signature=_predicate),
    "Less": Elementwise(_binop("<"), lambda x, y, **_: np.less(x, y), types=NUM, arity=(2, 2), signature=_predicate),
    "LessOrEqual": Elementwise(_binop("<="), lambda x, y, **_: np.less_equal(x, y), types=NUM, arity=(2, 2), signature=_predicate),
    "Greater": Elementwise(_binop(">"), lambda x, y, **_: np.greater(x, y), types=NUM, arity=(2, 2), signature=_predicate),
    "GreaterOrEqual": Elementwise(_binop(">="), lambda x, y, **_: np.greater_equal(x, y), types=NUM, arity=(2, 2), signature=_predicate),
    "And": Elementwise(_binop("&&"), lambda x, y, **_: np.logical_and(x, y), types=BOOL, arity=(2, 2)),
    "Or": Elementwise(_binop("||"), lambda x, y, **_: np.logical_or(x, y), types=BOOL, arity=(2, 2)),
    "Xor": Elementwise(_binop("!="), lambda x, y, **_: np.logical_xor(x, y), types=BOOL, arity=(2, 2)),
    "Not": Elementwise(lambda a, at, t: f"(!{a[0]})", lambda x, **_: np.logical_not(x), types=BOOL),
    "BitwiseAnd": Elementwise(_binop("&"), lambda x, y, **_: np.bitwise_and(x, y), types=INT, arity=(2, 2)),
    "BitwiseOr": Elementwise(_binop("|"), lambda x, y, **_: np.bitwise_or(x, y), types=INT, arity=(2, 2)),
    "BitwiseXor": Elementwise(_binop("^"), lambda x, y, **_: np.bitwise_xor(x, y), types=INT, arity=(2, 2)),
    "BitwiseNot": Elementwise(lambda a, at, t: f"(~{a[0]})", lambda x, **_: np.invert(x), types=INT),
    "BitShift": Elementwise(_shift, _np_bitshift, types=INT, arity=(2, 2)),
    "Where": Elementwise(
        lambda a, at, t: f"select({a[2]}, {a[1]}, {a[0]})",
        lambda c, x, y, **_: np.where(c, x, y), types=ANY, arity=(3, 3), signature=_where,
    ),
    "Identity": Elementwise(lambda a, at, t: a[0], lambda x, **_: x, types=ANY),
}  # fmt: skip


def evaluate(kind: str, inputs: list, attrs: dict, out_dtype: DType) -> np.ndarray:
    """Fold one op of the table on the host (None marks an omitted optional input)."""
    entry = TABLE[kind]
    args = list(inputs)
    while args and args[-1] is None:
        args.pop()
    with np.errstate(all="ignore"):
        if kind == "Clip":
            data = entry.numpy(*args, **attrs)
        else:
            data = entry.numpy(*(a for a in args if a is not None), **attrs)
    return np.asarray(data).astype(out_dtype.numpy)


# -- Cast ----------------------------------------------------------------------------------------
_INT_RANGE = {
    DType.bool: (0, 1), DType.i8: (-(2**7), 2**7 - 1), DType.i16: (-(2**15), 2**15 - 1),
    DType.i32: (-(2**31), 2**31 - 1), DType.i64: (-(2**31), 2**31 - 1),
    DType.u8: (0, 2**8 - 1), DType.u16: (0, 2**16 - 1), DType.u32: (0, 2**32 - 1), DType.u64: (0, 2**32 - 1),
    DType.i4: (-8, 7), DType.i2: (-2, 1), DType.u4: (0, 15), DType.u2: (0, 3),
}  # fmt: skip
_WORD = (DType.i32, DType.i64, DType.u32, DType.u64)  # dtypes that hold any 32-bit pattern
_ROUNDED = {DType.f16: "round_f16", DType.bf16: "round_bf16"}
# float8/float4 formats: mantissa bits, smallest normal exponent, largest finite value, and
# what an overflow becomes without saturation (ONNX Cast's tables; float4 always saturates).
_SMALL_FLOATS = {
    DType.f8e4m3fn: (3, -6, 448.0, math.nan), DType.f8e4m3fnuz: (3, -7, 240.0, math.nan),
    DType.f8e5m2: (2, -14, 57344.0, math.inf), DType.f8e5m2fnuz: (2, -15, 57344.0, math.nan),
    DType.f4e2m1: (1, 0, 6.0, None),
}  # fmt: skip
_E8M0_MODES = {"up": 0, "down": 1, "nearest": 2}
WIDE_FLOATS = (DType.f32, DType.f64)  # hold every value of the other float dtypes exactly
FLOATS = (DType.f32, DType.f16, DType.bf16, DType.f64, DType.f8e8m0, *_SMALL_FLOATS)


def cast_is_copy(src: DType, dst: DType) -> bool:
    """Whether Cast src -> dst leaves every stored 32-bit word unchanged (a zero-copy view)."""
    if src == dst:
        return True
    if src in FLOATS and dst in FLOATS:
        return dst in WIDE_FLOATS  # widening; narrowing float dtypes round
    if src in _INT_RANGE and dst in _INT_RANGE and dst != DType.bool:
        lo, hi = _INT_RANGE[src]
        dlo, dhi = _INT_RANGE[dst]
        # int32 <-> uint32 reinterpret two's complement, exactly as C and numpy casts do
        return dst in _WORD or (dlo <= lo and hi <= dhi)
    return False


def cast(
    expr: str, src: DType, dst: DType, saturate: bool = True, round_mode: str = "up"
) -> tuple[str, tuple[str, ...]]:
    """The stored value of Cast(src -> dst) from a stored scalar ``expr``, and its helpers.

    ``saturate`` and ``round_mode`` are Cast's attributes for float8 targets."""
    s, d = compute_type(src), compute_type(dst)
    e = load(expr, src)
    helpers: list[str] = []
    if s == "f32" and dst in (DType.u8, DType.u16, DType.u4, DType.u2):
        e = f"bitcast<u32>(f32_to_i32({e}))"  # through int32, then wrapped by store
        helpers.append("f32_to_i32")
    else:
        e = convert(e, s, d)
        helpers += convert_helpers(s, d)
    if src != dst:
        if dst in _ROUNDED:
            e = f"{_ROUNDED[dst]}({e})"
            helpers.append(_ROUNDED[dst])
        elif dst in _SMALL_FLOATS:
            m, emin, maxv, overflow = _SMALL_FLOATS[dst]
            over = f32(maxv if saturate or overflow is None else overflow)
            e = f"round_small_float({e}, {m}, {emin}, {f32(maxv)}, {over})"
            helpers.append("round_small_float")
        elif dst == DType.f8e8m0:
            e = f"round_e8m0({e}, {_E8M0_MODES[round_mode]}u, {'true' if saturate else 'false'})"
            helpers.append("round_e8m0")
    return store(e, dst), tuple(helpers)


# -- BitCast -------------------------------------------------------------------------------------
# The bit pattern (in the low bits of a u32) of a stored word, and the stored word of a bit
# pattern, per dtype. 64-bit dtypes are computed in 32 bits and float8/float4/sub-byte values
# are widened, so their bit patterns are not kept: BitCast refuses them.
_TO_BITS = {
    DType.f32: "bitcast<u32>({e})", DType.i32: "bitcast<u32>({e})", DType.u32: "{e}",
    DType.i16: "(bitcast<u32>({e}) & 0xffffu)", DType.u16: "{e}",
    DType.i8: "(bitcast<u32>({e}) & 0xffu)", DType.u8: "{e}", DType.bool: "{e}",
    DType.f16: "f32_to_f16_bits({e})", DType.bf16: "(bitcast<u32>({e}) >> 16u)",
}  # fmt: skip
_FROM_BITS = {
    DType.f32: "bitcast<f32>({e})", DType.i32: "bitcast<i32>({e})", DType.u32: "{e}",
    DType.i16: "((bitcast<i32>({e}) << 16u) >> 16u)", DType.u16: "{e}",
    DType.i8: "((bitcast<i32>({e}) << 24u) >> 24u)", DType.u8: "{e}", DType.bool: "select(0u, 1u, {e} != 0u)",
    DType.f16: "f16_bits_to_f32({e})", DType.bf16: "bitcast<f32>({e} << 16u)",
}  # fmt: skip
_WORD32 = (DType.f32, DType.i32, DType.u32)


def bitcast_is_copy(src: DType, dst: DType) -> bool:
    """Whether BitCast src -> dst keeps every stored word (both hold whole 32-bit patterns)."""
    return src == dst or (src in _WORD32 and dst in _WORD32) or (src == DType.bool and dst == DType.u8)


def bitcast(expr: str, src: DType, dst: DType) -> tuple[str, tuple[str, ...]]:
    """The stored word of BitCast(src -> dst) from a stored word ``expr``, and its helpers."""
    for dt in (src, dst):
        if dt not in _TO_BITS:
            raise ValueError(
                f"BitCast of dtype {dt.name} is not supported: its bit pattern is not kept on the GPU "
                f"({'64-bit types are computed in 32 bits' if dt.itemsize == 8 else 'it is widened to 32 bits'})"
            )
    bits = _TO_BITS[src].format(e=expr)
    helpers = ("f16_bits",) if DType.f16 in (src, dst) else ()
    return _FROM_BITS[dst].format(e=bits), helpers

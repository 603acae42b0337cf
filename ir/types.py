"""Tensor types: element dtypes and shapes whose dims are ints, bounded symbolic expressions
(``ir/symbolic.Expr``, a dim kept symbolic with ``--dim seq=1..512``) or, before binding,
plain names."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from .symbolic import Expr, simplify

# int: a static dim; Expr: a symbolic dim with a range; str: a name no range was given for
Dim = int | Expr | str


class DType(str, enum.Enum):
    """Element types of the IR; the value is the short name used in IR text."""

    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    f64 = "f64"
    i8 = "i8"
    i16 = "i16"
    i32 = "i32"
    i64 = "i64"
    u8 = "u8"
    u16 = "u16"
    u32 = "u32"
    u64 = "u64"
    bool = "bool"
    string = "string"
    c64 = "c64"
    c128 = "c128"
    f8e4m3fn = "f8e4m3fn"
    f8e4m3fnuz = "f8e4m3fnuz"
    f8e5m2 = "f8e5m2"
    f8e5m2fnuz = "f8e5m2fnuz"
    f8e8m0 = "f8e8m0"
    u4 = "u4"
    i4 = "i4"
    u2 = "u2"
    i2 = "i2"
    f4e2m1 = "f4e2m1"
    f6e2m3 = "f6e2m3"
    f6e3m2 = "f6e3m2"

    def __str__(self) -> str:
        return self.value

    @property
    def numpy(self) -> np.dtype:
        return _NUMPY[self]

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f16, DType.bf16, DType.f64)

    @property
    def is_int(self) -> bool:
        return self in _INTS

    @property
    def is_signed(self) -> bool:
        return self in (DType.i8, DType.i16, DType.i32, DType.i64) or self.is_float

    @property
    def onnx(self) -> int:
        return _TO_ONNX[self]

    @staticmethod
    def from_onnx(elem_type: int) -> DType:
        if elem_type not in _FROM_ONNX:
            raise KeyError(elem_type)
        return _FROM_ONNX[elem_type]

    @staticmethod
    def from_numpy(dtype: np.dtype) -> DType:
        return _FROM_NUMPY[np.dtype(dtype)]


_INTS = (DType.i8, DType.i16, DType.i32, DType.i64, DType.u8, DType.u16, DType.u32, DType.u64)

# ONNX TensorProto.DataType numbers, in the order of DType's members above.
_ONNX_CODES = {
    "f32": 1, "u8": 2, "i8": 3, "u16": 4, "i16": 5, "i32": 6, "i64": 7, "string": 8,
    "bool": 9, "f16": 10, "f64": 11, "u32": 12, "u64": 13, "c64": 14, "c128": 15,
    "bf16": 16, "f8e4m3fn": 17, "f8e4m3fnuz": 18, "f8e5m2": 19, "f8e5m2fnuz": 20,
    "u4": 21, "i4": 22, "f4e2m1": 23, "f8e8m0": 24, "u2": 25, "i2": 26,
    "f6e2m3": 27, "f6e3m2": 28,
}  # fmt: skip
_TO_ONNX = {DType(k): v for k, v in _ONNX_CODES.items()}
_FROM_ONNX = {v: k for k, v in _TO_ONNX.items()}


def _numpy_table() -> dict[DType, np.dtype]:
    from onnx import helper  # the onnx package knows the ml_dtypes names of exotic types

    table = {}
    for dt, code in _TO_ONNX.items():
        try:
            table[dt] = np.dtype(helper.tensor_dtype_to_np_dtype(code))
        except (KeyError, TypeError, ValueError):
            table[dt] = np.dtype(object)
    return table


try:
    _NUMPY = _numpy_table()
except ImportError:  # runtime-only installs need no onnx; the plain numpy types suffice there
    _NUMPY = {
        dt: np.dtype(n)
        for dt, n in [
            (DType.f32, "float32"), (DType.f16, "float16"), (DType.f64, "float64"),
            (DType.i8, "int8"), (DType.i16, "int16"), (DType.i32, "int32"), (DType.i64, "int64"),
            (DType.u8, "uint8"), (DType.u16, "uint16"), (DType.u32, "uint32"),
            (DType.u64, "uint64"), (DType.bool, "bool"), (DType.string, "object"),
        ]
    }  # fmt: skip
_FROM_NUMPY = {v: k for k, v in reversed(list(_NUMPY.items())) if v != np.dtype(object)}


@dataclass(frozen=True)
class TensorType:
    """A dtype and a shape; each dim is an int, a bounded symbolic Expr or an unbound name."""

    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self):
        """The element count: an int, or over dims kept symbolic an expression of them."""
        if not self.is_static:
            if not self.is_symbolic:
                raise ValueError(f"shape {self} has unbound dims")
            return simplify(math.prod(self.shape, start=Expr.const(1)))
        return math.prod(self.shape)  # type: ignore[arg-type]

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def is_symbolic(self) -> bool:
        """Some dim is a bounded symbolic expression (no unbound names)."""
        return any(isinstance(d, Expr) for d in self.shape)

    @property
    def shape_bound(self) -> tuple[int, ...]:
        """Each dim at its largest value over the symbols' ranges (memory is planned there)."""
        return tuple(dim_bound(d) for d in self.shape)

    @property
    def numel_bound(self) -> int:
        """The most elements the tensor holds over the symbols' ranges."""
        if not self.is_symbolic:
            return self.numel
        n = 1
        for d in self.shape:
            n = n * (d if isinstance(d, Expr) else int(d))  # type: ignore[operator]
        return n.bounds[1] if isinstance(n, Expr) else n

    @property
    def nbytes_bound(self) -> int:
        return self.numel_bound * self.dtype.itemsize

    @property
    def symbols(self) -> frozenset:
        out: frozenset = frozenset()
        for d in self.shape:
            if isinstance(d, Expr):
                out |= d.symbols
        return out

    def with_shape(self, shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


def dim_bound(d: Dim) -> int:
    """A dim's largest value over its symbols' ranges."""
    if isinstance(d, Expr):
        return d.bounds[1]
    if isinstance(d, str):
        raise ValueError(f"dim {d!r} is unbound: it has no range")
    return d


# The dtype policy on WGSL (DESIGN.md): a GPU tensor is stored as 32-bit scalars by default.
# Floats are computed in f32, signed ints (int64 too) in i32, unsigned ints and bool in u32.
# A float value may instead be stored as f16 (``Value.storage``, chosen by the precision pass
# under ``--precision fp16``); kernels still compute in f32 and convert at loads and stores.
_STORAGE = {
    DType.f32: DType.f32, DType.f16: DType.f32, DType.bf16: DType.f32, DType.f64: DType.f32,
    DType.i8: DType.i32, DType.i16: DType.i32, DType.i32: DType.i32, DType.i64: DType.i32,
    DType.u8: DType.u32, DType.u16: DType.u32, DType.u32: DType.u32, DType.u64: DType.u32,
    DType.bool: DType.u32,
    # narrower than a byte or with a few mantissa bits: widened, every value exact in 32 bits
    DType.f8e4m3fn: DType.f32, DType.f8e4m3fnuz: DType.f32, DType.f8e5m2: DType.f32,
    DType.f8e5m2fnuz: DType.f32, DType.f8e8m0: DType.f32, DType.f4e2m1: DType.f32,
    DType.i4: DType.i32, DType.i2: DType.i32, DType.u4: DType.u32, DType.u2: DType.u32,
}  # fmt: skip


def storage_dtype(dt: DType) -> DType | None:
    """The 32-bit type a tensor of ``dt`` is stored as on the GPU, or None if it cannot be."""
    return _STORAGE.get(dt)


def storage_nbytes(t: TensorType, storage: DType | None = None) -> int:
    """Bytes a tensor of type ``t`` occupies on the GPU: 4 per element, or 2 when it is stored
    as ``storage`` f16, padded to a multiple of 4 (WebGPU binds whole 4-byte words); over dims
    kept symbolic, at their bounds (memory is planned there, once)."""
    if storage == DType.f16:
        return -(-t.numel_bound * 2 // 4) * 4
    return t.numel_bound * 4

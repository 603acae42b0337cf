"""onnx2wgsl.ir: the typed SSA graph shared by every compiler stage."""

from .graph import Binding, Dispatch, Graph, Op, Placement, Value
from .types import Dim, DType, TensorType
from .verify import VerifyError, verify

__all__ = [
    "Binding", "Dim", "Dispatch", "DType", "Graph", "Op", "Placement", "TensorType", "Value",
    "VerifyError", "verify",
]  # fmt: skip

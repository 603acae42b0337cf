"""onnx2wgsl.ir: the typed SSA graph shared by every compiler stage, and its text form."""

from .compare import graph_diff, graphs_equal
from .graph import Binding, Dispatch, Graph, Op, Placement, Tune, Value, distinct
from .kernel import Buffer, Kernel
from .parser import IRModule, ParseError, load_ir, parse_ir, parse_module, weights_path
from .printer import WeightBlob, print_ir, save_ir
from .types import Dim, DType, TensorType
from .verify import VerifyError, verify

__all__ = [
    "distinct",
    "Binding", "Buffer", "Dim", "Dispatch", "DType", "Graph", "IRModule", "Kernel", "Op", "ParseError", "Placement",
    "TensorType", "Tune", "Value", "VerifyError", "WeightBlob", "graph_diff", "graphs_equal", "load_ir",
    "parse_ir", "parse_module", "print_ir", "save_ir", "verify", "weights_path",
]  # fmt: skip

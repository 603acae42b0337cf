"""onnx2wgsl.compiler: ONNX -> Graph IR -> passes -> kernels -> memory plan -> artifact."""

from .driver import CompileResult, compile_model
from .report import CompileReport
from .target import TARGETS, Target, get_target

__all__ = ["CompileReport", "CompileResult", "TARGETS", "Target", "compile_model", "get_target"]

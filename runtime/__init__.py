"""onnx2wgsl.runtime: runs a compiled artifact on WebGPU through wgpu-py (never imports the compiler)."""

from .manifest import FORMAT, VERSION
from .session import InferenceSession, IOInfo, request_device

__all__ = ["FORMAT", "IOInfo", "InferenceSession", "VERSION", "request_device"]

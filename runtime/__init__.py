"""onnx2wgsl.runtime: runs a compiled artifact on WebGPU through wgpu-py (never imports the compiler)."""

from .generate import Generator
from .manifest import FORMAT, VERSION
from .session import GpuTensor, InferenceSession, IOInfo, request_device

__all__ = ["FORMAT", "Generator", "GpuTensor", "IOInfo", "InferenceSession", "VERSION", "request_device"]

"""``onnx.backend.base.Backend`` over compile + load + run, so onnx's backend tests run on WebGPU.

    import onnx2wgsl.backend as backend
    rep = backend.prepare(model)          # compiles and loads (device "CPU" means the default adapter)
    outputs = rep.run([x])

The onnx test harness only knows the device names "CPU" and "CUDA"; this backend runs on the
WebGPU adapter and answers to "CPU" (the default device) and "WEBGPU".
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

DEVICES = ("CPU", "WEBGPU")
_device = None


def shared_device():
    """One wgpu device for every prepared model (creating one per model is slow)."""
    global _device
    if _device is None:
        from onnx2wgsl.runtime import request_device

        _device = request_device()
    return _device


class WebGPURep(BackendRep):
    """A compiled, loaded model; ``run`` takes inputs in graph order (or by name)."""

    def __init__(self, session, input_names: list[str], output_names: list[str]):
        self.session = session
        self.input_names = input_names
        self.output_names = output_names

    def run(self, inputs: Any, **kwargs: Any) -> tuple:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.input_names, inputs))
        outs = self.session.run(None, feeds)
        return namedtupledict("Outputs", self.output_names)(*outs)


class WebGPUBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().split(":")[0] in DEVICES

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> WebGPURep:
        from onnx2wgsl.compiler import compile_model
        from onnx2wgsl.runtime import InferenceSession

        if not cls.supports_device(device):
            raise ValueError(f"device {device!r} is not supported; use one of {DEVICES}")
        compile_kwargs = {k: kwargs[k] for k in ("shapes", "dims", "target", "opt_level") if k in kwargs}
        with tempfile.TemporaryDirectory(prefix="onnx2wgsl-") as out:
            compile_model(model, out, **compile_kwargs)
            session = InferenceSession(out, device=kwargs.get("webgpu_device") or shared_device())
        inputs = [i["name"] for i in session.manifest["inputs"]]
        outputs = [o["name"] for o in session.manifest["outputs"]]
        return WebGPURep(session, inputs, outputs)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", outputs_info=None, **kwargs: Any
    ) -> tuple:
        """Run one node by wrapping it in a model (its outputs' types come from inference)."""
        from onnx import helper

        inputs = list(inputs)
        names = [n for n in node.input if n]
        graph_inputs = [
            helper.make_tensor_value_info(
                n, helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype), np.asarray(x).shape
            )
            for n, x in zip(names, inputs)
        ]
        graph_outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = helper.make_model(
            helper.make_graph([node], "node", graph_inputs, graph_outputs),
            opset_imports=[helper.make_opsetid(node.domain or "", opset)],
        )
        return cls.run_model(model, dict(zip(names, inputs)), device, **kwargs)


prepare = WebGPUBackend.prepare
run_model = WebGPUBackend.run_model
run_node = WebGPUBackend.run_node
supports_device = WebGPUBackend.supports_device
is_compatible = WebGPUBackend.is_compatible

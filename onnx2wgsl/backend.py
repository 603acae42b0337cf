"""``onnx.backend.base.Backend`` over compile + load + run, so onnx's backend tests run on WebGPU.

    import onnx2wgsl.backend as backend
    rep = backend.prepare(model)          # compiles and loads (device "CPU" means the default adapter)
    outputs = rep.run([x])

The onnx test harness only knows the device names "CPU" and "CUDA"; this backend runs on the
WebGPU adapter and answers to "CPU" (the default device) and "WEBGPU".

Specialization. onnx2wgsl compiles ahead of time, so some values must be known when it
compiles: the target shape of a Reshape, the axes of a reduction, the pads of a Pad, the k
of a TopK... Models normally hold them as initializers or constant subgraphs. When a model
feeds one as a *graph input*, ``prepare`` cannot compile it: the compiler raises
ConstantRequiredError naming that input. The backend then defers compilation to ``run``,
where the input's value is known, and compiles the model with exactly the inputs the
compiler asked for frozen to their values (``compile_model(constants=...)``). The compiled
session is cached by those values and reused while they repeat; new values compile again.
Every other input stays a run-time input of the compiled kernels, and nothing runs on the
host that would not also fold in an ahead-of-time compile with ``--const``. This is the
behaviour of the ``onnx2wgsl compile --const NAME=FILE`` command line, applied per run.

Likewise, a model whose inputs have dims that nothing binds (symbolic batch sizes) raises
ShapeRequiredError at ``prepare``; it is then compiled at ``run`` for the shapes of the arrays
fed (``--shape``), one compile per distinct shape.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from onnx2wgsl.errors import ConstantRequiredError, ShapeRequiredError

DEVICES = ("CPU", "WEBGPU")
COMPILE_OPTIONS = ("shapes", "dims", "target", "opt_level")
CACHE_SIZE = 4  # specialized sessions kept per prepared model (each holds GPU buffers)
_device = None


def shared_device():
    """One wgpu device for every prepared model (creating one per model is slow)."""
    global _device
    if _device is None:
        from onnx2wgsl.runtime import request_device

        _device = request_device()
    return _device


def _compile_and_load(
    model: onnx.ModelProto, options: dict, device, constants: dict | None = None, shapes: dict | None = None
):
    from onnx2wgsl.compiler import compile_model
    from onnx2wgsl.runtime import InferenceSession

    if shapes:
        options = {**options, "shapes": {**options.get("shapes", {}), **shapes}}
    with tempfile.TemporaryDirectory(prefix="onnx2wgsl-") as out:
        compile_model(model, out, constants=constants, **options)
        return InferenceSession(out, device=device)


class WebGPURep(BackendRep):
    """A prepared model; ``run`` takes inputs in graph order (or by name).

    ``session`` is the loaded artifact when the model compiled ahead of time; when it needs
    some inputs' values (``frozen``) or shapes (``shaped``) to compile, as the compiler named
    them, sessions are compiled at ``run`` per distinct value / shape and cached."""

    def __init__(
        self,
        model: onnx.ModelProto,
        input_names: list[str],
        output_names: list[str],
        *,
        session=None,
        frozen: tuple[str, ...] = (),
        shaped: tuple[str, ...] = (),
        options: dict | None = None,
        device=None,
        defaults: dict[str, np.ndarray] | None = None,
    ):
        self.model = model
        self.defaults = dict(defaults or {})
        self.input_names = input_names
        self.output_names = output_names
        self.session = session
        self.frozen = tuple(frozen)
        self.shaped = tuple(shaped)
        self.options = dict(options or {})
        self.device = device
        self._sessions: OrderedDict[tuple, Any] = OrderedDict()

    def run(self, inputs: Any, **kwargs: Any) -> tuple:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.input_names, inputs))
        session = self.session if self.session is not None else self._specialized(feeds)
        taken = _feedable(session)
        overrides = tuple(n for n in feeds if n in self.defaults and n not in taken)
        if overrides:  # feeds for initializers the compile took in (they decide shapes)
            session = self._specialized(feeds, overrides)
            taken = _feedable(session)
        # an input with a default that is not fed: the session fills it in, as onnxruntime does
        outs = session.run(None, {k: v for k, v in feeds.items() if k in taken})
        return namedtupledict("Outputs", self.output_names)(*outs)

    def _specialized(self, feeds: dict, overrides: tuple[str, ...] = ()):
        """The session compiled with the frozen inputs (and ``overrides``) set to these feeds'
        values, or their defaults, and the shaped inputs bound to these feeds' shapes."""
        feeds = {**self.defaults, **feeds}
        while True:
            frozen = self.frozen + tuple(n for n in overrides if n not in self.frozen)
            missing = [n for n in frozen + self.shaped if n not in feeds]
            if missing:
                raise ValueError(f"the model needs inputs {missing} to compile")
            values = {n: np.asarray(feeds[n]) for n in frozen}
            shapes = {n: tuple(np.shape(feeds[n])) for n in self.shaped if n not in values}
            key = (
                tuple((n, v.dtype.str, v.shape, v.tobytes()) for n, v in sorted(values.items())),
                tuple(sorted(shapes.items())),
            )
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
            try:
                session = _compile_and_load(self.model, self.options, self.device, values, shapes)
            except (ConstantRequiredError, ShapeRequiredError) as e:
                # the compiler needs one more input's value or shape: take it from the feeds too
                known = self.frozen if isinstance(e, ConstantRequiredError) else self.shaped
                new = tuple(n for n in e.inputs if n not in known and n in self.input_names)
                if not new:
                    raise
                if isinstance(e, ConstantRequiredError):
                    self.frozen += new
                else:
                    self.shaped += new
                continue
            self._sessions[key] = session
            while len(self._sessions) > CACHE_SIZE:
                _, old = self._sessions.popitem(last=False)
                old.release()
            return session

    def release(self) -> None:
        """Free the GPU buffers of every session this representation holds."""
        for s in ([self.session] if self.session is not None else []) + list(self._sessions.values()):
            s.release()
        self._sessions.clear()
        self.session = None


def _feedable(session) -> set[str]:
    """The names a session's run may feed: its inputs and its inputs with a default."""
    return {io.name for io in session.get_inputs() + session.get_overridable_initializers()}


def _input_defaults(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The initializers that are graph inputs' defaults (IR version >= 4). The compiled model
    keeps most as inputs with that default; one an op needs at compile time is compiled in,
    and ``run`` compiles again for a feed that overrides it."""
    if model.ir_version < 4:
        return {}
    from onnx import numpy_helper

    names = {i.name for i in model.graph.input}
    out = {}
    for t in model.graph.initializer:
        if t.name in names:
            try:
                out[t.name] = numpy_helper.to_array(t)
            except Exception:  # a damaged tensor: the compile names it
                continue
    return out


class WebGPUBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().split(":")[0] in DEVICES

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> WebGPURep:
        """Compile and load the model; if it needs some inputs' values to compile, defer
        compiling to ``run`` (see the module docstring)."""
        if not cls.supports_device(device):
            raise ValueError(f"device {device!r} is not supported; use one of {DEVICES}")
        options = {k: kwargs[k] for k in COMPILE_OPTIONS if k in kwargs}
        dev = kwargs.get("webgpu_device") or shared_device()
        inits = {t.name for t in model.graph.initializer}
        inputs = [i.name for i in model.graph.input if i.name not in inits]
        outputs = [o.name for o in model.graph.output]
        defaults = _input_defaults(model)
        try:
            session = _compile_and_load(model, options, dev)
        except (ConstantRequiredError, ShapeRequiredError) as e:
            if not e.inputs or any(n not in inputs and n not in defaults for n in e.inputs):
                raise
            kind = "frozen" if isinstance(e, ConstantRequiredError) else "shaped"
            return WebGPURep(
                model, inputs, outputs, options=options, device=dev, defaults=defaults, **{kind: e.inputs}
            )
        return WebGPURep(
            model, inputs, outputs, session=session, options=options, device=dev, defaults=defaults
        )

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        rep = cls.prepare(model, device, **kwargs)
        try:
            return rep.run(inputs)
        finally:
            rep.release()

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

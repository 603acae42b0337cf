"""Frontend: load an ONNX model safely, bind its dims, fold constants, infer types -> Graph IR.

Each node is taken in topological order. If all its inputs are constants it is evaluated on
the host (int64 shape math never reaches the GPU). Otherwise onnx's own per-node shape
inference (with the constant inputs as data) gives its output types, and ``legalize``
rewrites it into its opset-independent IR form.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx2wgsl.errors import (
    CompileError,
    ConstantRequiredError,
    InternalError,
    Onnx2WgslError,
    ShapeRequiredError,
    UnsupportedError,
    first_line,
)
from onnx2wgsl.ir import DType, Graph, TensorType, Value
from onnx2wgsl.ir.symbolic import Expr, Symbol, SymbolicError, floordiv, parse_expr, simplify, smax

from . import control_flow, functions, host_eval, symbolic_fold, validate
from .legalize import legalize
from .legalize.contrib import DEFAULT_DOMAIN as ORT_DEFAULT_DOMAIN

MIN_OPSET = 7
# Constant inputs up to this many elements are handed to onnx's shape inference as data
# (shape tensors, axes, pads); bigger ones are weights, whose values never decide a shape.
_DATA_PROP_LIMIT = 4096


def load_model(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Read a model file (external data included, only from beside the model) or take a proto.

    A proto carries no folder, so one whose tensors still point at external data files is
    refused rather than read relative to the working directory."""
    if isinstance(model, onnx.ModelProto):
        validate.check_strings(model)
        _refuse_external_data(model)
        return model
    path = Path(model)
    if not path.is_file():
        raise CompileError(f"model file not found: {str(path)!r}", hint="check the path")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise CompileError(
            f"{str(path)!r} is not a readable ONNX model ({type(e).__name__})",
            hint="pass a .onnx file saved by onnx.save or an exporter",
        ) from e
    if not proto.graph.node and not proto.graph.output:
        raise CompileError(f"{str(path)!r} holds no ONNX graph", hint="pass a .onnx model file")
    validate.check_strings(proto)
    _load_external_data(proto, path.parent)
    return proto


def _refuse_external_data(proto: onnx.ModelProto) -> None:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    for t in _get_all_tensors(proto):
        if uses_external_data(t):
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            raise CompileError(
                f"tensor {t.name!r} of the model points to external data {loc!r}, and a ModelProto "
                "has no folder to read it from",
                hint="pass the model's file path instead (its external data is read from beside "
                "it), or load it with onnx.load(path), which reads the data into the proto",
            )


def _external_int(info: dict, key: str, default: int | None, loc: str, name: str) -> int | None:
    if key not in info:
        return default
    try:
        value = int(info[key])
    except ValueError:
        value = -1
    if value < 0:
        raise CompileError(f"external data of tensor {name!r} in {loc!r} has a bad {key}: {info[key]!r}")
    return value


def _load_external_data(proto: onnx.ModelProto, base: Path) -> None:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    base = base.resolve()
    for t in _get_all_tensors(proto):
        if not uses_external_data(t):
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        # resolve() follows links in every component, a linked folder's too
        target = (base / loc).resolve()
        if not loc or os.path.isabs(loc) or base not in target.parents:
            raise CompileError(
                f"tensor {t.name!r} points to external data outside the model's folder: {loc!r}",
                hint="external data files must lie beside the model (no absolute paths, '..' or links out)",
            )
        if not target.is_file():
            raise CompileError(
                f"external data file {loc!r} of tensor {t.name!r} is missing or not a regular file",
                hint=f"put it in {str(base)!r} beside the model",
            )
        offset = _external_int(info, "offset", 0, loc, t.name)
        length = _external_int(info, "length", None, loc, t.name)
        size = target.stat().st_size
        if offset + (length or 0) > size:
            raise CompileError(
                f"external data of tensor {t.name!r} lies past the end of {loc!r} "
                f"(offset {offset:,}, length {length or 0:,}, file size {size:,})"
            )
        with open(target, "rb") as f:
            f.seek(offset)
            raw = f.read(size - offset if length is None else length)
        t.raw_data = raw
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (tensors as numpy arrays, strings as str)."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.ref_attr_name:
            raise CompileError(
                f"attribute {a.name!r} refers to a function attribute", node=node.name, op=node.op_type
            )
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, onnx.TensorProto):
            v = validate.tensor_array(v, f"tensor of attribute {a.name!r}")
        elif isinstance(v, onnx.SparseTensorProto):
            v = _dense(v, f"sparse tensor of attribute {a.name!r}")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8", "replace") for s in v]
        elif isinstance(v, list) and v and isinstance(v[0], onnx.TensorProto):
            v = [validate.tensor_array(t, f"tensor of attribute {a.name!r}") for t in v]
        out[a.name] = v
    return out


def _dense(sp: onnx.SparseTensorProto, what: str = "sparse initializer") -> np.ndarray:
    values = validate.tensor_array(sp.values, what)
    idx = validate.tensor_array(sp.indices, f"indices of {what}")
    name = sp.values.name
    dims = tuple(sp.dims)
    if any(d < 0 for d in dims):
        raise CompileError(f"{what} {name!r} has a negative dim: {list(dims)}", hint="fix the model")
    n = int(np.prod(dims, dtype=np.int64))
    rank_ok = (idx.ndim == 1 and values.ndim == 1 and idx.shape == values.shape) or (
        idx.ndim == 2 and idx.shape == (values.size, len(dims)) and values.ndim == 1
    )
    if not rank_ok or idx.dtype.kind not in "iu":
        raise CompileError(
            f"{what} {name!r} has indices of shape {list(idx.shape)} for {values.size} values of a "
            f"tensor of shape {list(dims)}",
            hint="indices are [NNZ] (flat) or [NNZ, rank] integers",
        )
    bound = np.array([n]) if idx.ndim == 1 else np.array(dims)
    if idx.size and ((idx < 0).any() or (idx >= bound).any()):
        raise CompileError(
            f"{what} {name!r} has indices outside its shape {list(dims)}", hint="fix the model"
        )
    dense = np.zeros(dims, dtype=values.dtype)
    if idx.ndim == 1:
        dense.reshape(-1)[idx] = values
    else:
        dense[tuple(idx.T)] = values
    return dense


@dataclass
class NodeInfo:
    """What a legalize rule sees of one ONNX node."""

    op_type: str
    name: str
    domain: str
    opset: int
    inputs: list[Value | None]
    attrs: dict[str, Any]
    out_types: list[TensorType | None]
    out_names: list[str]
    schema: Any = None
    fold_limit: int = host_eval.FOLD_LIMIT  # the most bytes a tensor made at compile time may take

    def error(self, message: str, hint: str | None = None, cls=CompileError) -> CompileError:
        return cls(message, node=self.name, op=self.op_type, opset=self.opset, hint=hint)

    def const_input(self, i: int, what: str) -> np.ndarray | None:
        """Input i's data, which must be known at compile time (None if omitted)."""
        v = self.inputs[i] if i < len(self.inputs) else None
        if v is None:
            return None
        if not v.is_const:
            raise needs_constant(self, v, f"its {what} input {v.name!r}")
        return v.data


def is_graph_input(v: Value) -> bool:
    """A run-time value that no op produces: a graph input (in the frontend, every other
    non-constant value already has its producer)."""
    return not v.is_const and v.producer is None


def _feeding_inputs(v: Value) -> tuple[str, ...] | None:
    """The graph inputs whose values decide ``v``, when ``v`` is a small (shape-like) value
    computed from small graph inputs and constants only; freezing them folds ``v``. None when
    a large tensor (data, not shape math) takes part."""
    found: dict[str, None] = {}
    seen: set[int] = set()
    stack = [v]
    while stack:
        u = stack.pop()
        if id(u) in seen or u.is_const:
            continue
        seen.add(id(u))
        if not u.type.is_static or u.type.numel > _DATA_PROP_LIMIT:
            return None
        if u.producer is None:
            found[u.name] = None
        else:
            stack.extend(w for w in u.producer.inputs if w is not None)
    return tuple(found) or None


def freeze_hint(inputs: tuple[str, ...]) -> str:
    """How to freeze graph inputs, on the command line and in Python."""
    const = " ".join(f"--const {n}=FILE.npy" for n in inputs)
    return f"freeze {'it' if len(inputs) == 1 else 'them'} with {const} (Python: constants={{name: array}})"


def needs_constant(info: NodeInfo, v: Value, what: str) -> CompileError:
    """The error for a run-time value that must be known at compile time. When graph inputs
    decide the value (it is one, or shape math on small ones), it is a ConstantRequiredError
    naming them, so callers can freeze them."""
    message = f"{what} is computed at run time, but must be a constant"
    inputs = _feeding_inputs(v)
    if inputs:
        names = ", ".join(repr(n) for n in inputs)
        return ConstantRequiredError(
            message if is_graph_input(v) else f"{message} (it is computed from graph inputs {names})",
            inputs=inputs,
            node=info.name,
            op=info.op_type,
            opset=info.opset,
            hint=freeze_hint(inputs),
        )
    return info.error(
        message,
        hint="export the model with static shapes, or bind its dims with --dim/--shape",
        cls=UnsupportedError,
    )


@dataclass
class Scope:
    """The names one graph body sees: its own, then (for subgraphs) its parent's.

    The model's graph is the root scope. A subgraph (an If branch, a Loop or Scan body)
    gets a child scope, so it reads outer values by name; a function body gets a scope of
    its own with no parent, bound to the calling node's values, so a function's names never
    meet the model's. ``used`` holds the names some node or output of the body reads; other
    outputs may stay untyped. ``prefix`` makes IR names of inlined values readable."""

    opset: dict[str, int]
    parent: Scope | None = None
    prefix: str = ""
    names: dict[str, Value | None] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    depth: int = 0

    def lookup(self, name: str) -> Value | None:
        """The value bound to ``name`` here or in an enclosing scope (KeyError if none)."""
        s: Scope | None = self
        while s is not None:
            if name in s.names:
                return s.names[name]
            s = s.parent
        raise KeyError(name)

    def knows(self, name: str) -> bool:
        try:
            self.lookup(name)
        except KeyError:
            return False
        return True

    def child(self, prefix: str, used: set[str], opset: dict[str, int] | None = None) -> Scope:
        """A subgraph's scope: sees this one; ``opset`` set (and no parent) for a function body."""
        if opset is not None:
            return Scope(opset, None, prefix, used=used, depth=self.depth + 1)
        return Scope(self.opset, self, prefix, used=used, depth=self.depth + 1)


@dataclass
class Importer:
    model: onnx.ModelProto
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fold_limit: int = host_eval.FOLD_LIMIT
    # dims kept symbolic, with their ranges (--dim seq=1..128)
    ranges: dict[str, Symbol] = field(default_factory=dict)
    # every overridable initializer becomes a constant, not an input with a default
    freeze_initializers: bool = False
    # overridable inputs compiled in with their initializer's value -> the node that needs it
    compiled_in: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.g = Graph(name=_clean_name(self.model.graph.name) or "main")
        self.opset = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in self.model.opset_import}
        self.root = Scope(self.opset, used=_used_names(self.model.graph))
        # the element types the graph declares for its intermediate values (checked when bound)
        self._dim_values: dict[int, Value] = {}  # symbolic values computed on the GPU, by id
        self.declared = {
            vi.name: vi.type.tensor_type.elem_type
            for vi in self.model.graph.value_info
            if vi.type.WhichOneof("value") == "tensor_type"
            and vi.type.tensor_type.elem_type in validate.DATA_TYPES
        }
        self.env = self.root.names
        self.defaults: dict[str, np.ndarray] = {}  # overridable inputs' initializers, by name

    # -- entry ----------------------------------------------------------------------------
    def run(self) -> Graph:
        gp = self.model.graph
        self.g.opset = dict(sorted(self.opset.items()))
        self.g.metadata = {
            "producer": f"{self.model.producer_name} {self.model.producer_version}".strip(),
            "ir_version": self.model.ir_version,
            "doc": self.model.doc_string[:200],
        }
        validate.check_graph(gp)
        inits = [(t.name, lambda t=t: validate.tensor_array(t, "initializer")) for t in gp.initializer]
        inits += [(sp.values.name, lambda sp=sp: _dense(sp)) for sp in gp.sparse_initializer]
        # From IR version 4 an initializer named like a graph input is that input's default,
        # which a feed overrides (onnxruntime's "overridable initializer"); before, it is a constant.
        overridable = {vi.name for vi in gp.input} if self.model.ir_version >= 4 else set()
        self.defaults = {}
        for name, value in inits:
            if name not in overridable:
                self.env[name] = self._const(value(), name)
            elif name not in self.constants:  # a frozen one takes the given value instead
                self.defaults[name] = value()
        declared = {vi.name: vi for vi in gp.input}
        for name, default in self.defaults.items():
            self._check_default(declared[name], default)
        if not self.freeze_initializers:
            for name, where in _shape_deciding(gp, self.defaults, self.root.used).items():
                self.compiled_in.setdefault(name, where)
        frozen = {n: d for n, d in self.defaults.items() if self.freeze_initializers or n in self.compiled_in}
        kept = {n: d for n, d in self.defaults.items() if n not in frozen}
        self._bind_inputs([vi for vi in gp.input if vi.name not in self.env], kept, frozen)
        for name in frozen:
            if name in self.compiled_in:
                self.warnings.append(
                    f"input {name!r} decides a shape or another value that {self.compiled_in[name]} "
                    "needs at compile time, so it is compiled in with its initializer's value and "
                    f"cannot be fed (--const {name}=FILE compiles in another value)"
                )
        if kept:
            # the graph carries each default to the artifact, keyed by the input's IR name
            self.g.metadata["input_defaults"] = {self.env[n].name: d for n, d in kept.items()}
            names = ", ".join(repr(n) for n in kept)
            self.warnings.append(
                f"inputs {names} have an initializer of the same name, which ONNX (IR version >= 4) "
                "makes only a default that a feed overrides: they stay inputs, which a run fills "
                "with that default when it does not feed them; to compile every such initializer in "
                "as a constant (faster: constants fold, fuse and pack with the weights), pass "
                "--freeze-initializers (Python: freeze_initializers=True), or --const NAME=FILE for one"
            )
        self.run_nodes(gp.node, self.root)
        for vi in gp.output:
            if vi.name not in self.env:
                raise CompileError(f"graph output {vi.name!r} is produced by no node", hint="fix the model")
            v = self.env[vi.name]
            declared = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
            if declared and v is not None and declared != v.dtype.onnx:  # 0: left to inference
                name = (
                    onnx.TensorProto.DataType.Name(declared) if declared in validate.DATA_TYPES else declared
                )
                raise CompileError(
                    f"graph output {vi.name!r} is declared {name}, but its value is {v.dtype.name}",
                    hint="fix the output's declared type (onnxruntime refuses the model too)",
                )
            self.g.outputs.append(v)
        self.g.metadata["output_names"] = [vi.name for vi in gp.output]
        return self.g

    def run_nodes(self, nodes, scope: Scope) -> None:
        """Import ``nodes`` (a graph's or a body's) in a valid order into ``scope``."""
        for node in _topological(nodes):
            self._node(node, scope)

    def import_subgraph(self, gp: onnx.GraphProto, scope: Scope, inputs: list[Value | None], prefix: str):
        """Import a subgraph (If branch, Loop/Scan body) once, its formal inputs bound to
        ``inputs``, in a child of ``scope``; return its output values."""
        if len(inputs) != len(gp.input):
            raise CompileError(f"subgraph {gp.name!r} takes {len(gp.input)} inputs, given {len(inputs)}")
        validate.check_graph(gp, f"subgraph {gp.name!r}")
        used = _used_names(gp)
        sub = scope.child(prefix, used)
        for vi, v in zip(gp.input, inputs):
            sub.names[vi.name] = v
        for t in gp.initializer:
            sub.names[t.name] = self._const(validate.tensor_array(t, "initializer"), prefix + t.name)
        for sp in gp.sparse_initializer:
            sub.names[sp.values.name] = self._const(_dense(sp), prefix + sp.values.name)
        self.run_nodes(gp.node, sub)
        outs = []
        for vi in gp.output:
            if not sub.knows(vi.name):
                raise CompileError(
                    f"subgraph output {vi.name!r} is produced by no node", hint="fix the model"
                )
            outs.append(sub.lookup(vi.name))
        return outs

    def run_helper(
        self, nodes, bindings: dict[str, Value], outputs: list[str], opset: int, prefix: str
    ) -> list[Value]:
        """Import nodes the compiler made (e.g. around an unrolled loop) in a scope of their own
        whose names are ``bindings``; return the values of ``outputs``."""
        sub = self.root.child(prefix, set().union(*(_needs(n) for n in nodes)) | set(outputs), {"": opset})
        sub.names.update(bindings)
        self.run_nodes(nodes, sub)
        return [sub.lookup(o) for o in outputs]

    def const_for(self, data: np.ndarray, vi: onnx.ValueInfoProto, hint: str) -> Value:
        """A constant fed to a subgraph input, shaped as the input declares ([] or [1])."""
        t = vi.type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) == 1:
            data = np.reshape(data, (1,))
        if t.elem_type:
            data = data.astype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        return self._const(data, hint)

    # -- inputs ---------------------------------------------------------------------------
    def _bind_inputs(
        self,
        inputs: list[onnx.ValueInfoProto],
        defaults: dict[str, np.ndarray],
        compiled_in: dict[str, np.ndarray],
    ) -> None:
        """Bind the graph inputs: frozen ones become constants, the others GPU inputs of their
        declared (or given) type. ``defaults`` are the initializers of the overridable inputs
        that stay inputs (one that does not fit the input's bound shape is dropped from it);
        ``compiled_in`` those that become constants with their initializer's value."""
        names = {vi.name for vi in inputs}
        for n in self.constants:
            if n not in names:
                raise CompileError(
                    f"constants names {n!r}, which is not a model input",
                    hint=f"the inputs are {sorted(names)}",
                )
        frozen = {**compiled_in, **self.constants}
        for vi in inputs:
            if vi.name in frozen:
                self.env[vi.name] = self._frozen_input(vi, frozen[vi.name])
        inputs = [vi for vi in inputs if vi.name not in frozen]
        for n in self.shapes:
            if n not in names:
                raise CompileError(
                    f"--shape names {n!r}, which is not a model input",
                    hint=f"the inputs are {sorted(names)}",
                )
        params = {d.dim_param for vi in inputs for d in vi.type.tensor_type.shape.dim if d.dim_param}
        self._bare_params = set(params)
        params |= {n for p in params for n in _expression_names(p)}
        for n in self.dims:
            if n not in params:
                self.warnings.append(f"--dim {n}={self.dims[n]} matches no symbolic input dim")
        for n, sym in self.ranges.items():
            if n not in params:
                self.warnings.append(f"--dim {n}={sym.lo}..{sym.hi} matches no symbolic input dim")
            else:
                self.g.symbols[n] = sym
        unbound: list[str] = []
        unbound_inputs = []
        for vi in inputs:
            before = len(unbound)
            default = defaults.get(vi.name)
            t = self._input_type(vi, unbound, default)
            if len(unbound) > before:
                unbound_inputs.append(vi.name)
            if default is not None and t is not None and tuple(default.shape) != t.shape:
                del defaults[vi.name]
                self.warnings.append(
                    f"input {vi.name!r} is compiled with shape {list(t.shape)}, which its initializer "
                    f"(its default) of shape {list(default.shape)} does not fill: every run must feed it"
                )
            if t is not None:
                self.env[vi.name] = self.g.add_input(vi.name, t)
        if unbound:
            raise ShapeRequiredError(
                "unbound input dims: " + ", ".join(unbound),
                inputs=tuple(unbound_inputs),
                hint="bind each with --dim SYMBOL=N or give the whole shape with --shape NAME=AxBxC",
            )

    def _frozen_input(self, vi: onnx.ValueInfoProto, value) -> Value:
        """A graph input frozen to a given value: a constant, checked against its declaration.
        Its symbolic dims are bound from the value's shape (so inputs sharing them agree)."""
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            raise UnsupportedError(
                f"input {vi.name!r} is a {kind or 'untyped value'}; only tensors can be frozen"
            )
        tt = vi.type.tensor_type
        dtype = _dtype(tt.elem_type, f"input {vi.name!r}")
        arr = np.asarray(value)
        if arr.dtype != dtype.numpy:
            raise CompileError(
                f"the constant for input {vi.name!r} is {arr.dtype}, but the model declares {dtype.numpy}"
            )
        declared = list(tt.shape.dim) if tt.HasField("shape") else None
        if declared is not None:
            if len(declared) != arr.ndim:
                raise CompileError(
                    f"the constant for input {vi.name!r} has shape {list(arr.shape)}, "
                    f"but the model declares rank {len(declared)}"
                )
            for i, (d, n) in enumerate(zip(declared, arr.shape)):
                if d.HasField("dim_value") and d.dim_value != n:
                    raise CompileError(
                        f"the constant for input {vi.name!r} has {n} at axis {i}, but the model fixes it to {d.dim_value}"
                    )
                if d.dim_param:
                    bound = self.dims.setdefault(d.dim_param, n)
                    if bound != n:
                        raise CompileError(
                            f"the constant for input {vi.name!r} has {n} at axis {i}, "
                            f"but dim {d.dim_param!r} is bound to {bound}"
                        )
        return self._const(arr, vi.name)

    def _check_default(self, vi: onnx.ValueInfoProto, default: np.ndarray) -> None:
        """An overridable input's initializer (its default) has the input's declared type."""
        if vi.type.WhichOneof("value") != "tensor_type":
            return  # binding the input says what it is
        tt = vi.type.tensor_type
        dtype = _dtype(tt.elem_type, f"input {vi.name!r}")
        if default.dtype != dtype.numpy:
            raise CompileError(
                f"input {vi.name!r} is declared {dtype.name}, but its initializer (its default) is "
                f"{default.dtype}",
                hint="fix the model",
            )
        if not tt.HasField("shape"):
            return
        fixed = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(fixed) != default.ndim or any(d not in (None, n) for d, n in zip(fixed, default.shape)):
            raise CompileError(
                f"input {vi.name!r} is declared of shape {fixed}, but its initializer (its "
                f"default) has shape {list(default.shape)}",
                hint="fix the model",
            )

    def _input_type(
        self, vi: onnx.ValueInfoProto, unbound: list[str], default: np.ndarray | None = None
    ) -> TensorType | None:
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            raise UnsupportedError(
                f"input {vi.name!r} is a {kind or 'untyped value'}; only tensors can live on the GPU"
            )
        tt = vi.type.tensor_type
        dtype = _dtype(tt.elem_type, f"input {vi.name!r}")
        declared = list(tt.shape.dim) if tt.HasField("shape") else None
        if default is not None and declared is None and vi.name not in self.shapes:
            return TensorType(dtype, tuple(default.shape))  # the default's shape is the input's
        if vi.name in self.shapes:
            shape = tuple(int(d) for d in self.shapes[vi.name])
            if declared is not None and len(declared) != len(shape):
                raise CompileError(
                    f"--shape {vi.name}={'x'.join(map(str, shape))} has rank {len(shape)}, "
                    f"but the model declares rank {len(declared)}"
                )
            for i, (d, n) in enumerate(zip(declared or [], shape)):
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != n:
                    raise CompileError(
                        f"--shape {vi.name} gives {n} at axis {i}, but the model fixes it to {d.dim_value}"
                    )
            return TensorType(dtype, shape)
        if declared is None:
            unbound.append(f"{vi.name!r} has no declared shape (use --shape {vi.name}=...)")
            return TensorType(dtype, ())
        shape = []
        for i, d in enumerate(declared):
            if d.HasField("dim_value") and d.dim_value >= 0:
                shape.append(d.dim_value)
            elif d.dim_param and d.dim_param in self.dims:
                shape.append(int(self.dims[d.dim_param]))
            elif d.dim_param and d.dim_param in self.ranges:
                shape.append(Expr.symbol(self.ranges[d.dim_param]))
            elif d.dim_param and (e := self._dim_expression(d.dim_param, vi.name, i)) is not None:
                shape.append(e)
            elif d.dim_param:
                unbound.append(f"{d.dim_param!r} (input {vi.name!r}, axis {i})")
                shape.append(1)
            else:
                unbound.append(f"unnamed dim of input {vi.name!r} at axis {i} (use --shape)")
                shape.append(1)
        return TensorType(dtype, tuple(shape))

    def _dim_expression(self, text: str, input_name: str, axis: int):
        """A dim_param written as arithmetic over other dims, as exporters name a dim they
        derive (optimum: ``past_sequence_length + sequence_length``): its value in the bound
        dims, or None when it is a plain name or names a dim that is not bound."""
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError:
            return None
        names = _expression_names(text)
        if not names or not names <= (set(self.dims) | set(self.ranges)):
            return None
        for n in names & set(self.ranges):
            if n not in self._bare_params:
                raise CompileError(
                    f"input {input_name!r} axis {axis} is {text!r}, but {n!r} is the bare dim of no "
                    "input, so a run cannot read its value",
                    hint=f"bind {n!r} with --dim {n}=N, or give the input's shape with --shape",
                )

        class _Static(ast.NodeTransformer):
            def visit_Name(_, node):  # noqa: N805 - ast's visitor protocol
                if node.id in self.dims:
                    return ast.copy_location(ast.Constant(int(self.dims[node.id])), node)
                return node

        try:
            return parse_expr(ast.unparse(_Static().visit(tree)), dict(self.ranges))
        except SymbolicError as e:
            raise CompileError(f"input {input_name!r} axis {axis} is {text!r}: {e}") from None

    # -- nodes ----------------------------------------------------------------------------
    def _const(self, data: np.ndarray, hint: str) -> Value:
        if data.dtype == np.dtype(object):
            return self.g.const(data, _clean_name(hint) or "const", dtype=DType.string)
        return self.g.const(data, _clean_name(hint) or "const")

    def _folded(self, r, scope: Scope, name: str) -> Value:
        """A symbolic fold's result: a symbolic value (kept out of the graph), or a constant."""
        return r if isinstance(r, Value) else self._const(r, scope.prefix + name)

    def _node(self, node: onnx.NodeProto, scope: Scope) -> None:
        try:
            self._import_node(node, scope)
        except (Onnx2WgslError, MemoryError):
            raise
        except Exception as e:  # a bug: say which node it happened in (the innermost one)
            domain = "" if node.domain == "ai.onnx" else node.domain
            raise InternalError(
                "import", e, node=node.name, op=node.op_type, opset=scope.opset.get(domain)
            ) from e

    def _import_node(self, node: onnx.NodeProto, scope: Scope) -> None:
        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain not in scope.opset:
            raise CompileError(
                f"its domain {domain!r} is not among the model's opset imports",
                node=node.name,
                op=node.op_type,
                hint="fix the model's opset_import",
            )
        opset = scope.opset[domain]
        validate.check_node(node, _find_schema(node.op_type, opset, domain), opset)
        inputs: list[Value | None] = []
        for name in node.input:
            if not name:
                inputs.append(None)
            elif scope.knows(name):
                inputs.append(scope.lookup(name))
            else:
                raise CompileError(
                    f"input {name!r} is produced by no node and is not a graph input or initializer",
                    node=node.name,
                    op=node.op_type,
                    opset=opset,
                )
        first = inputs[0] if inputs else None
        validate.check_axes(node, first.type.rank if first is not None else None, opset)
        if not any(o in scope.used for o in node.output if o):
            # nothing reads its outputs: a dead node (ONNX nodes have no side effects), which is
            # not compiled, but still checked as onnxruntime checks it
            if not any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
            ):
                self._checked_inference(node, inputs, scope, opset)
            return
        if domain == "" and node.op_type in control_flow.HANDLERS:
            outs = control_flow.HANDLERS[node.op_type](self, node, scope, inputs, opset)
            self._bind_outputs(node, outs, scope)
            return
        attrs = attributes(node)
        if node.op_type == "Constant" and domain == "":
            outs = [self._const(_constant_value(node, attrs), scope.prefix + node.output[0])]
        elif node.op_type in ("Shape", "Size") and domain == "" and inputs[0].type.is_static:
            # they depend on the (bound, static) shape alone, never on the data
            outs = [
                self._const(_shape_of(node.op_type, inputs[0].shape, attrs), scope.prefix + node.output[0])
            ]
        elif node.op_type in ("Shape", "Size") and domain == "" and inputs[0].type.is_symbolic:
            # a shape of dims kept symbolic: a symbolic value that shape arithmetic folds over
            shape = inputs[0].shape
            if node.op_type == "Size":
                data = np.array(symbolic_fold.numel(shape), dtype=object)
            else:
                data = symbolic_fold.shape_data(shape, attrs.get("start", 0), attrs.get("end"))
            outs = [
                self._folded(
                    symbolic_fold.make_value(data, scope.prefix + node.output[0]), scope, node.output[0]
                )
            ]
        elif (
            domain == ""
            and node.op_type in ("Range", "ConstantOfShape")
            and any(symbolic_fold.is_symbolic(v) for v in inputs)
        ):
            # a tensor of a length chosen at run time (position ids, a mask): a GPU op
            outs = [self._runtime_sized(node, attrs, inputs, scope, opset)]
        elif (
            domain == ""
            and any(symbolic_fold.is_symbolic(v) for v in inputs)
            and all(v is None or v.is_const for v in inputs)
            and symbolic_fold.folds(node.op_type)
            # a plain tensor shaped by symbolic dims is data of a symbolic shape: an op
            and not (
                node.op_type in ("Slice", "Expand", "Reshape") and not symbolic_fold.is_symbolic(inputs[0])
            )
        ):
            res = symbolic_fold.evaluate(node, attrs, inputs, opset)
            if res is None:  # not shape arithmetic the ranges decide: computed on the GPU
                outs = self._gpu_node(node, attrs, inputs, scope, domain, opset)
            else:
                outs = [self._folded(r, scope, o) for r, o in zip(res, node.output)]
        elif (
            domain == ""
            and node.op_type not in host_eval.NONDETERMINISTIC
            and node.op_type not in ORT_DEFAULT_DOMAIN
            and all(v is None or v.is_const for v in inputs)
            and not any(symbolic_fold.is_symbolic(v) for v in inputs)
            and not any(isinstance(a, onnx.GraphProto) for a in attrs.values())
        ):
            self._check_fold_size(node, inputs, scope, opset)
            data = host_eval.evaluate(
                node, attrs, [None if v is None else v.data for v in inputs], scope.opset
            )
            outs = [
                None if d is None else self._const(d, scope.prefix + o) for d, o in zip(data, node.output)
            ]
        else:
            outs = self._gpu_node(node, attrs, inputs, scope, domain, opset)
        self._bind_outputs(node, outs, scope)

    def _gpu_node(
        self, node: onnx.NodeProto, attrs: dict, inputs: list, scope: Scope, domain: str, opset: int
    ):
        """The node's ops for the GPU (legalized, or expanded from its function body)."""
        # symbolic values an op reads as data (not as a shape) are computed on the GPU
        from .shape_rules import SHAPE_INPUTS

        shape_inputs = SHAPE_INPUTS.get(node.op_type, {}) if domain == "" else {}
        inputs = [
            self._materialized(v) if symbolic_fold.is_symbolic(v) and i not in shape_inputs else v
            for i, v in enumerate(inputs)
        ]
        info = NodeInfo(
            op_type=node.op_type,
            name=node.name,
            domain=domain,
            opset=opset,
            inputs=inputs,
            attrs=attrs,
            out_types=[],
            out_names=[scope.prefix + (_clean_name(o) or node.op_type.lower()) for o in node.output],
            fold_limit=self.fold_limit,
        )
        info.schema = _schema(info)
        outs = self._legalize_or_inline(node, info, scope)
        return outs

    def _materialized(self, v: Value) -> Value:
        """A symbolic value as a GPU tensor: a DimValue op writes its elements, evaluated from
        the run's dims (each symbolic value once)."""
        done = self._dim_values.get(id(v))
        if done is not None:
            return done
        flat = [simplify(x) for x in v.data.reshape(-1)]
        if any(not isinstance(x, int | Expr) for x in flat):
            raise CompileError(f"symbolic value %{v.name} holds {flat}, which is not integer dims")
        texts = [str(x) for x in flat]
        op = self.g.make_op("DimValue", [], [v.type], {"values": texts}, name=v.name, out_names=[v.name])
        self.g.append(op)
        self._dim_values[id(v)] = op.outputs[0]
        return op.outputs[0]

    def _runtime_sized(
        self, node: onnx.NodeProto, attrs: dict, inputs: list, scope: Scope, opset: int
    ) -> Value:
        """Range or ConstantOfShape whose length is a dim kept symbolic: the GPU fills it."""
        name = scope.prefix + (_clean_name(node.output[0]) or node.op_type.lower())

        def error(msg: str) -> CompileError:
            return CompileError(msg, node=node.name, op=node.op_type, opset=opset,
                                hint="bind the dims with --dim NAME=N")  # fmt: skip

        if node.op_type == "ConstantOfShape":
            shape = tuple(simplify(x) for x in inputs[0].data.reshape(-1))
            value = attrs.get("value")
            fill = np.zeros((), np.float32) if value is None else np.asarray(value).reshape(())
            if any(isinstance(d, int) and d < 0 for d in shape) or any(
                isinstance(d, Expr) and d.bounds[0] < 0 for d in shape
            ):
                raise error(f"its shape {list(map(str, shape))} may be negative over the dims' ranges")
            scalar = self._const(fill, name + ".value")
            op = self.g.make_op("Expand", [scalar], [TensorType(scalar.dtype, shape)], name=node.name,
                                out_names=[name])  # fmt: skip
            self.g.append(op)
            return op.outputs[0]
        start, limit, delta = (
            simplify(v.data.reshape(())[()]) if v.data.dtype == object else v.data.reshape(()).item()
            for v in inputs
        )
        if not all(isinstance(x, int | Expr) for x in (start, limit, delta)) or not isinstance(delta, int):
            raise error("a Range over dims kept symbolic takes integer bounds and a constant integer step")
        if delta == 0:
            raise error("its delta is 0")
        step = abs(delta)
        span = (limit - start) if delta > 0 else (start - limit)
        n = simplify(smax(floordiv(smax(span, 0) + step - 1, step), 0))
        ins = [self._materialized(v) if symbolic_fold.is_symbolic(v) else v for v in inputs]
        op = self.g.make_op(
            "Range", ins, [TensorType(inputs[0].dtype, (n,))], name=node.name, out_names=[name]
        )
        self.g.append(op)
        return op.outputs[0]

    def _onnx_inference(self, schema, node: onnx.NodeProto, inputs: list, scope: Scope) -> dict:
        """onnx's per-node inference on the inputs' types, small constants given as data (shape
        tensors, axes, pads); raises what onnx raises."""
        types = {n: helper.make_tensor_type_proto(v.dtype.onnx, [_onnx_dim(d) for d in v.shape])
                 for n, v in zip(node.input, inputs) if v is not None}  # fmt: skip
        data = {n: numpy_helper.from_array(v.data, n) for n, v in zip(node.input, inputs)
                if v is not None and v.is_const and v.data.size <= _DATA_PROP_LIMIT and v.data.dtype != object}  # fmt: skip
        return onnx.shape_inference.infer_node_outputs(
            schema, node, types, data,
            opset_imports=[helper.make_opsetid(d, v) for d, v in scope.opset.items()],
            ir_version=max(self.model.ir_version, 3),
        )  # fmt: skip

    def _checked_inference(self, node: onnx.NodeProto, inputs: list, scope: Scope, opset: int) -> dict:
        """ONNX's inference of a node the frontend does not legalize (it folds, or is dead): the
        type errors it finds (an input type the op does not take, a repeated perm...) are the
        model's, as onnxruntime reports them; where it cannot tell, nothing."""
        from onnx.checker import ValidationError
        from onnx.shape_inference import InferenceError

        domain = "" if node.domain == "ai.onnx" else node.domain
        schema = _find_schema(node.op_type, opset, domain)
        if schema is None or any(v is not None and v.dtype == DType.string for v in inputs):
            return {}
        if any(symbolic_fold.is_symbolic(v) or (v is not None and v.type.is_symbolic) for v in inputs):
            return {}  # symbolic folding checks what it folds
        try:
            return self._onnx_inference(schema, node, inputs, scope)
        except (InferenceError, ValidationError) as e:
            # a type the op does not take is the model's error; a shape complaint may not be
            # (onnx's own AffineGrid body feeds Range [1]-shaped bounds, which evaluate fine)
            if isinstance(e, ValidationError) or "TypeInferenceError" in str(e):
                raise CompileError(
                    f"shape inference failed: {str(e).strip().splitlines()[-1]}",
                    node=node.name, op=node.op_type, opset=opset,
                ) from None  # fmt: skip
            return {}
        except Exception:  # inference cannot tell: evaluation reports what is wrong
            return {}

    def _check_fold_size(self, node: onnx.NodeProto, inputs: list, scope: Scope, opset: int) -> None:
        """Before a node folds on the host: its outputs' sizes, from ONNX's shape inference on its
        constant inputs, within the fold limit (where inference can tell)."""
        res = self._checked_inference(node, inputs, scope, opset)
        for name in node.output:
            t = _static_type(res[name]) if name in res else None
            if t is not None and t.dtype.numpy.itemsize and min(t.shape, default=0) >= 0:
                host_eval.check_fold_size(
                    t.shape, t.dtype.numpy.itemsize, self.fold_limit, f"{name!r}",
                    node=node.name, op=node.op_type, opset=opset,
                )  # fmt: skip

    def _legalize_or_inline(self, node: onnx.NodeProto, info: NodeInfo, scope: Scope) -> list[Value | None]:
        """Legalize the node; if it has no lowering of its own but a function body, expand that.

        An op counts as lowered when its legalized ops all have lowerings, so a rule that
        rewrites it into lowered ops wins over its function body. Ops of other domains compile
        only through a rule of their own (onnxruntime's contrib ops, legalize/contrib.py)."""
        from .legalize import has_rule

        if info.domain != "" and info.schema is None and not has_rule(info.op_type, info.domain):
            raise info.error(
                f"no WebGPU lowering for {info.domain}.{info.op_type}, a custom op with no known definition",
                hint="export it as standard ONNX ops, or define it as a function inside the model",
                cls=UnsupportedError,
            )
        info.attrs = _with_defaults(info.attrs, info.schema)
        info.out_types = self._infer(node, info, scope)
        if any(t is None and n in scope.used for t, n in zip(info.out_types, node.output)):
            return self._no_static_shape(node, info, scope)
        mark = len(self.g.ops)
        outs = legalize(self.g, info)
        if info.domain != "" or all(functions.lowered(op.kind) for op in self.g.ops[mark:] if not op.domain):
            return outs
        body = functions.function_body(
            node, info.schema, info.opset, [functions.input_type(v) for v in info.inputs]
        )
        if body is None:
            return outs  # lowering reports the op as unsupported
        for op in self.g.ops[mark:]:
            op.detach()
        del self.g.ops[mark:]
        return self._inline(node, body, scope, info.inputs)

    def _bind_outputs(self, node: onnx.NodeProto, outs: list[Value | None], scope: Scope) -> None:
        for name, v in zip(node.output, outs):
            if name and v is not None:
                scope.names[name] = v
                declared = self.declared.get(name) if scope is self.root else None
                if declared is not None and declared != v.dtype.onnx:
                    raise CompileError(
                        f"its output {name!r} is {v.dtype.name}, but the graph's value_info declares "
                        f"{onnx.TensorProto.DataType.Name(declared)}",
                        node=node.name, op=node.op_type, opset=scope.opset.get(node.domain or ""),
                        hint="fix the declared type (onnxruntime refuses the model too)",
                    )  # fmt: skip

    def _inline(self, node: onnx.NodeProto, body, scope: Scope, inputs: list[Value | None]):
        """Expand ``node`` from its function body in a fresh scope bound to its inputs."""
        if scope.depth >= functions.MAX_DEPTH:
            raise CompileError(
                f"function bodies nest deeper than {functions.MAX_DEPTH} levels",
                node=node.name,
                op=node.op_type,
                hint="the op's definition refers to itself",
            )
        wanted = {f for f, o in zip(body.outputs, node.output) if o and o in scope.used}
        used = set().union(*(_needs(n) for n in body.nodes)) | wanted
        prefix = f"{scope.prefix}{_clean_name(node.name) or node.op_type}/"
        inner = scope.child(prefix, used, opset=body.opset)
        for i, formal in enumerate(body.inputs):
            if formal:
                inner.names[formal] = inputs[i] if i < len(inputs) else None
        for n in body.nodes:  # errors inside the body then say where it came from
            n.name = prefix + (n.name or n.op_type)
        self.run_nodes(body.nodes, inner)
        outs: list[Value | None] = []
        for formal, actual in zip(body.outputs, node.output):
            outs.append(inner.lookup(formal) if actual and formal in inner.names else None)
        missing = [o for o, v in zip(node.output, outs) if o and o in scope.used and v is None]
        if missing:
            raise CompileError(
                f"its function body does not produce output {missing[0]!r}",
                node=node.name,
                op=node.op_type,
            )
        return outs

    def _infer(self, node: onnx.NodeProto, info: NodeInfo, scope: Scope) -> list[TensorType | None]:
        from .shape_rules import infer_shapes

        onnx_types: dict[str, TensorType | None] = {}
        symbolic = {str(d): d for v in info.inputs if v is not None for d in v.shape if isinstance(d, Expr)}
        shape_in = info.inputs[1] if len(info.inputs) > 1 else None
        if (
            info.op_type in ("Reshape", "Expand", "Slice")
            and info.inputs[0].type.is_symbolic
            and shape_in is not None
            and shape_in.is_const
        ):
            # onnx's inference leaves -1 and broadcasts over dim_params unknown
            own = self._symbolic_rule(info, 1, shape_in)
            return [t if name in scope.used else None for name, t in zip(node.output, own)]
        for i, v in enumerate(info.inputs):
            if symbolic_fold.is_symbolic(v):
                own = self._symbolic_rule(info, i, v)
                return [t if name in scope.used else None for name, t in zip(node.output, own)]
        if info.schema is not None:
            try:
                res = self._onnx_inference(info.schema, node, info.inputs, scope)
            except Exception as e:
                raise info.error(f"shape inference failed: {str(e).strip().splitlines()[-1]}") from e
            for name in node.output:
                tp = res.get(name)
                onnx_types[name] = _static_type(tp, symbolic) if tp is not None else None
                if onnx_types[name] is not None and any(
                    isinstance(d, int) and d < 0 for d in onnx_types[name].shape
                ):
                    raise info.error(
                        f"its output {name!r} would have shape {list(onnx_types[name].shape)}: its "
                        "attributes do not fit its inputs' shapes",
                        hint="fix the model",
                    )
        known = [onnx_types.get(n) for n in node.output]
        if any(t is None for n, t in zip(node.output, known) if n):
            own = infer_shapes(info)
            known = [
                k if k is not None else (own[i] if own and i < len(own) else None)
                for i, k in enumerate(known)
            ]
        return [t if name in scope.used else None for name, t in zip(node.output, known)]

    def _symbolic_rule(self, info: NodeInfo, i: int, v: Value) -> list[TensorType | None]:
        """The output type of an op that reads symbolic shape value ``v`` as input ``i``, an
        input that decides its shape (symbolic values read as data are computed on the GPU
        before this): Slice bounds, a Reshape or Expand target, Tile's repeats; any other is a
        clear error."""
        x = info.inputs[0]
        try:
            if info.op_type == "Slice" and i >= 1 and info.opset >= 10:
                return [symbolic_fold.slice_type(x.type, info.inputs[1:])]
            if info.op_type == "Resize" and i == 3 and info.opset >= 11:
                from .shape_rules import _resize

                return _resize(info)
            if info.op_type == "Reshape" and i == 1:
                shape = symbolic_fold._reshape_shape(
                    x.shape, list(v.data.reshape(-1)), info.attrs.get("allowzero", 0)
                )
                return [TensorType(x.dtype, shape)]
            if info.op_type == "Expand" and i == 1:
                return [TensorType(x.dtype, symbolic_fold.broadcast(x.shape, tuple(v.data.reshape(-1))))]
            if info.op_type == "Tile" and i == 1:
                reps = [simplify(r) for r in v.data.reshape(-1)]
                if len(reps) != x.type.rank:
                    raise info.error(f"repeats {reps} do not match rank {x.type.rank}")
                return [TensorType(x.dtype, tuple(simplify(n * r) for n, r in zip(x.shape, reps)))]
        except SymbolicError as e:
            raise info.error(f"its output shape over dims kept symbolic: {e}",
                             hint="bind the dims with --dim NAME=N") from None  # fmt: skip
        if not symbolic_fold.is_symbolic(v):
            return [None]
        raise symbolic_fold.runtime_use_error(info, v)

    def _no_static_shape(self, node: onnx.NodeProto, info: NodeInfo, scope: Scope) -> list[Value | None]:
        """An output's shape depends on run-time values. If the op's legalize rule needs a graph
        input's value (shape, axes, k...), say which (a ConstantRequiredError); an op without
        a lowering of its own but with a function body is expanded (its ops then say what they
        need); else the shape is data-dependent, which a static plan cannot hold."""
        from .legalize import has_rule

        if has_rule(info.op_type, info.domain):
            probe = dataclasses.replace(info, out_types=list(info.out_types))
            try:
                legalize(Graph(name="probe"), probe)  # a scratch graph: the rule's emits go nowhere
            except CompileError:
                raise  # the rule's own error: an input it needs as a constant, or another limit
            except Exception:  # the rule needed the output types it lacks: nothing more to say
                pass
        if info.domain == "" and not functions.lowered(info.op_type):
            body = functions.function_body(
                node, info.schema, info.opset, [functions.input_type(v) for v in info.inputs]
            )
            if body is not None:
                return self._inline(node, body, scope, info.inputs)
        if info.domain != "" or not functions.lowered(info.op_type):
            # no rule asked for constants and no lowering exists: that is the real error
            raise info.error(
                f"no WebGPU lowering for {info.domain + '.' if info.domain else ''}{info.op_type}",
                hint="`onnx2wgsl ops` lists the supported ops",
                cls=UnsupportedError,
            )
        name = next(n for t, n in zip(info.out_types, node.output) if t is None and n in scope.used)
        raise info.error(
            f"cannot infer a static shape for output {name!r}",
            hint="its shape depends on run-time values; bind the model's dims with --dim/--shape",
            cls=UnsupportedError,
        )


def _schema(info: NodeInfo):
    try:
        return onnx.defs.get_schema(info.op_type, info.opset, info.domain)
    except onnx.defs.SchemaError:
        if info.domain == "" and info.op_type not in ORT_DEFAULT_DOMAIN:
            raise info.error(
                f"{info.op_type!r} is not an ONNX operator at opset {info.opset}",
                hint="check the model's opset import",
                cls=UnsupportedError,
            ) from None
        return None


def _find_schema(op_type: str, opset: int, domain: str):
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def _with_defaults(attrs: dict[str, Any], schema) -> dict[str, Any]:
    if schema is None:
        return attrs
    out = dict(attrs)
    for name, a in schema.attributes.items():
        if name not in out and a.default_value is not None and a.default_value.name:
            v = helper.get_attribute_value(a.default_value)
            if isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode() for s in v]
            out[name] = v.decode() if isinstance(v, bytes) else v
    return out


def _onnx_dim(d) -> int | str:
    """A dim for onnx's inference: a symbolic one as a dim_param named by its text."""
    d = simplify(d) if isinstance(d, Expr) else d
    return str(d) if isinstance(d, Expr) else d if isinstance(d, str) else int(d)


def _static_type(tp: onnx.TypeProto, symbolic: dict[str, Expr] | None = None) -> TensorType | None:
    """onnx's inferred type, its dim_params mapped back to the ``symbolic`` dims they name."""
    if tp.WhichOneof("value") != "tensor_type":
        return None
    tt = tp.tensor_type
    if tt.elem_type == 0 or not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif symbolic and d.dim_param in symbolic:
            dims.append(symbolic[d.dim_param])
        else:
            return None
    try:
        return TensorType(DType.from_onnx(tt.elem_type), tuple(dims))
    except KeyError:
        return None


def _dtype(elem_type: int, what: str) -> DType:
    try:
        return DType.from_onnx(elem_type)
    except KeyError:
        raise UnsupportedError(f"{what} has unknown element type {elem_type}") from None


def _shape_of(op_type: str, shape: tuple[int, ...], attrs: dict[str, Any]) -> np.ndarray:
    if op_type == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    rank = len(shape)
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    start, end = (min(max(i + rank if i < 0 else i, 0), rank) for i in (start, end))
    return np.array(shape[start:end], dtype=np.int64)


def _constant_value(node: onnx.NodeProto, attrs: dict[str, Any]) -> np.ndarray:
    if "value" in attrs:
        return np.asarray(attrs["value"])
    table = {
        "value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
        "value_ints": np.int64,
    }  # fmt: skip
    for key, dt in table.items():
        if key in attrs:
            return np.asarray(attrs[key], dtype=dt)
    if "value_string" in attrs or "value_strings" in attrs:
        return np.asarray(attrs.get("value_string", attrs.get("value_strings")), dtype=object)
    raise CompileError("Constant node has no value attribute", node=node.name, op="Constant")


def _topological(nodes) -> list[onnx.NodeProto]:
    """Nodes in a valid order (ONNX requires one, but not every exporter writes it).

    A node is ready once every name it reads that some node of the list produces has been
    produced; names no node produces come from outside (inputs, initializers, outer scope)."""
    nodes = list(nodes)
    produced = {o for n in nodes for o in n.output if o}
    known: set[str] = set()
    pending = nodes
    ordered: list[onnx.NodeProto] = []
    while pending:
        progress = []
        rest = []
        for n in pending:
            if all(x in known or x not in produced for x in _needs(n)):
                progress.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if not progress:
            ring = validate.cycle(rest, _needs)
            steps = []
            for n, m in zip(ring, ring[1:] + ring[:1]):  # m reads an output of n
                value = next(o for o in n.output if o and o in _needs(m))
                steps += [f"{n.op_type} {n.name!r}" if n.name else n.op_type, repr(value)]
            raise CompileError(
                f"the graph has a cycle: {' -> '.join(steps + steps[:1])}",
                hint="an ONNX graph is acyclic; fix the model",
            )
        ordered += progress
        pending = rest
    return ordered


def _used_names(gp: onnx.GraphProto) -> set[str]:
    """Names that some node (or subgraph) reads or the graph outputs; others may stay untyped."""
    used = {vi.name for vi in gp.output}
    for n in gp.node:
        used |= _needs(n)
    return used


def _needs(n: onnx.NodeProto) -> set[str]:
    """Names a node reads: its inputs and what its subgraphs take from the outer scope."""
    needed = set(n.input) - {""}  # (an omitted optional input reads nothing)
    for a in n.attribute:
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            inner = {vi.name for vi in sub.input} | {t.name for t in sub.initializer}
            for m in sub.node:
                needed |= _needs(m) - inner
                inner.update(m.output)
    return needed


def _shape_deciding(gp: onnx.GraphProto, defaults: dict, used: set[str]) -> dict[str, str]:
    """The inputs among ``defaults`` that a live node of the graph reads where a shape is decided
    (a Reshape's shape, a Pad's pads...), each with that node: they must be compiled in. Spotting
    them here spares an import per input; others surface as ConstantRequiredError (see
    ``import_model``)."""
    from .shape_rules import SHAPE_INPUTS

    found: dict[str, str] = {}
    for n in gp.node:
        if n.domain not in ("", "ai.onnx") or not any(o in used for o in n.output if o):
            continue
        for i in SHAPE_INPUTS.get(n.op_type, {}):
            if i < len(n.input) and n.input[i] in defaults:
                found.setdefault(n.input[i], _where(n.op_type, n.name))
    return found


def _where(op: str | None, node: str | None) -> str:
    return f"{op} node {node!r}" if node else f"{op} node"


def _expression_names(text: str) -> set[str]:
    """The names a dim_param written as arithmetic (``past_sequence_length + sequence_length``)
    uses; empty for a plain name or text that is no expression."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return set()
    if isinstance(tree, ast.Name):
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _clean_name(name: str) -> str:
    return name.strip()


def split_dims(dims) -> tuple[dict[str, int], dict[str, Symbol]]:
    """``dims`` (name -> N, (lo, hi) or "lo..hi") split into dims bound to an int and dims kept
    symbolic with a range; a range with lo == hi binds."""
    bound: dict[str, int] = {}
    ranges: dict[str, Symbol] = {}
    for name, v in (dims or {}).items():
        text = v if isinstance(v, str) else None
        try:
            if isinstance(v, str):
                v = tuple(int(x) for x in v.split("..")) if ".." in v else int(v)
            if isinstance(v, tuple | list) and len(v) == 2:
                lo, hi = (int(x) for x in v)
                if lo == hi:
                    v = lo
                else:
                    ranges[name] = Symbol(str(name), lo, hi)
                    continue
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
                raise ValueError(f"dim {name} = {v!r}: want a non-negative integer N or a range (lo, hi)")
            bound[name] = int(v)
        except ValueError as e:
            msg = str(e) if text is None or "range" in str(e) else f"dim {name} = {text!r}: want N or LO..HI"
            raise CompileError(
                msg, hint="e.g. --dim batch=1 or --dim seq=1..128 (Python: dims={'seq': (1, 128)})"
            ) from None
    return bound, ranges


def import_model(
    model: onnx.ModelProto,
    shapes: dict[str, tuple[int, ...]] | None = None,
    dims: dict[str, int | tuple[int, int]] | None = None,
    constants: dict[str, np.ndarray] | None = None,
    fold_limit: int = host_eval.FOLD_LIMIT,
    freeze_initializers: bool = False,
) -> tuple[Graph, list[str]]:
    """ONNX model -> Graph IR with bound dims, folded constants and legal ops (plus warnings).

    ``constants`` freezes graph inputs to given values: they become constants, fold like
    initializers (secondary inputs such as shapes, axes and pads then reach the rules that
    need them) and are no longer inputs of the compiled model. No tensor folded on the host may
    take more than ``fold_limit`` bytes.

    An input with an initializer of its name (IR version >= 4) stays an input, whose
    initializer is its default (``metadata["input_defaults"]``), unless an op needs its value
    at compile time: then it is compiled in with its initializer's value, as a constant.
    ``freeze_initializers`` compiles every such initializer in."""
    model = _upgrade(model)
    bound, ranges = split_dims(dims)
    compiled_in: dict[str, str] = {}
    while True:
        imp = Importer(
            model, dict(shapes or {}), dict(bound), dict(constants or {}), fold_limit=fold_limit,
            freeze_initializers=freeze_initializers, compiled_in=dict(compiled_in), ranges=ranges,
        )  # fmt: skip
        try:
            return imp.run(), imp.warnings
        except ConstantRequiredError as e:
            # an op needs the value of inputs that have a default: compile those in, import again
            new = [n for n in e.inputs if n in imp.defaults and n not in compiled_in]
            if not new:
                raise
            compiled_in.update(dict.fromkeys(new, _where(e.op, e.node)))


def _upgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ir_version > onnx.IR_VERSION:
        raise CompileError(
            f"the model's IR version {model.ir_version} is newer than this onnx package knows "
            f"({onnx.IR_VERSION})",
            hint="upgrade the onnx package",
        )
    opset = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    newest = onnx.defs.onnx_opset_version()
    v = opset.get("")
    if v is None:
        if not any(n.domain in ("", "ai.onnx") for n in model.graph.node):
            return model
        raise CompileError("the model imports no default-domain opset", hint="add an opset_import")
    if v > newest:
        raise CompileError(
            f"the model uses opset {v}, newer than this onnx package knows ({newest})",
            hint="upgrade the onnx package",
        )
    if v < MIN_OPSET:
        from onnx import version_converter

        try:
            return version_converter.convert_version(model, MIN_OPSET)
        except Exception as e:
            raise CompileError(
                f"the model uses opset {v}; converting it to opset {MIN_OPSET} failed ({e})",
                hint="re-export the model at opset 7 or newer",
            ) from e
    if model.functions:
        from onnx import inliner

        try:
            model = inliner.inline_local_functions(model)
        except Exception as e:  # onnx's inliner refuses recursive or broken functions
            raise CompileError(
                f"the model's local functions cannot be inlined ({first_line(e) or type(e).__name__})",
                hint="fix the model's functions",
            ) from e
    return model

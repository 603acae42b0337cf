"""The typed SSA graph: values, ops with attributes, constants, and the kernel-level forms.

One Graph type serves every stage. Before lowering, ops are ONNX ops (kind = op_type).
Lowering turns each (fused) group into a ``kernel`` op that owns its dispatches, or a
``view`` op that aliases its input's storage. Memory planning then gives every value
that needs storage a Placement.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .kernel import Kernel
from .symbolic import Expr, Symbol
from .types import DType, TensorType, storage_dtype, storage_nbytes


@dataclass(frozen=True)
class Placement:
    """Where a value lives after planning: a byte range of a named buffer."""

    buffer: str
    offset: int
    size: int


@dataclass
class Binding:
    """One storage binding of a dispatch: a byte range of a value, read or written."""

    value: Value
    offset: int = 0
    size: int | None = None  # None: the whole value
    write: bool = False

    @property
    def nbytes(self) -> int:
        return self.value.nbytes - self.offset if self.size is None else self.size


@dataclass
class Dispatch:
    """One compute dispatch: a shader, its bindings in binding order, a workgroup grid.

    ``inplace`` lists (read, write) pairs of binding indices whose values may share storage:
    the shader reads each element of the read binding only where it writes the same element
    of the write binding, and before writing it, so the in-place pass may merge the two
    into one read-write binding (see compiler/passes/in_place.py)."""

    shader: str
    grid: tuple[int, int, int]
    bindings: list[Binding]
    inplace: tuple[tuple[int, int], ...] = ()
    # operations of the op it runs, for profiles (compiler/cost.py; not part of the IR text)
    flops: int | Expr = field(default=0, compare=False)
    # the tunable choice that shaped its shader (compiler/tune.py; not part of the IR text)
    tune: Tune | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Tune:
    """A lowering's choice among equally correct forms of a kernel (tile sizes, ...): ``key``
    names the problem (the kernel and the sizes the choice depends on), ``choice`` is the form
    taken (JSON text) out of ``candidates`` forms, and ``source`` says where it came from:
    "default" (the lowering's cost model), "table" (a tuning table, ``--tuning``), "explore"
    (a tuning run's candidate) or "refused" (the table named a form that is not a candidate
    here: the default was taken)."""

    key: str
    choice: str
    candidates: int
    source: str = "default"

    @staticmethod
    def text(form) -> str:
        """A form as the JSON text ``choice`` holds (one spelling per form)."""
        return json.dumps(form, sort_keys=True, separators=(",", ":"))


class Value:
    """An SSA value. Constants carry their data; every other value has a producer or is a graph input."""

    __slots__ = ("name", "type", "producer", "uses", "data", "placement", "storage", "__weakref__")

    def __init__(self, name: str, type: TensorType, data: np.ndarray | None = None):
        self.name = name
        self.type = type
        self.producer: Op | None = None
        self.uses: list[Op] = []
        self.data = data
        self.placement: Placement | None = None
        # the scalar type the GPU stores it as when not the dtype policy's (ir/types.py): f16
        # for a float value the precision pass narrowed, else None
        self.storage: DType | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def nbytes(self) -> int:
        """Bytes of GPU storage (32-bit scalars, or f16 ones padded to 4-byte words)."""
        return storage_nbytes(self.type, self.storage)

    @property
    def stored(self) -> DType | None:
        """The scalar type the GPU stores the value as (None: it cannot be stored)."""
        return self.storage or storage_dtype(self.dtype)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Op:
    """An operation: ONNX op kinds before lowering, ``kernel`` / ``view`` after."""

    __slots__ = ("kind", "domain", "name", "inputs", "outputs", "attrs", "dispatches")

    def __init__(
        self,
        kind: str,
        inputs: Iterable[Value | None],
        outputs: Iterable[Value],
        attrs: dict[str, Any] | None = None,
        name: str = "",
        domain: str = "",
        dispatches: list[Dispatch] | None = None,
    ):
        self.kind = kind
        self.domain = domain
        self.name = name
        self.inputs: list[Value | None] = list(inputs)
        self.outputs: list[Value] = list(outputs)
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.dispatches: list[Dispatch] = list(dispatches or [])
        for v in self.inputs:
            if v is not None:
                v.uses.append(self)
        for v in self.outputs:
            v.producer = self

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def set_input(self, i: int, v: Value | None) -> None:
        old = self.inputs[i]
        if old is not None:
            old.uses.remove(self)
        self.inputs[i] = v
        if v is not None:
            v.uses.append(self)

    def detach(self) -> None:
        """Drop this op's use-def links (its outputs keep their names and types)."""
        for v in self.inputs:
            if v is not None:
                v.uses.remove(self)
        for v in self.outputs:
            if v.producer is self:
                v.producer = None

    @property
    def label(self) -> str:
        return f"{self.kind} node {self.name!r}" if self.name else f"{self.kind} node"

    def __repr__(self) -> str:
        ins = ", ".join("_" if v is None else f"%{v.name}" for v in self.inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        return f"{outs} = {self.kind}({ins})"


def distinct(values: Iterable[Value | None]) -> list[Value]:
    """The values, each once (by identity), in first-seen order; None dropped."""
    out: list[Value] = []
    seen: set[int] = set()
    for v in values:
        if v is not None and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


@dataclass
class Graph:
    """A whole model: inputs, outputs, ops in a topological order, and what later stages add."""

    name: str = "main"
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    opset: dict[str, int] = field(default_factory=dict)
    shaders: dict[str, Kernel] = field(default_factory=dict)  # after lowering: name -> kernel
    buffers: dict[str, dict[str, Any]] = field(default_factory=dict)  # after planning
    metadata: dict[str, Any] = field(default_factory=dict)
    # dims kept symbolic (name -> Symbol with its range); only the root graph holds them
    symbols: dict[str, Symbol] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set, repr=False)
    _counter: Iterator[int] = field(default_factory=itertools.count, repr=False)
    # add_shader's index of ``shaders`` (kernel -> first name), and the dict and size it indexed
    _shader_index: dict[Kernel, str] = field(default_factory=dict, repr=False, compare=False)
    _shader_indexed: tuple[Any, int] = field(default=(None, 0), repr=False, compare=False)

    # -- construction -------------------------------------------------------------------
    def fresh_name(self, hint: str) -> str:
        """A value name not used yet in this graph, derived from hint."""
        if hint and hint not in self._names:
            self._names.add(hint)
            return hint
        base = hint or "v"
        while True:
            name = f"{base}.{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def add_shader(self, kernel: Kernel, stem: str) -> str:
        """The name of a shader with this kernel: an existing one's (the first), else a new
        ``NNN_stem`` (shaders are deduplicated by kernel, which is a structural value).

        The kernels are indexed, not searched; the index is rebuilt when ``shaders`` is another
        dict or changed size since (add to it here, or assign a new dict)."""
        if self._shader_indexed[0] is not self.shaders or self._shader_indexed[1] != len(self.shaders):
            self._shader_index = {}
            for name, existing in self.shaders.items():
                self._shader_index.setdefault(existing, name)
        found = self._shader_index.get(kernel)
        if found is not None:
            self._shader_indexed = (self.shaders, len(self.shaders))
            return found
        n = len(self.shaders)
        while f"{n:03d}_{stem}" in self.shaders:
            n += 1
        name = f"{n:03d}_{stem}"
        self.shaders[name] = kernel
        self._shader_index[kernel] = name
        self._shader_indexed = (self.shaders, len(self.shaders))
        return name

    def reserve_name(self, name: str) -> None:
        self._names.add(name)

    def value(self, hint: str, type: TensorType) -> Value:
        return Value(self.fresh_name(hint), type)

    def const(self, data: np.ndarray, hint: str = "const", dtype: DType | None = None) -> Value:
        data = np.asarray(data)
        dt = dtype or DType.from_numpy(data.dtype)
        data = np.asarray(data.astype(dt.numpy, copy=False), order="C")  # keeps 0-d scalars 0-d
        return Value(self.fresh_name(hint), TensorType(dt, data.shape), data=data)

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh_name(name), type)
        self.inputs.append(v)
        return v

    def make_op(
        self,
        kind: str,
        inputs: Iterable[Value | None],
        out_types: Iterable[TensorType],
        attrs: dict[str, Any] | None = None,
        name: str = "",
        out_names: Iterable[str] | None = None,
        domain: str = "",
    ) -> Op:
        """Create an op with fresh output values; the caller places it in ``ops``."""
        out_types = list(out_types)
        hints = list(out_names) if out_names is not None else [name or kind.lower()] * len(out_types)
        outs = [Value(self.fresh_name(h), t) for h, t in zip(hints, out_types)]
        return Op(kind, inputs, outs, attrs, name=name, domain=domain)

    def append(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    # -- rewriting ----------------------------------------------------------------------
    def replace_uses(self, old: Value, new: Value) -> None:
        """Point every use of ``old`` (graph outputs included) at ``new``."""
        for op in list(old.uses):
            for i, v in enumerate(op.inputs):
                if v is old:
                    op.set_input(i, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_op(self, op: Op) -> None:
        op.detach()
        self.ops.remove(op)

    # -- queries ------------------------------------------------------------------------
    def constants(self) -> list[Value]:
        """Constant values in first-use order (deterministic)."""
        seen: dict[int, Value] = {}
        for op in self.ops:
            for v in op.inputs:
                if v is not None and v.is_const and id(v) not in seen:
                    seen[id(v)] = v
        for v in self.outputs:
            if v.is_const and id(v) not in seen:
                seen[id(v)] = v
        return list(seen.values())

    def values(self) -> list[Value]:
        """Every value the graph refers to, in definition order (inputs, constants, op outputs)."""
        out: dict[int, Value] = {id(v): v for v in self.inputs}
        for v in self.constants():
            out.setdefault(id(v), v)
        for op in self.ops:
            for v in op.outputs:
                out.setdefault(id(v), v)
        for v in self.outputs:
            out.setdefault(id(v), v)
        return list(out.values())

    def kernels(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "kernel"]

    def dispatch_count(self) -> int:
        return sum(len(op.dispatches) for op in self.ops)

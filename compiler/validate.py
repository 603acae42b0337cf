"""Checks of an ONNX model from a stranger, before the frontend trusts it.

ONNX's checker and onnxruntime refuse these models; the frontend would otherwise compute
something (the last of two writers wins, a Reshape reads padding) or fail deep inside with
an exception of numpy or onnx. Each check raises a CompileError that names the graph or the
node, its op and opset, and says what to fix.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnx2wgsl.errors import CompileError, first_line

# INT attributes whose only values are 0 and 1 (the spec's booleans), of any op that has one
FLAGS = frozenset({
    "align_corners", "allowzero", "antialias", "broadcast", "ceil_mode", "center_point_box",
    "count_include_pad", "detect_negative", "detect_positive", "exclude_outside", "exclusive",
    "fmod", "input_forget", "interleaved", "inverse", "is_case_sensitive", "is_causal", "is_test",
    "keepdims", "largest", "layout", "linear_before_reset", "new_axis", "noop_with_empty_axes",
    "onesided", "output_sequence", "periodic", "reverse", "saturate", "select_last_index", "sorted",
    "spatial", "storage_order", "training_mode", "transA", "transB", "upper",
})  # fmt: skip
# INT attributes that name a TensorProto data type
DTYPE_ATTRS = frozenset({"to", "dtype", "output_dtype", "output_datatype", "stash_type"})
# INT attributes with a few allowed values, per op
CHOICES: dict[tuple[str, str], tuple[int, ...]] = {
    ("Attention", "qk_matmul_output_mode"): (0, 1, 2, 3),
    ("Attention", "softmax_precision"): (1, 10, 11, 16),
}
DATA_TYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
_ATTR_TYPE_NAMES = {v: k for k, v in onnx.AttributeProto.AttributeType.items()}


def check_graph(gp: onnx.GraphProto, what: str = "the model's graph") -> None:
    """One graph's names: every value defined once (inputs, initializers and node outputs, as
    ONNX's static single assignment asks), no empty input, initializer or output name, and at
    least one output."""
    if not gp.output:
        raise CompileError(f"{what} has no outputs", hint="a graph must list at least one output")
    for kind, names in (
        ("input", [vi.name for vi in gp.input]),
        ("output", [vi.name for vi in gp.output]),
        ("initializer", [t.name for t in gp.initializer] + [s.values.name for s in gp.sparse_initializer]),
    ):
        if any(not n for n in names):
            raise CompileError(
                f"{what} has {'an' if kind[0] in 'aeiou' else 'a'} {kind} with an empty name",
                hint=f"name every graph {kind}",
            )
        twice = [n for n, c in Counter(names).items() if c > 1]
        if twice and kind != "output":  # one value may be listed as two outputs (onnxruntime agrees)
            raise CompileError(
                f"{what} lists {kind} {twice[0]!r} twice", hint=f"ONNX names each graph {kind} once"
            )
    defined: dict[str, str] = {vi.name: "a graph input" for vi in gp.input}
    inits = {t.name for t in gp.initializer} | {s.values.name for s in gp.sparse_initializer}
    defined.update((n, "an initializer") for n in inits if n not in defined)
    for node in gp.node:
        for o in node.output:
            if not o:
                continue
            if o in defined:
                raise CompileError(
                    f"output {o!r} is also written by {defined[o]}",
                    node=node.name,
                    op=node.op_type,
                    hint="ONNX defines each name once (static single assignment); rename one of them",
                )
            defined[o] = f"{node.op_type} node {node.name!r}" if node.name else f"a {node.op_type} node"


def check_strings(message, where: str = "the model") -> None:
    """Every string field (names, op types, domains...) valid UTF-8: protobuf hands an invalid
    one over as bytes, which nothing downstream expects."""
    from google.protobuf.descriptor import FieldDescriptor

    for fd, value in message.ListFields():
        if fd.type == FieldDescriptor.TYPE_STRING:
            for s in value if fd.is_repeated else [value]:
                if not isinstance(s, str):
                    raise CompileError(
                        f"{where} has a string field {fd.name!r} that is not valid UTF-8: {bytes(s)[:40]!r}",
                        hint="the file is damaged",
                    )
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            for m in value if fd.is_repeated else [value]:
                check_strings(m, where)


def check_node(node: onnx.NodeProto, schema, opset: int) -> None:
    """A node against its ONNX schema: input and output counts, required inputs given,
    required attributes present, every attribute of the declared type and within its values."""
    if schema is None:
        return
    where = {"node": node.name, "op": node.op_type, "opset": opset}
    n_in, n_out = len(node.input), len(node.output)
    if not schema.min_input <= n_in <= schema.max_input:
        raise CompileError(
            f"it has {n_in} inputs; the op takes {_range(schema.min_input, schema.max_input)}", **where
        )
    if not schema.min_output <= n_out <= schema.max_output:
        raise CompileError(
            f"it has {n_out} outputs; the op gives {_range(schema.min_output, schema.max_output)}", **where
        )
    option = onnx.defs.OpSchema.FormalParameterOption
    for what, names, formals in (
        ("input", node.input, schema.inputs),
        ("output", node.output, schema.outputs),
    ):
        for i, name in enumerate(names):
            formal = formals[min(i, len(formals) - 1)]
            if not name and formal.option != option.Optional:
                raise CompileError(
                    f"its {what} {i} ({formal.name}) is required, but the node leaves it empty", **where
                )
    given = {a.name: a for a in node.attribute}
    for name, spec in schema.attributes.items():
        if spec.required and name not in given:
            raise CompileError(f"it lacks the required attribute {name!r}", **where)
    for a in node.attribute:
        spec = schema.attributes.get(a.name)
        if spec is None and not a.ref_attr_name:  # onnx's checker and onnxruntime refuse it too
            raise CompileError(
                f"{a.name!r} is not an attribute of {node.op_type} at opset {opset}",
                hint=f"its attributes are {', '.join(sorted(schema.attributes)) or 'none'}",
                **where,
            )
        if spec is None or a.ref_attr_name:
            continue
        if a.type != spec.type:
            raise CompileError(
                f"attribute {a.name!r} is {_ATTR_TYPE_NAMES.get(a.type, a.type)}, but the op declares "
                f"it {_ATTR_TYPE_NAMES.get(spec.type, spec.type)}",
                **where,
            )
        if a.type == onnx.AttributeProto.INT:
            _check_int(node.op_type, a.name, a.i, where)


def check_axes(node: onnx.NodeProto, rank: int | None, opset: int) -> None:
    """Axis attributes near the rank of the node's first input: onnx's inference indexes with
    them unchecked (a LayerNormalization axis of 2**31 crashes the process), so an absurd one
    is refused before it runs. The op's exact range is the op's own check."""
    if rank is None:
        return
    for a in node.attribute:
        if a.name in ("axis", "batch_axis", "time_axis") and a.type == onnx.AttributeProto.INT:
            values = [a.i]
        elif a.name == "axes" and a.type == onnx.AttributeProto.INTS:
            values = list(a.ints)
        else:
            continue
        bound = rank + max(1, len(values))  # Unsqueeze's axes, OneHot's and Flatten's axis reach past it
        bad = [v for v in values if not -bound <= v <= bound]
        if bad:
            raise CompileError(
                f"attribute {a.name} {bad[0]} is out of range for an input of rank {rank}",
                node=node.name, op=node.op_type, opset=opset, hint="fix the model",
            )  # fmt: skip


def _check_int(op: str, name: str, value: int, where: dict[str, Any]) -> None:
    if name in FLAGS and value not in (0, 1):
        raise CompileError(f"attribute {name}={value} is out of spec; it is 0 or 1", **where)
    if name in DTYPE_ATTRS and value not in DATA_TYPES:
        raise CompileError(
            f"attribute {name}={value} is not an ONNX data type", hint="see TensorProto.DataType", **where
        )
    allowed = CHOICES.get((op, name))
    if allowed is not None and value not in allowed:
        raise CompileError(
            f"attribute {name}={value} is out of spec; it is one of {', '.join(map(str, allowed))}", **where
        )


def check_ir_ops(ops) -> None:
    """The attribute values of IR ops that keep an ONNX op's name (their attributes have its
    meaning): 0/1 flags and choices, as ``check_node`` checks an ONNX node; data types are
    the IR's dtype names (``to = "i32"``)."""
    from onnx2wgsl.ir import DType

    dtypes = {d.value for d in DType}
    for op in ops:
        if op.domain:
            continue
        where = {"node": op.name, "op": op.kind}
        for name, value in op.attrs.items():
            if name in DTYPE_ATTRS and isinstance(value, str):
                if value not in dtypes:
                    raise CompileError(f"attribute {name} = {value!r} is not a dtype of the IR", **where)
            elif name in FLAGS or name in DTYPE_ATTRS or (op.kind, name) in CHOICES:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise CompileError(f"attribute {name} must be an integer, not {value!r}", **where)
                _check_int(op.kind, name, value, where)
            elif name == "axis" and isinstance(value, int) and op.inputs and op.inputs[0] is not None:
                # (an axis of the first input's rank, or one past it where an op inserts one)
                r = op.inputs[0].type.rank
                if not -r - 1 <= value <= r:
                    raise CompileError(
                        f"attribute axis = {value} is outside the rank {r} of its input", **where
                    )


def _range(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"at least {lo}" if hi >= 2**31 - 1 else f"{lo} to {hi}"


def tensor_array(t: onnx.TensorProto, what: str) -> np.ndarray:
    """A TensorProto's value, or a CompileError naming it (negative dims, an unknown data
    type, fewer or more values than its shape holds)."""
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise CompileError(f"{what} {t.name!r} has a negative dim: {dims}", hint="the file is damaged")
    if t.data_type not in DATA_TYPES:
        raise CompileError(
            f"{what} {t.name!r} has unknown data type {t.data_type}", hint="the file is damaged"
        )
    if t.HasField("raw_data"):
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        n = int(np.prod(dims, dtype=object)) if dims else 1
        need = n * itemsize if t.data_type not in _SUBBYTE else -(-n * _SUBBYTE[t.data_type] // 8)
        if t.data_type != onnx.TensorProto.STRING and len(t.raw_data) != need:
            raise CompileError(
                f"{what} {t.name!r} holds {len(t.raw_data):,} bytes of data, but its shape {dims} of "
                f"{onnx.TensorProto.DataType.Name(t.data_type)} needs {need:,}",
                hint="the file is truncated or damaged",
            )
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # onnx/numpy say many things about damaged tensors
        raise CompileError(
            f"{what} {t.name!r} cannot be read ({type(e).__name__}: {first_line(e, 200)})",
            hint="the file is damaged",
        ) from None


# bits per element of the packed sub-byte types (raw_data holds them two or four to a byte)
_SUBBYTE = {
    getattr(onnx.TensorProto, n): b
    for n, b in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))
    if hasattr(onnx.TensorProto, n)
}


def cycle(nodes: list[onnx.NodeProto], needs) -> list[onnx.NodeProto]:
    """Nodes that read each other's outputs in a ring, among ``nodes``, each of which waits
    for an output of another of them (so a ring exists); ``needs(node)`` is the names it reads.
    Each node of the ring reads an output of the one before it (the last's feeds the first)."""
    producer = {o: n for n in nodes for o in n.output if o}
    order: list[onnx.NodeProto] = []
    seen: dict[int, int] = {}
    n = nodes[0]
    while id(n) not in seen:
        seen[id(n)] = len(order)
        order.append(n)
        n = next(producer[x] for x in sorted(needs(n)) if x in producer)
    return order[seen[id(n)] :][::-1]  # walked from readers to producers

"""Compiling a decoder for token-by-token generation.

A decoder exported with its KV cache (optimum's ``text-generation-with-past`` form) takes
``input_ids`` [batch, seq], ``attention_mask`` [batch, past + seq], maybe ``position_ids``
[batch, seq], and a past per layer (``past_key_values.N.key``...) whose present
(``present.N.key``...) the next step feeds back. :func:`prepare` readies such a model before
import, so that one artifact runs both the prompt (seq up to the max length, an empty past) and
each later token (seq 1):

- the state pairs are found by name (or given), and the sequence and past dims are kept
  symbolic up to the max length, the total length (the attention mask's dim) being their sum;
- a merged decoder's ``use_cache_branch`` is frozen to true (an empty past is a prompt);
- the selection is appended as graph nodes, so the runtime generates no code: ``next_token``
  is the ArgMax over the vocabulary of the last position's logits (ties take the lowest id, as
  numpy's argmax), the only bytes a step reads back.

The manifest records it all under ``generation`` (runtime/manifest.py checks it), and the
memory planner puts the past inputs in buffers of their own (``state0``...), so that after a
step the runtime can copy every present into its past's slot on the GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnx2wgsl.errors import CompileError

NEXT_TOKEN = "next_token"
_HINT = "name the pairs with --state PAST=PRESENT (Python: state={past: present})"
# past name -> present name, for the names exporters give a decoder's cache
_PAIR_PATTERNS = [
    (re.compile(r"past_key_values\.(\d+)\.(key|value)"), "present.{0}.{1}"),
    (re.compile(r"past_key_values_(\d+)_(key|value)"), "present_{0}_{1}"),
    (re.compile(r"past_(key|value)_(\d+)"), "present_{0}_{1}"),
    (re.compile(r"past_(key|value)\.(\d+)"), "present_{0}.{1}"),
    (re.compile(r"past\.(\d+)\.(key|value)"), "present.{0}.{1}"),
    (re.compile(r"past\.(\d+)"), "present.{0}"),  # GPT-2's old form: keys and values stacked
]


@dataclass
class Generation:
    """What to compile for generation: the max total length, and state pairs (past input ->
    present output) beyond those recognised by name."""

    max_length: int
    state: dict[str, str] = field(default_factory=dict)


def state_pairs(model: onnx.ModelProto, given: dict[str, str]) -> list[tuple[str, str]]:
    """(past input, present output) pairs: those given, else those recognised by name."""
    inputs = [i.name for i in model.graph.input]
    outputs = {o.name for o in model.graph.output}
    for past, present in given.items():
        if past not in inputs:
            raise CompileError(
                f"--state {past}={present}: {past!r} is no model input", hint=f"the inputs are {inputs}"
            )
        if present not in outputs:
            raise CompileError(
                f"--state {past}={present}: {present!r} is no model output",
                hint=f"the outputs are {sorted(outputs)}",
            )
    if given:
        return list(given.items())
    pairs = []
    for name in inputs:
        for pattern, present in _PAIR_PATTERNS:
            m = pattern.fullmatch(name)
            if m is not None and present.format(*m.groups()) in outputs:
                pairs.append((name, present.format(*m.groups())))
                break
    if not pairs:
        raise CompileError("found no past/present pairs among the model's inputs and outputs", hint=_HINT)
    return pairs


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [
        d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
        for d in vi.type.tensor_type.shape.dim
    ]


def prepare(
    model: onnx.ModelProto, spec: Generation, dims: dict, constants: dict
) -> tuple[onnx.ModelProto, dict, dict, dict]:
    """The model with the selection appended and the total length's dim written as past +
    seq, the dims and constants to import it with, and the manifest's ``generation`` record."""
    if spec.max_length < 1:
        raise CompileError(f"--max-length must be at least 1, not {spec.max_length}")
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's stays as it was
    g = model.graph
    inputs = {i.name: i for i in g.input}
    outputs = {o.name: o for o in g.output}
    if "input_ids" not in inputs:
        raise CompileError(
            "generation needs the model's token input named input_ids",
            hint=f"the inputs are {sorted(inputs)}",
        )
    if "logits" not in outputs:
        raise CompileError(
            "generation needs the model's output named logits [batch, seq, vocab]",
            hint=f"the outputs are {sorted(outputs)}",
        )
    if NEXT_TOKEN in outputs or NEXT_TOKEN in inputs:
        raise CompileError(f"the model already has a value named {NEXT_TOKEN!r}, which generation adds")
    pairs = state_pairs(model, spec.state)
    ids = _dims(inputs["input_ids"])
    if len(ids) != 2 or not isinstance(ids[1], str):
        raise CompileError(
            f"input_ids must be [batch, seq] with a named sequence dim, not {ids}",
            hint="export the model with its sequence axis dynamic",
        )
    batch, seq = ids
    past = None
    for name, present in pairs:
        d = _dims(inputs[name])
        named = [x for x in d if isinstance(x, str) and x not in (batch, seq)]
        if len(named) != 1 or (past is not None and named[0] != past):
            raise CompileError(
                f"past input {name!r} has dims {d}: generation needs one named past-length dim, "
                "the same in every past input",
                hint="export the model with the past's sequence axis dynamic",
            )
        past = named[0]
        if inputs[name].type.tensor_type.elem_type != outputs[present].type.tensor_type.elem_type:
            raise CompileError(f"past {name!r} and present {present!r} have different dtypes")
    total = f"{past} + {seq}"
    mask = inputs.get("attention_mask")
    if mask is not None:
        md = _dims(mask)
        if len(md) != 2 or md[0] != batch:
            raise CompileError(f"attention_mask must be [batch, past + seq], not {md}")
        if isinstance(md[1], str) and md[1] not in (total, f"{seq} + {past}"):
            _rename_dim(g, md[1], total)
        elif not isinstance(md[1], str):
            raise CompileError(
                f"attention_mask's last dim is fixed to {md[1]}; it must be the total length past + seq",
                hint="export the model with the attention mask's axis 1 dynamic",
            )
    dims = dict(dims)
    n = spec.max_length
    dims.setdefault(seq, (1, n))
    dims.setdefault(past, (0, max(n - 1, 0)))
    if isinstance(batch, str):
        dims.setdefault(batch, 1)
    constants = dict(constants)
    if "use_cache_branch" in inputs:  # a merged decoder: an empty past is a prompt
        constants.setdefault("use_cache_branch", np.array([True]))
    position = "position_ids" if "position_ids" in inputs else None
    # the selection: ArgMax over the vocabulary of the last position's logits
    g.node.extend(
        [
            helper.make_node("Constant", [], ["next_token/last"], value=helper.make_tensor("", 7, [1], [-1])),
            helper.make_node(
                "Constant", [], ["next_token/end"], value=helper.make_tensor("", 7, [1], [2**62])
            ),
            helper.make_node("Constant", [], ["next_token/axis"], value=helper.make_tensor("", 7, [1], [1])),
            helper.make_node(
                "Slice",
                ["logits", "next_token/last", "next_token/end", "next_token/axis"],
                ["next_token/logits"],
            ),
            helper.make_node("ArgMax", ["next_token/logits"], [NEXT_TOKEN], axis=-1, keepdims=0),
        ]
    )
    g.output.append(helper.make_tensor_value_info(NEXT_TOKEN, onnx.TensorProto.INT64, [batch, 1]))
    record = {
        "max_length": n,
        "input_ids": "input_ids",
        **({"attention_mask": "attention_mask"} if mask is not None else {}),
        **({"position_ids": position} if position else {}),
        "next_token": NEXT_TOKEN,
        "sequence_dim": seq,
        "past_dim": past,
        "state": [{"past": p, "present": q} for p, q in pairs],
    }
    return model, dims, constants, record


def _rename_dim(g: onnx.GraphProto, old: str, new: str) -> None:
    """Every graph input's and output's dim named ``old`` named ``new`` (an expression)."""
    for vi in list(g.input) + list(g.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param == old:
                d.dim_param = new

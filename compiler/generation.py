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
step the runtime can copy every present into its past's slot on the GPU. GroupQueryAttention's
caches (onnxruntime-genai's form) are not copied: each past holds the max length and is its
present's buffer, which the step writes in place (``_share_buffers``; the pairs are recorded
``shared`` and the attention mask's length as ``total_dim``). Caches whose present is the
model's own Concat(past, new) (torch's and optimum's exports) are made so after the attention
is fused, by the share-kv-cache pass (compiler/passes/kv_share.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnx2wgsl.errors import CompileError

NEXT_TOKEN = "next_token"
SAMPLED_TOKEN = "sampled_token"
SAMPLING = "sampling_params"  # f32 [temperature, top_k, top_p, repetition_penalty, u per row]
SEEN = "sampling_seen"  # f32 [batch, vocab]: 1 for each token in the sequence so far
SEEN_NEXT = "sampling_seen_next"
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
    sample_candidates: int = 0  # >0: also sample among this many best tokens (``sampled_token``)
    max_prompt: int | None = (
        None  # the most tokens one step takes (default max_length): a longer prompt runs in pieces
    )


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
    if spec.max_length < 2:
        raise CompileError(f"--max-length must be at least 2 (a prompt and a token), not {spec.max_length}")
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
        d, pd = _dims(inputs[name]), _dims(outputs[present])
        # the past-length dim: not the batch's, and not one the present keeps (a head size
        # exported as a dim_param, as onnxruntime-genai's kv_cache_dim) nor one bound to a size
        named = [
            x for i, x in enumerate(d)
            if isinstance(x, str) and x not in (batch, seq) and not (i < len(pd) and pd[i] == x)
            and not isinstance(dims.get(x), int)
        ]  # fmt: skip
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
    # GroupQueryAttention's caches: each present its past's own buffer, of the max length; the
    # attention mask's length (the total) is then a dim of its own, the past's gone
    shared = _shared_pairs(g, pairs) and mask is not None
    total_dim = None
    if mask is not None:
        md = _dims(mask)
        if len(md) != 2 or md[0] != batch:
            raise CompileError(f"attention_mask must be [batch, past + seq], not {md}")
        if shared and isinstance(md[1], str) and md[1] not in (past, seq):
            total_dim = md[1]
        elif isinstance(md[1], str) and md[1] not in (total, f"{seq} + {past}"):
            _rename_dim(g, md[1], total)
        elif not isinstance(md[1], str):
            raise CompileError(
                f"attention_mask's last dim is fixed to {md[1]}; it must be the total length past + seq",
                hint="export the model with the attention mask's axis 1 dynamic",
            )
    dims = dict(dims)
    n = spec.max_length
    chunk = n if spec.max_prompt is None else spec.max_prompt
    if not 1 <= chunk <= n:
        raise CompileError(f"--max-prompt must be from 1 to the max length {n}, not {chunk}")
    inits = {t.name: t for t in g.initializer}
    for node in g.node:  # positions come from rotary caches of a fixed length
        if node.op_type == "GroupQueryAttention" and len(node.input) > 7 and node.input[7] in inits:
            rows = inits[node.input[7]].dims[0]
            if n > rows:
                raise CompileError(
                    f"--max-length {n} reaches past the {rows} positions of the rotary caches of "
                    f"GroupQueryAttention node {node.name!r}",
                    hint=f"--max-length {rows} or less",
                )
    shared = total_dim is not None
    dims.setdefault(seq, (1, chunk))
    if shared:
        _share_buffers(model, pairs, n)
        dims.setdefault(total_dim, (1, n))
    else:
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
    sampling = {}
    pairs_of_model = len(pairs)
    if spec.sample_candidates:
        vocab = _dims(outputs["logits"])[-1]
        if not isinstance(vocab, int):
            raise CompileError(f"sampling needs the logits' vocabulary dim fixed, not {vocab!r}")
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 13:
            raise CompileError(f"sampling appends opset-13 ops; the model is opset {opset}")
        rows = dims.get(batch) if isinstance(batch, str) else batch
        if not isinstance(rows, int):
            raise CompileError(
                f"sampling needs a fixed batch, not {batch}={rows}", hint=f"bind it: --dim {batch}=N"
            )
        _append_sampling(g, batch, rows, vocab, min(spec.sample_candidates, vocab), opset)
        pairs.append((SEEN, SEEN_NEXT))
        sampling = {
            "sampling": {
                "params": SAMPLING,
                "token": SAMPLED_TOKEN,
                "candidates": min(spec.sample_candidates, vocab),
            }
        }
    record = {
        "max_length": n,
        "input_ids": "input_ids",
        **({"attention_mask": "attention_mask"} if mask is not None else {}),
        **({"position_ids": position} if position else {}),
        "next_token": NEXT_TOKEN,
        "logits": "logits",
        "sequence_dim": seq,
        "past_dim": past,
        **({"total_dim": total_dim} if shared else {}),
        "state": [
            {"past": p, "present": q, **({"shared": True} if shared and i < pairs_of_model else {})}
            for i, (p, q) in enumerate(pairs)
        ],
        **sampling,
    }
    return model, dims, constants, record


def generation_note(record: dict) -> str:
    """The compile summary's line about a compile for generation."""
    sampled = f" and {record['sampling']['token']}" if "sampling" in record else ""
    return (
        f"compiled for generation: max length {record['max_length']}, {len(record['state'])} state pairs "
        f"({record['state'][0]['past']} -> {record['state'][0]['present']}, ...)"
        f"{', each present its past written in place' if record['state'][0].get('shared') else ''}, outputs "
        f"{record['next_token']}{sampled} (onnx2wgsl generate DIR)"
    )


def _shared_pairs(g: onnx.GraphProto, pairs: list[tuple[str, str]]) -> bool:
    """Whether every state pair is a GroupQueryAttention's past_key -> present_key or
    past_value -> present_value (inputs 3 and 4, outputs 1 and 2 of one node), each past read
    by that node alone: then the present can be its past's own buffer (onnxruntime-genai's
    past_present_share_buffer), the new keys written in place at each row's valid length."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for x in set(node.input):
            readers.setdefault(x, []).append(node)
    for past, present in pairs:
        nodes = readers.get(past, [])
        if len(nodes) != 1 or nodes[0].op_type != "GroupQueryAttention" or nodes[0].domain != "com.microsoft":
            return False
        node = nodes[0]
        slot = list(node.input).index(past)
        if slot not in (3, 4) or len(node.output) <= slot - 2 or node.output[slot - 2] != present:
            return False
        if len(node.input) <= 6 or not node.input[6]:
            return False
    return bool(pairs)


def _share_buffers(model: onnx.ModelProto, pairs: list[tuple[str, str]], n: int) -> None:
    """The pasts and presents of ``pairs`` made [batch, kv heads, ``n``, head size] (the past
    dim fixed at the max length), and each GroupQueryAttention reading them told a total length
    of ``n``: its present is then as long as its past (onnxruntime's rule: the present holds
    max(total_sequence_length, past length) positions), the past with the step's new keys
    placed after each row's valid ones, which the compiler writes in place. The valid length
    still comes from seqlens_k (the attention mask)."""
    g = model.graph
    names = {p for pair in pairs for p in pair}
    for vi in list(g.input) + list(g.output):
        if vi.name in names:
            dim = vi.type.tensor_type.shape.dim[2]
            dim.Clear()
            dim.dim_value = n
    total = "kv_share/total_sequence_length"
    g.initializer.append(helper.make_tensor(total, onnx.TensorProto.INT32, [], [n]))
    pasts = {p for p, _ in pairs}
    for node in g.node:
        if node.op_type == "GroupQueryAttention" and any(x in pasts for x in node.input[3:5]):
            node.input[6] = total


def _rename_dim(g: onnx.GraphProto, old: str, new: str) -> None:
    """Every graph input's and output's dim named ``old`` named ``new`` (an expression)."""
    for vi in list(g.input) + list(g.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param == old:
                d.dim_param = new


def _append_sampling(g: onnx.GraphProto, batch, rows: int, vocab: int, k: int, opset: int) -> None:
    """``sampled_token``: a token drawn from the last position's logits with a repetition
    penalty (HF's: a seen token's positive logit divided by it, a negative one multiplied),
    a temperature, the top_k best (of the k candidates; 0 keeps all k) and the fewest best
    whose probabilities sum to top_p, at the uniform draw u in [0, 1) that the runtime feeds
    (one per row of the batch: ``sampling_params`` is [temperature, top_k, top_p, penalty, u...]).
    The tokens seen (the prompt and every token fed since) are a state pair of their own."""
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64

    def const(name: str, dtype: int, dims: list[int], values: list) -> None:
        g.node.append(
            helper.make_node("Constant", [], [name], value=helper.make_tensor("", dtype, dims, values))
        )

    def node(op: str, ins: list[str], out: str, **attrs) -> str:
        g.node.append(helper.make_node(op, ins, [out], **attrs))
        return out

    p = "sampling/"
    const(p + "last", i64, [1], [-1])
    const(p + "end", i64, [1], [2**62])
    const(p + "one", i64, [1], [1])
    const(p + "shape", i64, [2], [0, vocab])
    const(p + "vocab", i64, [], [vocab])
    const(p + "zero_i", i64, [], [0])
    const(p + "step_i", i64, [], [1])
    const(p + "k", i64, [1], [k])
    const(p + "kk", i64, [], [k])
    const(p + "zero", f32, [], [0.0])
    const(p + "neg_inf", f32, [], [-np.inf])
    for i, name in enumerate(("temperature", "top_k", "top_p", "penalty")):
        const(p + f"at{i}", i64, [1], [i])
        node("Gather", [SAMPLING, p + f"at{i}"], p + name, axis=0)  # [1]
    const(p + "u_from", i64, [1], [4])
    const(p + "u_to", i64, [1], [4 + rows])
    const(p + "zero_axis", i64, [1], [0])
    const(p + "u_shape", i64, [2], [rows, 1])
    u = node("Slice", [SAMPLING, p + "u_from", p + "u_to", p + "zero_axis"], p + "u_rows")
    node("Reshape", [u, p + "u_shape"], p + "u")  # [rows, 1]
    last = node("Slice", ["logits", p + "last", p + "end", p + "one"], p + "last_logits")
    logits = node("Reshape", [last, p + "shape"], p + "logits")  # [batch, vocab]
    # the tokens seen: those of earlier steps, and this step's input_ids
    const(p + "end_axis", i64, [1], [-1])
    ids = node("Unsqueeze", ["input_ids", p + "end_axis"], p + "ids")
    vocab_ids = node("Range", [p + "zero_i", p + "vocab", p + "step_i"], p + "vocab_ids")
    hit = node("Cast", [node("Equal", [ids, vocab_ids], p + "hit_b")], p + "hit", to=f32)  # [b, seq, V]
    if opset >= 18:
        fed = node("ReduceMax", [hit, p + "one"], p + "fed", keepdims=0)  # [b, V]
    else:
        fed = node("ReduceMax", [hit], p + "fed", keepdims=0, axes=[1])
    seen = node("Max", [SEEN, fed], SEEN_NEXT)
    seen_b = node("Greater", [seen, p + "zero"], p + "seen_b")
    positive = node("Greater", [logits, p + "zero"], p + "positive")
    penalized = node(
        "Where",
        [
            positive,
            node("Div", [logits, p + "penalty"], p + "div"),
            node("Mul", [logits, p + "penalty"], p + "mul"),
        ],
        p + "penalized_all",
    )
    adjusted = node("Where", [seen_b, penalized, logits], p + "penalized")
    scaled = node("Div", [adjusted, p + "temperature"], p + "scaled")
    g.node.append(helper.make_node("TopK", [scaled, p + "k"], [p + "values", p + "indices"], axis=-1))
    # top_k: candidates past it drop out (0 keeps all)
    rank = node(
        "Cast", [node("Range", [p + "zero_i", p + "kk", p + "step_i"], p + "rank_i")], p + "rank", to=f32
    )
    within = node("Less", [rank, p + "top_k"], p + "within_k")
    all_k = node("LessOrEqual", [p + "top_k", p + "zero"], p + "all_k")
    keep_k = node("Or", [within, all_k], p + "keep_k")
    masked = node("Where", [keep_k, p + "values", p + "neg_inf"], p + "masked")
    probs = node("Softmax", [masked], p + "probs", axis=-1)
    # top_p: a candidate stays while the probability before it is under top_p (the best always)
    const(p + "axis1", i64, [], [1])
    before = node("CumSum", [probs, p + "axis1"], p + "before", exclusive=1)
    nucleus = node("Less", [before, p + "top_p"], p + "nucleus")
    kept = node("Where", [nucleus, probs, p + "zero"], p + "kept")
    cum = node("CumSum", [kept, p + "axis1"], p + "cum")
    total = node("Slice", [cum, p + "last", p + "end", p + "one"], p + "total")  # [b, 1]
    threshold = node("Mul", [total, p + "u"], p + "threshold")
    past = node("Cast", [node("Greater", [cum, threshold], p + "past_b")], p + "past", to=f32)
    pick = node("ArgMax", [past], p + "pick", axis=-1, keepdims=1)  # the first candidate past u
    node("GatherElements", [p + "indices", pick], SAMPLED_TOKEN, axis=1)
    g.input.append(helper.make_tensor_value_info(SAMPLING, f32, [4 + rows]))
    g.input.append(helper.make_tensor_value_info(SEEN, f32, [batch, vocab]))
    g.output.append(helper.make_tensor_value_info(SEEN_NEXT, f32, [batch, vocab]))
    g.output.append(helper.make_tensor_value_info(SAMPLED_TOKEN, i64, [batch, 1]))

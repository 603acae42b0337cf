"""Control flow resolved at compile time: If, Loop and Scan become straight-line ops.

A WebGPU artifact is a fixed list of dispatches, so a trip count must be known when the
model is compiled. ``If`` whose condition folds imports the taken branch in place; one whose
condition is computed at run time runs both branches and selects each output with a Where;
``Loop`` whose trip count and condition fold is unrolled, carrying its loop values from one
copy of the body to the next; ``Scan`` (static sequence length) is unrolled over slices of
its scan inputs. Bodies import through the same frontend as the model (outer-scope names
resolve through the scope chain), so constants fold and shapes infer inside them too.
Anything else decided only at run time (a trip count, a loop condition, branches of
different types) is a clear UnsupportedError. A run-time If with a branch that does not
compile (often the one never taken at these shapes) is one error naming the graph inputs its
condition is computed from: a ConstantRequiredError when they are small enough to freeze.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnx2wgsl.errors import CompileError, ConstantRequiredError, UnsupportedError
from onnx2wgsl.ir import Value

# Unrolling copies the body once per iteration: past this many, the artifact would be huge.
MAX_UNROLL = 4096
# A run-time If whose condition is read from inputs this small (a flag, a sample rate, a length)
# is worth compiling once per value of them; a condition on larger inputs depends on data.
_FREEZABLE = 16
# Past this many ops between a condition and its input, no value hint is worked out.
_FOLD_OPS = 64
# Opset of the helper nodes (Gather, Unsqueeze, Concat) unrolling adds around the bodies.
_HELPER_OPSET = 17


def _error(node, opset, message, hint=None, cls=UnsupportedError, **extra):
    return cls(message, node=node.name, op=node.op_type, opset=opset, hint=hint, **extra)


def _graphs(node) -> dict[str, onnx.GraphProto]:
    return {a.name: a.g for a in node.attribute if a.HasField("g")}


def _ints(node, name) -> list[int] | None:
    for a in node.attribute:
        if a.name == name:
            return [int(x) for x in a.ints]
    return None


def _int(node, name, default) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _scalar(v: Value, node, opset: int, what: str) -> np.generic:
    data = np.asarray(v.data)
    if data.size != 1:
        raise _error(node, opset, f"its {what} holds {data.size} values (shape {list(data.shape)}), not one",
                     cls=CompileError)  # fmt: skip
    return data.reshape(-1)[0]


def _prefix(scope, node, what) -> str:
    return f"{scope.prefix}{node.name or node.op_type}.{what}/"


def import_if(imp, node, scope, inputs, opset) -> list[Value | None]:
    """Inline the branch an If takes when its condition folds; otherwise run both branches
    and select each output with a Where on the condition (outputs must agree in type)."""
    cond = inputs[0] if inputs else None
    graphs = _graphs(node)
    if cond is None or "then_branch" not in graphs or "else_branch" not in graphs:
        raise _error(node, opset, "it has no condition, then_branch or else_branch", cls=CompileError)
    if not cond.is_const:
        return _select_branches(imp, node, scope, cond, opset, graphs)
    taken = bool(_scalar(cond, node, opset, "condition"))
    branch = graphs["then_branch" if taken else "else_branch"]
    outs = imp.import_subgraph(branch, scope, [], _prefix(scope, node, "then" if taken else "else"))
    if len(outs) != len(node.output):
        raise _error(
            node, opset, f"its branch yields {len(outs)} outputs for {len(node.output)}", cls=CompileError
        )
    return outs


_RUN_TIME_IF_HINT = (
    "a WebGPU artifact runs a fixed schedule: both branches run and each output is selected, which "
    "needs tensors of one type from both; or make the condition a constant (bind the model's dims "
    "with --dim/--shape if it depends on shapes)"
)


def _select_branches(imp, node, scope, cond: Value, opset, graphs) -> list[Value | None]:
    """Both branches imported; output k = Where(cond, then_k, else_k). Every output of both
    branches must be a tensor of the same static type, or there is nothing one schedule can
    select between."""
    then_b, else_b = graphs["then_branch"], graphs["else_branch"]
    for b in (then_b, else_b):
        for vi in b.output:
            kind = vi.type.WhichOneof("value")
            if kind not in (None, "tensor_type"):
                raise _error(
                    node, opset,
                    f"its condition is computed at run time and its {b.name or 'branch'} yields "
                    f"{vi.name!r} of type {kind}, which the GPU cannot select (only tensors)",
                    hint=_RUN_TIME_IF_HINT,
                )  # fmt: skip
    if cond.type.numel != 1 or cond.dtype.name != "bool":
        raise _error(node, opset, f"its condition must be one bool, got {cond.type}", cls=CompileError)
    then_outs, else_outs = _import_both(imp, node, scope, cond, opset, then_b, else_b)
    if not len(then_outs) == len(else_outs) == len(node.output):
        raise _error(
            node, opset, f"its branches yield {len(then_outs)} and {len(else_outs)} outputs for "
            f"{len(node.output)}", cls=CompileError,
        )  # fmt: skip
    name = node.name or "if"
    c = cond
    if c.type.rank:  # a [1] condition: the Where must not broadcast the outputs to rank 1
        (c,) = imp.run_helper(
            [helper.make_node("Reshape", ["c", "shape"], ["y"])],
            {"c": cond, "shape": imp.g.const(np.zeros(0, np.int64), f"{name}.cond_shape")},
            ["y"], _HELPER_OPSET, _prefix(scope, node, "cond"),
        )  # fmt: skip
    outs: list[Value | None] = []
    for k, (t, e) in enumerate(zip(then_outs, else_outs)):
        if t is e:  # both branches give the same value (an outer one, say)
            outs.append(t)
            continue
        if t is None or e is None or t.type != e.type:
            described = [("nothing" if v is None else str(v.type)) for v in (t, e)]
            raise _error(
                node, opset,
                f"its condition is computed at run time and its branches give output {k} "
                f"({node.output[k]!r}) different types: {described[0]} and {described[1]}",
                hint=_RUN_TIME_IF_HINT,
            )  # fmt: skip
        (y,) = imp.run_helper(
            [helper.make_node("Where", ["c", "t", "e"], ["y"])],
            {"c": c, "t": t, "e": e},
            ["y"], _HELPER_OPSET, _prefix(scope, node, f"select{k}"),
        )  # fmt: skip
        outs.append(y)
    return outs


def _import_both(imp, node, scope, cond: Value, opset, then_b, else_b):
    """Both branches' outputs. A branch that cannot be compiled (often the one a model never
    takes at these shapes) fails the If with one error naming the graph inputs the condition
    is computed from, so that freezing them folds it and only the taken branch is compiled."""
    outs: dict[str, list[Value | None]] = {}
    failed: dict[str, CompileError] = {}
    for which, b in (("then", then_b), ("else", else_b)):
        try:
            outs[which] = imp.import_subgraph(b, scope, [], _prefix(scope, node, which))
        except CompileError as e:
            failed[which] = e
    if not failed:
        return outs["then"], outs["else"]
    which, e = next(iter(failed.items()))
    inputs = _condition_inputs(cond)
    freezable = bool(inputs) and all(v.type.is_static and v.type.numel <= _FREEZABLE for v in inputs)
    if e.op == "If" and (isinstance(e, ConstantRequiredError) or not freezable):
        raise e  # an If nested in the branch already said what to freeze, or there is nothing to add
    other = "else" if which == "then" else "then"
    raise _branch_error(node, opset, cond, inputs, freezable, which, e, other not in failed) from e


def _branch_error(node, opset, cond, inputs, freezable, which, e, other_compiles) -> CompileError:
    """The If's error for branch ``which`` failing with ``e``: a ConstantRequiredError naming
    the condition's inputs when they are small enough to freeze (the backend then compiles per
    value fed), else an error that says the condition depends on data."""
    names = tuple(v.name for v in inputs)
    listed = ", ".join(repr(n) for n in names)
    source = f" from graph input{'s' if len(names) > 1 else ''} {listed}" if names else ""
    message = (
        f"its condition is computed at run time{source}, so both branches are compiled, and its "
        f"{which} branch fails: {_brief(e)}"
    )
    if freezable:
        from .frontend import freeze_hint

        hint = freeze_hint(names)
        if other_compiles:
            hint += _folding_hint(cond, inputs, "else" if which == "then" else "then")
        return _error(node, opset, message, hint, ConstantRequiredError, inputs=names)
    if isinstance(e, ConstantRequiredError):  # what the branch needs frozen still helps
        return _error(node, opset, message, e.hint, ConstantRequiredError, inputs=e.inputs)
    hint = "its condition depends on run-time data, so both branches must compile at these shapes"
    return _error(node, opset, message, hint, CompileError)


def _brief(e: CompileError) -> str:
    """An error's where and what, without its hint, on one line."""
    return " ".join(str(CompileError(e.message, node=e.node, op=e.op, opset=e.opset)).split())


def _condition_inputs(cond: Value) -> list[Value]:
    """The graph inputs a value is computed from (in the frontend, a run-time value without a
    producer is a graph input)."""
    found: dict[int, Value] = {}
    seen: set[int] = set()
    stack = [cond]
    while stack:
        v = stack.pop()
        if id(v) in seen or v.is_const:
            continue
        seen.add(id(v))
        if v.producer is None:
            found[id(v)] = v
        else:
            stack.extend(w for w in reversed(v.producer.inputs) if w is not None)
    return list(found.values())


def _folding_hint(cond: Value, inputs: list[Value], branch: str) -> str:
    """'; the then branch compiles and is taken when sr == 16000', when one scalar input
    decides the condition and some value of it, among the constants the condition compares
    it with (or, failing those, their neighbours), selects ``branch``; else ''. The condition
    is folded on the host for each candidate, so what it says holds; it never raises."""
    try:
        (x,) = inputs
        if x.type.numel != 1:
            return ""
        literals, neighbours = _candidates(cond, x)
        want = branch == "then"
        for values in (literals, neighbours):
            hits = [c for c in values if _fold_condition(cond, x, c) == want]
            if hits:
                shown = [str(c) for c in hits[:3]]
                when = f"{x.name} == {shown[0]}" if len(shown) == 1 else f"{x.name} is {' or '.join(shown)}"
                return f"; the {branch} branch compiles and is taken when {when}"
    except Exception:  # a hint is a courtesy: never let it hide the error itself
        pass
    return ""


def _candidates(cond: Value, x: Value) -> tuple[list, list]:
    """Values worth trying for ``x``: the small constants read along the condition's ops
    (Equal(sr, 16000) gives 16000), then each +-1 (Less(n, 8) is decided at 7 and 8)."""
    literals: list = []
    seen: set[int] = set()
    stack = [cond]
    while stack and len(seen) < _FOLD_OPS:
        v = stack.pop()
        if id(v) in seen or v.is_const or v.producer is None:
            continue
        seen.add(id(v))
        for w in v.producer.inputs:
            if w is not None and w.is_const and w.type.numel <= _FREEZABLE:
                literals.extend(np.asarray(w.data).reshape(-1).tolist())
            elif w is not None:
                stack.append(w)
    if x.dtype.name == "bool":
        return [False, True], []
    literals = _in_dtype(literals, x)
    neighbours = _in_dtype([c + d for c in literals for d in (-1, 1)], x)
    return literals, [c for c in neighbours if c not in literals]


def _in_dtype(values: list, x: Value) -> list:
    """The values as ``x``'s dtype holds them (those it cannot hold dropped), each once, sorted."""
    out = []
    for c in values:
        held = np.asarray(c).astype(x.dtype.numpy)
        if held.item() == c and held.item() not in out:
            out.append(held.item())
    return sorted(out)


def _fold_condition(cond: Value, x: Value, value) -> bool | None:
    """The condition folded on the host with ``x`` set to ``value`` (None when an op on the
    way has no host evaluation)."""
    from .elementwise_ops import TABLE, evaluate
    from .passes.fold import HOST

    known: dict[int, np.ndarray] = {id(x): np.full(x.shape, value, x.dtype.numpy)}

    def fold(v: Value) -> np.ndarray:
        if v.is_const:
            return np.asarray(v.data)
        if id(v) not in known:
            op = v.producer
            if op is None or len(op.outputs) != 1 or len(known) > _FOLD_OPS:
                raise LookupError(v.name)
            ins = [None if w is None else fold(w) for w in op.inputs]
            if op.kind in HOST:
                data = HOST[op.kind](op, *(a for a in ins if a is not None))
            elif op.kind in TABLE:
                data = evaluate(op.kind, ins, op.attrs, v.dtype)
            elif op.kind in ("Cast", "Identity"):  # numpy's astype below: exact for sample rates and flags
                data = ins[0]
            else:
                raise LookupError(op.kind)
            known[id(v)] = np.asarray(data).astype(v.dtype.numpy).reshape(v.shape)
        return known[id(v)]

    try:
        return bool(fold(cond).reshape(-1)[0])
    except LookupError:
        return None


def import_loop(imp, node, scope, inputs, opset) -> list[Value | None]:
    """Unroll a Loop whose trip count and condition fold; scan outputs are stacked on axis 0."""
    body = _graphs(node).get("body")
    if body is None:
        raise _error(node, opset, "it has no body graph", cls=CompileError)
    trip_v = inputs[0] if inputs else None
    cond_v = inputs[1] if len(inputs) > 1 else None
    carried = list(inputs[2:])
    for what, v in (("trip count M", trip_v), ("condition", cond_v)):
        if v is not None and not v.is_const:
            raise _error(
                node, opset, f"its {what} is computed at run time",
                hint="only loops whose trip count and condition fold at compile time can be unrolled",
            )  # fmt: skip
    trip = None if trip_v is None else int(_scalar(trip_v, node, opset, "trip count M"))
    cond = True if cond_v is None else bool(_scalar(cond_v, node, opset, "condition"))
    n_scan = len(body.output) - 1 - len(carried)
    if n_scan < 0 or len(body.input) != 2 + len(carried):
        raise _error(
            node, opset, "its body's inputs and outputs do not match its loop values", cls=CompileError
        )
    scans: list[list[Value]] = [[] for _ in range(n_scan)]
    i = 0
    while (trip is None or i < trip) and cond:
        if i >= MAX_UNROLL:
            raise _error(
                node, opset, f"it runs more than {MAX_UNROLL} iterations",
                hint="unrolling it would make the artifact too large",
            )  # fmt: skip
        it = imp.const_for(np.array(i, np.int64), body.input[0], f"{node.name or 'loop'}.iter")
        c = imp.const_for(np.array(cond), body.input[1], f"{node.name or 'loop'}.cond")
        outs = imp.import_subgraph(body, scope, [it, c, *carried], _prefix(scope, node, i))
        c_out = outs[0]
        if c_out is None or not c_out.is_const:
            raise _error(
                node, opset, "its condition is computed at run time inside the body",
                hint="only loops whose condition folds at compile time can be unrolled",
            )  # fmt: skip
        cond = bool(_scalar(c_out, node, opset, "body's condition output"))
        carried = outs[1 : 1 + len(carried)]
        for k, v in enumerate(outs[1 + len(carried) :]):
            scans[k].append(v)
        i += 1
    stacked = [
        _stack(imp, node, opset, vals, 0, body.output[1 + len(carried) + k], f"{node.name or 'loop'}.scan{k}")
        for k, vals in enumerate(scans)
    ]
    return carried + stacked


def import_scan(imp, node, scope, inputs, opset) -> list[Value | None]:
    """Unroll a Scan over its static sequence length (opset 8's batched form included)."""
    body = _graphs(node).get("body")
    if body is None:
        raise _error(node, opset, "it has no body graph", cls=CompileError)
    m = _int(node, "num_scan_inputs", -1)
    if opset < 9:
        return _scan8(imp, node, scope, inputs, opset, body, m)
    n_state = len(inputs) - m
    states, xs = list(inputs[:n_state]), list(inputs[n_state:])
    n_out = len(body.output) - n_state
    in_axes = _ints(node, "scan_input_axes") or [0] * m
    in_dirs = _ints(node, "scan_input_directions") or [0] * m
    out_axes = _ints(node, "scan_output_axes") or [0] * n_out
    out_dirs = _ints(node, "scan_output_directions") or [0] * n_out
    if any(x is None for x in xs):
        raise _error(node, opset, "a scan input is missing", cls=CompileError)
    in_axes = [a % x.type.rank for a, x in zip(in_axes, xs)]
    lengths = {x.shape[a] for x, a in zip(xs, in_axes)}
    if len(lengths) != 1:
        raise _error(node, opset, f"its scan inputs disagree on the sequence length: {sorted(lengths)}")
    (T,) = lengths
    outs = _unroll_scan(imp, node, scope, opset, body, states, xs, in_axes, in_dirs, T, "")
    states, per_step = outs
    stacked = []
    for k in range(n_out):
        vals = [step[k] for step in per_step]
        if out_dirs[k]:
            vals = vals[::-1]
        formal = body.output[n_state + k]
        stacked.append(_stack(imp, node, opset, vals, out_axes[k], formal, f"{node.name or 'scan'}.out{k}"))
    return states + stacked


def _unroll_scan(imp, node, scope, opset, body, states, xs, axes, dirs, T, tag):
    if T > MAX_UNROLL:
        raise _error(
            node,
            opset,
            f"its sequence length {T} is over {MAX_UNROLL}",
            hint="unrolling it would be too large",
        )
    n_state = len(states)
    per_step = []
    for t in range(T):
        slices = [
            _take(imp, x, (T - 1 - t) if d else t, a, f"{node.name or 'scan'}{tag}.x{j}.{t}")
            for j, (x, a, d) in enumerate(zip(xs, axes, dirs))
        ]
        outs = imp.import_subgraph(body, scope, [*states, *slices], _prefix(scope, node, f"{tag}{t}"))
        states = outs[:n_state]
        per_step.append(outs[n_state:])
    return states, per_step


def _scan8(imp, node, scope, inputs, opset, body, m):
    """Opset 8: every tensor has a batch axis 0 and scans over axis 1 (optionally reversed)."""
    seq_lens, rest = (inputs[0] if inputs else None), list(inputs[1:])
    n_state = len(rest) - m
    states, xs = rest[:n_state], rest[n_state:]
    dirs = _ints(node, "directions") or [0] * m
    B, T = xs[0].shape[0], xs[0].shape[1]
    if seq_lens is not None:
        if not seq_lens.is_const:
            raise _error(node, opset, "its sequence_lens input is computed at run time")
        if any(int(s) != T for s in np.asarray(seq_lens.data).reshape(-1)):
            raise _error(node, opset, "sequence lengths shorter than the scan axis are not supported")
    n_out = len(body.output) - n_state
    finals: list[list[Value]] = [[] for _ in range(n_state)]
    scanned: list[list[Value]] = [[] for _ in range(n_out)]
    for b in range(B):
        st = [_take(imp, s, b, 0, f"{node.name or 'scan'}.b{b}.s{j}") for j, s in enumerate(states)]
        xb = [_take(imp, x, b, 0, f"{node.name or 'scan'}.b{b}.x{j}") for j, x in enumerate(xs)]
        st, per_step = _unroll_scan(imp, node, scope, opset, body, st, xb, [0] * m, dirs, T, f"b{b}.")
        for j, v in enumerate(st):
            finals[j].append(v)
        for k in range(n_out):
            formal = body.output[n_state + k]
            scanned[k].append(
                _stack(
                    imp, node, opset, [s[k] for s in per_step], 0, formal, f"{node.name or 'scan'}.b{b}.o{k}"
                )
            )
    name = node.name or "scan"
    return [_stack(imp, node, opset, v, 0, None, f"{name}.state{j}") for j, v in enumerate(finals)] + [
        _stack(imp, node, opset, v, 0, None, f"{name}.out{k}") for k, v in enumerate(scanned)
    ]


# -- helper nodes, imported like any other (so constant ones fold) ------------------------------
def _take(imp, x: Value, index: int, axis: int, hint: str) -> Value:
    """x indexed at ``index`` along ``axis`` (that axis removed): a Gather with a scalar index."""
    idx = np.array(index, np.int64)
    (y,) = imp.run_helper(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)],
        {"x": x, "i": imp.g.const(idx, hint + ".idx")},
        ["y"],
        _HELPER_OPSET,
        hint + "/",
    )
    return y


def _stack(imp, node, opset, values: list[Value], axis: int, formal, hint: str) -> Value:
    """values (one shape) stacked along a new ``axis``: Unsqueeze each, then Concat."""
    if not values:
        # Zero iterations: an empty stack, whose element shape only the body's declaration gives.
        t = formal.type.tensor_type if isinstance(formal, onnx.ValueInfoProto) else None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t else [None]
        if t is None or None in dims or not t.elem_type:
            raise _error(
                node, opset, "it runs zero iterations and its scan outputs' shapes are not declared",
                hint="declare the body outputs' shapes, or make the loop run at least once",
            )  # fmt: skip
        dims.insert(axis % (len(dims) + 1), 0)
        return imp.g.const(np.zeros(dims, helper.tensor_dtype_to_np_dtype(t.elem_type)), hint)
    rank = values[0].type.rank + 1
    axis = axis % rank
    names = {f"v{j}": v for j, v in enumerate(values)}
    names["axes"] = imp.g.const(np.array([axis], np.int64), hint + ".axes")
    nodes = [helper.make_node("Unsqueeze", [f"v{j}", "axes"], [f"u{j}"]) for j in range(len(values))]
    nodes.append(helper.make_node("Concat", [f"u{j}" for j in range(len(values))], ["y"], axis=axis))
    (y,) = imp.run_helper(nodes, names, ["y"], _HELPER_OPSET, hint + "/")
    return y


HANDLERS = {"If": import_if, "Loop": import_loop, "Scan": import_scan}

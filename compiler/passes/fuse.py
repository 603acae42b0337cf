"""Fusion: connected elementwise ops over one iteration space become one kernel
(fuse-elementwise), an elementwise consumer of a Conv, ConvTranspose, Gemm or MatMul
result is applied at that op's store (fuse-epilogue), and an elementwise producer of a Conv's
input is computed in the Conv's loads (fuse-prologue)."""

from __future__ import annotations

from onnx2wgsl.ir import DType, Graph, Op, Value, distinct

from . import Pass, PassResult


def fusable_kinds() -> set[str]:
    from ..elementwise_ops import TABLE

    return (set(TABLE) - {"Identity"}) | {"Cast"}


def topological_sort(g: Graph) -> None:
    """Reorder ``g.ops`` into a valid order, keeping the current order where it is valid."""
    index = {id(op): i for i, op in enumerate(g.ops)}
    done: set[int] = set()
    order: list[Op] = []

    def visit(op: Op) -> None:
        stack = [(op, iter(_preds(op, index)))]
        while stack:
            cur, preds = stack[-1]
            for p in preds:
                if id(p) not in done:
                    stack.append((p, iter(_preds(p, index))))
                    break
            else:
                stack.pop()
                if id(cur) not in done:
                    done.add(id(cur))
                    order.append(cur)

    for op in g.ops:
        if id(op) not in done:
            visit(op)
    g.ops = order


def _preds(op: Op, index: dict[int, int]) -> list[Op]:
    ps = {id(v.producer): v.producer for v in op.inputs if v is not None and v.producer is not None}
    return sorted((p for k, p in ps.items() if k in index), key=lambda p: index[id(p)])


class FuseElementwise(Pass):
    """Fuse connected elementwise ops whose results share one shape into a ``Fused`` op whose
    ``body`` attribute is the subgraph it computes (one kernel, one pass over memory).

    A group may read any number of tensors broadcast into its shape and may expose several
    results; it stays within ``max_bindings`` storage bindings. An op joins a group only if
    none of its other operands depends on that group (which would make a cycle).

    A Transpose of a tensor the group reads from outside joins too: the kernel then reads that
    tensor through permuted strides, and the transposed copy is never written (unless it is
    used outside the group). A Transpose of a value computed inside the group does not."""

    name = "fuse-elementwise"

    def __init__(self, max_bindings: int = 8):
        self.max_bindings = max_bindings

    def run(self, g: Graph) -> PassResult:
        kinds = fusable_kinds() | {"Transpose"}
        self._graph_outputs = {id(v) for v in g.outputs}
        self._pos = {id(op): i for i, op in enumerate(g.ops)}
        group: dict[int, list[Op]] = {id(op): [op] for op in g.ops if self._candidate(op, kinds)}
        # Merge along every producer -> consumer edge between candidates, when the shapes
        # agree, the bindings fit and no path through other ops leads from one group to the
        # other (the fused kernel would then both feed and wait for that path).
        for op in g.ops:
            if id(op) not in group:
                continue
            for v in op.inputs:
                p = v.producer if v is not None else None
                if p is None or id(p) not in group:
                    continue
                a, b = group[id(p)], group[id(op)]
                if a is b or (_space(a) != _space(b) and not self._broadcast_read(a, b)):
                    continue
                merged = sorted(a + b, key=lambda o: self._pos[id(o)])
                members = {id(o) for o in merged}
                ins, outs = _interface(merged, members, self._graph_outputs)
                if len(ins) + len(outs) > self.max_bindings:
                    continue
                if self._path(a, b, members) or self._path(b, a, members):
                    continue
                if any(o.kind == "Transpose" and o.inputs[0].producer in merged for o in merged):
                    continue
                for o in merged:
                    group[id(o)] = merged
        changed = False
        done: set[int] = set()
        for op in list(g.ops):
            ops = group.get(id(op))
            if ops is None or id(ops[0]) in done:
                continue
            done.add(id(ops[0]))
            if len(ops) > 1:
                self._replace(g, ops, self._graph_outputs)
                changed = True
        if changed:
            topological_sort(g)
        return PassResult(g, changed)

    def _broadcast_read(self, a: list[Op], b: list[Op]) -> bool:
        """Whether group ``a`` is one Transpose read only by group ``b``, broadcast into its
        shape: ``b`` can read the Transpose's input through strides, with no copy written."""
        if len(a) != 1 or a[0].kind != "Transpose" or all(o.kind == "Transpose" for o in b):
            return False
        t = a[0].outputs[0]
        inside = {id(o) for o in b}
        return id(t) not in self._graph_outputs and all(id(u) in inside for u in t.uses)

    @staticmethod
    def _candidate(op: Op, kinds: set[str]) -> bool:
        return op.kind in kinds and op.domain == "" and len(op.outputs) == 1 and op.outputs[0].type.numel > 0

    def _path(self, a: list[Op], b: list[Op], members: set[int]) -> bool:
        """Whether a path from group ``a`` to group ``b`` runs through an op outside both."""
        targets = {id(o) for o in b}
        last = max(self._pos[id(o)] for o in b)
        stack = [u for o in a for v in o.outputs for u in v.uses if id(u) not in members]
        seen: set[int] = set()
        while stack:
            op = stack.pop()
            if id(op) in seen or self._pos.get(id(op), last + 1) > last:
                continue
            seen.add(id(op))
            for v in op.outputs:
                for u in v.uses:
                    if id(u) in targets:
                        return True
                    if id(u) not in members:
                        stack.append(u)
        return False

    @staticmethod
    def _replace(g: Graph, ops: list[Op], graph_outputs: set[int]) -> None:
        members = {id(o) for o in ops}
        ins, outs = _interface(ops, members, graph_outputs)
        body = Graph(name="fused")
        inner = {id(v): body.add_input(v.name, v.type) for v in ins}
        _copy_body(ops, inner, body)
        body.outputs = [inner[id(v)] for v in outs]
        at = g.ops.index(ops[-1])
        for op in ops:
            op.detach()
        fused = Op("Fused", ins, outs, {"body": body}, name=ops[-1].name)
        keep = [o for o in g.ops if id(o) not in members]
        g.ops = keep
        g.ops.insert(min(at, len(keep)), fused)


def _space(ops: list[Op]) -> tuple:
    """The shape a group computes over: its elementwise ops' (a Transpose it reads may be
    broadcast into it)."""
    return next((o.outputs[0].shape for o in ops if o.kind != "Transpose"), ops[0].outputs[0].shape)


def _interface(ops: list[Op], members: set[int], graph_outputs: set[int]) -> tuple[list[Value], list[Value]]:
    """The group's external inputs (first-use order) and its results used outside it."""
    produced = {id(v) for op in ops for v in op.outputs}
    ins = distinct(v for op in ops for v in op.inputs if v is not None and id(v) not in produced)
    outs = [
        v
        for op in ops
        for v in op.outputs
        if id(v) in graph_outputs or any(id(u) not in members for u in v.uses)
    ]
    return ins, outs


def _copy_body(ops: list[Op], inner: dict[int, Value], body: Graph) -> None:
    """Append copies of ``ops`` to ``body``; ``inner`` maps outer values to body values."""
    for op in ops:
        copy = Op(
            op.kind,
            [None if v is None else inner[id(v)] for v in op.inputs],
            [Value(body.fresh_name(v.name), v.type) for v in op.outputs],
            dict(op.attrs),
            name=op.name,
            domain=op.domain,
        )
        body.ops.append(copy)
        for v, c in zip(op.outputs, copy.outputs):
            inner[id(v)] = c


class _IntoHost(Pass):
    """Moves an elementwise neighbour into a host op: ``_match`` finds it, ``_fuse`` rewrites."""

    def __init__(self, max_bindings: int = 8):
        self.max_bindings = max_bindings

    def run(self, g: Graph) -> PassResult:
        kinds = fusable_kinds()
        outputs = {id(v) for v in g.outputs}
        changed = False
        for op in list(g.ops):
            other = self._match(op, kinds, outputs)
            if other is not None:
                self._fuse(g, op, other)
                changed = True
        return PassResult(g, changed)

    def _match(self, op: Op, kinds: set[str], outputs: set[int]) -> Op | None:
        raise NotImplementedError

    def _fuse(self, g: Graph, op: Op, other: Op) -> None:
        raise NotImplementedError


def _transposed(op: Op) -> list[Value]:
    """The operands a ``Fused`` group reads transposed (none for a single elementwise op)."""
    if op.kind != "Fused":
        return []
    body: Graph = op.attrs["body"]
    outer = {id(b): v for b, v in zip(body.inputs, op.inputs)}
    return [outer[id(o.inputs[0])] for o in body.ops if o.kind == "Transpose"]


def _body_of(op: Op, inner: dict[int, Value], body: Graph) -> Value:
    """Copy an elementwise op, or a one-result ``Fused`` group's ops, into ``body``; ``inner``
    maps the op's operands to body values. Returns the body value of its result."""
    if op.kind != "Fused":
        _copy_body([op], inner, body)
        return inner[id(op.outputs[0])]
    src: Graph = op.attrs["body"]
    mapped = {id(b): inner[id(v)] for b, v in zip(src.inputs, op.inputs)}
    _copy_body(src.ops, mapped, body)
    return mapped[id(src.outputs[0])]


# Ops whose kernels apply an epilogue at their store, and how many operands of their own they
# take (the epilogue's operands follow; an omitted optional operand is None).
EPILOGUE_HOSTS = {"Conv": 3, "ConvTranspose": 3, "Gemm": 3, "MatMul": 3}


class FuseEpilogue(_IntoHost):
    """Move the only consumer of a Conv/ConvTranspose/Gemm/MatMul result into that op, when it
    is elementwise (one op or a ``Fused`` group with one result) over the same shape and
    dtype: bias, activation, residual Add and scaling then cost no kernel and no round trip
    through memory. The op keeps its kind; attribute ``epilogue`` holds the consumer as a body
    graph whose input 0 is the op's own result and whose other inputs are the op's operands
    from ``epilogue_at`` on."""

    name = "fuse-epilogue"

    def _match(self, op: Op, kinds: set[str], outputs: set[int]) -> Op | None:
        arity = EPILOGUE_HOSTS.get(op.kind)
        if arity is None or op.domain or "epilogue" in op.attrs or len(op.inputs) > arity:
            return None
        y = op.outputs[0]
        if len(op.outputs) != 1 or not y.dtype.is_float or id(y) in outputs or len(y.uses) != 1:
            return None
        user = y.uses[0]
        if user.domain or len(user.outputs) != 1:
            return None
        if user.kind == "Fused" and all(v is not y for v in _transposed(user)):
            # (the host computes its result one element at a time: none can be read transposed)
            body_ops = user.attrs["body"].ops
        elif user.kind in kinds:
            body_ops = [user]
        else:
            return None
        out = user.outputs[0]
        if out.type != y.type or any(
            v.type != y.type for o in body_ops if o.kind != "Transpose" for v in o.outputs
        ):
            return None
        own = sum(v is not None for v in op.inputs)
        extra = {id(v) for v in user.inputs if v is not None and v is not y}
        if own + len(extra) + 1 > self.max_bindings:
            return None
        return user

    def _fuse(self, g: Graph, op: Op, user: Op) -> None:
        y = op.outputs[0]
        body = Graph(name="epilogue")
        extras = distinct(v for v in user.inputs if v is not y)
        inner = {id(y): body.add_input(y.name, y.type)}
        inner.update({id(v): body.add_input(v.name, v.type) for v in extras})
        body.outputs = [_body_of(user, inner, body)]
        arity = EPILOGUE_HOSTS[op.kind]
        own = list(op.inputs) + [None] * (arity - len(op.inputs))
        at = g.ops.index(user)
        out = user.outputs[0]
        op.detach()
        user.detach()
        fused = Op(
            op.kind,
            own + extras,
            [out],
            {**op.attrs, "epilogue": body, "epilogue_at": arity},
            name=op.name,
            domain=op.domain,
        )
        g.ops[at] = fused
        g.ops.remove(op)


class FusePrologue(_IntoHost):
    """Compute a Conv's input inside the Conv when an elementwise op (or a ``Fused`` group
    with one result) makes it for that Conv alone: the Conv reads the producer's operands and
    applies it at each load, so the input tensor is never written (BatchNorm-ReLU before a
    convolution, as in pre-activation networks). Padding still reads zeros, as ONNX pads the
    computed input. Attribute ``prologue`` holds the producer as a body graph over the
    Conv's first ``prologue_n`` operands; the Conv's own input 0 becomes None."""

    name = "fuse-prologue"

    def _match(self, op: Op, kinds: set[str], outputs: set[int]) -> Op | None:
        if op.kind != "Conv" or op.domain or "prologue" in op.attrs or not op.inputs:
            return None
        x = op.inputs[0]
        if x is None or x.producer is None or x.dtype != DType.f32 or id(x) in outputs:
            return None
        if len(x.uses) != 1 or any(v is x for v in op.inputs[1:]):
            return None
        p = x.producer
        if p.domain or len(p.outputs) != 1 or not (p.kind in kinds or p.kind == "Fused"):
            return None
        reads = {id(v) for v in p.inputs if v is not None}
        own = sum(v is not None for v in op.inputs[1:]) + 1  # the rest, and the output
        if own + len(reads) > self.max_bindings:
            return None
        return p

    def _fuse(self, g: Graph, op: Op, producer: Op) -> None:
        reads = distinct(producer.inputs)
        body = Graph(name="prologue")
        inner = {id(v): body.add_input(v.name, v.type) for v in reads}
        body.outputs = [_body_of(producer, inner, body)]
        n = op.attrs.get("epilogue_at", len(op.inputs))
        at = g.ops.index(op)
        own = [None] + list(op.inputs[1:])
        op.detach()
        producer.detach()
        fused = Op(
            op.kind,
            reads + own,
            list(op.outputs),
            {**op.attrs, "prologue": body, "prologue_n": len(reads), "epilogue_at": n},
            name=op.name,
            domain=op.domain,
        )
        g.ops[at] = fused
        g.ops.remove(producer)

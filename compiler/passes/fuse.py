"""Fusion: connected elementwise ops over one iteration space become one kernel
(fuse-elementwise), an elementwise consumer of a Conv, ConvTranspose, Gemm or MatMul
result is applied at that op's store (fuse-epilogue), and an elementwise producer of a Conv's
input is computed in the Conv's loads (fuse-prologue)."""

from __future__ import annotations

from collections.abc import Iterator

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


# The most ops one Fused group takes. Driver shader compilers are superlinear in a kernel's
# length (lavapipe's first dispatch of one fused chain: 0.9 s at 5,000 ops, 3.2 s at 10,000,
# 12.4 s at 20,000); past this size another kernel costs less than a longer one.
MAX_GROUP_OPS = 1024


class _Group:
    """A set of ops that becomes one kernel, as a node of the graph in which every group is
    contracted to one node. Every op of the graph has one: ops that cannot fuse stay alone.

    ``rank`` orders the contracted graph topologically (every edge goes to a higher rank; see
    ``FuseElementwise._merge``). ``ins`` are the values its ops read from outside it, ``outs``
    the values it makes that are read outside it or are graph outputs: a group's kernel binds
    both, and they are its edges in the contracted graph."""

    __slots__ = ("ops", "rank", "fusable", "ins", "outs", "first", "space", "elementwise", "transposes")

    def __init__(self, op: Op, pos: int, fusable: bool, graph_outputs: set[int]):
        self.ops = [op]
        self.rank = pos
        self.fusable = fusable
        self.ins = {id(v): v for v in op.inputs if v is not None}
        self.outs = {id(v): v for v in op.outputs if v.uses or id(v) in graph_outputs}
        # (position, shape) of its first op, and of its first op that is not a Transpose
        self.first = (pos, op.outputs[0].shape if op.outputs else ())
        is_t = op.kind == "Transpose"
        self.space = None if is_t else self.first
        self.elementwise = 0 if is_t else 1
        self.transposes = [op] if is_t else []

    def shape(self) -> tuple:
        """The shape it computes over: its first elementwise op's (a Transpose it reads may be
        broadcast into it)."""
        return (self.space or self.first)[1]


class FuseElementwise(Pass):
    """Fuse connected elementwise ops whose results share one shape into a ``Fused`` op whose
    ``body`` attribute is the subgraph it computes (one kernel, one pass over memory).

    A group may read any number of tensors broadcast into its shape and may expose several
    results; it stays within ``max_bindings`` storage bindings and ``max_ops`` ops. Two groups
    merge only if no path through other ops or groups leads from one to the other (which would
    make a cycle).

    A Transpose of a tensor the group reads from outside joins too: the kernel then reads that
    tensor through permuted strides, and the transposed copy is never written (unless it is
    used outside the group). A Transpose of a value computed inside the group does not.

    Near-linear in the graph: each group keeps its interface and a rank in a topological order
    of the contracted graph, so a merge looks only at the groups ranked between the two."""

    name = "fuse-elementwise"

    def __init__(self, max_bindings: int = 8, max_ops: int = MAX_GROUP_OPS):
        self.max_bindings = max_bindings
        self.max_ops = max_ops

    def run(self, g: Graph) -> PassResult:
        kinds = fusable_kinds() | {"Transpose"}
        self._graph_outputs = outputs = {id(v) for v in g.outputs}
        self._pos = {id(op): i for i, op in enumerate(g.ops)}
        self._group = {
            id(op): _Group(op, i, self._candidate(op, kinds), outputs) for i, op in enumerate(g.ops)
        }
        # Merge along every producer -> consumer edge between candidates, when the shapes
        # agree, the bindings fit and no other path leads from one group to the other (the
        # fused kernel would then both feed and wait for that path).
        for op in g.ops:
            if not self._group[id(op)].fusable:
                continue
            for v in op.inputs:
                a = self._group.get(id(v.producer)) if v is not None and v.producer is not None else None
                b = self._group[id(op)]
                if a is None or not a.fusable or a is b or len(a.ops) + len(b.ops) > self.max_ops:
                    continue
                if a.shape() != b.shape() and not self._broadcast_read(a, b):
                    continue
                if any(self._transposes_own(t, a, b) for t in a.transposes + b.transposes):
                    continue
                if self._bindings(a, b) > self.max_bindings:
                    continue
                later = self._reachable_before(a, b)
                if later is None:
                    continue
                self._merge(a, b, later)
        changed = self._replace_groups(g)
        if changed:
            topological_sort(g)
        return PassResult(g, changed)

    def _broadcast_read(self, a: _Group, b: _Group) -> bool:
        """Whether group ``a`` is one Transpose read only by group ``b``, broadcast into its
        shape: ``b`` can read the Transpose's input through strides, with no copy written."""
        if len(a.ops) != 1 or a.ops[0].kind != "Transpose" or not b.elementwise:
            return False
        t = a.ops[0].outputs[0]
        return id(t) not in self._graph_outputs and all(self._group.get(id(u)) is b for u in t.uses)

    def _transposes_own(self, t: Op, a: _Group, b: _Group) -> bool:
        """Whether Transpose ``t`` would transpose a value that the merged group computes."""
        p = t.inputs[0].producer
        return p is not None and self._group.get(id(p)) in (a, b)

    @staticmethod
    def _candidate(op: Op, kinds: set[str]) -> bool:
        return (
            op.kind in kinds
            and op.domain == ""
            and len(op.outputs) == 1
            and op.outputs[0].type.numel_bound > 0
        )

    def _produced_by(self, v: Value, g: _Group) -> bool:
        return v.producer is not None and self._group.get(id(v.producer)) is g

    def _bindings(self, a: _Group, b: _Group) -> int:
        """Storage bindings of the merged group: external inputs plus exposed results."""
        # (each candidate makes one value, so at most len(ops) of the other's inputs become internal)
        if len(a.ins) - len(b.ops) > self.max_bindings or len(b.ins) - len(a.ops) > self.max_bindings:
            return self.max_bindings + 1
        return len(self._merged_ins(a, b)) + len(self._merged_outs(a, b))

    def _merged_ins(self, a: _Group, b: _Group) -> dict[int, Value]:
        ins = {k: v for k, v in a.ins.items() if not self._produced_by(v, b)}
        ins.update((k, v) for k, v in b.ins.items() if not self._produced_by(v, a))
        return ins

    def _merged_outs(self, a: _Group, b: _Group) -> dict[int, Value]:
        group, outputs = self._group, self._graph_outputs
        return {
            k: v
            for k, v in (*a.outs.items(), *b.outs.items())
            if k in outputs or any(group.get(id(u)) not in (a, b) for u in v.uses)
        }

    def _successors(self, x: _Group) -> Iterator[_Group]:
        for v in x.outs.values():
            for u in v.uses:
                s = self._group.get(id(u))
                if s is not None and s is not x:
                    yield s

    def _predecessors(self, x: _Group) -> Iterator[_Group]:
        for v in x.ins.values():
            if v.producer is not None:
                p = self._group.get(id(v.producer))
                if p is not None and p is not x:
                    yield p

    def _reachable_before(self, a: _Group, b: _Group) -> list[_Group] | None:
        """The groups reachable from ``a`` that rank below ``b``; None if ``b`` is reachable
        from ``a`` other than by their direct edge (merging them would make a cycle). Only groups
        ranked below ``b`` can lead to it."""
        seen = {id(a), id(b)}
        found: list[_Group] = []
        stack = [a]
        while stack:
            x = stack.pop()
            for s in self._successors(x):
                if s is b:
                    if x is not a:
                        return None
                elif s.rank < b.rank and id(s) not in seen:
                    seen.add(id(s))
                    found.append(s)
                    stack.append(s)
        return found

    def _reaching_after(self, a: _Group, b: _Group) -> list[_Group]:
        """The groups ranked above ``a`` from which ``b`` is reachable (only those can reach it)."""
        seen = {id(a), id(b)}
        found: list[_Group] = []
        stack = [b]
        while stack:
            for p in self._predecessors(stack.pop()):
                if p.rank > a.rank and id(p) not in seen:
                    seen.add(id(p))
                    found.append(p)
                    stack.append(p)
        return found

    def _merge(self, a: _Group, b: _Group, later: list[_Group]) -> None:
        """Merge ``b`` into ``a`` (or ``a`` into ``b``, whichever is smaller) and re-rank.

        The groups between the two ranks that reach ``b`` move before the merged group, those
        that ``a`` reaches (``later``) after it, each set in its old order, in the ranks the
        moved groups held (an online topological order, as Pearce and Kelly keep one)."""
        earlier = self._reaching_after(a, b)
        moved = sorted(earlier, key=lambda x: x.rank) + [a] + sorted(later, key=lambda x: x.rank)
        ranks = sorted([x.rank for x in earlier + later] + [a.rank, b.rank])
        ins, outs = self._merged_ins(a, b), self._merged_outs(a, b)
        big, small = (a, b) if len(a.ops) >= len(b.ops) else (b, a)
        for op in small.ops:
            self._group[id(op)] = big
        big.ops += small.ops
        big.ins, big.outs = ins, outs
        big.first = min(a.first, b.first)
        big.space = min((s for s in (a.space, b.space) if s is not None), default=None)
        big.elementwise += small.elementwise
        big.transposes += small.transposes
        moved[len(earlier)] = big
        for x, r in zip(moved, ranks):
            x.rank = r

    @staticmethod
    def _replace(ops: list[Op], graph_outputs: set[int]) -> Op:
        """Detach ``ops`` (in graph order) and return the ``Fused`` op that computes them."""
        members = {id(o) for o in ops}
        ins, outs = _interface(ops, members, graph_outputs)
        body = Graph(name="fused")
        inner = {id(v): body.add_input(v.name, v.type) for v in ins}
        _copy_body(ops, inner, body)
        body.outputs = [inner[id(v)] for v in outs]
        for op in ops:
            op.detach()
        return Op("Fused", ins, outs, {"body": body}, name=ops[-1].name)

    def _replace_groups(self, g: Graph) -> bool:
        """Replace each group of two or more ops by a ``Fused`` op.

        Each Fused op goes where replacing the groups one by one, in the order of their first
        ops, put it: at the index its last op had, in the list without the group's ops, i.e.
        after the ``len(ops) - 1`` ops that followed its last op (topological_sort then moves
        what must move). A linked list makes that cost the group's size, not the graph's."""
        order = _OpList(g.ops)
        changed = False
        done: set[int] = set()
        for op in list(g.ops):
            group = self._group[id(op)]
            if id(group) in done or len(group.ops) == 1:
                continue
            done.add(id(group))
            ops = sorted(group.ops, key=lambda o: self._pos[id(o)])
            anchor = order.walk(ops[-1], len(ops) - 1)
            fused = self._replace(ops, self._graph_outputs)
            for o in ops:
                order.unlink(o)
            order.insert_after(fused, anchor if anchor is not None else order.tail)
            changed = True
        g.ops = list(order)
        return changed


class _OpList:
    """Ops in a doubly linked list: unlink and insert in O(1)."""

    def __init__(self, ops: list[Op]):
        self.next: dict[int, Op | None] = {}
        self.prev: dict[int, Op | None] = {}
        self.head: Op | None = None
        self.tail: Op | None = None
        for op in ops:
            self.insert_after(op, self.tail)

    def __iter__(self) -> Iterator[Op]:
        op = self.head
        while op is not None:
            yield op
            op = self.next[id(op)]

    def walk(self, op: Op, n: int) -> Op | None:
        """The op ``n`` places after ``op``; None if the list ends sooner."""
        at: Op | None = op
        for _ in range(n):
            if at is None:
                break
            at = self.next[id(at)]
        return at

    def unlink(self, op: Op) -> None:
        before, after = self.prev.pop(id(op)), self.next.pop(id(op))
        self._join(before, after)

    def insert_after(self, op: Op, before: Op | None) -> None:
        """Insert ``op`` after ``before`` (None: at the head)."""
        after = self.head if before is None else self.next[id(before)]
        self._join(before, op)
        self._join(op, after)

    def _join(self, before: Op | None, after: Op | None) -> None:
        if before is None:
            self.head = after
        else:
            self.next[id(before)] = after
        if after is None:
            self.tail = before
        else:
            self.prev[id(after)] = before


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
        # the fused op takes one op's place and the other op leaves; the list is rebuilt once
        put: dict[int, Op] = {}
        drop: set[int] = set()
        for op in g.ops:
            other = self._match(op, kinds, outputs)
            if other is not None:
                at, gone, fused = self._fuse(op, other)
                put[id(at)] = fused
                drop.add(id(gone))
        if put:
            g.ops = [put.get(id(op), op) for op in g.ops if id(op) not in drop]
        return PassResult(g, bool(put))

    def _match(self, op: Op, kinds: set[str], outputs: set[int]) -> Op | None:
        raise NotImplementedError

    def _fuse(self, op: Op, other: Op) -> tuple[Op, Op, Op]:
        """Detach ``op`` and ``other``; return the one whose place the fused op takes, the
        one that leaves the list, and the fused op."""
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
EPILOGUE_HOSTS = {"Conv": 3, "ConvTranspose": 3, "Gemm": 3, "MatMul": 3, "MatMulNBits": 5}


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

    def _fuse(self, op: Op, user: Op) -> tuple[Op, Op, Op]:
        y = op.outputs[0]
        body = Graph(name="epilogue")
        extras = distinct(v for v in user.inputs if v is not y)
        inner = {id(y): body.add_input(y.name, y.type)}
        inner.update({id(v): body.add_input(v.name, v.type) for v in extras})
        body.outputs = [_body_of(user, inner, body)]
        arity = EPILOGUE_HOSTS[op.kind]
        own = list(op.inputs) + [None] * (arity - len(op.inputs))
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
        return user, op, fused


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

    def _fuse(self, op: Op, producer: Op) -> tuple[Op, Op, Op]:
        reads = distinct(producer.inputs)
        body = Graph(name="prologue")
        inner = {id(v): body.add_input(v.name, v.type) for v in reads}
        body.outputs = [_body_of(producer, inner, body)]
        n = op.attrs.get("epilogue_at", len(op.inputs))
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
        return op, producer, fused

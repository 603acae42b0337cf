"""Static memory planning: liveness, then byte offsets in a few arenas; weights packed apart.

Every value that needs GPU storage belongs to a *root* (a graph input or a kernel output):
views alias their input, the inputs of a ``concat_view`` (a Concat whose producers write
straight into its output) live inside that output, and a kernel's ``in_place`` output lives in
the input it overwrites (see passes/in_place.py). A root lives from the step that writes it to
the last step that reads it or any of its aliases (graph outputs to the end). Lifetimes are
closed intervals, so apart from in-place pairs, which the kernel binds once as read-write, a
kernel's output never shares bytes with its own inputs: WebGPU forbids binding the same bytes
as writable and readable in one dispatch, and the plan checker proves it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from onnx2wgsl.errors import CompileError
from onnx2wgsl.ir import Graph, Op, Placement, Value

from .target import Target


@dataclass
class Block:
    value: Value
    size: int
    start: int
    end: int
    buffer: int = -1
    offset: int = -1


@dataclass
class MemoryPlan:
    arena_sizes: list[int]
    weight_sizes: list[int]
    naive_bytes: int
    lower_bound: int
    strategy: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def arena_bytes(self) -> int:
        return sum(self.arena_sizes)

    @property
    def weight_bytes(self) -> int:
        return sum(self.weight_sizes)


def align(n: int, a: int) -> int:
    return -(-n // a) * a


def storage_links(g: Graph) -> Iterator[tuple[Value, Value, int]]:
    """Each (value, the value whose storage holds it, byte offset there) that the lowered graph
    declares: a ``view`` output lives in its input's storage; each input of a ``concat_view``
    lives inside the output, at its offset; an ``in_place`` output of a kernel lives in the
    input it overwrites."""
    for op in g.ops:
        if op.kind == "view":
            yield op.outputs[0], op.inputs[0], int(op.attrs.get("offset", 0))
        elif op.kind == "concat_view":
            for x, off in zip(op.inputs, op.attrs["offsets"]):
                yield x, op.outputs[0], int(off)
        elif op.kind == "kernel":
            for o, i in op.attrs.get("in_place", []):
                yield op.outputs[o], op.inputs[i], 0


def steps(g: Graph) -> Iterator[tuple[int, Op]]:
    """The schedule: every op that runs work (views and concat_views run none) with its step,
    counted from 1 (step 0 writes the graph inputs)."""
    step = 0
    for op in g.ops:
        if op.kind not in ("view", "concat_view"):
            step += 1
            yield step, op


def aliases(g: Graph) -> dict[int, tuple[Value, int]]:
    """Map id(value) -> (the value whose storage holds it, byte offset there) for every
    non-constant value (see ``storage_links``)."""
    parent = {id(v): (host, off) for v, host, off in storage_links(g)}
    out: dict[int, tuple[Value, int]] = {}
    for v in g.values():
        if v.is_const:
            continue
        path = []  # walked up without recursion: alias chains can be as long as the graph
        while id(v) not in out and id(v) in parent:
            path.append(v)
            v = parent[id(v)][0]
        if id(v) not in out:
            out[id(v)] = (v, 0)
        root, off = out[id(v)]
        for u in reversed(path):
            off += parent[id(u)][1]
            out[id(u)] = (root, off)
    return out


def roots(g: Graph) -> dict[int, Value]:
    """Map id(value) -> the value whose storage it uses (itself unless it aliases another)."""
    return {k: r for k, (r, _) in aliases(g).items()}


def lifetimes(g: Graph, root: dict[int, Value]) -> list[Block]:
    """One block per root: from the first step that writes any of its aliases to the last
    step that reads one (graph inputs from step 0, graph outputs to the end)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    values: dict[int, Value] = {}

    def touch(v: Value, step: int) -> None:
        r = root[id(v)]
        values[id(r)] = r
        first[id(r)] = min(first.get(id(r), step), step)
        last[id(r)] = max(last.get(id(r), step), step)

    for v in g.inputs:
        touch(v, 0)
    step = 0
    for step, op in steps(g):
        for v in list(op.inputs) + list(op.outputs):
            if v is not None and not v.is_const:
                touch(v, step)
    end = step + 1
    for v in g.outputs:
        if not v.is_const:
            touch(v, end)
    return [Block(r, r.nbytes, first[k], last[k]) for k, r in values.items()]


def peak_bytes(blocks: list[Block]) -> int:
    """The most bytes live at one step (the plan's lower bound)."""
    change = [0] * (max((b.end for b in blocks), default=0) + 2)
    for b in blocks:  # (per block, not per step of its life: long lives cost nothing more)
        change[b.start] += b.size
        change[b.end + 1] -= b.size
    live = peak = 0
    for d in change:
        live += d
        peak = max(peak, live)
    return peak


_STRATEGIES = {
    "size": lambda b: (-b.size, b.start, b.value.name),
    "start": lambda b: (b.start, -b.size, b.value.name),
    "duration": lambda b: (-(b.end - b.start), -b.size, b.value.name),
}


def _place(blocks: list[Block], order, cap: int, alignment: int) -> list[int]:
    """Greedy first fit in the given order; returns arena sizes (block fields are set)."""
    placed: list[_Timeline] = []
    sizes: list[int] = []
    steps = max((b.end for b in blocks), default=0) + 1
    for b in sorted(blocks, key=order):
        b.buffer = b.offset = -1
        for arena, members in enumerate(placed):
            off = _first_fit(b, members.overlapping(b.start, b.end), alignment)
            if off + b.size <= cap:
                b.buffer, b.offset = arena, off
                break
        else:
            if b.size > cap:
                raise CompileError(
                    f"tensor %{b.value.name} needs {b.size:,} bytes, over the target's maxBufferSize of {cap:,}",
                    hint="compile for a target with larger limits, or with smaller dims",
                )
            placed.append(_Timeline(steps))
            sizes.append(0)
            b.buffer, b.offset = len(placed) - 1, 0
        placed[b.buffer].add(b)
        sizes[b.buffer] = max(sizes[b.buffer], b.offset + b.size)
    return sizes


class _Timeline:
    """The blocks placed in one arena, found by the steps they live at without a scan of them all.

    A segment tree over steps holds each block at the O(log steps) nodes that tile its life
    (those live at step s lie on the path from s's leaf to the root) and at every node whose
    range holds its start (those starting in a range lie at the nodes that tile it)."""

    def __init__(self, steps: int):
        self.leaves = 1 << max(steps - 1, 0).bit_length()
        self.covering: dict[int, list[Block]] = {}
        self.starting: dict[int, list[Block]] = {}

    def add(self, b: Block) -> None:
        for node in self._tiles(b.start, b.end):
            self.covering.setdefault(node, []).append(b)
        node = b.start + self.leaves
        while node:
            self.starting.setdefault(node, []).append(b)
            node >>= 1

    def overlapping(self, start: int, end: int) -> list[Block]:
        """The blocks live at some step of [start, end]: those live at ``start``, and those
        starting after it, up to ``end``."""
        out: list[Block] = []
        node = start + self.leaves
        while node:
            out += self.covering.get(node, ())
            node >>= 1
        for node in self._tiles(start + 1, end):
            out += self.starting.get(node, ())
        return out

    def _tiles(self, lo: int, hi: int) -> list[int]:
        """The tree nodes whose ranges tile steps [lo, hi]."""
        nodes = []
        lo, hi = lo + self.leaves, hi + self.leaves + 1
        while lo < hi:
            if lo & 1:
                nodes.append(lo)
                lo += 1
            if hi & 1:
                hi -= 1
                nodes.append(hi)
            lo >>= 1
            hi >>= 1
        return nodes


def _first_fit(b: Block, members: list[Block], alignment: int) -> int:
    """The lowest offset, 0 or the aligned end of a member, where ``b`` overlaps no member
    (``members``: the blocks live at some step of b's life, each once)."""
    busy = sorted([(m.offset, m.offset + m.size) for m in members])
    off = 0
    size = b.size
    for lo, hi in busy:  # (O(live blocks) per block: the inner loop stays lean)
        if off + size <= lo:
            break
        if hi > off:
            off = -(-hi // alignment) * alignment
    return off


def plan_memory(g: Graph, target: Target) -> MemoryPlan:
    """Give every value a Placement; set ``g.buffers``; return the plan's figures."""
    root = roots(g)
    by_id = {id(v): v for v in g.values()}
    blocks = [b for b in lifetimes(g, root) if b.size > 0]
    # a generation's past inputs (the KV cache) get buffers of their own: after a step the
    # runtime copies each present output into its past's slot, which WebGPU allows only
    # between distinct buffers, and which must clobber nothing the step wrote
    # (a past shared with its present, which the step writes in place, is copied nowhere: those
    # get buffers of their own too, apart from the copied ones, a copy's source and destination
    # being distinct buffers)
    kept = {id(v) for v in state_inputs(g)}
    shared = shared_states(g)
    state = [b for b in blocks if id(b.value) in kept and id(b.value) not in shared]
    shared_blocks = [b for b in blocks if id(b.value) in shared]
    blocks = [b for b in blocks if id(b.value) not in kept]
    best: tuple[int, str, list[int], list[tuple[int, int]]] | None = None
    for name, order in _STRATEGIES.items():
        sizes = _place(blocks, order, target.max_buffer_size, target.alignment)
        total = sum(sizes)
        if best is None or total < best[0]:
            best = (total, name, sizes, [(b.buffer, b.offset) for b in blocks])
    assert best is not None or not blocks
    total, strategy, arena_sizes, spots = best if best else (0, "none", [], [])
    for b, (buf, off) in zip(blocks, spots):
        b.buffer, b.offset = buf, off

    buffers: dict[str, dict] = {}
    for i, size in enumerate(arena_sizes):
        buffers[f"arena{i}"] = {"kind": "arena", "size": align(max(size, 4), 16)}
    for b in blocks:
        b.value.placement = Placement(f"arena{b.buffer}", b.offset, b.size)
    state_sizes = _place(state, _STRATEGIES["start"], target.max_buffer_size, target.alignment)
    for i, size in enumerate(state_sizes):
        buffers[f"state{i}"] = {"kind": "arena", "size": align(max(size, 4), 16)}
    for b in state:
        b.value.placement = Placement(f"state{b.buffer}", b.offset, b.size)
    shared_sizes = _place(shared_blocks, _STRATEGIES["start"], target.max_buffer_size, target.alignment)
    for i, size in enumerate(shared_sizes):
        buffers[f"state{len(state_sizes) + i}"] = {"kind": "arena", "size": align(max(size, 4), 16)}
    for b in shared_blocks:
        b.value.placement = Placement(f"state{len(state_sizes) + b.buffer}", b.offset, b.size)
    state += shared_blocks
    state_sizes += shared_sizes
    for b in lifetimes(g, root):
        if b.size == 0:
            b.value.placement = Placement("arena0" if arena_sizes else "", 0, 0)

    weight_sizes = _pack_weights(g, target, buffers)
    for k, (r, off) in aliases(g).items():
        v = by_id[k]
        if r is not v and r.placement is not None:
            v.placement = Placement(r.placement.buffer, r.placement.offset + off, v.nbytes)
    g.buffers = buffers

    # naive: every graph input and every tensor an op produces in a buffer of its own
    produced = [v for op in g.ops if op.kind in ("kernel", "concat_view") for v in op.outputs]
    naive = sum(align(v.nbytes, target.alignment) for v in list(g.inputs) + produced)
    return MemoryPlan(
        arena_sizes + state_sizes, weight_sizes, naive, peak_bytes(blocks + state), strategy, blocks + state
    )


def state_inputs(g: Graph) -> list[Value]:
    """The graph inputs a generation's state pairs name as pasts (compiler/generation.py)."""
    kept = {s["past"] for s in g.metadata.get("generation", {}).get("state", ())}
    names = g.metadata.get("input_names", [v.name for v in g.inputs])
    return [v for v, name in zip(g.inputs, names) if name in kept]


def shared_states(g: Graph) -> dict[int, Value]:
    """Map id(past input) -> its present output, for the state pairs whose present is its
    past's own buffer (``shared``: GroupQueryAttention writes the new keys into it in place)."""
    gen = g.metadata.get("generation", {})
    pairs = {s["past"]: s["present"] for s in gen.get("state", ()) if s.get("shared")}
    if not pairs:
        return {}
    ins = g.metadata.get("input_names", [v.name for v in g.inputs])
    outs = dict(zip(g.metadata.get("output_names", [v.name for v in g.outputs]), g.outputs))
    return {
        id(v): outs[pairs[name]] for v, name in zip(g.inputs, ins) if name in pairs and pairs[name] in outs
    }


def _pack_weights(g: Graph, target: Target, buffers: dict[str, dict]) -> list[int]:
    sizes: list[int] = []
    for v in g.constants():
        n = v.nbytes
        if n > target.max_binding_size:
            raise CompileError(
                f"constant %{v.name} of {n:,} bytes is over the maxStorageBufferBindingSize of "
                f"{target.max_binding_size:,}, and its consumer cannot split it",
                hint="compile for a target with larger limits",
            )
        off = align(sizes[-1], target.alignment) if sizes else 0
        if not sizes or off + n > target.max_buffer_size:
            sizes.append(0)
            off = 0
        v.placement = Placement(f"weights{len(sizes) - 1}", off, n)
        sizes[-1] = off + n
    for i, size in enumerate(sizes):
        buffers[f"weights{i}"] = {"kind": "weights", "size": align(max(size, 4), 16)}
    return sizes


def check_plan(g: Graph, alignment: int = 256) -> None:
    """Prove the plan safe: live tensors never share bytes; no dispatch binds bytes that it
    writes through another binding too; every binding lies inside its buffer; an in-place
    output overwrites only bytes that nothing reads again."""
    _check_in_place(g)
    root = roots(g)
    blocks = lifetimes(g, root)
    by_buf: dict[str, list[Block]] = {}
    for b in blocks:
        if b.size:
            by_buf.setdefault(b.value.placement.buffer, []).append(b)
    for members in by_buf.values():
        if not _may_share_bytes(members):
            continue
        members.sort(key=lambda b: b.value.placement.offset)
        for i, a in enumerate(members):
            pa = a.value.placement
            for c in members[i + 1 :]:
                pc = c.value.placement
                if pc.offset >= pa.offset + pa.size:
                    break
                if a.start <= c.end and c.start <= a.end:
                    raise CompileError(
                        f"memory plan error: %{a.value.name} and %{c.value.name} are live at once "
                        f"and share bytes of {pa.buffer}"
                    )
    for op in g.ops:
        for d in op.dispatches:
            ranges = []
            for b in d.bindings:
                p = b.value.placement
                if p is None:
                    raise CompileError(f"memory plan error: %{b.value.name} has no placement")
                lo = p.offset + b.offset
                hi = lo + b.nbytes
                if hi > g.buffers[p.buffer]["size"]:
                    raise CompileError(f"memory plan error: binding of %{b.value.name} overruns {p.buffer}")
                if lo % alignment or b.nbytes % 4 or b.nbytes == 0:
                    raise CompileError(
                        f"memory plan error: binding of %{b.value.name} is misaligned or empty"
                    )
                ranges.append((p.buffer, lo, hi, b.write, b.value.name))
            for i, (buf, lo, hi, w, name) in enumerate(ranges):
                for buf2, lo2, hi2, w2, name2 in ranges[i + 1 :]:
                    if buf == buf2 and (w or w2) and lo < hi2 and lo2 < hi:
                        raise CompileError(
                            f"memory plan error: {op.label} binds bytes of {buf} as writable "
                            f"(%{name if w else name2}) and through another binding (%{name2 if w else name})"
                        )


def _may_share_bytes(members: list[Block]) -> bool:
    """Whether two of one buffer's blocks may share bytes while both are live: a sweep over the
    steps keeps the live blocks' byte ranges (each at least one byte long, so the exact check
    that runs on True misses nothing) in offset order, where a new one can only overlap its
    neighbours as long as no two overlap."""
    starts: dict[int, list[Block]] = {}
    ends: dict[int, list[Block]] = {}
    for b in members:
        starts.setdefault(b.start, []).append(b)
        ends.setdefault(b.end, []).append(b)
    los: list[int] = []
    his: list[int] = []
    for step in sorted(starts.keys() | ends.keys()):
        for b in starts.get(step, ()):  # lives are closed: starts before ends at one step
            p = b.value.placement
            lo, hi = p.offset, p.offset + max(p.size, 1)
            i = bisect.bisect_left(los, lo)
            if (i > 0 and his[i - 1] > lo) or (i < len(los) and los[i] < hi):
                return True
            los.insert(i, lo)
            his.insert(i, hi)
        for b in ends.get(step, ()):
            i = bisect.bisect_left(los, b.value.placement.offset)
            del los[i], his[i]
    return False


def _check_in_place(g: Graph) -> None:
    """An in-place output overwrites its input's bytes: no step after its kernel may read the
    input or anything sharing its storage from before (views of it, tensors it lives in), and
    none of those may be a graph input or output."""
    pairs = [
        (step, op, op.inputs[i], op.outputs[o])
        for step, op in steps(g)
        if op.kind == "kernel"
        for o, i in op.attrs.get("in_place", [])
    ]
    if not pairs:
        return
    parent = {id(v): host for v, host, _ in storage_links(g)}
    last_read: dict[int, float] = {}
    for step, op in steps(g):
        for v in op.inputs:
            if v is not None and not v.is_const:
                last_read[id(v)] = step
    shared = shared_states(g)
    for v in list(g.inputs) + list(g.outputs):
        # (a shared state's past: its bytes become its present, the graph output, in place)
        if id(v) not in shared:
            last_read[id(v)] = math.inf
    members = [v for v in g.values() if not v.is_const]
    # The storage links form a forest (a value's parent holds it). Numbered in depth-first
    # order, the values sharing bytes with x but not living in y are those of x's tree outside
    # y's subtree: a prefix and a suffix of the tree's interval, whose latest reads are kept.
    children: dict[int, list[int]] = {}
    for k, host in parent.items():
        children.setdefault(id(host), []).append(k)
    read = {id(v): last_read.get(id(v), 0) for v in members}
    nodes = list(read) + [k for k in children if k not in read]
    enter: dict[int, int] = {}
    leave: dict[int, int] = {}
    latest: list[float] = []  # by number: the value's last read
    tree: list[tuple[int, int]] = []  # by number: its tree's interval
    for r in nodes:
        if r in parent or r in enter:
            continue
        start = len(latest)
        stack = [(r, False)]
        while stack:
            k, done = stack.pop()
            if done:
                leave[k] = len(latest) - 1
                continue
            enter[k] = len(latest)
            latest.append(read.get(k, -math.inf))
            stack.append((k, True))
            stack.extend((c, False) for c in children.get(k, ()))
        tree += [(start, len(latest) - 1)] * (len(latest) - start)
    prefix = latest[:]
    suffix = latest[:]
    for t in range(1, len(latest)):
        if tree[t][0] < t:
            prefix[t] = max(prefix[t], prefix[t - 1])
    for t in range(len(latest) - 2, -1, -1):
        if tree[t][1] > t:
            suffix[t] = max(suffix[t], suffix[t + 1])
    for step, op, x, y in pairs:
        if id(x) in shared and shared[id(x)] is not y:
            raise CompileError(
                f"memory plan error: {op.label} writes %{y.name} over the state input %{x.name}, "
                "which is not the present paired with it"
            )
        lo, hi = tree[enter[id(x)]]
        if id(y) in enter and tree[enter[id(y)]] == (lo, hi):
            a, b = enter[id(y)], leave[id(y)]
            worst = max(prefix[a - 1] if a > lo else -math.inf, suffix[b + 1] if b < hi else -math.inf)
        else:
            worst = prefix[hi]
        if worst > step:
            _in_place_error(op, x, y, step, members, parent, last_read)


def _in_place_error(op: Op, x: Value, y: Value, step: int, members: list[Value], parent, last_read) -> None:
    """Raise the error for an in-place pair known to overwrite bytes read later, naming the
    first such value."""

    def chain(v: Value) -> list[int]:
        out = [id(v)]
        while out[-1] in parent:
            out.append(id(parent[out[-1]]))
        return out

    root = chain(x)[-1]
    for v in members:
        c = chain(v)
        if c[-1] == root and id(y) not in c and last_read.get(id(v), 0) > step:
            raise CompileError(
                f"memory plan error: {op.label} writes %{y.name} over %{x.name}, but "
                f"%{v.name}, which shares those bytes, is read later or is a graph input or output"
            )
    raise AssertionError(f"{op.label}: no value found for an in-place conflict")

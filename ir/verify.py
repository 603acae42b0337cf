"""Structural checks of a Graph, run after every pass in tests (and on request in compiles)."""

from __future__ import annotations

from .graph import Graph
from .symbolic import Expr


class VerifyError(Exception):
    """The graph breaks an IR invariant; the message names the op and the rule."""


def verify(g: Graph, *, static: bool = False) -> None:
    """Check SSA form, use-def links, topological order, types and kernel bindings.

    With ``static=True`` every shape must be concrete (true after the frontend binds dims).
    """
    defined: set[int] = set()
    names: dict[str, int] = {}

    def define(v, where: str) -> None:
        if id(v) in defined:
            raise VerifyError(f"{where}: value %{v.name} is defined twice")
        if v.name in names and names[v.name] != id(v):
            raise VerifyError(f"{where}: two values are named %{v.name}")
        names[v.name] = id(v)
        defined.add(id(v))
        if static and not v.type.is_static:
            raise VerifyError(f"{where}: %{v.name} has a symbolic shape {v.type}")
        for sym in v.type.symbols:
            if g.symbols.get(sym.name) != sym:
                raise VerifyError(f"{where}: %{v.name} has dim {sym.name} ({sym.lo}..{sym.hi}), "
                                  "which the graph's dims do not declare so")  # fmt: skip

    for v in g.inputs:
        if v.producer is not None or v.is_const:
            raise VerifyError(f"graph input %{v.name} has a producer or data")
        define(v, "graph input")
    for v in g.constants():
        if tuple(v.data.shape) != tuple(v.type.shape):
            raise VerifyError(f"constant %{v.name}: data shape {v.data.shape} != type {v.type}")
        if v.data.dtype != v.type.dtype.numpy:
            raise VerifyError(f"constant %{v.name}: data dtype {v.data.dtype} != {v.type.dtype}")
        define(v, "constant")

    for op in g.ops:
        where = op.label
        for v in op.inputs:
            if v is None:
                continue
            if id(v) not in defined:
                raise VerifyError(f"{where}: input %{v.name} is used before it is defined")
            if op not in v.uses:
                raise VerifyError(f"{where}: %{v.name} does not list this op among its uses")
        for v in op.outputs:
            if v.producer is not op:
                raise VerifyError(f"{where}: output %{v.name} names another producer")
            define(v, where)
        if op.kind == "kernel":
            if not op.dispatches and any(v.type.numel_bound for v in op.outputs):
                # only a kernel whose outputs are all empty (a dim of 0) may have no work
                raise VerifyError(f"{where}: kernel op has no dispatches")
            io = {id(v) for v in op.inputs if v is not None} | {id(v) for v in op.outputs}
            for d in op.dispatches:
                if d.shader not in g.shaders:
                    raise VerifyError(f"{where}: dispatch names unknown shader {d.shader!r}")
                if len(d.bindings) != len(g.shaders[d.shader].buffers):
                    raise VerifyError(
                        f"{where}: dispatch binds {len(d.bindings)} buffers, shader {d.shader!r} "
                        f"declares {len(g.shaders[d.shader].buffers)}"
                    )
                if len(d.grid) != 3 or any(_lowest(n) < 0 for n in d.grid):
                    raise VerifyError(f"{where}: bad grid {d.grid}")
                reads = g.shaders[d.shader].dims
                if reads and reads != tuple(g.symbols):
                    raise VerifyError(
                        f"{where}: shader {d.shader!r} reads dims {list(reads)}, not the graph's {list(g.symbols)}"
                    )
                if any(not set(_symbols(n)) <= set(g.symbols) for n in d.grid):
                    raise VerifyError(f"{where}: grid {d.grid} names dims the graph does not declare")
                if 0 in d.grid:
                    raise VerifyError(f"{where}: empty grid {d.grid}; an empty dispatch must be left out")
                for b in d.bindings:
                    if b.nbytes <= 0:
                        raise VerifyError(f"{where}: binding of %{b.value.name} is empty")
                    if id(b.value) not in io:
                        raise VerifyError(f"{where}: binding of %{b.value.name}, not an operand")
                    if b.write and b.value.is_const:
                        raise VerifyError(f"{where}: writes to constant %{b.value.name}")
                    if b.offset < 0 or b.offset + b.nbytes > b.value.nbytes:
                        raise VerifyError(f"{where}: binding of %{b.value.name} is out of range")
                for r, w in d.inplace:
                    n = len(d.bindings)
                    if not (0 <= r < n and 0 <= w < n) or r == w:
                        raise VerifyError(f"{where}: inplace pair {r} -> {w} names no pair of bindings")
                    br, bw = d.bindings[r], d.bindings[w]
                    if br.write or br.value.is_const or not bw.write or br.nbytes != bw.nbytes:
                        raise VerifyError(
                            f"{where}: inplace pair {r} -> {w} must pair a read of a tensor with a "
                            "write of as many bytes"
                        )
            for pair in op.attrs.get("in_place", []):
                o, i = pair
                if not (0 <= o < len(op.outputs) and 0 <= i < len(op.inputs)) or op.inputs[i] is None:
                    raise VerifyError(f"{where}: in_place pair {pair} names no output and input")
                if op.inputs[i].nbytes != op.outputs[o].nbytes or op.inputs[i].is_const:
                    raise VerifyError(
                        f"{where}: in_place output %{op.outputs[o].name} cannot live in %{op.inputs[i].name}"
                    )
        elif op.dispatches:
            raise VerifyError(f"{where}: only kernel ops carry dispatches")
        if op.kind == "view" and static:
            src, dst = op.inputs[0], op.outputs[0]
            if op.attrs.get("offset", 0) + dst.nbytes > src.nbytes:
                raise VerifyError(f"{where}: view %{dst.name} reaches past the end of %{src.name}")

    op_ids = {id(op) for op in g.ops}
    for v in g.values():
        if v.producer is not None and id(v.producer) not in op_ids:
            raise VerifyError(f"%{v.name}: its producer is not in the graph")
        for op in v.uses:
            if id(op) not in op_ids:
                raise VerifyError(f"%{v.name} is used by {op.label}, which is not in the graph")
    for v in g.outputs:
        if id(v) not in defined:
            raise VerifyError(f"graph output %{v.name} is not defined")


def _lowest(n) -> int:
    """A grid size's least value over the dims' ranges."""
    return n.bounds[0] if isinstance(n, Expr) else n


def _symbols(n) -> list[str]:
    return [s.name for s in n.symbols] if isinstance(n, Expr) else []

"""Structural equality of graphs (Graph and Value objects compare by identity).

``graph_diff(a, b)`` names the first difference, e.g. ``ops[3] (Conv #conv1).attrs['pads']:
[0, 0, 1, 1] != [0, 0, 1, 2]``; ``graphs_equal`` is ``graph_diff(...) is None``. Everything the
text form holds is compared: names, types, attributes (floats and tensors bit for bit),
constant data, dispatches, placements, shaders, buffers, opset, metadata, and the state of
the graph's name generator.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np

from .graph import Graph, Value
from .printer import bits_view, float_text, name_counter, splat_of


class _Float:
    """A float compared by its bits (so nan == nan and -0.0 != 0.0), shown in its text form."""

    __slots__ = ("bits", "x")

    def __init__(self, x: float):
        self.x = x
        self.bits = struct.unpack("<Q", struct.pack("<d", x))[0]

    def __eq__(self, other) -> bool:
        return isinstance(other, _Float) and other.bits == self.bits

    def __repr__(self) -> str:
        return float_text(self.x)


class _Data:
    """Tensor data compared by dtype, shape and bytes (a digest; splats by their one element)."""

    __slots__ = ("key", "one", "array")

    def __init__(self, a: np.ndarray):
        self.array = a
        self.one = splat_of(a)
        if self.one is not None:
            body: Any = ("splat", self.one.tobytes())
        elif a.dtype == np.dtype(object):
            body = ("objects", tuple(a.reshape(-1).tolist()))
        elif a.size <= 1:
            body = ("bytes", a.tobytes())
        else:
            bits = bits_view(a)
            raw = np.ascontiguousarray(a if bits is None else bits).tobytes()
            body = ("sha256", hashlib.sha256(raw).hexdigest())
        self.key = (str(a.dtype), tuple(a.shape), body)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Data) and other.key == self.key

    def __repr__(self) -> str:
        head = f"{self.array.dtype}{list(self.array.shape)}"
        if self.one is not None:
            return f"{head} splat({self.one.item()!r:.40})"
        return f"{head} {np.array2string(self.array.reshape(-1)[:6], threshold=6)}"


def _literal(v: Any, path: str) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return ("bool", bool(v))
    if isinstance(v, (int, np.integer)):
        return ("int", int(v))
    if isinstance(v, (float, np.floating)):
        return _Float(float(v))
    if isinstance(v, (str, type(None))):
        return v
    if isinstance(v, np.ndarray):
        return _Data(v)
    if isinstance(v, Graph):
        return _canon(v, None)
    if isinstance(v, list):
        return [_literal(x, path) for x in v]
    if isinstance(v, tuple):
        return ("tuple", [_literal(x, path) for x in v])
    if isinstance(v, dict):
        return {k: _literal(x, path) for k, x in v.items()}
    return ("object", repr(v))


def _canon(g: Graph, outer: dict[int, str] | None) -> dict:
    """Every value is referred to by its name and definition index, so two graphs match only if
    their values are wired the same way."""
    index: dict[int, str] = {}

    def define(v: Value) -> dict:
        index[id(v)] = f"#{len(index)} %{v.name}"
        p = v.placement
        return {
            "name": v.name,
            "type": (v.type.dtype.value, tuple((type(d).__name__, d) for d in v.shape)),
            "placement": None if p is None else (p.buffer, p.offset, p.size),
            "storage": None if v.storage is None else v.storage.value,
            "data": None if v.data is None else _Data(v.data),
        }

    def ref(v: Value | None) -> str | None:
        if v is None:
            return None
        if id(v) in index:
            return index[id(v)]
        if outer is not None and id(v) in outer:
            return "outer " + outer[id(v)]
        return f"undefined %{v.name}"

    out: dict[str, Any] = {"name": g.name}
    out["inputs"] = [define(v) for v in g.inputs]
    consts = [v for v in g.constants() if outer is None or id(v) not in outer]
    out["constants"] = [define(v) for v in consts]
    ops = []
    for op in g.ops:
        ins = [ref(v) for v in op.inputs]
        outs = [define(v) for v in op.outputs]
        ops.append(
            {
                "op": f"{op.domain + '::' if op.domain else ''}{op.kind} #{op.name}",
                "inputs": ins,
                "outputs": outs,
                "attrs": {k: _attr(x, lambda: {**(outer or {}), **index}) for k, x in op.attrs.items()},
                "dispatches": [
                    {
                        "shader": d.shader,
                        "grid": [str(n) for n in d.grid],
                        "bindings": [(ref(b.value), b.offset, b.size, bool(b.write)) for b in d.bindings],
                        "inplace": [list(p) for p in d.inplace],
                        "flops": str(d.flops),
                    }
                    for d in op.dispatches
                ],
            }
        )
    out["ops"] = ops
    out["outputs"] = [ref(v) for v in g.outputs]
    out["opset"] = {k: _literal(x, "opset") for k, x in g.opset.items()}
    out["metadata"] = _literal(g.metadata, "metadata")
    out["symbols"] = {k: (s.lo, s.hi) for k, s in sorted(g.symbols.items())}
    out["buffers"] = _literal(g.buffers, "buffers")
    out["shaders"] = dict(g.shaders)
    current = {v.name for v in list(g.inputs) + consts} | {v.name for op in g.ops for v in op.outputs}
    out["name generator"] = {"next": name_counter(g), "taken": sorted(g._names | current)}
    return out


def _attr(v: Any, scope) -> Any:
    """An attribute; ``scope()`` gives the names a nested graph may refer to (built on demand)."""
    if isinstance(v, Graph):
        return _canon(v, scope())
    if isinstance(v, (list, tuple)):
        items = [_attr(x, scope) for x in v]
        return items if isinstance(v, list) else ("tuple", items)
    if isinstance(v, dict):
        return {k: _attr(x, scope) for k, x in v.items()}
    return _literal(v, "")


def _first_diff(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if k not in b:
                return f"{path}[{k!r}]: only in the first graph"
            d = _first_diff(a[k], b[k], f"{path}[{k!r}]" if path else str(k))
            if d:
                return d
        extra = [k for k in b if k not in a]
        return f"{path}[{extra[0]!r}]: only in the second graph" if extra else None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            label = f"{path}[{i}]"
            if isinstance(x, dict) and "op" in x:
                label += f" ({x['op']})"
            d = _first_diff(x, y, label)
            if d:
                return d
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)} items"
        return None
    if type(a) is not type(b) or not a == b:
        return f"{path}: {_show(a)} != {_show(b)}"
    return None


def _show(x: Any) -> str:
    if isinstance(x, tuple) and len(x) == 2 and x[0] in ("int", "bool"):
        return repr(x[1])
    text = repr(x)
    return text if len(text) <= 120 else text[:117] + "..."


def graph_diff(a: Graph, b: Graph) -> str | None:
    """The first structural difference between two graphs, described; None if they are equal."""
    return _first_diff(_canon(a, None), _canon(b, None), "")


def graphs_equal(a: Graph, b: Graph) -> bool:
    """Whether two graphs are structurally the same (see ``graph_diff``)."""
    return graph_diff(a, b) is None


__all__ = ["graph_diff", "graphs_equal"]

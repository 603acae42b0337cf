"""Affine views: how an operand is addressed from the coordinates of an iteration space.

A map kernel walks an iteration space (a shape) with one invocation per point; each operand
is read or written at ``offset + sum(coord[d] * strides[d])``. Broadcasting (stride 0),
transposes (permuted strides), slices (offset, strides) and writes into a slice of a
bigger tensor (Concat) are all such views, so one kernel template serves them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    offset: int
    strides: tuple[int, ...]


def contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def contiguous(shape) -> View:
    return View(0, contiguous_strides(shape))


def broadcast(in_shape, out_shape) -> View:
    """The view of a tensor of ``in_shape`` broadcast (numpy rules) to ``out_shape``."""
    in_shape = (1,) * (len(out_shape) - len(in_shape)) + tuple(in_shape)
    strides = contiguous_strides(in_shape)
    return View(0, tuple(0 if n == 1 and m != 1 else s for n, m, s in zip(in_shape, out_shape, strides)))


def permuted(in_shape, perm) -> View:
    """The view of a tensor read as its transpose by ``perm`` (output dim d = input dim perm[d])."""
    strides = contiguous_strides(in_shape)
    return View(0, tuple(strides[p] for p in perm))


def collapse(shape, views: list[View]) -> tuple[tuple[int, ...], list[View]]:
    """Merge adjacent dims that every view walks contiguously; drop dims of size 1."""
    dims = [(n, [v.strides[d] for v in views]) for d, n in enumerate(shape) if n != 1]
    if not dims:
        return (1,), [View(v.offset, (0,)) for v in views]
    merged = [dims[0]]
    for n, st in dims[1:]:
        pn, pst = merged[-1]
        if all(ps == s * n for ps, s in zip(pst, st)):
            merged[-1] = (pn * n, st)
        else:
            merged.append((n, st))
    new_shape = tuple(n for n, _ in merged)
    return new_shape, [View(v.offset, tuple(st[i] for _, st in merged)) for i, v in enumerate(views)]


def index_code(shape, views: list[View], flat: str = "i", prefix: str = "c") -> tuple[list[str], list[str]]:
    """WGSL lines computing coordinates from the flat index, and each view's index expression."""
    shape = tuple(shape)
    inner = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    dense = contiguous_strides(shape)
    flat_views = [v.strides == dense for v in views]
    needed = {d for v, f in zip(views, flat_views) if not f for d, s in enumerate(v.strides) if s != 0}
    lines = []
    for d in sorted(needed):
        expr = flat if inner[d] == 1 else f"({flat} / {inner[d]}u)"
        if d > 0:
            expr = f"{expr} % {shape[d]}u"
        lines.append(f"let {prefix}{d} = {expr};")
    exprs = []
    for v, f in zip(views, flat_views):
        if f:
            terms = [flat]
        else:
            terms = [
                f"{prefix}{d}" if s == 1 else f"{prefix}{d} * {s}u" for d, s in enumerate(v.strides) if s
            ]
        if v.offset:
            terms.append(f"{v.offset}u")
        exprs.append(" + ".join(terms) if terms else "0u")
    return lines, exprs

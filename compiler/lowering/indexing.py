"""Affine views: how an operand is addressed from the coordinates of an iteration space.

A kernel (lowering/builder.py) walks an iteration space (a shape), one point at a time; each operand
is read or written at ``offset + sum(coord[d] * strides[d])``. Broadcasting (stride 0),
transposes (permuted strides), slices (offset, strides) and writes into a slice of a
bigger tensor (Concat) are all such views, so one kernel template serves them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnx2wgsl.ir.symbolic import simplify

from . import u32


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


def broadcast_view(view: View, shape, out_shape) -> View:
    """A view over ``shape`` coordinates, read over ``out_shape`` (numpy broadcasting)."""
    pad = len(out_shape) - len(shape)
    shape = (1,) * pad + tuple(shape)
    strides = (0,) * pad + tuple(view.strides)
    return View(
        view.offset, tuple(0 if n == 1 and m != 1 else s for n, m, s in zip(shape, out_shape, strides))
    )


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


def index_code(
    shape, views: list[View], flat: str = "i", prefix: str = "c", coords=()
) -> tuple[list[str], list[str]]:
    """WGSL lines computing coordinates from the flat index (those the views need, and the
    dims ``coords``), and each view's index expression."""
    shape = tuple(shape)
    inner = [simplify(math.prod(shape[d + 1 :])) for d in range(len(shape))]
    dense = contiguous_strides(shape)
    flat_views = [v.strides == dense for v in views]
    needed = {d for v, f in zip(views, flat_views) if not f for d, s in enumerate(v.strides) if s != 0}
    needed |= set(coords)
    lines = []
    for d in sorted(needed):
        expr = flat if inner[d] == 1 else f"({flat} / {u32(inner[d])})"
        if d > 0:
            expr = f"{expr} % {u32(shape[d])}"
        lines.append(f"let {prefix}{d} = {expr};")
    exprs = []
    for v, f in zip(views, flat_views):
        if f:
            exprs.append(f"{flat} + {u32(v.offset)}" if v.offset != 0 else flat)
        else:
            exprs.append(affine_expr(v, lambda d: f"{prefix}{d}"))
    return lines, exprs


def affine_expr(view: View, coord) -> str:
    """WGSL u32 expression ``offset + sum(coord(d) * strides[d])``; ``coord(d)`` names dim d.

    Negative strides (reversed slices) are subtracted after the offset and the positive terms,
    so no partial sum of a valid address drops below zero. (A stride over dims kept symbolic
    is never negative: it is a product of dims.)"""
    pos = [
        coord(d) if s == 1 else f"{coord(d)} * {u32(s)}" for d, s in enumerate(view.strides) if _positive(s)
    ]
    neg = [
        coord(d) if s == -1 else f"{coord(d)} * {u32(-s)}" for d, s in enumerate(view.strides) if _negative(s)
    ]
    if neg:
        head = [u32(view.offset)] + pos
    else:
        head = pos + ([u32(view.offset)] if view.offset != 0 else [])
    text = " + ".join(head) if head else "0u"
    return text + "".join(f" - {t}" for t in neg)


def _positive(s) -> bool:
    s = simplify(s)
    return s > 0 if isinstance(s, int) else s.bounds[0] >= 0 and s != 0


def _negative(s) -> bool:
    s = simplify(s)
    return s < 0 if isinstance(s, int) else s.bounds[1] < 0


def sliced(in_shape, starts, steps) -> View:
    """The view of ``x[start_d::step_d]`` over the output's coordinates (steps may be negative)."""
    strides = contiguous_strides(in_shape)
    offset = sum(a * s for a, s in zip(starts, strides))
    return View(offset, tuple(st * s for st, s in zip(steps, strides)))


def is_dense(shape, view: View) -> bool:
    """Whether the view walks ``shape`` as one contiguous run (so it can alias its tensor)."""
    shape2, (v,) = collapse(shape, [view])
    return len(shape2) == 1 and (v.strides[0] == 1 or shape2[0] == 1)

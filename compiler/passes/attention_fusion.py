"""Recognize scaled-dot-product attention written out in primitive ops, as torch's exporters
(TorchScript and dynamo, SDPA or eager) emit it, and replace it by the IR ``Attention`` op,
which reads Q, K and V where they are stored and runs one kernel instead of a dozen.

The match, anchored at the Softmax, is

    S = MatMul(Q', K')          Q' = scalar scales of Q, K' = scalar scales of K^T (or of K
                                with transB); Q, K, V reached through Reshape / Transpose /
                                Expand (head split, K^T, GQA repeat_kv) from a stored tensor
    S = S * c | S / c           any number of scalar constant scales
    S = S + M                   optional additive float mask broadcast to S (a Where(cond, 0,
                                fill) mask is read as the bool cond with that fill), or
    S = Where(cond, S, -inf)    a bool mask
    P = Softmax(S, axis=-1)
    P = Where(IsNaN(P), 0, P)   optional guard (or Where(False, 0, P), a constant condition)
    O = MatMul(P, V)            then optionally Transpose(0, 2, 1, 3) and Reshape to [B, S, H*Dv]

Every intermediate from Q' on must be read by nothing else. The scale is the product of the
constants (the kernel multiplies q.k once instead of scaling Q and K apart, which rounds
differently by an ulp or so). A row whose keys are all masked out with -inf is NaN in the
unfused graph without the guard and zeros in the kernel; with any other input the fused
graph computes what the unfused one does.

Q, K and V are read in place when the chain of Reshape / Transpose / Expand from a stored
tensor makes them [B, H, S, D] of a contiguous [B, H, S, D] tensor (4-D) or of a [B, S, row]
tensor whose row holds the heads one after another (3-D, at an element offset in the row).
K and V may broadcast their heads over groups of query heads (grouped-query attention).

A second step merges projections: when Q, K and V are 3-D and come from MatMuls of the same
input by constant weights (with constant biases), those become one MatMul over the
concatenated weights and the kernel reads Q, K and V from its packed rows; when they are the
parts of one Split of the last axis, the kernel reads the Split's input instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from onnx2wgsl.ir import Graph, Op, TensorType, Value
from onnx2wgsl.ir.symbolic import simplify

from . import Pass, PassResult
from .patterns import _scalar, _Uses

NEG_INF = float("-inf")
_LAYOUT_OPS = ("Reshape", "Transpose", "Expand")
_MAX_CHAIN = 16  # data movement ops followed back from Q, K or V (exporters use 2 to 5)


def _eq(a, b) -> bool:
    return simplify(a) == simplify(b)


def _prod(xs) -> object:
    out = 1
    for x in xs:
        out = out * x
    return simplify(out)


# -- layouts: a value as groups of atoms of a stored tensor ------------------------------------
class _Atom:
    """A run of elements of the stored tensor (``base``), or a broadcast (``base`` False)."""

    __slots__ = ("size", "base")

    def __init__(self, size, base: bool = True):
        self.size = size
        self.base = base


@dataclass
class _View:
    """A value as its stored tensor ``value`` seen through data movement: each of its dims is
    a group of atoms (row-major), ``order`` the stored tensor's atoms in memory order."""

    value: Value
    order: list[_Atom]
    dims: list[list[_Atom]] = field(default_factory=list)

    @staticmethod
    def of(v: Value) -> _View:
        dims = [[] if _eq(d, 1) else [_Atom(d)] for d in v.shape]
        return _View(v, [a for g in dims for a in g], dims)

    def split(self, a: _Atom, outer: int) -> tuple[_Atom, _Atom]:
        """Split atom a (int size) into (outer, inner) atoms, everywhere it appears."""
        hi, lo = _Atom(outer, a.base), _Atom(a.size // outer, a.base)
        if a.base:
            k = next(i for i, x in enumerate(self.order) if x is a)
            self.order[k : k + 1] = [hi, lo]
        for g in self.dims:
            if any(x is a for x in g):
                k = next(i for i, x in enumerate(g) if x is a)
                g[k : k + 1] = [hi, lo]
        return hi, lo

    def reshape(self, shape: tuple) -> bool:
        atoms = [a for g in self.dims for a in g]
        out: list[list[_Atom]] = []
        k = 0
        for t in shape:
            if _eq(t, 0):
                return False
            group: list[_Atom] = []
            acc = 1
            while not _eq(acc, t):
                if k >= len(atoms):
                    return False
                a = atoms[k]
                nxt = simplify(acc * a.size)
                if isinstance(nxt, int) and isinstance(t, int) and nxt > t:
                    if not isinstance(acc, int) or t % acc or a.size % (t // acc):
                        return False
                    hi, lo = self.split(a, t // acc)
                    atoms[k : k + 1] = [hi, lo]
                    continue
                group.append(a)
                acc = nxt
                k += 1
            out.append(group)
        if k != len(atoms):
            return False
        self.dims = out
        return True

    def apply(self, op: Op) -> bool:
        out = op.outputs[0].shape
        if op.kind == "Reshape":
            return self.reshape(tuple(out))
        if op.kind == "Transpose":
            perm = list(op.attrs["perm"])
            self.dims = [self.dims[p] for p in perm]
            return True
        if op.kind == "Expand":
            pad = len(out) - len(self.dims)
            if pad < 0:
                return False
            dims = [[] for _ in range(pad)] + self.dims
            new = []
            for g, n in zip(dims, out):
                if not g and not _eq(n, 1):
                    new.append([_Atom(n, base=False)])
                elif g and not _eq(_prod(a.size for a in g), n):
                    return False
                else:
                    new.append(g)
            self.dims = new
            return True
        return False

    def stride(self, a: _Atom):
        if not a.base:
            return 0
        k = next(i for i, x in enumerate(self.order) if x is a)
        return _prod(x.size for x in self.order[k + 1 :])


def _views(v: Value) -> list[_View]:
    """v as views of each stored tensor its chain of Reshape / Transpose / Expand passes
    through, the deepest first, v itself last."""
    chain: list[Op] = []
    x = v
    while (
        x.producer is not None and x.producer.kind in _LAYOUT_OPS and not x.producer.domain
        and len(chain) < _MAX_CHAIN
    ):  # fmt: skip
        chain.append(x.producer)
        x = x.producer.inputs[0]
    out = []
    for start in range(len(chain), 0, -1):
        view = _View.of(chain[start - 1].inputs[0])
        if all(view.apply(op) for op in reversed(chain[:start])):
            out.append(view)
    out.append(_View.of(v))
    return out


@dataclass
class _Read:
    """How the kernel reads Q, K or V: ``value`` [B, S, row] (3-D, ``offset`` in the row) or
    [B, heads, S, D] (4-D); K and V may have fewer ``heads`` than Q (each shared by a group)."""

    value: Value
    is_3d: bool
    row: int = 0
    offset: int = 0
    heads: int = 0


def _read(view: _View, B, H, S, D, kv: bool) -> _Read | None:
    """``view``'s dims [B, H, S, D] as a layout the kernel reads, else None."""
    if len(view.dims) != 4:
        return None
    gb, gh, gs, gd = view.dims
    for g, n in ((gb, B), (gs, S), (gd, D)):
        if len(g) > 1 or any(not a.base for a in g) or not _eq(_prod(a.size for a in g), n):
            return None
    # the head dim: [kv heads] or [kv heads, broadcast] or [broadcast] (kv only)
    kvh = [a for a in gh if a.base]
    rep = [a for a in gh if not a.base]
    if len(kvh) > 1 or len(rep) > 1 or (rep and (not kv or gh[-1] is not rep[0])):
        return None
    heads = kvh[0].size if kvh else 1
    if not isinstance(heads, int) or not isinstance(H, int) or not _eq(_prod(a.size for a in gh), H):
        return None

    def st(g):
        return view.stride(g[0]) if g else None

    sb, sh, ss, sd = st(gb), st(kvh), st(gs), st(gd)

    def ok(s, want) -> bool:
        return s is None or _eq(s, want)

    if not ok(sd, 1) or not isinstance(D, int):
        return None
    base = view.value
    # 4-D: ((b * heads + h) * S + s) * D + d
    if ok(ss, D) and ok(sh, S * D) and ok(sb, heads * S * D):
        return _Read(base, False, heads=heads)
    # 3-D: (b * S + s) * row + h * D + d
    row = base.shape[-1] if base.type.rank == 3 else None
    if isinstance(row, int) and ok(ss, row) and ok(sh, D) and ok(sb, S * row) and row >= heads * D:
        if _eq(base.shape[1], S) and _eq(base.shape[0], B):
            return _Read(base, True, row=row, heads=heads)
    return None


def _resolve(v: Value, B, H, S, D, kv: bool, transposed: bool = False) -> _Read | None:
    for view in _views(v):
        if transposed:
            if len(view.dims) != 4:
                continue
            view.dims = [view.dims[0], view.dims[1], view.dims[3], view.dims[2]]
        r = _read(view, B, H, S, D, kv)
        if r is not None:
            return r
    return None


# -- the match --------------------------------------------------------------------------------
def _scales(u: _Uses, v: Value) -> tuple[Value, float, list[Op]] | None:
    """Walk back from v over Mul / Div by a scalar constant, each result read only by the
    next: the value they scale, the product of the scales, the scale ops."""
    scale = 1.0
    ops: list[Op] = []
    while True:
        p = v.producer
        if p is None or p.domain:
            break
        if p.kind in ("Mul", "Div") and len(p.inputs) == 2:
            a, b = p.inputs
            c = _scalar(b)
            x = a
            if c is None and p.kind == "Mul":
                c, x = _scalar(a), b
            if c is None or x is None or x.is_const or c == 0.0 or not math.isfinite(c):
                break
            if x.type.rank > p.outputs[0].type.rank or x.type.shape != p.outputs[0].type.shape:
                break  # the constant broadcasts the value: not a plain scale
            if len(u.users(v)) != 1 or not u.internal(v):
                return None
            scale = scale * c if p.kind == "Mul" else scale / c
            ops.append(p)
            v = x
            continue
        break
    return v, scale, ops


def _scores(u: _Uses, v: Value) -> bool:
    """Whether v is a MatMul's result, scaled by scalar constants or not."""
    found = _scales(u, v)
    return found is not None and found[0].producer is not None and found[0].producer.kind == "MatMul"


def _broadcasts_into(shape: tuple, full: tuple) -> bool:
    if len(shape) > len(full):
        return False
    for a, b in zip(reversed(shape), reversed(full)):
        if not (_eq(a, 1) or _eq(a, b)):
            return False
    return True


@dataclass
class _Match:
    ops: list[Op]  # covered, in graph order; the last is replaced
    result: Value  # the value the Attention op computes (y)
    q: _Read
    k: _Read
    v: _Read
    mask: Value | None
    fill: float | None
    attrs: dict
    y_3d: bool


def _operand(u: _Uses, v: Value, transposed: bool, B, H, S, D, kv: bool):
    """Scales then layout of a MatMul operand: (read, scale, scale ops) or None."""
    found = _scales(u, v)
    if found is None:
        return None
    x, scale, ops = found
    r = _resolve(x, B, H, S, D, kv, transposed)
    return (r, scale, ops) if r is not None else None


def attention(g: Graph, u: _Uses, sm: Op) -> _Match | None:
    if sm.domain or sm.kind != "Softmax":
        return None
    x = sm.inputs[0]
    if x.type.rank != 4 or sm.attrs.get("axis") not in (3, -1) or x.dtype.value != "f32":
        return None
    if any(_eq(d, 0) for d in x.shape):
        return None  # empty: nothing to fuse
    ops: list[Op] = [sm]
    # the mask and scales before the softmax
    mask, fill = None, None
    s = x
    if not u.internal(s) or len(u.users(s)) != 1:
        return None
    p = s.producer
    if p is not None and not p.domain and p.kind == "Add" and p.outputs[0].type == s.type:
        side = [v for v in p.inputs if v.type == s.type and _scores(u, v)]
        if len(side) != 1:
            return None
        other = side[0]
        m = p.inputs[1] if p.inputs[0] is other else p.inputs[0]
        if m is other or m.dtype.value != "f32" or not _broadcasts_into(m.shape, s.shape):
            return None
        mask = m
        w = m.producer
        if (
            w is not None and w.kind == "Where" and not w.domain and _scalar(w.inputs[1]) == 0.0
            and _scalar(w.inputs[2]) is not None and w.inputs[0].dtype.value == "bool"
            and tuple(w.inputs[0].shape) == tuple(m.shape)
        ):  # fmt: skip
            fill = _scalar(w.inputs[2])
            if fill == NEG_INF or math.isfinite(fill):
                mask = w.inputs[0]
            else:
                fill = None  # +inf or NaN: the Where's result is the float mask
        ops.append(p)
        s = other
    elif p is not None and not p.domain and p.kind == "Where" and p.outputs[0].type == s.type:
        cond, a, b = p.inputs
        if a.type != s.type or _scalar(b) != NEG_INF or cond.dtype.value != "bool":
            return None
        if not _broadcasts_into(cond.shape, s.shape):
            return None
        mask, fill = cond, NEG_INF
        ops.append(p)
        s = a
    if mask is not None:
        if not u.internal(s) or len(u.users(s)) != 1:
            return None
        if mask.type.rank == 0 or not _eq(mask.shape[-1], x.shape[-1]):
            return None
    found = _scales(u, s)
    if found is None:
        return None
    s, score_scale, scale_ops = found
    ops += scale_ops
    mm = s.producer
    if mm is None or mm.kind != "MatMul" or mm.domain or len([i for i in mm.inputs if i is not None]) != 2:
        return None
    if (
        mm.attrs.get("transA", 0)
        or s.type != x.type
        or (s is not x and (not u.internal(s) or len(u.users(s)) != 1))
    ):
        return None
    ops.append(mm)
    B, H, Sq, L = x.shape
    qv, kv = mm.inputs[0], mm.inputs[1]
    D = qv.shape[-1]
    if qv.type.rank != 4 or kv.type.rank != 4 or qv.dtype.value != "f32" or kv.dtype.value != "f32":
        return None
    if not (_eq(qv.shape[0], B) and _eq(qv.shape[1], H) and _eq(kv.shape[0], B) and _eq(kv.shape[1], H)):
        return None  # MatMul broadcasts its batch dims; the kernel does not
    qo = _operand(u, qv, False, B, H, Sq, D, kv=False)
    ko = _operand(u, kv, not mm.attrs.get("transB", 0), B, H, L, D, kv=True)
    if qo is None or ko is None:
        return None
    q, qs, qops = qo
    k, ks, kops = ko
    ops += qops + kops
    # after the softmax: the NaN guard, then P @ V
    y = sm.outputs[0]
    if not u.internal(y):
        return None
    users = u.users(y)
    if len(users) == 2:
        isnan = next((o for o in users if o.kind == "IsNaN" and not o.domain), None)
        guard = next((o for o in users if o.kind == "Where" and not o.domain), None)
        if isnan is None or guard is None or u.only(isnan.outputs[0]) is not guard:
            return None
        if (
            guard.inputs[0] is not isnan.outputs[0]
            or _scalar(guard.inputs[1]) != 0.0
            or guard.inputs[2] is not y
        ):
            return None
        if guard.outputs[0].type != y.type or not u.internal(guard.outputs[0]):
            return None
        ops += [isnan, guard]
        y = guard.outputs[0]
        users = u.users(y)
    elif len(users) == 1 and users[0].kind == "Where" and not users[0].domain:
        # a guard whose condition is a constant False everywhere (ONNX's own Attention function
        # body without masks) passes the probabilities through
        guard = users[0]
        cond = guard.inputs[0]
        if not (cond.is_const and cond.dtype.value == "bool" and not np.any(cond.data)):
            return None
        if guard.inputs[2] is not y or guard.outputs[0].type != y.type or not u.internal(guard.outputs[0]):
            return None
        ops.append(guard)
        y = guard.outputs[0]
        users = u.users(y)
    if len(users) != 1:
        return None
    pv = users[0]
    if (
        pv.kind != "MatMul"
        or pv.domain
        or pv.inputs[0] is not y
        or len([i for i in pv.inputs if i is not None]) != 2
    ):
        return None
    if pv.attrs.get("transA", 0):
        return None
    vv = pv.inputs[1]
    if vv.type.rank != 4 or vv.dtype.value != "f32" or not (_eq(vv.shape[0], B) and _eq(vv.shape[1], H)):
        return None
    Dv = pv.outputs[0].shape[-1]
    v = _resolve(vv, B, H, L, Dv, kv=True, transposed=bool(pv.attrs.get("transB", 0)))
    if v is None or v.heads != k.heads or H % k.heads:
        return None
    ops.append(pv)
    out = pv.outputs[0]
    y_3d = False
    # head merge: Transpose(0, 2, 1, 3) [and Reshape to [B, S, H * Dv]], identity Reshapes aside
    nxt = _next_view(u, out)
    while nxt is not None and nxt.kind == "Reshape" and nxt.outputs[0].type == out.type:
        ops.append(nxt)
        out = nxt.outputs[0]
        nxt = _next_view(u, out)
    if nxt is not None and nxt.kind == "Transpose" and list(nxt.attrs["perm"]) == [0, 2, 1, 3]:
        ops.append(nxt)
        out, y_3d = nxt.outputs[0], True
        r = _next_view(u, out)
        if (
            r is not None
            and r.kind == "Reshape"
            and r.outputs[0].type.rank == 3
            and _eq(r.outputs[0].shape[2], H * Dv)
        ):
            ops.append(r)
            out = r.outputs[0]
    if not isinstance(D, int) or not isinstance(Dv, int) or not isinstance(H, int) or not D or not Dv:
        return None
    attrs = {
        "batch": B, "q_heads": H, "kv_heads": k.heads, "q_len": Sq, "kv_len": L, "head_size": D,
        "v_head_size": Dv, "q_3d": int(q.is_3d), "kv_3d": int(k.is_3d), "past_len": 0,
        "scale": float(np.float32(qs * ks * score_scale)), "softcap": 0.0, "is_causal": 0,
        "qk_matmul_output_mode": 0, "left_window_size": -1, "right_window_size": -1,
    }  # fmt: skip
    ops.sort(key=lambda o: u.order[id(o)])
    if ops[-1] is not out.producer:
        return None
    return _Match(ops, out, q, k, v, mask, fill, attrs, y_3d)


def _next_view(u: _Uses, v: Value) -> Op | None:
    """The one reader of intermediate v when it is a Reshape or Transpose."""
    return u.only(v, "Reshape", "Transpose")


def _layout_attrs(attrs: dict, q: _Read, k: _Read, v: _Read, y_3d: bool) -> None:
    """The read layout attributes beyond the defaults (q_3d / kv_3d with rows of the heads)."""
    H, Hk, D, Dv = attrs["q_heads"], attrs["kv_heads"], attrs["head_size"], attrs["v_head_size"]
    attrs["q_3d"], attrs["kv_3d"] = int(q.is_3d), int(k.is_3d)
    if v.is_3d != k.is_3d:
        attrs["v_3d"] = int(v.is_3d)
    if y_3d != q.is_3d:
        attrs["y_3d"] = int(y_3d)
    for name, r, width in (("q", q, H * D), ("k", k, Hk * D), ("v", v, Hk * Dv)):
        if r.is_3d and (r.row != width or r.offset):
            attrs[f"{name}_row"] = r.row
            attrs[f"{name}_offset"] = r.offset


class FuseAttention(Pass):
    """Replace scaled-dot-product attention in primitive ops (see the module doc) by the IR
    Attention op reading Q, K and V in their stored layout, and merge the Q, K and V
    projections it reads into one MatMul whose packed rows it reads."""

    name = "fuse-attention"

    def run(self, g: Graph) -> PassResult:
        u = _Uses(g)
        put: dict[int, list[Op]] = {}
        gone: set[int] = set()
        fused: list[Op] = []
        claimed: set[int] = set()
        for op in g.ops:
            if op.kind != "Softmax" or id(op) in u.dead:
                continue
            m = attention(g, u, op)
            if m is None or any(id(o) in claimed for o in m.ops):
                continue
            claimed.update(id(o) for o in m.ops)
            new = self._build(g, m)
            fused.append(new[0])
            last = m.ops[-1]
            last.detach()
            put[id(last)] = new
            for o in reversed(m.ops[:-1]):
                if any(v.uses or id(v) in u.outputs for v in o.outputs):
                    u.dead[id(o)] = o
                else:
                    o.detach()
                    gone.add(id(o))
        if put:
            g.ops = [new for op in g.ops if id(op) not in gone for new in put.get(id(op), [op])]
        attentions = [op for op in g.ops if op.kind == "Attention" and not op.domain]
        merged = _merge_projections(g, attentions)
        narrowed = [_narrow_mask(op) for op in attentions]
        return PassResult(g, bool(put) or merged or any(narrowed))

    @staticmethod
    def _build(g: Graph, m: _Match) -> list[Op]:
        attrs = dict(m.attrs)
        y_3d = m.y_3d
        _layout_attrs(attrs, m.q, m.k, m.v, y_3d)
        if m.fill is not None and m.fill != NEG_INF:
            attrs["mask_fill"] = m.fill
        y = m.result
        name = m.ops[-1].name
        if y_3d and y.type.rank == 4:  # [B, S, H, Dv]: the kernel writes [B, S, H * Dv]
            B, S, H, Dv = y.shape
            flat = TensorType(y.dtype, (B, S, H * Dv))
            op = g.make_op("Attention", [m.q.value, m.k.value, m.v.value, m.mask], [flat], attrs, name=name,
                           out_names=[f"{y.name}.flat"])  # fmt: skip
            return [op, Op("Reshape", op.outputs, [y], name=name)]
        return [Op("Attention", [m.q.value, m.k.value, m.v.value, m.mask], [y], attrs, name=name)]


# -- projections -------------------------------------------------------------------------------
def _projection(v: Value) -> tuple[Value, np.ndarray, np.ndarray | None] | None:
    """v = MatMul(x, W[, b]) with W constant 2-D (and b constant 1-D): (x, W, b)."""
    p = v.producer
    if p is None or p.kind != "MatMul" or p.domain or p.attrs.get("transA", 0) or p.attrs.get("transB", 0):
        return None
    if len(p.outputs) != 1 or set(p.attrs) - {"transA", "transB"} or v.type.rank != 3:
        return None
    x, w, b = p.input(0), p.input(1), p.input(2)
    if x is None or w is None or not w.is_const or w.type.rank != 2 or w.dtype != v.dtype:
        return None
    if b is not None and (not b.is_const or tuple(b.shape) != (w.shape[1],) or b.dtype != v.dtype):
        return None
    return x, w.data, (b.data if b is not None else None)


def _merge_projections(g: Graph, fused: list[Op]) -> bool:
    u = _Uses(g)
    put: dict[int, list[Op]] = {}
    changed = False
    for att in fused:
        a = att.attrs
        if len(att.inputs) > 4 and att.inputs[4] is not None:
            continue
        if not (a["q_3d"] and a["kv_3d"] and a.get("v_3d", 1)):
            continue
        vals = att.inputs[:3]
        if any(len(u.users(v)) != 1 or not u.internal(v) for v in vals) or len({id(v) for v in vals}) != 3:
            continue
        if any(f"{n}_offset" in a for n in "qkv"):
            continue
        parts = [_projection(v) for v in vals]
        if any(p is None for p in parts) or len({id(p[0]) for p in parts}) != 1:
            changed |= _absorb_split(u, att)
            continue
        x = parts[0][0]
        ws = [p[1] for p in parts]
        if len({w.shape[0] for w in ws}) != 1 or len({w.dtype for w in ws}) != 1:
            continue
        if not all(_eq(v.shape[i], vals[0].shape[i]) for v in vals for i in (0, 1)):
            continue
        widths = [w.shape[1] for w in ws]
        W = np.concatenate(ws, axis=1)
        bs = [p[2] if p[2] is not None else np.zeros(n, ws[0].dtype) for p, n in zip(parts, widths)]
        has_bias = any(p[2] is not None for p in parts)
        first = min((v.producer for v in vals), key=lambda o: u.order[id(o)])
        ins = [x, g.const(W, f"{att.outputs[0].name}.qkv_weight", dtype=vals[0].dtype)]
        if has_bias:
            ins.append(g.const(np.concatenate(bs), f"{att.outputs[0].name}.qkv_bias", dtype=vals[0].dtype))
        B, S = vals[0].shape[:2]
        packed = g.make_op("MatMul", ins, [TensorType(vals[0].dtype, (B, S, sum(widths)))], name=first.name,
                           out_names=[f"{att.outputs[0].name}.qkv"])  # fmt: skip
        offsets = [0, widths[0], widths[0] + widths[1]]
        changed = True
        for i, n in enumerate("qkv"):
            att.set_input(i, packed.outputs[0])
            a[f"{n}_row"] = sum(widths)
            a[f"{n}_offset"] = offsets[i]
        # the three projections are dead now (dead-code elimination drops them with their readers)
        put[id(first)] = [packed, first]
    if put:
        g.ops = [new for op in g.ops for new in put.get(id(op), [op])]
    return changed


def _absorb_split(u: _Uses, att: Op) -> bool:
    """Q, K and V the parts of one Split of a 3-D value's last axis, read by nothing else:
    the kernel reads the Split's input at the parts' offsets."""
    vals = att.inputs[:3]
    sp = vals[0].producer
    if sp is None or sp.kind != "Split" or sp.domain or any(v.producer is not sp for v in vals):
        return False
    src = sp.inputs[0]
    if src.type.rank != 3 or sp.attrs.get("axis") != 2 or not isinstance(src.shape[2], int):
        return False
    if any(len(u.users(o)) != 0 and u.users(o) != [att] for o in sp.outputs):
        return False
    if any(not u.internal(o) for o in sp.outputs):
        return False
    sizes = [o.shape[2] for o in sp.outputs]
    if not all(isinstance(n, int) for n in sizes):
        return False
    a = att.attrs
    for i, (n, v) in enumerate(zip("qkv", vals)):
        k = sp.outputs.index(v)
        att.set_input(i, src)
        a[f"{n}_row"] = src.shape[2]
        a[f"{n}_offset"] = sum(sizes[:k])
    return True


def _narrow_mask(att: Op) -> bool:
    """Read an Attention's mask before what only broadcasts it: an Expand, or an And with an
    operand true everywhere (transformers' mask builders And the padding mask [B, 1, 1, L]
    with ``arange(S) >= 0`` into [B, 1, S, L]). The kernel broadcasts the smaller mask itself,
    so the full one is never stored (B x S x L words) nor computed."""
    mask = att.input(3)
    if mask is None:
        return False
    a = att.attrs
    full = (a["batch"], a["q_heads"], a["q_len"], mask.shape[-1])
    m = mask
    while m.producer is not None and not m.producer.domain:
        p = m.producer
        if p.kind == "Expand":
            nxt = p.inputs[0]
        elif p.kind == "And" and _all_true(p.inputs[0]):
            nxt = p.inputs[1]
        elif p.kind == "And" and _all_true(p.inputs[1]):
            nxt = p.inputs[0]
        else:
            break
        if nxt.type.rank == 0 or not _eq(nxt.shape[-1], full[-1]) or not _broadcasts_into(nxt.shape, full):
            break
        m = nxt
    if m is mask:
        return False
    att.set_input(3, m)
    return True


def _all_true(v: Value, depth: int = 0) -> bool:
    """Whether bool ``v`` is true everywhere by construction: a constant, an And of such, or a
    comparison of a Range from a constant start with a constant step against a constant bound
    its values all pass (through reshapes)."""
    if v.is_const:
        return v.dtype.name == "bool" and bool(np.all(v.data))
    p = v.producer
    if p is None or p.domain or depth > _MAX_CHAIN:
        return False
    if p.kind in ("Reshape", "Expand"):
        return _all_true(p.inputs[0], depth + 1)
    if p.kind == "And":
        return all(_all_true(x, depth + 1) for x in p.inputs)
    if p.kind in ("GreaterOrEqual", "Greater", "LessOrEqual", "Less"):
        x, c = p.inputs if p.kind.startswith("Greater") else reversed(p.inputs)
        low = _range_low(x)
        bound = _scalar(c)
        if low is None or bound is None:
            return False
        return low >= bound if p.kind in ("GreaterOrEqual", "LessOrEqual") else low > bound
    return False


def _range_low(v: Value, depth: int = 0) -> float | None:
    """The least value of an ascending Range with a constant start and step (through
    reshapes), else None."""
    p = v.producer
    if p is None or p.domain or depth > _MAX_CHAIN:
        return None
    if p.kind == "Reshape":
        return _range_low(p.inputs[0], depth + 1)
    if p.kind == "Range":
        start, delta = _scalar(p.inputs[0]), _scalar(p.inputs[2])
        if start is not None and delta is not None and delta > 0:
            return start
    return None

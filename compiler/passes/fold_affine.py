"""Fold per-channel scaling and shifting by constants into the weights of Conv, Gemm, MatMul and
MatMulNBits (whose per-block scales take the scaling, its bias operand the shift), and chains of
them anywhere into one scaling and one shift."""

from __future__ import annotations

import numpy as np

from onnx2wgsl.ir import Graph, Op, Value

from . import Pass, PassResult

_PRODUCERS = ("Conv", "Gemm", "MatMul", "MatMulNBits")


def _bias_slot(op: Op) -> int:
    return 4 if op.kind == "MatMulNBits" else 2


def _channel_vector(c: Value, out_shape: tuple, axis: int) -> np.ndarray | None:
    """c's data as one value per channel of ``axis`` if c is constant along every other dim
    of the (broadcast) output, else None."""
    if not c.is_const or c.type.rank > len(out_shape) or not isinstance(out_shape[axis], int):
        return None  # (a channel dim kept symbolic has no fixed number of channels to fold)
    shape = (1,) * (len(out_shape) - c.type.rank) + tuple(c.shape)
    if any(n != 1 for d, n in enumerate(shape) if d != axis):
        return None
    if shape[axis] not in (1, out_shape[axis]):
        return None
    return np.broadcast_to(c.data.reshape(-1).astype(np.float64), (out_shape[axis],))


def _single_user(v: Value, g: Graph) -> Op | None:
    if len(v.uses) != 1 or any(o is v for o in g.outputs):
        return None
    return v.uses[0]


def _by_constant(op: Op) -> tuple[int, Value] | None:
    """(slot of the other operand, the constant) of a float Mul or Add by a constant whose
    result is that operand's shape and type (the constant broadcasts, never widens it)."""
    if op.kind not in ("Mul", "Add") or op.domain or len(op.inputs) != 2 or None in op.inputs:
        return None
    for k in (0, 1):
        x, c = op.inputs[k], op.inputs[1 - k]
        if c.is_const and not x.is_const and x.dtype.is_float and op.outputs[0].type == x.type:
            return k, c
    return None


class FoldAffine(Pass):
    """``Mul``/``Add`` of a Conv, Gemm or MatMul output by a per-output-channel constant
    (what BatchNormalization canonicalizes into) folds into the producer's weights and bias:
    ``(W x + B) * s + t = (W s) x + (B s + t)``. The producer's output must have no other use.
    MatMul gains a third (bias) input for the shift, which its lowering adds in the epilogue.

    First, a chain of Mul and Add by constants (a BatchNormalization then a Caffe-style scale
    and shift, as converted DenseNets and ResNets hold, or Sub/Div-free normalizations written
    out) becomes one Mul and one Add: ``(x * a + b) * c + d = x * (a c) + (b c + d)``, so a
    fused kernel reading it loads two constants per element rather than four."""

    name = "fold-affine"

    def run(self, g: Graph) -> PassResult:
        chains = self._collapse_chains(g)
        # Rounds over the producers in graph order, as long as one folds. A fold changes only
        # its own producer's prospects, so a round after the first needs to look only at the
        # producers that folded in the one before; the folded users leave the list at the end.
        self._removed: set[int] = set()
        todo = [op for op in g.ops if op.kind in _PRODUCERS]
        while todo:
            todo = [op for op in todo if self._try(g, op)]
        if self._removed:
            g.ops = [op for op in g.ops if id(op) not in self._removed]
        return PassResult(g, chains or bool(self._removed))

    def _collapse_chains(self, g: Graph) -> bool:
        """Mul after Mul and Add after Add by constants merge; an Add then a Mul swap into a
        Mul then an Add (``(x + b) * c = x * c + b c``), which lets the Muls before and the
        Adds after merge in turn. Only through values no other op or graph output reads."""
        merged: set[int] = set()
        changed = False
        again = True
        while again:
            again = False
            for op in g.ops:
                if id(op) in merged:
                    continue
                while self._merge(g, op, merged):
                    changed = again = True
        if merged:
            g.ops = [op for op in g.ops if id(op) not in merged]
        return changed

    @staticmethod
    def _merge(g: Graph, op: Op, merged: set[int]) -> bool:
        """One rewrite of ``op`` with the affine op before it, or False."""
        here = _by_constant(op)
        if here is None:
            return False
        k, c = here
        x = op.inputs[k]
        prev = x.producer
        if prev is None or id(prev) in merged or _single_user(x, g) is not op:
            return False
        before = _by_constant(prev)
        if before is None:
            return False
        j, pc = before
        a, b = pc.data.astype(np.float64), c.data.astype(np.float64)
        if prev.kind == op.kind:  # x' * a * c, or x' + a + c: one op, the constants combined
            both = a * b if op.kind == "Mul" else a + b
            op.set_input(k, prev.inputs[j])
            op.set_input(1 - k, g.const(both, f"{c.name}.merged", dtype=x.dtype))
            prev.detach()
            merged.add(id(prev))
            return True
        if prev.kind == "Add":  # (x' + a) * c = x' * c + a c: the Mul first
            prev.kind, op.kind = "Mul", "Add"
            prev.set_input(1 - j, c)
            op.set_input(1 - k, g.const(a * b, f"{pc.name}.scaled", dtype=x.dtype))
            return True
        return False  # a Mul then an Add: the form chains end in

    def _try(self, g: Graph, op: Op) -> bool:
        y = op.outputs[0]
        if not y.dtype.is_float:
            return False
        user = _single_user(y, g)
        if user is None or user.kind not in ("Mul", "Add") or len(user.inputs) != 2:
            return False
        other = user.inputs[1] if user.inputs[0] is y else user.inputs[0]
        if other is y or user.outputs[0].type != y.type:
            return False
        axis = 1 if op.kind == "Conv" else y.type.rank - 1
        vec = _channel_vector(other, tuple(y.shape), axis)
        if vec is None or not self._foldable(op):
            return False
        if user.kind == "Mul":
            self._scale(g, op, vec)
        else:
            self._shift(g, op, vec)
        # the producer now computes the user's result: splice the user out
        g.replace_uses(user.outputs[0], y)
        user.detach()
        self._removed.add(id(user))
        return True

    @staticmethod
    def _foldable(op: Op) -> bool:
        if op.kind == "MatMulNBits":  # scales [N, blocks] and the bias are constants (legalize made them)
            return op.inputs[2].is_const and (op.input(4) is None or op.input(4).is_const)
        w = op.inputs[1]
        bias = op.input(2)
        if not w.is_const or (bias is not None and not bias.is_const):
            return False
        if op.kind == "MatMul":
            return w.type.rank == 2 and op.inputs[0].type.rank >= 2
        if op.kind == "Gemm" and bias is not None:
            return _channel_vector(bias, (1, op.outputs[0].shape[1]), 1) is not None
        return True

    @staticmethod
    def _bias(g: Graph, op: Op, n: int) -> np.ndarray:
        """The producer's current bias as a per-channel float64 vector (zeros if none)."""
        b = op.input(_bias_slot(op))
        if b is None:
            return np.zeros(n)
        if op.kind == "Gemm":  # per-column (checked by _foldable)
            return _channel_vector(b, (1, n), 1) * op.attrs.get("beta", 1.0)
        return b.data.astype(np.float64).reshape(-1) * np.ones(n)

    def _scale(self, g: Graph, op: Op, s: np.ndarray) -> None:
        if op.kind == "MatMulNBits":  # column n's weights are its blocks' scales times (q - z)
            sc = op.inputs[2]
            op.set_input(
                2, g.const(sc.data.astype(np.float64) * s.reshape(-1, 1), f"{sc.name}.scaled", dtype=sc.dtype)
            )
            if op.input(4) is not None:
                self._set_bias(g, op, self._bias(g, op, len(s)) * s)
            return
        w = op.inputs[1]
        data = w.data.astype(np.float64)
        if op.kind == "Conv":
            data = data * s.reshape((-1,) + (1,) * (w.type.rank - 1))
        elif op.kind == "Gemm" and op.attrs.get("transB", 0):
            data = data * s.reshape(-1, 1)
        else:
            data = data * s.reshape(1, -1)
        op.set_input(1, g.const(data, f"{w.name}.scaled", dtype=w.dtype))
        if op.input(2) is not None:
            self._set_bias(g, op, self._bias(g, op, len(s)) * s)

    def _shift(self, g: Graph, op: Op, t: np.ndarray) -> None:
        self._set_bias(g, op, self._bias(g, op, len(t)) + t)

    @staticmethod
    def _set_bias(g: Graph, op: Op, vec: np.ndarray) -> None:
        dtype = op.outputs[0].dtype
        b = g.const(vec, "bias.folded", dtype=dtype)
        if op.kind == "Gemm":
            op.attrs["beta"] = 1.0
        slot = _bias_slot(op)
        while len(op.inputs) <= slot:
            op.inputs.append(None)
        op.set_input(slot, b)

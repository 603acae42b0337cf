"""Rotary position embedding as transformers writes it, x * cos + rotate_half(x) * sin with
cos/sin = trig(Concat(freqs, freqs)), compiles to one RotaryEmbedding kernel per rotated tensor
and gives onnxruntime's results; forms whose cos/sin halves are not equal by construction, or
whose rotate_half is not one, stay as they are and still match."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import check_against_ort, rand
from onnx import TensorProto, helper, numpy_helper

from onnx2wgsl.compiler import compile_model

pytestmark = pytest.mark.gpu

TOL = {"rtol": 1e-4, "atol": 1e-5}


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], {}, 0

    def const(self, value, dtype=np.float32) -> str:
        self.n += 1
        name = f"c{self.n}"
        self.inits[name] = np.asarray(value, dtype)
        return name

    def op(self, kind: str, ins: list[str], **attrs) -> str:
        self.n += 1
        out = f"{kind.lower()}{self.n}"
        self.nodes.append(helper.make_node(kind, ins, [out], **attrs))
        return out

    def slice(self, x: str, start: int, end: int) -> str:
        return self.op(
            "Slice",
            [x, self.const([start], np.int64), self.const([end], np.int64), self.const([-1], np.int64)],
        )

    def model(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> onnx.ModelProto:
        def info(n, a):
            return helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)

        g = helper.make_graph(
            self.nodes,
            "rope",
            [info(n, a) for n, a in inputs.items()],
            [helper.make_value_info(o, onnx.TypeProto()) for o in outputs],
            [numpy_helper.from_array(a, n) for n, a in self.inits.items()],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m)


def _tables(b: _Graph, S: int, R: int, *, scale=None, cast=False, rank=4, source="positions", near=None):
    """cos and sin for R rotated dims, [1 or B, 1, S, R] (rank 4) or [1 or B, S, R] (rank 3):
    trig(Concat(freqs, freqs)) [* scale] [Cast], freqs from the float input ``pos`` [B, S];
    near="halves" makes them from Concat(freqs, 2 * freqs) (halves not duplicates)."""
    inv = b.const(1.0 / (10000.0 ** (np.arange(R // 2) / (R // 2))))
    freqs = b.op("Mul", [b.op("Unsqueeze", ["pos", b.const([-1], np.int64)]), inv])
    second = b.op("Mul", [freqs, b.const(2.0)]) if near == "halves" else freqs
    emb = b.op("Concat", [freqs, second], axis=-1)
    out = []
    for trig in ("Cos", "Sin"):
        t = b.op(trig, [emb])
        if scale is not None:  # a scalar, or ("vector", v): v repeated over the last axis
            value = np.full(R, scale[1]) if isinstance(scale, tuple) else scale
            t = b.op("Mul", [b.const(value), t] if isinstance(scale, tuple) else [t, b.const(value)])
        if cast:
            t = b.op("Cast", [t], to=TensorProto.FLOAT)
        if rank == 4:
            t = b.op("Unsqueeze", [t, b.const([1], np.int64)])
        out.append(t)
    return out


def _rotate(b: _Graph, x: str, D: int, near=None) -> str:
    h = D // 2
    lo, hi = b.slice(x, 0, h), b.slice(x, h, D)
    if near == "sign":  # cat(x2, -x1)
        return b.op("Concat", [hi, b.op("Neg", [lo])], axis=-1)
    if near == "swap":  # cat(-x1, x2)
        return b.op("Concat", [b.op("Neg", [lo]), hi], axis=-1)
    return b.op("Concat", [b.op("Neg", [hi]), lo], axis=-1)


def _rope(b: _Graph, x: str, cos: str, sin: str, D: int, order=0, near=None) -> str:
    rot = _rotate(b, x, D, near)
    xc = b.op("Mul", [x, cos] if order in (0, 1) else [cos, x])
    rs = b.op("Mul", [rot, sin] if order in (0, 2) else [sin, rot])
    return b.op("Add", [xc, rs] if order % 2 == 0 else [rs, xc])


def rope_model(B=2, H=3, S=5, D=8, *, rank=4, rotary=None, order=0, scale=None, cast=False, near=None,
               tables="computed", tensors=2, rows=False):  # fmt: skip
    """``tensors`` inputs q_i [B, S, H, D] (rank 4: transposed to [B, H, S, D] the way attention
    does; ``rows``: [B, S, H * D], reshaped first) or [B, S, D] (rank 3), each rotated over its
    first ``rotary`` dims."""
    b = _Graph()
    R = rotary or D
    if tables == "computed":
        cos, sin = _tables(b, S, R, scale=scale, cast=cast, rank=rank, near=near)
    else:  # constant tables, the form a model with fixed positions folds to
        f = np.arange(S)[:, None] * (1.0 / (10000.0 ** (np.arange(R // 2) / (R // 2))))
        second = 2 * f if near == "halves" else f
        emb = np.concatenate([f, second], -1)[None].astype(np.float32)
        shape = (1, 1, S, R) if rank == 4 else (1, S, R)
        cos, sin = b.const(np.cos(emb).reshape(shape)), b.const(np.sin(emb).reshape(shape))
    inputs = {"pos": (np.arange(S, dtype=np.float32)[None] + 3 * np.arange(B)[:, None]).astype(np.float32)}
    outs = []
    for i in range(tensors):
        name = f"q{i}"
        if rows:  # [B, S, H * D] as a projection writes it, heads split by Reshape and Transpose
            inputs[name] = rand(B, S, H * D, seed=i + 1)
            x = b.op("Reshape", [name, b.const([B, S, H, D], np.int64)])
            x = b.op("Transpose", [x], perm=[0, 2, 1, 3])
        elif rank == 4:
            inputs[name] = rand(B, S, H, D, seed=i + 1)
            x = b.op("Transpose", [name], perm=[0, 2, 1, 3])
        else:
            inputs[name] = rand(B, S, D, seed=i + 1)
            x = name
        if rotary:
            y = _rope(b, b.slice(x, 0, R), cos, sin, R, order, near)
            y = b.op("Concat", [y, b.slice(x, R, D)], axis=-1)
        else:
            y = _rope(b, x, cos, sin, D, order, near)
        outs.append(y)
    if tables == "constant":
        del inputs["pos"]
    return b.model({k: np.zeros_like(v) for k, v in inputs.items()}, outs), inputs


def _kernels(model, level=2) -> list[str]:
    return [op.attrs["op"] for op in compile_model(model, opt_level=level).graph.kernels()]


CASES = [
    {},
    {"order": 1},
    {"order": 2},
    {"order": 3},
    {"scale": 0.7},
    {"scale": 1.3, "cast": True, "order": 3},
    {"rank": 3},
    {"rank": 3, "order": 2, "scale": 0.5},
    {"rotary": 4},
    {"rotary": 4, "rank": 3, "order": 1},
    {"tables": "constant"},
    {"tables": "constant", "rank": 3, "order": 3},
    {"tables": "constant", "rotary": 6, "D": 10},
    {"B": 1, "H": 2, "S": 7, "D": 16},
    {"rows": True},
    {"scale": ("vector", 0.8), "rotary": 6, "D": 10},
    {"rows": True, "order": 2, "scale": 0.9},
    {"rows": True, "rotary": 4, "tables": "constant"},
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rope_becomes_one_rotary_kernel_per_tensor(case, device):
    model, feeds = rope_model(**case)
    kernels = _kernels(model)
    assert kernels.count("RotaryEmbedding") == 2
    assert not {"Neg", "Concat", "Slice"} & set(kernels)
    check_against_ort(model, feeds, device, **TOL)


@pytest.mark.parametrize(
    "case",
    [
        {"near": "halves"},
        {"near": "halves", "tables": "constant"},
        {"near": "sign"},
        {"near": "swap", "order": 3},
        {"near": "sign", "rotary": 4},
    ],
    ids=str,
)
def test_near_misses_are_not_rewritten(case, device):
    model, feeds = rope_model(**case)
    assert "RotaryEmbedding" not in _kernels(model)
    check_against_ort(model, feeds, device, **TOL)


def test_a_rotation_read_elsewhere_is_not_rewritten(device):
    # a rotation intermediate that is also an output cannot vanish: the pattern stays
    model, feeds = rope_model(tensors=1)
    g = model.graph
    neg = next(n.output[0] for n in g.node if n.op_type == "Neg")
    g.output.append(helper.make_value_info(neg, onnx.TypeProto()))
    model = onnx.shape_inference.infer_shapes(model)
    assert "RotaryEmbedding" not in _kernels(model)
    check_against_ort(model, feeds, device, **TOL)

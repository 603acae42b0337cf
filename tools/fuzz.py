"""Fuzz the compiler, the IR parser and the artifact loader with mutated and generated input.

    python tools/fuzz.py --cases 3000 --seed 1                  # the three targets in turn
    python tools/fuzz.py --cases 500 --seed 7 --target ir       # one target
    python tools/fuzz.py --seed 7 --target ir --only 123        # remake and rerun one case
    python tools/fuzz.py --replay tests/fuzz_regressions        # rerun every kept finding

Targets:
- models: small valid models (a corpus of one- and few-node models at several opsets, and
  random graphs of supported ops), mutated (attribute values, dims, dtypes, names, node order,
  opsets, raw_data sizes, op types, outputs, bytes of the file) and compiled. What compiles is
  loaded and run on the GPU, and compared with onnxruntime where onnxruntime runs it.
- ir: the IR text of such a model after a random stage, mutated (numbers, dtypes, names, op
  kinds, lines, truncation) or left as printed, parsed and compiled onward.
- artifacts: a compiled small model whose manifest.json, shaders or weights are mutated,
  loaded with onnx2wgsl.load and run (needs a WebGPU adapter; skipped without one).

Each case is made from (target, seed, index) alone. The oracle: a case succeeds or raises one
of onnx2wgsl's own errors. Findings: a foreign exception, an InternalError (a bug the
compiler's boundary caught), an artifact the compiler wrote that does not load or run
(badartifact), a valid generated model whose GPU outputs differ from onnxruntime's (mismatch;
a mutated one that differs is only counted, as "differs"), IR text as printed that does not
compile on (restart), a crash of the worker process, or a case that runs past --timeout
(hang). A finding's input is written to tests/fuzz_regressions/ (a few per kind of finding,
listed in FOUND.tsv), which tests/test_fuzz.py replays. Cases run in a worker process, so a
crash or a hang is caught and the run goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"
TARGETS = ("models", "ir", "artifacts")
FOLD_LIMIT = 64 << 20  # a fuzzed model may ask for any constant; keep the host's memory small
# outcomes that are findings; every other outcome is fine
FINDINGS = ("internal", "foreign", "mismatch", "badartifact", "restart", "crash", "hang")
PER_SIGNATURE = {"models": 3, "ir": 3, "artifacts": 1}  # findings of one kind kept in the folder


@dataclass
class Case:
    """One input: files by relative path (a model, an IR text and its weights, an artifact)."""

    target: str
    seed: int
    index: int
    files: dict[str, bytes]
    what: list[str] = field(default_factory=list)  # the mutations applied
    compare: bool = False  # a valid generated model: compare the GPU with onnxruntime


@dataclass
class Outcome:
    kind: str  # ok | error | differs | skipped, or one of FINDINGS
    detail: str = ""  # the error's class and first line

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.detail.split(':')[0]}" if self.kind in ("error", "foreign") else self.kind

    @property
    def signature(self) -> str:
        """What makes two findings the same kind (numbers and quoted names left out)."""
        text = f"{self.kind} {self.detail}"
        if self.kind == "foreign":  # the exception's type and where it was raised
            text = f"{self.kind} {self.detail.split(':')[0]} {self.detail.rpartition(' @ ')[2]}"
        return re.sub(r"'[^']*'|\b0x[0-9a-f]+|\d+", "#", text)[:120]


# -- small valid models -------------------------------------------------------------------------
def _onnx():
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return np, onnx, TensorProto, helper, numpy_helper


def _model(nodes, inputs: dict, outputs: list[str], inits: dict | None = None, opset: int = 17):
    """A model of ``nodes``: float32 inputs of the given shapes, typed by onnx's inference."""
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    graph = helper.make_graph(
        nodes,
        "fuzz",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_value_info(o, onnx.TypeProto()) for o in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset < 21 else 10
    try:
        return onnx.shape_inference.infer_shapes(m)
    except Exception:
        return m


def corpus(rng: random.Random):
    """A random model of the hand-made corpus: one to a few nodes of the ops models use most."""
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    f = np.float32
    opset = rng.choice([7, 9, 11, 13, 17, 18, 21])
    mk = helper.make_node
    x4 = {"x": [1, 2, 4, 4]}
    cases: list[Callable] = [
        lambda: _model([mk("Relu", ["x"], ["y"])], {"x": [2, 3]}, ["y"], opset=opset),
        lambda: _model([mk("Add", ["x", "w"], ["y"])], {"x": [2, 3]}, ["y"], {"w": np.ones(3, f)}, opset),
        lambda: _model([mk("MatMul", ["x", "w"], ["y"])], {"x": [2, 4]}, ["y"], {"w": np.ones((4, 3), f)}, opset),
        lambda: _model(
            [mk("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5)], {"x": [2, 4]}, ["y"],
            {"w": np.ones((3, 4), f), "b": np.zeros(3, f)}, opset,
        ),
        lambda: _model(
            [mk("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[1, 1])], x4, ["y"],
            {"w": np.ones((3, 2, 3, 3), f)}, opset,
        ),
        lambda: _model([mk("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], x4, ["y"], opset=opset),
        lambda: _model([mk("Transpose", ["x"], ["y"], perm=[1, 0, 2])], {"x": [2, 3, 4]}, ["y"], opset=opset),
        lambda: _model(
            [mk("Reshape", ["x", "s"], ["y"])], {"x": [2, 6]}, ["y"], {"s": np.array([3, -1], np.int64)},
            max(opset, 5),
        ),
        lambda: _model([mk("Softmax", ["x"], ["y"], axis=-1)], {"x": [2, 5]}, ["y"], opset=opset),
        lambda: _model([mk("Concat", ["x", "w"], ["y"], axis=0)], {"x": [2, 3]}, ["y"], {"w": np.ones((1, 3), f)}, opset),
        lambda: _model(
            [mk("Gather", ["x", "i"], ["y"], axis=1)], {"x": [2, 5]}, ["y"], {"i": np.array([0, 4, -1], np.int64)}, opset
        ),
        lambda: _model(
            [mk("ReduceSum" if opset >= 13 else "ReduceMean", ["x", "a"] if opset >= 13 else ["x"], ["y"], keepdims=0,
                **({} if opset >= 13 else {"axes": [1]}))],
            {"x": [3, 4]}, ["y"], {"a": np.array([1], np.int64)} if opset >= 13 else {}, opset,
        ),
        lambda: _model(
            [mk("Shape", ["x"], ["s"]), mk("ConstantOfShape", ["s"], ["c"]), mk("Add", ["x", "c"], ["y"])],
            {"x": [2, 3]}, ["y"], opset=max(opset, 9),
        ),
        lambda: _model(
            [mk("Slice", ["x", "st", "en", "ax"], ["y"])], {"x": [4, 6]}, ["y"],
            {"st": np.array([1], np.int64), "en": np.array([5], np.int64), "ax": np.array([1], np.int64)},
            max(opset, 10),
        ),
        lambda: _model(
            [mk("Range", ["a", "b", "d"], ["r"]), mk("Add", ["x", "r"], ["y"])], {"x": [4]}, ["y"],
            {"a": np.array(0, f), "b": np.array(4, f), "d": np.array(1, f)}, max(opset, 11),
        ),
        lambda: _model([mk("Cast", ["x"], ["y"], to=TensorProto.INT32)], {"x": [2, 3]}, ["y"], opset=opset),
        lambda: _model(
            [mk("Pad", ["x", "p"], ["y"], mode="constant")], {"x": [2, 3]}, ["y"],
            {"p": np.array([0, 1, 0, 1], np.int64)}, max(opset, 11),
        ),
        lambda: _model(
            [mk("Split", ["x"], ["a", "b"], axis=1), mk("Mul", ["a", "b"], ["y"])], {"x": [2, 4]}, ["y"], opset=opset
        ),
        lambda: _model(
            [mk("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-5)], {"x": [2, 4]}, ["y"],
            {"s": np.ones(4, f), "b": np.zeros(4, f)}, max(opset, 17),
        ),
        lambda: _model(
            [mk("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], x4, ["y"],
            {k: np.ones(2, f) for k in "sbmv"}, max(opset, 9),
        ),
        lambda: _model([mk("Where", ["c", "x", "w"], ["y"])], {"x": [2, 3]}, ["y"],
                       {"c": np.array([True, False, True]), "w": np.zeros((2, 3), f)}, max(opset, 9)),
        lambda: _if_model(opset),
        lambda: _loop_model(opset),
        lambda: _function_model(),
        lambda: _model([mk("TopK", ["x", "k"], ["v", "i"], axis=-1)], {"x": [2, 5]}, ["v", "i"],
                       {"k": np.array([2], np.int64)}, max(opset, 11)),
        lambda: _model([mk("Resize", ["x", "", "sc"], ["y"], mode="nearest")], x4, ["y"],
                       {"sc": np.array([1, 1, 2, 2], f)}, max(opset, 13)),
        lambda: _model([mk("Einsum", ["x", "w"], ["y"], equation="ij,jk->ik")], {"x": [2, 3]}, ["y"],
                       {"w": np.ones((3, 2), f)}, max(opset, 12)),
        lambda: _model([mk("CumSum", ["x", "a"], ["y"])], {"x": [2, 3]}, ["y"], {"a": np.array(1, np.int64)}, max(opset, 11)),
        lambda: _model(
            [mk("Attention", ["q", "k", "v"], ["y"], is_causal=1)], {n: [1, 2, 3, 4] for n in "qkv"}, ["y"], opset=23
        ),
        lambda: _model([mk("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])], x4, ["y"],
                       {"w": np.ones((2, 3, 2, 2), f)}, opset),
        lambda: _model([mk("DepthToSpace", ["x"], ["y"], blocksize=2)], {"x": [1, 4, 2, 3]}, ["y"], opset=opset),
        lambda: _model([mk("GatherElements", ["x", "i"], ["y"], axis=1)], {"x": [2, 3]}, ["y"],
                       {"i": np.array([[0, 2], [1, 0]], np.int64)}, max(opset, 11)),
        lambda: _model([mk("ScatterND", ["x", "i", "u"], ["y"])], {"x": [4, 3]}, ["y"],
                       {"i": np.array([[1], [3]], np.int64), "u": np.ones((2, 3), f)}, max(opset, 11)),
        lambda: _model([mk("Tile", ["x", "r"], ["y"])], {"x": [2, 3]}, ["y"], {"r": np.array([2, 1], np.int64)}, opset),
        lambda: _model([mk("Expand", ["x", "s"], ["y"])], {"x": [3, 1]}, ["y"], {"s": np.array([2, 3, 4], np.int64)},
                       max(opset, 8)),
        lambda: _model([mk("Trilu", ["x"], ["y"], upper=0)], {"x": [3, 4]}, ["y"], opset=max(opset, 14)),
        lambda: _model([mk("ArgMax", ["x"], ["y"], axis=1, keepdims=0)], {"x": [3, 4]}, ["y"], opset=opset),
        lambda: _model([mk("InstanceNormalization", ["x", "s", "b"], ["y"])], x4, ["y"],
                       {"s": np.ones(2, f), "b": np.zeros(2, f)}, opset),
        lambda: _model([mk("OneHot", ["i", "d", "v"], ["y"], axis=-1)], {"i": [3]}, ["y"],
                       {"d": np.array(4, np.int64), "v": np.array([0, 1], f)}, max(opset, 11)),
    ]  # fmt: skip
    return rng.choice(cases)()


def _if_model(opset: int):
    np, onnx, TensorProto, helper, numpy_helper = _onnx()

    def branch(op: str, name: str):
        return helper.make_graph(
            [helper.make_node(op, ["x"], [name])], name, [], [helper.make_tensor_value_info(name, 1, [2, 3])]
        )

    node = helper.make_node(
        "If", ["c"], ["y"], then_branch=branch("Relu", "t"), else_branch=branch("Neg", "e")
    )
    m = _model([helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0), helper.make_node("Greater", ["m", "z"], ["c"]), node],
               {"x": [2, 3]}, ["y"], {"z": np.array(0, np.float32)}, max(opset, 11))  # fmt: skip
    return m


def _loop_model(opset: int):
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Add", ["acc", "x"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", 1, [2, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", 1, [2, 3])],
    )  # fmt: skip
    node = helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)
    return _model([node], {"x": [2, 3]}, ["y"], {"n": np.array(3, np.int64)}, max(opset, 11))


def _function_model():
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    f = helper.make_function(
        "local", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], opsets
    )
    g = helper.make_graph(
        [helper.make_node("Twice", ["x"], ["y"], domain="local")], "g",
        [helper.make_tensor_value_info("x", 1, [2, 3])], [helper.make_tensor_value_info("y", 1, [2, 3])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=opsets, functions=[f])
    m.ir_version = 8
    return m


# -- random graphs of supported ops (valid by construction) ---------------------------------------
# (no Reciprocal: 1 / 0 is inf or -inf by the sign of a zero, which two right answers may differ in)
UNARY = ("Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Softsign", "Elu", "LeakyRelu", "Floor", "Ceil",
         "Erf", "Softplus", "Sin", "Cos", "Identity", "HardSigmoid", "Sqrt", "Sign")  # fmt: skip
BINARY = ("Add", "Sub", "Mul", "Max", "Min", "Div")


def random_graph(rng: random.Random):
    """A random DAG of 1-8 supported float ops over one or two inputs; shapes are tracked here,
    so the model is valid (onnxruntime runs it)."""
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    f = np.float32
    opset = rng.choice([13, 17, 18])
    nodes, inits, inputs = [], {}, {}
    values: list[tuple[str, tuple[int, ...]]] = []
    counter = iter(range(10**6))

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def const(arr) -> str:
        name = fresh("c")
        inits[name] = np.asarray(arr)
        return name

    def rand_shape(rank: int) -> tuple[int, ...]:
        return tuple(rng.randint(1, 5) for _ in range(rank))

    for _ in range(rng.randint(1, 2)):
        name = fresh("x")
        shape = rand_shape(rng.randint(1, 4))
        inputs[name] = list(shape)
        values.append((name, shape))

    def add(op: str, ins: list[str], shape: tuple[int, ...], **attrs) -> None:
        out = fresh("v")
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        values.append((out, shape))

    for _ in range(rng.randint(1, 8)):
        x, shape = rng.choice([v for v in values if v[1]] or values)
        if not shape:
            break
        rank = len(shape)
        kind = rng.choice(["unary"] * 4 + ["binary"] * 3 + ["matmul", "transpose", "reshape", "reduce",
                          "softmax", "concat", "slice", "gather", "cast", "where", "clip", "pad", "norm",
                          "conv", "pool", "gemm", "expand", "tile", "split", "unsqueeze", "argmax"])  # fmt: skip
        if kind == "unary":
            add(rng.choice(UNARY), [x], shape)
        elif kind == "binary":
            op = rng.choice(BINARY)
            others = [n for n, s in values if s == shape and n != x]
            if op != "Div" and others and rng.random() < 0.5:
                add(op, [x, rng.choice(others)], shape)
            else:  # a constant broadcast along a suffix of the shape (a positive divisor for Div)
                k = rng.randint(0, rank)
                bshape = tuple(d if rng.random() < 0.7 else 1 for d in shape[rank - k :])
                arr = np.asarray(
                    rng.uniform(0.5, 2.0)
                    if not bshape
                    else np.random.default_rng(rng.randint(0, 9)).uniform(0.5, 2.0, bshape),
                    f,
                )
                add(op, [x, const(arr)], shape)
        elif kind == "matmul":
            n = rng.randint(1, 5)
            w = np.random.default_rng(rng.randint(0, 99)).uniform(-1, 1, (shape[-1], n)).astype(f)
            add("MatMul", [x, const(w)], shape[:-1] + (n,))
        elif kind == "transpose" and rank > 1:
            perm = list(range(rank))
            rng.shuffle(perm)
            add("Transpose", [x], tuple(shape[p] for p in perm), perm=perm)
        elif kind == "reshape":
            n = int(np.prod(shape))
            a = rng.choice([d for d in range(1, n + 1) if n % d == 0])
            target = [a, n // a] if rng.random() < 0.5 else [n]
            spec = list(target)
            if rng.random() < 0.3:
                spec[rng.randrange(len(spec))] = -1
            add("Reshape", [x, const(np.array(spec, np.int64))], tuple(target))
        elif kind == "reduce":
            axis = rng.randrange(rank)
            keep = rng.randint(0, 1)
            out = shape[:axis] + ((1,) if keep else ()) + shape[axis + 1 :]
            op = rng.choice(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"])
            if opset >= 18 or op == "ReduceSum":
                add(op, [x, const(np.array([axis], np.int64))], out, keepdims=keep)
            else:
                add(op, [x], out, axes=[axis], keepdims=keep)
        elif kind == "softmax":
            add(rng.choice(["Softmax", "LogSoftmax"]), [x], shape, axis=rng.randrange(-rank, rank))
        elif kind == "concat":
            axis = rng.randrange(rank)
            add("Concat", [x, x], shape[:axis] + (2 * shape[axis],) + shape[axis + 1 :], axis=axis)
        elif kind == "slice":
            axis = rng.randrange(rank)
            lo = rng.randrange(shape[axis])
            hi = rng.randint(lo + 1, shape[axis])
            ins = [x] + [const(np.array([v], np.int64)) for v in (lo, hi, axis)]
            add("Slice", ins, shape[:axis] + (hi - lo,) + shape[axis + 1 :])
        elif kind == "gather":
            axis = rng.randrange(rank)
            idx = np.array(
                [rng.randrange(-shape[axis], shape[axis]) for _ in range(rng.randint(1, 3))], np.int64
            )
            add("Gather", [x, const(idx)], shape[:axis] + idx.shape + shape[axis + 1 :], axis=axis)
        elif kind == "cast":
            out = fresh("i")
            nodes.append(helper.make_node("Cast", [x], [out], to=TensorProto.INT32))
            add("Cast", [out], shape, to=TensorProto.FLOAT)
        elif kind == "where":
            cond = fresh("b")
            nodes.append(helper.make_node("Greater", [x, const(np.array(0.0, f))], [cond]))
            add("Where", [cond, x, const(np.array(0.5, f))], shape)
        elif kind == "clip":
            add("Clip", [x, const(np.array(-0.5, f)), const(np.array(0.5, f))], shape)
        elif kind == "pad":
            pads = [rng.randint(0, 1) for _ in range(2 * rank)]
            out = tuple(d + pads[i] + pads[i + rank] for i, d in enumerate(shape))
            add("Pad", [x, const(np.array(pads, np.int64))], out, mode="constant")
        elif kind == "norm" and opset >= 17:
            d = shape[-1]
            add("LayerNormalization", [x, const(np.ones(d, f)), const(np.zeros(d, f))], shape, axis=-1)
        elif kind in ("conv", "pool") and rank == 4:
            k = [rng.randint(1, min(3, shape[2])), rng.randint(1, min(3, shape[3]))]
            s, p = [rng.randint(1, 2), rng.randint(1, 2)], [rng.randint(0, 1) for _ in range(4)]
            if any(p[i] >= k[i] or p[i + 2] >= k[i] for i in range(2)):
                p = [0, 0, 0, 0]  # a pad as wide as the window leaves some windows all padding
            hw = tuple((shape[2 + i] + p[i] + p[i + 2] - k[i]) // s[i] + 1 for i in range(2))
            if kind == "conv":
                m = rng.randint(1, 4)
                w = np.random.default_rng(rng.randint(0, 99)).uniform(-1, 1, (m, shape[1], *k)).astype(f)
                add(
                    "Conv",
                    [x, const(w), const(np.zeros(m, f))],
                    (shape[0], m, *hw),
                    kernel_shape=k,
                    strides=s,
                    pads=p,
                )
            else:
                op = rng.choice(["MaxPool", "AveragePool"])
                add(op, [x], shape[:2] + hw, kernel_shape=k, strides=s, pads=p)
        elif kind == "gemm" and rank == 2:
            n = rng.randint(1, 5)
            w = np.random.default_rng(rng.randint(0, 99)).uniform(-1, 1, (n, shape[1])).astype(f)
            add("Gemm", [x, const(w), const(np.ones(n, f))], (shape[0], n), transB=1, alpha=0.5)
        elif kind == "expand":
            target = tuple(d if d > 1 or rng.random() < 0.5 else rng.randint(2, 3) for d in shape)
            add("Expand", [x, const(np.array(target, np.int64))], target)
        elif kind == "tile":
            reps = [rng.randint(1, 2) for _ in shape]
            add("Tile", [x, const(np.array(reps, np.int64))], tuple(d * r for d, r in zip(shape, reps)))
        elif kind == "split" and shape[-1] >= 2:
            a, b = fresh("s"), fresh("v")
            half = shape[-1] // 2
            sizes = const(np.array([half, shape[-1] - half], np.int64))
            nodes.append(helper.make_node("Split", [x, sizes], [a, b], axis=-1))
            values.append((a, shape[:-1] + (half,)))
            values.append((b, shape[:-1] + (shape[-1] - half,)))
        elif kind == "unsqueeze" and rank < 4:
            axis = rng.randint(0, rank)
            add("Unsqueeze", [x, const(np.array([axis], np.int64))], shape[:axis] + (1,) + shape[axis:])
        elif kind == "argmax":
            out = fresh("i")
            axis = rng.randrange(rank)
            nodes.append(
                helper.make_node(rng.choice(["ArgMax", "ArgMin"]), [x], [out], axis=axis, keepdims=1)
            )
            add("Cast", [out], shape[:axis] + (1,) + shape[axis + 1 :], to=TensorProto.FLOAT)
    outs = [values[-1][0]]
    if len(values) > 2 and rng.random() < 0.3:
        other = rng.choice(values[:-1])[0]
        if other not in inputs and other not in outs:
            outs.append(other)
    return _model(nodes, inputs, outs, inits, opset)


# -- model mutations ----------------------------------------------------------------------------
INTERESTING_INTS = (0, 1, -1, 2, 3, 5, 7, 64, 256, 65536, -2, 2**31 - 1, 2**31, -(2**31), 2**40, 2**62)
INTERESTING_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, 3.4e38, float("inf"), float("-inf"), float("nan"))  # fmt: skip
OP_TYPES = ("Relu", "Add", "MatMul", "Gemm", "Conv", "Reshape", "Transpose", "Concat", "Gather", "Slice",
            "ReduceSum", "Softmax", "Cast", "Where", "Pad", "Split", "Expand", "Range", "ConstantOfShape",
            "Shape", "Squeeze", "Unsqueeze", "Flatten", "TopK", "Resize", "Einsum", "Tile", "OneHot",
            "ScatterND", "GatherND", "NonZero", "If", "Loop", "Identity", "Dropout", "LayerNormalization",
            "Attention", "RotaryEmbedding", "DepthToSpace", "GridSample", "CumSum", "ArgMax", "Trilu",
            "Mod", "BitShift", "QuantizeLinear", "DequantizeLinear", "Custom", "")  # fmt: skip


def _nodes(m) -> list:
    """Every node of the model, subgraphs' too."""
    out = []

    def walk(g):
        for n in g.node:
            out.append(n)
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(sub)

    walk(m.graph)
    return out


def _names(m) -> list[str]:
    g = m.graph
    names = [vi.name for vi in g.input] + [t.name for t in g.initializer]
    return names + [o for n in g.node for o in n.output] + ["", "nowhere", "x"]


def _mut_attr(rng: random.Random, m) -> str:
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    nodes = [n for n in _nodes(m) if n.attribute]
    if not nodes:
        return _mut_add_attr(rng, m)
    a = rng.choice(list(rng.choice(nodes).attribute))
    A = onnx.AttributeProto
    if a.type == A.INT:
        a.i = rng.choice(INTERESTING_INTS)
    elif a.type == A.FLOAT:
        a.f = rng.choice(INTERESTING_FLOATS)
    elif a.type == A.INTS:
        vals = list(a.ints)
        op = rng.randrange(4)
        if op == 0 and vals:
            vals[rng.randrange(len(vals))] = rng.choice(INTERESTING_INTS)
        elif op == 1:
            vals.append(rng.choice(INTERESTING_INTS))
        elif op == 2:
            vals = vals[: rng.randrange(len(vals) + 1)]
        else:
            rng.shuffle(vals)
        del a.ints[:]
        a.ints.extend(int(np.clip(v, -(2**63), 2**63 - 1)) for v in vals)
    elif a.type == A.FLOATS:
        a.floats.append(rng.choice(INTERESTING_FLOATS))
    elif a.type == A.STRING:
        a.s = rng.choice(
            [b"", b"linear", b"nearest", b"constant", b"reflect", b"edge", b"NOTSET", b"\xff", b"x" * 300]
        )
    elif a.type == A.TENSOR:
        if a.t.dims:
            a.t.dims[rng.randrange(len(a.t.dims))] = rng.choice(INTERESTING_INTS[:9])
        else:
            a.t.data_type = rng.choice([0, 1, 7, 9, 13, 16, 99])
    else:
        a.type = rng.choice([A.INT, A.FLOAT, A.STRING, A.INTS])  # a value of another kind
    return f"attr {a.name}"


def _mut_add_attr(rng: random.Random, m) -> str:
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    node = rng.choice(_nodes(m)) if m.graph.node else None
    if node is None:
        return "none"
    try:
        schema = onnx.defs.get_schema(node.op_type, 17)
        names = list(schema.attributes) or ["bogus"]
    except Exception:
        names = ["axis", "bogus"]
    name = rng.choice(names)
    value = rng.choice([rng.choice(INTERESTING_INTS), rng.choice(INTERESTING_FLOATS), "s", [1, 2], [0.5]])
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))
    return f"add attr {name}"


def _mut_del_attr(rng: random.Random, m) -> str:
    nodes = [n for n in _nodes(m) if n.attribute]
    if not nodes:
        return "none"
    n = rng.choice(nodes)
    a = rng.choice(list(n.attribute))
    n.attribute.remove(a)
    return f"del attr {a.name}"


def _mut_dim(rng: random.Random, m) -> str:
    vis = list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info)
    vis = [v for v in vis if v.type.HasField("tensor_type")]
    if not vis:
        return "none"
    vi = rng.choice(vis)
    tt = vi.type.tensor_type
    dims = tt.shape.dim
    op = rng.randrange(5)
    if op == 0 or not dims:
        tt.ClearField("shape")
        return "dim cleared"
    d = rng.choice(list(dims))
    if op == 1:
        d.dim_param = rng.choice(["N", "batch", "", "x y"])
    elif op == 2:
        dims.add().dim_value = rng.choice((1, 2, 3))
    elif op == 3:
        dims.remove(d)
    else:
        d.dim_value = rng.choice((0, 1, 2, 7, -1, -5, 10**6, 2**31, 2**40))
    return "dim"


def _mut_dtype(rng: random.Random, m) -> str:
    vis = [v for v in list(m.graph.input) + list(m.graph.output) if v.type.HasField("tensor_type")]
    choices = [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13, 16, 17, 21, 22, 23, 99]
    if m.graph.initializer and rng.random() < 0.5:
        t = rng.choice(list(m.graph.initializer))
        t.data_type = rng.choice(choices)
        return "initializer dtype"
    if not vis:
        return "none"
    rng.choice(vis).type.tensor_type.elem_type = rng.choice(choices)
    return "io dtype"


def _mut_name(rng: random.Random, m) -> str:
    nodes = [n for n in _nodes(m) if n.input]
    names = _names(m)
    if rng.random() < 0.3 or not nodes:
        if not m.graph.input:
            return "none"
        rng.choice(list(m.graph.input)).name = rng.choice(names)
        return "graph input name"
    n = rng.choice(nodes)
    i = rng.randrange(len(n.input))
    n.input[i] = rng.choice(names)
    return "node input name"


def _mut_output_name(rng: random.Random, m) -> str:
    nodes = [n for n in _nodes(m) if n.output]
    if not nodes:
        return "none"
    n = rng.choice(nodes)
    n.output[rng.randrange(len(n.output))] = rng.choice(_names(m))
    return "node output name"


def _mut_order(rng: random.Random, m) -> str:
    nodes = list(m.graph.node)
    op = rng.randrange(4)
    if op == 0:
        rng.shuffle(nodes)
    elif op == 1 and nodes:
        nodes.pop(rng.randrange(len(nodes)))
    elif op == 2 and nodes:
        nodes.insert(rng.randrange(len(nodes) + 1), rng.choice(nodes))
    else:
        nodes.reverse()
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return ["shuffle", "drop node", "duplicate node", "reverse"][op]


def _mut_opset(rng: random.Random, m) -> str:
    op = rng.randrange(4)
    if op == 0 and m.opset_import:
        m.opset_import[0].version = rng.choice([0, 1, 5, 6, 7, 9, 11, 13, 16, 19, 21, 23, 25, 28, 29, 99])
    elif op == 1:
        del m.opset_import[:]
    elif op == 2:
        m.opset_import.add(
            domain=rng.choice(["ai.onnx.ml", "com.microsoft", "x"]), version=rng.choice([1, 3, 99])
        )
    else:
        m.ir_version = rng.choice([0, 1, 3, 4, 7, 8, 10, 11, 99])
    return "opset"


def _mut_raw_data(rng: random.Random, m) -> str:
    inits = list(m.graph.initializer)
    if not inits:
        return "none"
    t = rng.choice(inits)
    op = rng.randrange(4)
    if op == 0 and t.raw_data:
        t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data))]
    elif op == 1:
        t.raw_data = t.raw_data + bytes(rng.randint(1, 64))
    elif op == 2 and t.dims:
        t.dims[rng.randrange(len(t.dims))] = rng.choice((0, 1, 3, -1, 10**6, 2**40))
    else:
        t.dims.append(rng.choice((1, 2)))
    return "raw_data"


def _mut_op_type(rng: random.Random, m) -> str:
    nodes = _nodes(m)
    if not nodes:
        return "none"
    n = rng.choice(nodes)
    n.op_type = rng.choice(OP_TYPES)
    return f"op {n.op_type}"


def _mut_arity(rng: random.Random, m) -> str:
    nodes = _nodes(m)
    if not nodes:
        return "none"
    n = rng.choice(nodes)
    if rng.random() < 0.5 and n.input:
        n.input.pop()
    else:
        n.input.append(rng.choice(_names(m)))
    if rng.random() < 0.2:
        n.output.append(rng.choice(["extra", ""]))
    return "arity"


def _mut_outputs(rng: random.Random, m) -> str:
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    op = rng.randrange(3)
    if op == 0:
        del m.graph.output[:]
    elif op == 1:
        m.graph.output.append(helper.make_value_info(rng.choice(_names(m)), onnx.TypeProto()))
    else:
        m.graph.output.extend([m.graph.output[0]] if m.graph.output else [])
    return "outputs"


def _mut_shadow(rng: random.Random, m) -> str:
    np, onnx, TensorProto, helper, numpy_helper = _onnx()
    inits = list(m.graph.initializer)
    if not inits:
        return "none"
    t = rng.choice(inits)
    shape = list(t.dims) if rng.random() < 0.5 else [rng.randint(1, 3)]
    m.graph.input.append(helper.make_tensor_value_info(t.name, rng.choice([1, 7, t.data_type]), shape))
    return "initializer as input"


MUTATIONS = (_mut_attr, _mut_attr, _mut_add_attr, _mut_del_attr, _mut_dim, _mut_dim, _mut_dtype, _mut_name,
             _mut_output_name, _mut_order, _mut_opset, _mut_raw_data, _mut_op_type, _mut_arity, _mut_outputs,
             _mut_shadow)  # fmt: skip


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(3)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)) :]
        else:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
    return bytes(b)


def make_model_case(seed: int, index: int) -> Case:
    rng = random.Random(f"models/{seed}/{index}")
    generated = rng.random() < 0.4
    m = random_graph(rng) if generated else corpus(rng)
    what: list[str] = ["random graph" if generated else "corpus"]
    if not generated or rng.random() < 0.75:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            what.append(rng.choice(MUTATIONS)(rng, m))
    data = m.SerializeToString()
    if rng.random() < 0.08:
        data = _mutate_bytes(rng, data)
        what.append("bytes")
    return Case("models", seed, index, {"model.onnx": data}, what, compare=len(what) == 1)


# -- IR text mutations ---------------------------------------------------------------------------
DTYPES = ("f32", "f16", "f64", "bf16", "i8", "i16", "i32", "i64", "u8", "u32", "u64", "bool", "string", "c64")
_INT = re.compile(r"(?<![\w.%@#\"])-?\d+(?![\w.])")
_FLOAT = re.compile(r"(?<![\w%@#\"])-?\d+\.\d*(?:e[-+]?\d+)?")
_DTYPE = re.compile(r"\b(" + "|".join(DTYPES) + r")\[")
_LOCAL = re.compile(r"%[A-Za-z0-9_.$/-]+")
_KIND = re.compile(r"= ([A-Za-z][\w.:]*)\(")


def _sub_one(rng: random.Random, pattern: re.Pattern, text: str, repl: Callable[[str], str]) -> str:
    found = list(pattern.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    return text[: m.start()] + repl(m.group(0)) + text[m.end() :]


def _mutate_ir(rng: random.Random, text: str) -> tuple[str, str]:
    lines = text.split("\n")
    op = rng.randrange(11)
    if op == 0:
        return _sub_one(rng, _INT, text, lambda s: str(rng.choice(INTERESTING_INTS))), "int"
    if op == 1:
        return _sub_one(
            rng, _FLOAT, text, lambda s: rng.choice(["nan", "inf", "-0.0", "1e39", "0.0", "1e-45"])
        ), "float"
    if op == 2:
        return _sub_one(rng, _DTYPE, text, lambda s: rng.choice(DTYPES) + "["), "dtype"
    if op == 3:
        locals_ = _LOCAL.findall(text) or ["%x"]
        return _sub_one(rng, _LOCAL, text, lambda s: rng.choice(locals_)), "name"
    if op == 4:
        kinds = ["Relu", "Add", "MatMul", "Gemm", "Reshape", "Transpose", "Concat", "Softmax", "Conv", "kernel",
                 "view", "Fused", "Cast", "ReduceSum", "Gather", "Attention", "Where", "Pad", "Slice"]  # fmt: skip
        return _sub_one(rng, _KIND, text, lambda s: f"= {rng.choice(kinds)}("), "kind"
    if op == 5 and len(lines) > 3:
        del lines[rng.randrange(2, len(lines) - 1)]
        return "\n".join(lines), "drop line"
    if op == 6 and len(lines) > 3:
        i = rng.randrange(2, len(lines) - 1)
        lines.insert(i, lines[i])
        return "\n".join(lines), "duplicate line"
    if op == 7 and len(lines) > 4:
        i, j = rng.randrange(2, len(lines) - 1), rng.randrange(2, len(lines) - 1)
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines), "swap lines"
    if op == 8:
        return text[: rng.randrange(len(text) + 1)], "truncate"
    if op == 9:
        stages = ["import", "canonicalize", "fold-constants", "dce", "lower", "in-place", "plan", "nope"]
        return re.sub(r'stage "[^"]*"', f'stage "{rng.choice(stages)}"', text, count=1), "stage"
    i = rng.randrange(len(text) + 1)
    junk = rng.choice(
        ["{", "}", "(", ")", "[", "]", ",", "=", '"', "%", "@", "#", "\\", "\n", "_", ":", "0", "k = 1"]
    )
    return text[:i] + junk + text[i:], "insert"


def make_ir_case(seed: int, index: int) -> Case:
    from onnx2wgsl.compiler import compile_model
    from onnx2wgsl.compiler.driver import run_to_stage, stage_names
    from onnx2wgsl.ir import WeightBlob, print_ir

    rng = random.Random(f"ir/{seed}/{index}")
    level = rng.choice([0, 1, 2])
    stage = rng.choice(stage_names(level))
    unchanged = rng.random() < 0.15  # the text as printed must compile on, as the model does
    blob = WeightBlob()
    for _ in range(5):  # a model that compiles to that stage (and on to the end, if unchanged)
        m = random_graph(rng) if rng.random() < 0.6 else corpus(rng)
        try:
            g = run_to_stage(m, stage, opt_level=level, fold_limit=FOLD_LIMIT)
            if unchanged:
                compile_model(m, opt_level=level, fold_limit=FOLD_LIMIT)
            break
        except Exception:
            continue
    else:
        return Case("ir", seed, index, {"case.ir": b""}, ["no model"])
    text = print_ir(g, stage=stage, weights=blob)
    what = [f"-O{level} after {stage}"]
    for _ in range(0 if unchanged else rng.choice([1, 1, 2, 3])):
        text, how = _mutate_ir(rng, text)
        what.append(how)
    files = {"case.ir": text.encode("utf-8"), "case.weights.bin": bytes(blob.data)}
    return Case("ir", seed, index, files, what, compare=unchanged)


# -- artifact mutations --------------------------------------------------------------------------
INTERESTING_VALUES = (-1, 0, 1, 3, 255, 256, 2**31, 2**40, 2**64, 1.5, "x", "", None, True, [], {}, [0, 0, 0],
                      [65535, 65535, 64], "/etc/passwd", "../manifest.json", "shaders/../../x.wgsl", "weights.bin",
                      "manifest.json", "f64", "storage", "arena0", "weights")  # fmt: skip


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, prefix + (i,))


def _mutate_manifest(rng: random.Random, m) -> tuple[object, str]:
    paths = [p for p in _json_paths(m) if p]
    if not paths or rng.random() < 0.03:
        return rng.choice([[], "x", None, {"format": "onnx2wgsl-artifact"}]), "manifest root"
    path = rng.choice(paths)
    parent = m
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    op = rng.randrange(4)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
        return m, f"del {'.'.join(map(str, path))}"
    if op == 1 and isinstance(parent[key], list):
        items = parent[key]
        if items and rng.random() < 0.5:
            items.append(items[rng.randrange(len(items))])
        elif items:
            items.pop(rng.randrange(len(items)))
        return m, f"list {'.'.join(map(str, path))}"
    if op == 2 and isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] = parent[key] + rng.choice([-256, -4, -1, 1, 4, 256, 2**32])
        return m, f"nudge {'.'.join(map(str, path))}"
    parent[key] = rng.choice(INTERESTING_VALUES)
    return m, f"set {'.'.join(map(str, path))}"


def _artifact_files(model, opt_level: int) -> dict[str, bytes]:
    from onnx2wgsl.compiler import compile_model

    with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
        compile_model(model, d, opt_level=opt_level, force=True)
        return {str(p.relative_to(d)): p.read_bytes() for p in Path(d).rglob("*") if p.is_file()}


def make_artifact_case(seed: int, index: int) -> Case:
    rng = random.Random(f"artifacts/{seed}/{index}")
    for _ in range(5):
        m = random_graph(rng) if rng.random() < 0.6 else corpus(rng)
        try:
            files = _artifact_files(m, rng.choice([0, 1, 2]))
            break
        except Exception:
            continue
    else:
        return Case("artifacts", seed, index, {}, ["no model"])
    what = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        op = rng.randrange(10)
        shaders = sorted(k for k in files if k.startswith("shaders/"))
        try:
            manifest = json.loads(files.get("manifest.json", b""))
        except ValueError:
            manifest = None  # mangled by an earlier mutation: mutate its bytes instead
        if op < 6 and manifest is not None:
            manifest, how = _mutate_manifest(rng, manifest)
            files["manifest.json"] = json.dumps(manifest).encode()
        elif op <= 6:
            files["manifest.json"] = _mutate_bytes(rng, files.get("manifest.json", b"{}"))
            how = "manifest bytes"
        elif op == 7 and shaders:
            name = rng.choice(shaders)
            text = files[name].decode()
            choice = rng.randrange(4)
            if choice == 0:
                text = text[: rng.randrange(len(text) + 1)]
            elif choice == 1:
                text = _sub_one(rng, _INT, text, lambda s: str(rng.choice(INTERESTING_INTS)))
            elif choice == 2:
                text = files[rng.choice(shaders)].decode()
            else:
                text = "garbage"
            files[name] = text.encode()
            how = f"shader {choice}"
        elif op == 8:
            files["weights.bin"] = _mutate_bytes(rng, files.get("weights.bin", b""))
            how = "weights bytes"
        else:
            files.pop(rng.choice(sorted(files)))
            how = "drop file"
        what.append(how)
    return Case("artifacts", seed, index, files, what)


MAKERS = {"models": make_model_case, "ir": make_ir_case, "artifacts": make_artifact_case}


# -- running one case ----------------------------------------------------------------------------
class Runner:
    """Runs cases in this process (the worker): holds the WebGPU device and onnxruntime."""

    def __init__(self, gpu: bool = True, inside: Callable[[str | None], None] = lambda what: None):
        self.gpu = gpu
        self.inside = inside  # says when the reference runs, whose crash is not onnx2wgsl's
        self._device = None
        self._no_device = None

    def device(self):
        if not self.gpu:
            return None
        if self._device is None and self._no_device is None:
            from onnx2wgsl.errors import DeviceError
            from onnx2wgsl.runtime import request_device
            from onnx2wgsl.runtime.session import request_adapter

            try:
                # with shader-f16 where the adapter has it: a float16 model compiles at fp16
                adapter = request_adapter("high-performance")
                self._device = request_device(
                    features=[f for f in ("shader-f16",) if f in adapter.features], adapter=adapter
                )
            except DeviceError as e:
                self._no_device = str(e)
        return self._device

    def run(self, case: Case) -> Outcome:
        from onnx2wgsl.errors import InternalError, Onnx2WgslError

        if not case.files:
            return Outcome("skipped", "no input")
        with tempfile.TemporaryDirectory(prefix="fuzz-case-") as tmp:
            base = Path(tmp)
            for rel, data in case.files.items():
                p = base / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            try:
                return getattr(self, f"_{case.target}")(case, base)
            except InternalError as e:
                return Outcome("internal", _line(e))
            except Onnx2WgslError as e:
                return Outcome("error", f"{type(e).__name__}: {_line(e)}")
            except MemoryError as e:
                return Outcome("foreign", f"MemoryError: {_line(e)}")
            except Exception as e:
                where = traceback.extract_tb(e.__traceback__)[-1]
                return Outcome(
                    "foreign", f"{type(e).__name__}: {_line(e)} @ {Path(where.filename).name}:{where.lineno}"
                )

    def _models(self, case: Case, base: Path) -> Outcome:
        from onnx2wgsl.compiler import compile_model

        out = base / "out"
        compile_model(base / "model.onnx", out, fold_limit=FOLD_LIMIT)
        if self.device() is None:
            return Outcome("ok")
        return self._run_compiled(base / "model.onnx", out, strict=case.compare)

    def _run_compiled(self, model_path: Path, out: Path, strict: bool) -> Outcome:
        """A compiled model must load and run; where onnxruntime runs it too, the outputs must
        agree (a finding for a valid generated model, else only counted: a mutated model may
        be one whose meaning the two read differently, e.g. a float cast to int out of range)."""
        import numpy as np

        import onnx2wgsl
        from onnx2wgsl.errors import Onnx2WgslError

        rng = np.random.default_rng(0)
        try:
            with onnx2wgsl.load(out, device=self.device()) as sess:
                feeds = {io.name: _random_input(rng, io.dtype, io.shape) for io in sess.get_inputs()}
                if any(v is None for v in feeds.values()):
                    return Outcome("ok", "inputs too big to run")
                got = sess.run(None, feeds)
        except Exception as e:  # the compiler wrote an artifact that does not load or run
            name = type(e).__name__ if not isinstance(e, Onnx2WgslError) else f"{type(e).__name__} (ours)"
            return Outcome("badartifact", f"{name}: {_line(e)}")
        want = self._onnxruntime(model_path, feeds)
        if want is None:
            return Outcome("ok", "onnxruntime refuses it")
        for i, (g, w) in enumerate(zip(got, want)):
            w = np.asarray(w)
            same = g.shape == w.shape and (g.dtype == object or _agree(g, w))
            if not same:
                err = (
                    float(np.nanmax(np.abs(g.astype(np.float64) - w)))
                    if g.shape == w.shape and g.size
                    else "-"
                )
                detail = f"output {i}: {g.dtype}{list(g.shape)} vs onnxruntime's {w.dtype}{list(w.shape)}, max diff {err}"
                return Outcome("mismatch" if strict else "differs", detail)
        return Outcome("ok", "matches onnxruntime")

    def _onnxruntime(self, model_path: Path, feeds: dict):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 4
        self.inside("onnxruntime")
        try:
            ref = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
            return ref.run(None, feeds)
        except Exception:
            return None
        finally:
            self.inside(None)

    def _ir(self, case: Case, base: Path) -> Outcome:
        from onnx2wgsl.compiler import compile_model
        from onnx2wgsl.errors import Onnx2WgslError
        from onnx2wgsl.ir import load_ir

        try:
            mod = load_ir(base / "case.ir")
            level = int(case.what[0][2]) if case.what and case.what[0].startswith("-O") else 2
            compile_model(mod.graph, stage=mod.stage, fold_limit=FOLD_LIMIT, opt_level=level)
        except Onnx2WgslError as e:
            if case.compare:  # the compiler's own text of a model that compiled
                return Outcome(
                    "restart", f"the IR as printed does not compile on: {type(e).__name__}: {_line(e)}"
                )
            raise
        return Outcome("ok")

    def _artifacts(self, case: Case, base: Path) -> Outcome:
        import numpy as np

        import onnx2wgsl

        device = self.device()
        if device is None:
            return Outcome("skipped", "no WebGPU adapter")
        with onnx2wgsl.load(base, device=device) as sess:
            rng = np.random.default_rng(0)
            feeds = {}
            for io in sess.get_inputs():
                shape = [d if isinstance(d, int) and 0 <= d <= 4096 else 1 for d in io.shape][:8]
                try:
                    dtype = np.dtype(io.dtype)
                except TypeError:
                    dtype = np.dtype(np.float32)
                feeds[io.name] = (
                    rng.uniform(0, 4, shape).astype(dtype)
                    if int(np.prod(shape)) <= 1 << 22
                    else np.zeros(1, dtype)
                )
            sess.run(None, feeds)
        return Outcome("ok")


def _agree(got, want) -> bool:
    """Outputs agree within float tolerance. Where onnxruntime gives NaN, so must we; where we
    give NaN and it does not, a NaN met on the way was handled differently (its ReduceMax, for
    one, keeps a NaN only when it comes first in the row; onnx's reference propagates every
    NaN, as we do), which is no finding."""
    import numpy as np

    if got.dtype.kind not in "fc" or want.dtype.kind not in "fc":
        return np.array_equal(got, want)
    if (np.isnan(want) & ~np.isnan(got)).any():
        return False
    keep = ~np.isnan(got)
    return np.allclose(got[keep], want[keep], rtol=1e-3, atol=1e-4)


def _random_input(rng, dtype: str, shape: list):
    """Random values of an input (small integers, floats in [-1, 1]); None if it is too big."""
    import numpy as np

    if math.prod(shape) > 1 << 24:
        return None
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        return rng.integers(0, 4, shape).astype(dt)
    return rng.uniform(-1, 1, shape).astype(dt)


def _line(e: BaseException) -> str:
    from onnx2wgsl.errors import first_line

    return first_line(e)


# -- the worker process and the driver ----------------------------------------------------------
def _worker(conn, gpu: bool, quiet: bool) -> None:
    if quiet:  # wgpu and onnxruntime log to the process's own stderr
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    import warnings

    warnings.simplefilter("ignore")
    runner = Runner(gpu, inside=lambda what: conn.send(("inside", what)))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        kind, payload = msg
        try:
            case = MAKERS[payload[0]](payload[1], payload[2]) if kind == "make" else payload
        except Exception as e:  # a bug of this harness, not of onnx2wgsl
            conn.send(
                (Outcome("skipped", f"the case generator failed: {type(e).__name__}: {_line(e)}"), None)
            )
            continue
        outcome = runner.run(case)
        conn.send((outcome, case if kind == "make" and outcome.kind in FINDINGS else None))


class Pool:
    """One worker process that runs cases; a crashed or hung worker is replaced."""

    def __init__(self, timeout: float, gpu: bool = True, quiet: bool = True):
        self.timeout = timeout
        self.gpu = gpu
        self.quiet = quiet
        self.proc = None
        self.conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.gpu, self.quiet), daemon=True)
        self.proc.start()
        child.close()

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        self.proc = self.conn = None

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.conn.send(None)
                self.proc.join(5)
            except (OSError, EOFError):
                pass
            self._stop()

    def run(self, msg, first_timeout: float = 60.0) -> tuple[Outcome, Case | None]:
        fresh = self.proc is None
        if fresh:
            self._start()
        self.conn.send(msg)
        # a fresh worker imports onnx, numpy and wgpu first
        deadline = time.monotonic() + self.timeout + (first_timeout if fresh else 0)
        inside = None  # the reference the worker is running, if it says so
        while True:
            if not self.conn.poll(max(0.0, deadline - time.monotonic())):
                self._stop()
                if inside:
                    return Outcome("skipped", f"{inside} did not finish"), None
                return Outcome("hang", f"no answer within {self.timeout:g} s"), None
            try:
                reply = self.conn.recv()
            except (EOFError, OSError):
                self.proc.join(5)
                code = self.proc.exitcode
                self._stop()
                if inside:  # onnxruntime's own crash, not onnx2wgsl's
                    return Outcome("skipped", f"{inside} crashed on it (exit code {code})"), None
                return Outcome("crash", f"the worker died (exit code {code})"), None
            if reply[0] == "inside":
                inside = reply[1]
                continue
            return reply


def save_finding(case: Case, outcome: Outcome, out_dir: Path) -> Path:
    """Write the case's input as a small file (or folder, for an artifact) named by its hash."""
    digest = hashlib.sha256(b"".join(k.encode() + v for k, v in sorted(case.files.items()))).hexdigest()[:10]
    name = f"{case.target}-{digest}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if case.target == "models":
        path = out_dir / f"{name}.onnx"
        path.write_bytes(case.files["model.onnx"])
    elif case.target == "ir":
        path = out_dir / f"{name}.ir"
        path.write_bytes(case.files["case.ir"])
        if case.files.get("case.weights.bin"):
            (out_dir / f"{name}.weights.bin").write_bytes(case.files["case.weights.bin"])
    else:
        path = out_dir / name
        for rel, data in case.files.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_bytes(data)
    index = out_dir / "FOUND.tsv"
    line = f"{path.name}\t{case.target}\t{case.seed}\t{case.index}\t{outcome.kind}\t{outcome.detail}\t{', '.join(case.what)}\n"
    with open(index, "a", encoding="utf-8") as f:
        f.write(line.replace("\r", " "))
    return path


def load_finding(path: Path) -> Case:
    """A kept finding, as a case to run again."""
    path = Path(path)
    if path.is_dir():
        files = {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}
        return Case("artifacts", 0, 0, files, [path.name])
    if path.suffix == ".onnx":
        # a model kept for a mismatch is compared with onnxruntime again
        compare = found_kinds(path.parent).get(path.name) == "mismatch"
        return Case("models", 0, 0, {"model.onnx": path.read_bytes()}, [path.name], compare=compare)
    weights = path.with_name(path.stem + ".weights.bin")
    files = {"case.ir": path.read_bytes()}
    if weights.is_file():
        files["case.weights.bin"] = weights.read_bytes()
    return Case("ir", 0, 0, files, [path.name])


def kept_signatures(folder: Path) -> Counter:
    """How many findings of each (target, kind of finding) the folder keeps already."""
    index = Path(folder) / "FOUND.tsv"
    lines = index.read_text(encoding="utf-8").splitlines() if index.is_file() else []
    return Counter(
        (c[1], Outcome(c[4], c[5]).signature) for c in (line.split("\t") for line in lines) if len(c) > 5
    )


def found_kinds(folder: Path) -> dict[str, str]:
    """What each kept finding was when it was found (FOUND.tsv: name, ..., outcome kind)."""
    index = Path(folder) / "FOUND.tsv"
    lines = index.read_text(encoding="utf-8").splitlines() if index.is_file() else []
    return {cols[0]: cols[4] for cols in (line.split("\t") for line in lines) if len(cols) > 4}


def findings_in(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".onnx", ".ir") or (p / "manifest.json").exists() or
                  (p.is_dir() and p.name.startswith("artifacts-")))  # fmt: skip


def fuzz(
    targets: tuple[str, ...],
    cases: int,
    seed: int,
    *,
    timeout: float = 20.0,
    out_dir: Path | None = REGRESSIONS,
    gpu: bool = True,
    only: int | None = None,
    progress: Callable[[str], None] | None = None,
    quiet: bool = True,
) -> tuple[Counter, list[tuple[Case | None, Outcome]]]:
    """Run ``cases`` cases per target; return the outcome counts and the findings."""
    counts: Counter = Counter()
    findings: list[tuple[Case | None, Outcome]] = []
    seen = kept_signatures(Path(out_dir)) if out_dir is not None else Counter()
    pool = Pool(timeout, gpu, quiet)
    try:
        for target in targets:
            indices = [only] if only is not None else range(cases)
            for n, i in enumerate(indices):
                outcome, case = pool.run(("make", (target, seed, i)))
                counts[f"{target} {outcome.label}"] += 1
                if outcome.kind in FINDINGS:
                    if case is None:  # the worker crashed or hung: make the case here to keep it
                        case = MAKERS[target](seed, i)
                    findings.append((case, outcome))
                    seen[target, outcome.signature] += 1
                    if out_dir is not None and seen[target, outcome.signature] <= PER_SIGNATURE[target]:
                        save_finding(case, outcome, Path(out_dir))
                    if progress:
                        progress(
                            f"FINDING {target} seed {seed} case {i}: {outcome.kind}: {outcome.detail} [{', '.join(case.what)}]"
                        )
                if progress and (n + 1) % 250 == 0:
                    progress(f"  {target}: {n + 1}/{len(indices)} cases")
    finally:
        pool.close()
    return counts, findings


def replay(paths: list[Path], timeout: float = 60.0, gpu: bool = True) -> list[tuple[Path, Outcome]]:
    """Run kept findings again; each comes back with its outcome now."""
    pool = Pool(timeout, gpu)
    try:
        return [(p, pool.run(("case", load_finding(p)))[0]) for p in paths]
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cases", type=int, default=1000, help="cases per target (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", choices=TARGETS + ("all",), default="all")
    p.add_argument("--only", type=int, metavar="INDEX", help="run only this case of the seed")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds a case may take (default 20)")
    p.add_argument(
        "--out",
        type=Path,
        default=REGRESSIONS,
        help="where findings are kept (default tests/fuzz_regressions)",
    )
    p.add_argument("--no-save", action="store_true", help="keep no findings")
    p.add_argument(
        "--no-gpu", action="store_true", help="no artifact cases and no comparison with onnxruntime"
    )
    p.add_argument("--replay", type=Path, metavar="DIR|FILE", help="rerun kept findings instead")
    p.add_argument("-v", "--verbose", action="store_true", help="let the worker print (wgpu's logs)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.replay:
        paths = findings_in(args.replay) if args.replay.is_dir() else [args.replay]
        bad = 0
        for path, outcome in replay(paths, gpu=not args.no_gpu):
            bad += outcome.kind in FINDINGS
            print(f"{outcome.kind:9s} {path.name}  {outcome.detail}")
        print(f"{len(paths)} findings replayed, {bad} still failing, {time.perf_counter() - t0:.0f} s")
        return 1 if bad else 0
    targets = TARGETS if args.target == "all" else (args.target,)
    if args.no_gpu:
        targets = tuple(t for t in targets if t != "artifacts")
    out = None if args.no_save else args.out
    counts, findings = fuzz(targets, args.cases, args.seed, timeout=args.timeout, out_dir=out, gpu=not args.no_gpu,
                            only=args.only, progress=lambda s: print(s, flush=True), quiet=not args.verbose)  # fmt: skip
    total = sum(counts.values())
    print(f"{total} cases, seed {args.seed}, {time.perf_counter() - t0:.0f} s; outcomes:")
    for key, n in sorted(counts.items()):
        print(f"  {n:7d}  {key}")
    print(f"findings: {len(findings)}" + (f" (kept in {out})" if findings and out else ""))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

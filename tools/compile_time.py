"""Seconds per compile stage for generated graphs of N ops, to keep every stage near-linear.

    python tools/compile_time.py                           # chain at N = 500, 2000, 5000, 20000
    python tools/compile_time.py --graph softmax -n 20000  # a chain that does not fuse
    python tools/compile_time.py --graph wide -n 20000 --profile 25  # and cProfile's top 25

Graphs (every tensor [1, 64] f32, constants shared so the weights stay small):
  chain    Add(x, c), Relu, Mul(x, c), Sigmoid, repeated: fuses into few kernels
  softmax  Softmax, Add(x, c), repeated: nothing fuses across a Softmax
  matmul   MatMul(x, W), Add(x, c), repeated: each Add is a MatMul epilogue
  wide     N / 2 branches Add(x, c_i), Relu, joined by Concat of 8 and Sum of 8 per level
  identity Identity, Relu, repeated: canonicalize drops half the graph
  affine   one MatMul, then N - 1 per-column Muls and Adds: fold-affine folds them all
  patterns N / 5 written-out Softmaxes in a chain: fuse-patterns rewrites each
  attention N / 16 attention blocks (8 positions, 2 heads) in a chain: fuse-attention makes
           each one MatMul and one Attention
  shapes   Pad (one more column), Relu, repeated: N kernels, N distinct shaders
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx2wgsl.compiler import compile_model

WIDTH = 64


def _model(nodes, inits, out: str, out_shape=(1, WIDTH)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _consts(rng, **arrays):
    return [numpy_helper.from_array(a.astype(np.float32), name) for name, a in arrays.items()]


def chain(n: int) -> onnx.ModelProto:
    """N elementwise ops in one chain: Add, Relu, Mul, Sigmoid, Add, ..."""
    rng = np.random.default_rng(0)
    inits = _consts(rng, c_add=rng.normal(size=WIDTH) * 0.1, c_mul=rng.uniform(0.5, 1.5, WIDTH))
    nodes, prev = [], "x"
    for i in range(n):
        kind = ("Add", "Relu", "Mul", "Sigmoid")[i % 4]
        ins = [prev, {"Add": "c_add", "Mul": "c_mul"}[kind]] if kind in ("Add", "Mul") else [prev]
        nodes.append(helper.make_node(kind, ins, [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    return _model(nodes, inits, prev)


def softmax(n: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = _consts(rng, c_add=rng.normal(size=WIDTH))
    nodes, prev = [], "x"
    for i in range(n):
        if i % 2 == 0:
            nodes.append(helper.make_node("Softmax", [prev], [f"t{i}"], name=f"n{i}", axis=-1))
        else:
            nodes.append(helper.make_node("Add", [prev, "c_add"], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    return _model(nodes, inits, prev)


def matmul(n: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = _consts(
        rng, w=np.eye(WIDTH) + rng.normal(size=(WIDTH, WIDTH)) * 0.01, c_add=rng.normal(size=WIDTH) * 0.01
    )
    nodes, prev = [], "x"
    for i in range(n):
        kind, ins = ("MatMul", [prev, "w"]) if i % 2 == 0 else ("Add", [prev, "c_add"])
        nodes.append(helper.make_node(kind, ins, [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    return _model(nodes, inits, prev)


def wide(n: int) -> onnx.ModelProto:
    """N / 2 branches of Add(x, c_i), Relu; the branches are joined 8 at a time, by Concat then
    Sum, level by level, until one [1, 64] tensor is left."""
    rng = np.random.default_rng(0)
    branches = max(n // 2, 1)
    inits = [
        numpy_helper.from_array(rng.normal(size=WIDTH).astype(np.float32), f"c{i}") for i in range(branches)
    ]
    nodes, level = [], []
    for i in range(branches):
        nodes.append(helper.make_node("Add", ["x", f"c{i}"], [f"a{i}"], name=f"add{i}"))
        nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}"))
        level.append(f"r{i}")
    depth = 0
    while len(level) > 1:
        groups = [level[i : i + 8] for i in range(0, len(level), 8)]
        level = []
        for j, names in enumerate(groups):
            out = f"j{depth}_{j}"
            if depth % 2 == 0:  # Concat, then take the mean back to [1, 64] through a Reshape
                nodes.append(helper.make_node("Concat", names, [out + "c"], name=out + "c", axis=0))
                nodes.append(
                    helper.make_node("ReduceMean", [out + "c"], [out], name=out, axes=[0], keepdims=1)
                )
            else:
                nodes.append(helper.make_node("Sum", names, [out], name=out))
            level.append(out)
        depth += 1
    return _model(nodes, inits, level[0])


def identity(n: int) -> onnx.ModelProto:
    """Identity, Relu, repeated: canonicalize drops every Identity."""
    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(helper.make_node(("Identity", "Relu")[i % 2], [prev], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    return _model(nodes, [], prev)


def affine(n: int) -> onnx.ModelProto:
    """One MatMul, then N Muls and Adds by per-column constants: fold-affine folds them all."""
    rng = np.random.default_rng(0)
    inits = _consts(rng, w=np.eye(WIDTH), s=rng.uniform(0.99, 1.01, WIDTH), t=rng.normal(size=WIDTH) * 0.01)
    nodes, prev = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm")], "m"
    for i in range(n - 1):
        nodes.append(helper.make_node(("Mul", "Add")[i % 2], [prev, "st"[i % 2]], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    return _model(nodes, inits, prev)


def patterns(n: int) -> onnx.ModelProto:
    """Softmax written out (ReduceMax, Sub, Exp, ReduceSum, Div) N / 5 times in a chain:
    fuse-patterns makes each one Softmax."""
    nodes, prev = [], "x"
    for i in range(max(n // 5, 1)):
        p = f"s{i}"
        nodes += [
            helper.make_node("ReduceMax", [prev], [p + "m"], axes=[1], keepdims=1),
            helper.make_node("Sub", [prev, p + "m"], [p + "d"]),
            helper.make_node("Exp", [p + "d"], [p + "e"]),
            helper.make_node("ReduceSum", [p + "e", "axes"], [p + "s"], keepdims=1),
            helper.make_node("Div", [p + "e", p + "s"], [p]),
        ]
        prev = p
    return _model(nodes, [numpy_helper.from_array(np.array([1], np.int64), "axes")], prev)


def attention(n: int) -> onnx.ModelProto:
    """Self-attention written out as torch exports it (Q, K, V projections, head split, K^T,
    scaled scores, Softmax, @ V, heads merged) N / 16 times in a chain over [1, 8, 8]."""
    rng = np.random.default_rng(0)
    inits = _consts(rng, **{f"w{p}": rng.normal(size=(8, 8)) * 0.3 for p in "qkv"}, scale=np.array(0.5))
    inits += [
        numpy_helper.from_array(np.array(s, np.int64), name)
        for name, s in (("seq", [1, 8, 8]), ("heads", [1, 8, 2, 4]), ("flat", [1, WIDTH]))
    ]
    nodes, prev = [], "x"
    for i in range(max(n // 16, 1)):
        a = f"a{i}"
        nodes.append(helper.make_node("Reshape", [prev, "seq"], [a + "x"]))
        for p, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            nodes += [
                helper.make_node("MatMul", [a + "x", "w" + p], [a + p + "0"]),
                helper.make_node("Reshape", [a + p + "0", "heads"], [a + p + "1"]),
                helper.make_node("Transpose", [a + p + "1"], [a + p], perm=perm),
            ]
        nodes += [
            helper.make_node("MatMul", [a + "q", a + "k"], [a + "s"]),
            helper.make_node("Mul", [a + "s", "scale"], [a + "ss"]),
            helper.make_node("Softmax", [a + "ss"], [a + "p"], axis=-1),
            helper.make_node("MatMul", [a + "p", a + "v"], [a + "o"]),
            helper.make_node("Transpose", [a + "o"], [a + "ot"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [a + "ot", "flat"], [a]),
        ]
        prev = a
    return _model(nodes, inits, prev)


def shapes(n: int) -> onnx.ModelProto:
    """Pad (one more column), Relu, repeated: every kernel has a shape, so a shader, of its own."""
    pads = numpy_helper.from_array(np.array([0, 0, 0, 1], np.int64), "pads")
    nodes, prev = [], "x"
    for i in range(n):
        ins = [prev, "pads"] if i % 2 == 0 else [prev]
        nodes.append(helper.make_node(("Pad", "Relu")[i % 2], ins, [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    return _model(nodes, [pads], prev, (1, WIDTH + (n + 1) // 2))


GRAPHS = {
    "chain": chain,
    "softmax": softmax,
    "matmul": matmul,
    "wide": wide,
    "identity": identity,
    "affine": affine,
    "patterns": patterns,
    "attention": attention,
    "shapes": shapes,
}


def time_stages(model: onnx.ModelProto, opt_level: int = 2) -> dict[str, float]:
    """Seconds per stage of one compile (the driver's stages, then ``artifact``)."""
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    res = compile_model(
        model, opt_level=opt_level, on_stage=lambda name, g: marks.append((name, time.perf_counter()))
    )
    end = time.perf_counter()
    out, last = {}, t0
    for name, t in marks:
        out[name], last = t - last, t
    out["artifact"] = end - last
    out["total"] = end - t0
    out["kernels"] = res.report.kernels
    out["shaders"] = res.report.shaders
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph", choices=sorted(GRAPHS), default="chain")
    ap.add_argument("-n", type=int, action="append", help="ops in the graph (repeatable)")
    ap.add_argument("-O", dest="level", type=int, default=2)
    ap.add_argument("--profile", type=int, metavar="TOP", help="cProfile each compile; print the TOP entries")
    args = ap.parse_args()
    rows = []
    for n in args.n or [500, 2000, 5000, 20000]:
        model = GRAPHS[args.graph](n)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
        rows.append((n, time_stages(model, args.level)))
        if args.profile:
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)
        print(
            f"{args.graph} N={n}: "
            + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1][1].items()
            ),
            flush=True,
        )
    stages = list(rows[0][1])
    print("\n| N | " + " | ".join(stages) + " |\n|---|" + "---|" * len(stages))
    for n, t in rows:
        print(
            f"| {n} | "
            + " | ".join(f"{t[s]:.2f}" if isinstance(t[s], float) else str(t[s]) for s in stages)
            + " |"
        )


if __name__ == "__main__":
    main()

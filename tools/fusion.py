"""Kernels per model at each -O level: the nine light CNNs of the onnx wheel (or given
models), their ONNX node count without Constant/ConstantOfShape, dispatches at -O0/-O1/-O2,
the -O2 ratio, and the -O2 arena: its size, over the lower bound and over the naive bytes.

    python tools/fusion.py                 # a markdown table of the light models
    python tools/fusion.py model.onnx ...  # the same for other models
    python tools/fusion.py --dim batch=1 --dim seq=128 tests/models/bert_tiny_torchscript.onnx

``--dim NAME=N`` binds a symbolic dim (models that name none ignore it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from onnx2wgsl.compiler import compile_model

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def row(path: Path, dims: dict[str, int]) -> list[str]:
    model = onnx.load(str(path))
    named = {d.dim_param for vi in model.graph.input for d in vi.type.tensor_type.shape.dim}
    dims = {k: v for k, v in dims.items() if k in named}
    nodes = sum(n.op_type not in ("Constant", "ConstantOfShape") for n in model.graph.node)
    counts = []
    for level in (0, 1, 2):
        res = compile_model(model, opt_level=level, dims=dims or None)
        counts.append(res.report.dispatches)
    r = res.report
    return [
        path.stem,
        str(nodes),
        *map(str, counts),
        f"{counts[2] / nodes:.2f}",
        f"{r.arena_bytes / 1e6:.1f} MB",
        f"{r.arena_bytes / r.lower_bound:.2f}",
        f"{r.arena_bytes / r.naive_bytes:.1%}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--dim", action="append", default=[], metavar="NAME=N", help="bind a symbolic dim")
    args = ap.parse_args()
    dims = {}
    for d in args.dim:
        name, _, n = d.partition("=")
        if not n.isdigit():
            ap.error(f"--dim {d!r}: expected NAME=N")
        dims[name] = int(n)
    paths = args.models or sorted(LIGHT.glob("*.onnx"))
    print(
        "| model | ONNX nodes | -O0 | -O1 | -O2 | -O2 / nodes | arena | arena / lower bound | arena / naive |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in paths:
        print("| " + " | ".join(row(p, dims)) + " |")


if __name__ == "__main__":
    main()

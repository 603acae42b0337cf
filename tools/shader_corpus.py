"""Compile a corpus of models and keep every artifact's shaders and manifest, to compare two
versions of the compiler's output (a refactor of code generation should change no byte, or
only the bytes it means to).

    python tools/shader_corpus.py write /tmp/before          # compile the corpus into a folder
    python tools/shader_corpus.py compare /tmp/before /tmp/after

The corpus: the ONNX node conformance cases (tools/conformance.py generates them), the light
CNNs at -O0 and -O2, and tools/fuzz.py's hand-made and random models for a few hundred seeds.
Node cases and random graphs compile twice: for the default target and for one with at most
4 workgroups per grid dimension, which makes nearly every dispatch fold its grid. A model that
does not compile keeps its error line instead, which the comparison checks too.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

FOLDING = {"maxComputeWorkgroupsPerDimension": 4}


def _cases(seeds: int):
    """(case name, model, compile options) in a fixed order."""
    import conformance
    import fuzz
    from light_models import LIGHT_MODELS, light_path

    from onnx2wgsl.compiler.target import WEBGPU_DEFAULT_LIMITS, Target

    folding = Target("folding", {**WEBGPU_DEFAULT_LIMITS, **FOLDING})
    node = conformance.generate_node_cases(conformance.cache_dir())
    for d in sorted(p for p in node.iterdir() if (p / "model.onnx").is_file()):
        yield f"node/{d.name}", str(d / "model.onnx"), {}
        yield f"node-fold/{d.name}", str(d / "model.onnx"), {"target": folding}
    for name in LIGHT_MODELS:
        for level in (0, 2):
            yield f"light/{name}-O{level}", str(light_path(name)), {"opt_level": level}
    for seed in range(seeds):
        yield f"fuzz/corpus-{seed}", fuzz.corpus(random.Random(seed)), {}
        model = fuzz.random_graph(random.Random(seed))
        yield f"fuzz/graph-{seed}", model, {}
        yield f"fuzz-fold/graph-{seed}", model, {"target": folding}


def write(out: Path, seeds: int, only: str | None) -> None:
    from onnx2wgsl import compiler
    from onnx2wgsl.errors import Onnx2WgslError

    n = 0
    for name, model, options in _cases(seeds):
        if only and only not in name:
            continue
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        try:
            art = compiler.compile_model(model, **options).artifact
        except Onnx2WgslError as e:
            (d / "error.txt").write_text(f"{type(e).__name__}: {str(e).splitlines()[0]}\n")
            continue
        except Exception as e:  # a model the corpus generator made that onnx itself rejects
            (d / "error.txt").write_text(f"{type(e).__name__}\n")
            continue
        (d / "manifest.json").write_text(json.dumps(art.manifest, indent=1, sort_keys=True) + "\n")
        for file, text in art.shaders.items():
            (d / file).write_text(text)
        n += 1
    print(f"{n} artifacts written under {out}")


def _content(path: Path, ignore: set[str]) -> bytes:
    """A file's bytes; a manifest's without the dispatch keys in ``ignore``."""
    raw = path.read_bytes()
    if not ignore or path.name != "manifest.json":
        return raw
    m = json.loads(raw)
    for d in m.get("dispatches", []):
        for k in ignore:
            d.pop(k, None)
    return json.dumps(m, indent=1, sort_keys=True).encode()


def compare(a: Path, b: Path, show: int, ignore: set[str] = frozenset()) -> int:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    only_a, only_b = sorted(files_a - files_b), sorted(files_b - files_a)
    differ = sorted(p for p in files_a & files_b if _content(a / p, ignore) != _content(b / p, ignore))
    print(
        f"{len(files_a & files_b)} files in both, {len(differ)} differ; {len(only_a)} only in {a}, {len(only_b)} only in {b}"
    )
    for p in only_a[:show]:
        print(f"  only in {a}: {p}")
    for p in only_b[:show]:
        print(f"  only in {b}: {p}")
    for p in differ[:show]:
        diff = difflib.unified_diff(
            (a / p).read_text().splitlines(),
            (b / p).read_text().splitlines(),
            str(a / p),
            str(b / p),
            lineterm="",
            n=1,
        )
        print("\n".join(list(diff)[:40]))
    return 1 if only_a or only_b or differ else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="compile the corpus into a folder")
    w.add_argument("out", type=Path)
    w.add_argument("--seeds", type=int, default=200, help="fuzz seeds (default 200)")
    w.add_argument("-k", dest="only", help="only cases whose name contains this")
    c = sub.add_parser("compare", help="compare two written corpora")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--show", type=int, default=5, help="differences to print (default 5)")
    c.add_argument(
        "--ignore",
        default="",
        metavar="KEY,...",
        help="dispatch keys of the manifests to leave out (e.g. flops)",
    )
    args = ap.parse_args()
    if args.cmd == "write":
        write(args.out, args.seeds, args.only)
        return 0
    return compare(args.a, args.b, args.show, {k for k in args.ignore.split(",") if k})


if __name__ == "__main__":
    sys.exit(main())

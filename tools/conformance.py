"""The ONNX backend test suite on WebGPU: case discovery, one runner, and a pass-rate report.

    python tools/conformance.py                       # every suite, a table by suite and category
    python tools/conformance.py -k test_conv --show   # some cases, with each failure's message
    python tools/conformance.py --markdown            # the README table

Node cases are generated from the generators in the installed onnx package into a cache
folder (about 20 s, once per onnx version); the model suites ship in the onnx wheel.
tests/test_conformance.py runs the same cases under pytest against expected_failures.txt.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
MODEL_SUITES = ("simple", "pytorch-converted", "pytorch-operator")
SUITES = ("node",) + MODEL_SUITES
EXPECTED_FAILURES = ROOT / "tests" / "conformance" / "expected_failures.txt"


def cache_dir() -> Path:
    base = Path(os.environ.get("ONNX2WGSL_CACHE", ROOT / ".cache"))
    return base / f"onnx-{onnx.__version__}"


def generate_node_cases(out: Path) -> Path:
    """Write the node conformance cases as <out>/node/<case>/{model.onnx,test_data_set_0}."""
    done = out / "node" / ".complete"
    if done.exists():
        return out / "node"
    import onnx.backend.test.case.node as node_cases
    import onnx.backend.test.cmd_tools as cmd_tools

    cases = node_cases.collect_testcases()
    original = cmd_tools.model_test
    cmd_tools.model_test = type("M", (), {"collect_testcases": staticmethod(lambda: cases)})
    try:
        cmd_tools.generate_data(argparse.Namespace(output=str(out)))
    finally:
        cmd_tools.model_test = original
    done.write_text(onnx.__version__)
    return out / "node"


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    path: Path

    @property
    def id(self) -> str:
        return self.name if self.suite == "node" else f"{self.suite}/{self.name}"


def collect(suites=SUITES) -> list[Case]:
    cases = []
    for suite in suites:
        root = generate_node_cases(cache_dir()) if suite == "node" else DATA / suite
        for d in sorted(p for p in root.iterdir() if (p / "model.onnx").is_file()):
            cases.append(Case(suite, d.name, d))
    return cases


def _tolerances(case: Case) -> tuple[float, float]:
    data = case.path / "data.json"
    if data.is_file():
        d = json.loads(data.read_text())
        return d.get("rtol", 1e-3), d.get("atol", 1e-7)
    return 1e-3, 1e-7


def _load_data_set(d: Path, prefix: str, graph_io) -> list:
    out = []
    for i, io in enumerate(graph_io):
        path = d / f"{prefix}_{i}.pb"
        if not path.exists():
            break
        kind = io.type.WhichOneof("value") if io is not None else "tensor_type"
        raw = path.read_bytes()
        if kind == "sequence_type":
            seq = onnx.SequenceProto()
            seq.ParseFromString(raw)
            out.append(onnx.numpy_helper.to_list(seq))
        elif kind == "optional_type":
            opt = onnx.OptionalProto()
            opt.ParseFromString(raw)
            out.append(onnx.numpy_helper.to_optional(opt))
        else:
            t = onnx.TensorProto()
            t.ParseFromString(raw)
            out.append(numpy_helper.to_array(t))
    return out


@dataclass
class Result:
    case: Case
    ok: bool
    category: str
    message: str
    seconds: float


def categorize(e: BaseException) -> str:
    from onnx2wgsl.errors import CompileError, DeviceError, InputError, UnsupportedError

    text = str(e)
    if isinstance(e, UnsupportedError):
        if "no WebGPU lowering" in text:
            return "unsupported-op"
        if "dtype" in text or "element type" in text:
            return "unsupported-dtype"
        return "unsupported"
    if isinstance(e, CompileError):
        return "compile-error"
    if isinstance(e, (InputError, DeviceError)):
        return "runtime-error"
    if isinstance(e, AssertionError):
        return "wrong-result"
    return "internal-error"


def run_case(case: Case) -> Result:
    """Compile, load and run one case on the GPU; compare every data set with its reference."""
    import onnx2wgsl.backend as backend

    t0 = time.perf_counter()
    try:
        model = onnx.load(str(case.path / "model.onnx"))
        rep = backend.prepare(model)
        inits = {t.name for t in model.graph.initializer}
        graph_inputs = [i for i in model.graph.input if i.name not in inits]
        rtol, atol = _tolerances(case)
        sets = sorted(glob.glob(str(case.path / "test_data_set_*")))
        if not sets:
            raise AssertionError("the case has no test data")
        try:
            for d in sets:
                inputs = _load_data_set(Path(d), "input", graph_inputs)
                want = _load_data_set(Path(d), "output", list(model.graph.output))
                got = rep.run(inputs)
                compare(got, want, rtol, atol)
        finally:
            rep.session.release()
        return Result(case, True, "pass", "", time.perf_counter() - t0)
    except Exception as e:
        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if categorize(e) == "internal-error":
            msg += " @ " + traceback.extract_tb(e.__traceback__)[-1].filename.split("/")[-1]
        return Result(case, False, categorize(e), msg[:300], time.perf_counter() - t0)


def compare(got, want, rtol: float, atol: float) -> None:
    if len(got) != len(want):
        raise AssertionError(f"{len(got)} outputs, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            raise AssertionError(f"output {i}: shape {g.shape}, expected {w.shape}")
        if w.dtype == object:
            np.testing.assert_array_equal(g, w)
            continue
        if g.dtype != w.dtype:
            raise AssertionError(f"output {i}: dtype {g.dtype}, expected {w.dtype}")
        if w.dtype.name == "bfloat16":
            g, w, rtol = g.astype(np.float32), w.astype(np.float32), max(rtol, 2**-6)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(
                g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol, err_msg=f"output {i}"
            )


def read_expected(path: Path = EXPECTED_FAILURES) -> dict[str, tuple[str, str]]:
    """case id -> (category, reason), from lines 'CASE<TAB>CATEGORY<TAB>REASON' ('#' comments)."""
    out = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ValueError(f"{path}: bad line {line!r}; expected CASE<TAB>CATEGORY<TAB>REASON")
        out[parts[0]] = (parts[1], parts[2])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", action="append", choices=SUITES, help="suites to run (default: all)")
    ap.add_argument("-k", dest="pattern", help="only cases whose id contains this text")
    ap.add_argument("--show", action="store_true", help="print each failure's message")
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    ap.add_argument("--json", metavar="FILE", help="write every result to FILE")
    args = ap.parse_args(argv)
    cases = collect(tuple(args.suite or SUITES))
    if args.pattern:
        cases = [c for c in cases if args.pattern in c.id]
    expected = read_expected()
    results = []
    t0 = time.perf_counter()
    for i, case in enumerate(cases):
        r = run_case(case)
        results.append(r)
        if args.show and not r.ok:
            print(f"FAIL {case.id}: [{r.category}] {r.message}", flush=True)
        elif not args.show and sys.stderr.isatty():
            print(f"\r{i + 1}/{len(cases)}", end="", file=sys.stderr, flush=True)
    by_suite = defaultdict(Counter)
    for r in results:
        by_suite[r.case.suite][r.category] += 1
    cats = sorted({c for counts in by_suite.values() for c in counts} - {"pass"})
    if args.markdown:
        print("| suite | cases | pass | " + " | ".join(cats) + " |")
        print("|---|---:|---:|" + "---:|" * len(cats))
    for suite, counts in by_suite.items():
        total = sum(counts.values())
        if args.markdown:
            print(
                f"| {suite} | {total} | {counts['pass']} | " + " | ".join(str(counts[c]) for c in cats) + " |"
            )
        else:
            detail = ", ".join(f"{c} {counts[c]}" for c in cats if counts[c])
            print(f"{suite:18s} {counts['pass']:5d} / {total:5d} pass  ({detail})")
    unlisted = [r.case.id for r in results if not r.ok and r.case.id not in expected]
    fixed = [r.case.id for r in results if r.ok and r.case.id in expected]
    print(f"\n{sum(r.ok for r in results)} / {len(results)} pass in {time.perf_counter() - t0:.0f}s; "
          f"{len(unlisted)} failures not in expected_failures.txt; {len(fixed)} listed cases now pass")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "id": r.case.id,
                        "ok": r.ok,
                        "category": r.category,
                        "message": r.message,
                        "seconds": round(r.seconds, 3),
                    }
                    for r in results
                ],
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

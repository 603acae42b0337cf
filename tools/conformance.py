"""The ONNX backend test suite on WebGPU: case discovery, one runner, and a pass-rate report.

    python tools/conformance.py                       # every suite, a table by suite and category
    python tools/conformance.py -k test_conv --show   # some cases, with each failure's message
    python tools/conformance.py --markdown            # the README table
    python tools/conformance.py --write-expected      # rewrite tests/conformance/expected_failures.txt

Node cases are generated from the generators in the installed onnx package into a cache
folder (about 20 s, once per version of onnx, ml_dtypes and numpy, which the generators compute
with); the model suites and the nine light CNNs ship in the onnx wheel. tests/test_conformance.py runs the same cases under pytest: each passes, or
fails exactly as tests/conformance/expected_failures.txt lists it (CASE<TAB>CATEGORY<TAB>REASON).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
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
SUITES = ("node",) + MODEL_SUITES + ("light",)
EXPECTED_FAILURES = ROOT / "tests" / "conformance" / "expected_failures.txt"


def expected_failures_path() -> Path:
    """The expected-failures file (ONNX2WGSL_EXPECTED_FAILURES overrides it, for tests)."""
    return Path(os.environ.get("ONNX2WGSL_EXPECTED_FAILURES", EXPECTED_FAILURES))


def cache_dir() -> Path:
    """Where the node cases are generated: one folder per version of each library that the
    generators compute their references with."""
    import ml_dtypes

    base = Path(os.environ.get("ONNX2WGSL_CACHE", ROOT / ".cache"))
    return base / f"onnx-{onnx.__version__}-ml_dtypes-{ml_dtypes.__version__}-numpy-{np.__version__}"


def generate_node_cases(out: Path) -> Path:
    """Write the node conformance cases as <out>/node/<case>/{model.onnx,test_data_set_0}."""
    done = out / "node" / ".complete"
    if done.exists():
        return out / "node"
    import warnings

    import onnx.backend.test.case.node as node_cases
    import onnx.backend.test.cmd_tools as cmd_tools

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the generators overflow on purpose (Cast edge cases)
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
    path: Path  # the case's folder; for light models, the .onnx file

    @property
    def id(self) -> str:
        return self.name if self.suite == "node" else f"{self.suite}/{self.name}"

    @property
    def model_path(self) -> Path:
        return self.path if self.suite == "light" else self.path / "model.onnx"


def collect(suites=SUITES) -> list[Case]:
    cases = []
    for suite in suites:
        if suite == "light":
            for p in sorted((DATA / "light").glob("light_*.onnx")):
                cases.append(Case("light", p.stem.removeprefix("light_"), p))
            continue
        root = generate_node_cases(cache_dir()) if suite == "node" else DATA / suite
        for d in sorted(p for p in root.iterdir() if (p / "model.onnx").is_file()):
            cases.append(Case(suite, d.name, d))
    return cases


def _tolerances(case: Case) -> tuple[float, float]:
    data = case.path / "data.json"
    if case.suite != "light" and data.is_file():
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


def _data_sets(case: Case, model: onnx.ModelProto, graph_inputs) -> list[tuple[list, list]]:
    if case.suite == "light":
        # the light references were made with input arange(n) / n, as onnx's model runner feeds it
        (inp,) = graph_inputs
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        n = int(np.prod(shape))
        x = (np.arange(n).reshape(shape) / n).astype(np.float32)
        ref = numpy_helper.to_array(
            onnx.load_tensor(str(case.path.with_name(f"light_{case.name}_output_0.pb")))
        )
        return [([x], [ref])]
    sets = sorted(glob.glob(str(case.path / "test_data_set_*")))
    return [
        (
            _load_data_set(Path(d), "input", graph_inputs),
            _load_data_set(Path(d), "output", list(model.graph.output)),
        )
        for d in sets
    ]


@dataclass
class Result:
    case: Case
    ok: bool
    category: str
    message: str
    seconds: float


# -- failure categories ---------------------------------------------------------------------
SEQUENCE_OPS = {
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength", "SequenceMap", "SplitToSequence", "ConcatFromSequence",
}  # fmt: skip
OPTIONAL_OPS = {"Optional", "OptionalGetElement", "OptionalHasElement"}
STRING_OPS = {"StringNormalizer", "StringConcat", "StringSplit", "RegexFullMatch", "TfIdfVectorizer"}
TRAINING_OPS = {"Adagrad", "Adam", "Momentum", "Gradient"}
DATA_DEPENDENT_OPS = {"NonZero", "Unique", "Compress", "NonMaxSuppression"}
_DTYPE_CATEGORY = [
    (re.compile(r"\bdtype (f8\w+)|\b(float8\w*)"), "float8"),
    (re.compile(r"\bdtype ([iu][24]|f4e2m1)\b"), "sub-byte-type"),
    (re.compile(r"\bdtype string\b"), "string-tensor"),
]
CATEGORIES = (
    "string-tensor", "sequence-type", "optional-type", "float8", "sub-byte-type", "training-op",
    "data-dependent-shape", "unsupported-op", "unsupported-dtype", "not-yet-supported",
    "compile-error", "runtime-error", "wrong-result", "internal-error",
)  # fmt: skip


def categorize(e: BaseException) -> str:
    """The category of a failure, from the error's type, op and message (see CATEGORIES)."""
    from onnx2wgsl.errors import CompileError, DeviceError, InputError, UnsupportedError

    text = str(e)
    if isinstance(e, CompileError):
        op = (e.op or "").split(".")[-1]
        if op in SEQUENCE_OPS or "sequence_type" in text:
            return "sequence-type"
        if op in OPTIONAL_OPS or "optional_type" in text:
            return "optional-type"
        if op in STRING_OPS:
            return "string-tensor"
        if op in TRAINING_OPS or "training" in text:
            return "training-op"
        for pattern, category in _DTYPE_CATEGORY:
            if pattern.search(text):
                return category
        if op in DATA_DEPENDENT_OPS or "cannot infer a static shape" in text or "data-dependent" in text:
            return "data-dependent-shape"
        if not isinstance(e, UnsupportedError):
            return "compile-error"
        if "no WebGPU lowering" in text:
            return "unsupported-op"
        if "dtype" in text or "element type" in text:
            return "unsupported-dtype"
        return "not-yet-supported"
    if isinstance(e, (InputError, DeviceError)):
        return "runtime-error"
    if isinstance(e, AssertionError):
        return "wrong-result"
    return "internal-error"


def run_case(case: Case, device=None) -> Result:
    """Compile, load and run one case on the GPU; compare every data set with its reference."""
    import onnx2wgsl.backend as backend

    t0 = time.perf_counter()
    try:
        model = onnx.load(str(case.model_path))
        rep = backend.prepare(model, **({"webgpu_device": device} if device is not None else {}))
        try:
            inits = {t.name for t in model.graph.initializer}
            graph_inputs = [i for i in model.graph.input if i.name not in inits]
            rtol, atol = _tolerances(case)
            sets = _data_sets(case, model, graph_inputs)
            if not sets:
                raise AssertionError("the case has no test data")
            for inputs, want in sets:
                got = list(rep.run(inputs))
                for k, undefined in enumerate(undefined_by_spec(model, inputs)):
                    got[k] = np.where(undefined, want[k], got[k])
                compare(got, want, rtol, atol)
        finally:
            rep.release()
        return Result(case, True, "pass", "", time.perf_counter() - t0)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if isinstance(e, AssertionError):  # numpy's messages start on their second line
            first = " ".join(line.strip() for line in str(e).strip().splitlines()[:4])
        msg = f"{type(e).__name__}: {first}"
        if categorize(e) == "internal-error":
            msg += " @ " + traceback.extract_tb(e.__traceback__)[-1].filename.split("/")[-1]
        return Result(case, False, categorize(e), msg[:300], time.perf_counter() - t0)


def undefined_by_spec(model: onnx.ModelProto, inputs: list) -> list:
    """Per output, a mask of the elements whose value the ONNX spec leaves undefined, or nothing.

    Cast (and CastLike) from a float type to an integer type is "undefined if OOR": for a value
    whose truncation lies outside the integer type's range (NaN and infinities too) no answer is
    wrong. The node cases' references hold whatever the library that made them chose (ml_dtypes
    wrapped int4/int2 before 0.7 and gives 0 since), so those elements are not compared; the
    compiler wraps them, as the spec's narrowing integer casts do."""
    import ml_dtypes

    g = model.graph
    if len(g.node) != 1 or g.node[0].op_type not in ("Cast", "CastLike") or not inputs:
        return []
    node = g.node[0]
    if node.op_type == "Cast":
        dst = next((a.i for a in node.attribute if a.name == "to"), None)
    else:
        dst = g.input[1].type.tensor_type.elem_type
    x = np.asarray(inputs[0])
    if dst is None or not (x.dtype.kind == "f" or x.dtype.name.startswith(("float", "bfloat"))):
        return []  # ml_dtypes' float8, float4 and bfloat16 are of kind 'V'
    dtype = onnx.helper.tensor_dtype_to_np_dtype(dst)
    if dtype.kind not in "iu" and dtype.name not in ("int2", "uint2", "int4", "uint4"):
        return []
    info = ml_dtypes.iinfo(dtype)
    with np.errstate(invalid="ignore"):
        x = np.trunc(x.astype(np.float64))
        return [~((x >= info.min) & (x <= info.max))]


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
        elif w.dtype == np.float16:  # two units in the last place, as for bfloat16: a float16 model
            rtol = max(rtol, 2**-9)  # stores f16 between its ops, rounded where the reference's were not
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(
                g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol, err_msg=f"output {i}"
            )


# -- expected failures --------------------------------------------------------------------------
HEADER = """\
# ONNX backend test cases that onnx2wgsl fails, one per line: CASE<TAB>CATEGORY<TAB>REASON.
# tests/test_conformance.py fails the run when a listed case passes (remove its line) or
# fails with another category than listed, and when an unlisted case fails.
# Regenerate with `python tools/conformance.py --write-expected`: it keeps the reasons of
# entries whose category is unchanged and writes the error message as the reason of new ones.
# Categories: {categories}.
"""


def read_expected(path: Path | None = None) -> dict[str, tuple[str, str]]:
    """case id -> (category, reason), from lines 'CASE<TAB>CATEGORY<TAB>REASON' ('#' comments)."""
    path = path or expected_failures_path()
    out: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ValueError(f"{path}:{n}: bad line {line!r}; expected CASE<TAB>CATEGORY<TAB>REASON")
        if parts[0] in out:
            raise ValueError(f"{path}:{n}: {parts[0]} is listed twice")
        if parts[1] not in CATEGORIES:
            raise ValueError(f"{path}:{n}: unknown category {parts[1]!r}; use one of {', '.join(CATEGORIES)}")
        out[parts[0]] = (parts[1], parts[2].strip())
    return out


def write_expected(results: list[Result], path: Path | None = None) -> dict[str, tuple[str, str]]:
    """Rewrite the file from ``results``: failing cases listed (reasons kept where the category
    is unchanged), passing ones dropped; entries of cases not run are kept as they are."""
    path = path or expected_failures_path()
    entries = read_expected(path)
    for r in results:
        old = entries.pop(r.case.id, None)
        if not r.ok:
            reason = old[1] if old and old[0] == r.category else _reason(r.message)
            entries[r.case.id] = (r.category, reason)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER.format(categories=", ".join(CATEGORIES))]
    for case_id in sorted(entries, key=lambda c: ("/" in c, c)):
        category, reason = entries[case_id]
        lines.append(f"{case_id}\t{category}\t{reason}\n")
    path.write_text("".join(lines))
    return entries


def _reason(message: str) -> str:
    text = re.sub(r"^\w+Error: ", "", message).replace("\t", " ")
    return re.sub(r"\s+", " ", text).strip() or "fails"


def verdict(result: Result, expected: dict[str, tuple[str, str]]) -> tuple[bool, str]:
    """(acceptable, explanation) of one result against the expected-failures entries."""
    listed = expected.get(result.case.id)
    name = expected_failures_path().name
    if result.ok:
        if listed:
            return False, f"{result.case.id} passes now: remove it from {name}"
        return True, "pass"
    if not listed:
        return False, (
            f"{result.case.id} fails [{result.category}] {result.message}; fix it, or list it in {name} "
            "(python tools/conformance.py --write-expected)"
        )
    if listed[0] != result.category:
        return False, (
            f"{result.case.id} fails as {result.category} ({result.message}), but {name} lists it as "
            f"{listed[0]}: update its entry"
        )
    return True, f"expected failure [{listed[0]}] {listed[1]}"


# -- command line ---------------------------------------------------------------------------------
def markdown_table(results: list[Result]) -> str:
    by_suite: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_suite[r.case.suite][r.category] += 1
    cats = [c for c in CATEGORIES if any(counts[c] for counts in by_suite.values())]
    lines = [
        "| suite | cases | pass | " + " | ".join(cats) + " |",
        "|---|---:|---:|" + "---:|" * len(cats),
    ]
    totals: Counter = Counter()
    for suite in SUITES:
        if suite not in by_suite:
            continue
        counts = by_suite[suite]
        totals.update(counts)
        total = sum(counts.values())
        lines.append(
            f"| {suite} | {total} | {counts['pass']} | "
            + " | ".join(str(counts[c] or "") for c in cats)
            + " |"
        )
    lines.append(
        f"| **all** | {sum(totals.values())} | {totals['pass']} | "
        + " | ".join(str(totals[c] or "") for c in cats)
        + " |"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", action="append", choices=SUITES, help="suites to run (default: all)")
    ap.add_argument("-k", dest="pattern", help="only cases whose id contains this text")
    ap.add_argument("--show", action="store_true", help="print each failure's message")
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    ap.add_argument("--json", metavar="FILE", help="write every result to FILE")
    ap.add_argument(
        "--write-expected",
        action="store_true",
        help="rewrite expected_failures.txt from this run (keeps reasons where the category is unchanged)",
    )
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
    seconds = time.perf_counter() - t0
    if args.markdown:
        print(markdown_table(results))
    else:
        by_suite: dict[str, Counter] = defaultdict(Counter)
        for r in results:
            by_suite[r.case.suite][r.category] += 1
        for suite, counts in by_suite.items():
            total = sum(counts.values())
            detail = ", ".join(f"{c} {counts[c]}" for c in CATEGORIES if counts[c])
            print(f"{suite:18s} {counts['pass']:5d} / {total:5d} pass  ({detail})")
    bad = [r for r in results if not verdict(r, expected)[0]]
    print(
        f"\n{sum(r.ok for r in results)} / {len(results)} pass in {seconds:.0f}s; "
        f"{sum(1 for r in bad if not r.ok)} failures not as listed in {expected_failures_path().name}; "
        f"{sum(1 for r in bad if r.ok)} listed cases now pass"
    )
    if args.write_expected:
        entries = write_expected(results)
        print(f"wrote {len(entries)} entries to {expected_failures_path()}")
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
            )  # fmt: skip
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tuning: measure on this machine's device the forms a kernel may take, and keep the fastest.

Some lowerings choose among equally correct forms of a kernel (a matmul's register tile, a
conv's pixels x channels tile) by a cost model written for one kind of device
(``LowerCtx.tuned``). ``onnx2wgsl compile --tune`` measures instead: it compiles the model once
per round r, every tunable kernel taking its r-th candidate form (round 0: every default; a
kernel with fewer forms keeps its default), then runs the rounds' artifacts on the device in
turn, a few passes over them all so that a slow spell of a shared machine falls on every form
alike, with a GPU timestamp around every dispatch. Each problem (a kernel kind and the sizes
its choice depends on: a ``Tune`` key) takes the form whose dispatches took the least GPU time
(each dispatch's least over the passes), if it beats the default by TUNE_MARGIN. The last
compile takes the forms from that table, which the manifest records (``tuning``): compiling
again with ``--tuning DIR`` (or the table as a JSON file) builds the same artifact byte for
byte, on a machine without a device. A table entry for a problem the model does not have is
unused; one naming a form that is not a candidate here (another compiler version's) is
refused, and the report says so.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from onnx2wgsl.errors import CompileError, DeviceError, first_line
from onnx2wgsl.ir import Graph, Tune

TUNE_RUNS = 3  # passes over the rounds, a profiled run of each (each dispatch's least time counts)
TUNE_MARGIN = 0.05  # how much faster than the default a form must measure to replace it


def read_tuning(spec: str | os.PathLike | Mapping | None) -> dict[str, dict]:
    """A tuning table from a mapping, a JSON file of one ({key: form}), or an artifact (its
    directory or manifest.json, whose ``tuning`` it records; an index of precision variants
    gives all of theirs)."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return _checked(dict(spec), "the tuning table")
    path = Path(spec)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise CompileError(
            f"tuning table {str(spec)!r} not found",
            hint="give an artifact directory compiled with --tune, its manifest.json, or a JSON file of {key: form}",
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CompileError(f"tuning table {str(spec)!r} is not valid JSON ({e})") from e
    if isinstance(data, dict) and "format" in data:  # an artifact's manifest
        table = dict(data.get("tuning", {}))
        for v in data.get("variants", []):  # an index: every variant's table
            table.update(read_tuning(path.parent / v["path"]))
        return _checked(table, str(spec))
    return _checked(data, str(spec))


def _checked(table, where: str) -> dict[str, dict]:
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in table.items()
    ):
        raise CompileError(
            f"{where} is not a tuning table (a JSON object of problem keys to kernel forms)",
            hint="use the manifest.json of an artifact compiled with --tune, or its directory",
        )
    return table


def tunes(g: Graph) -> list[Tune | None]:
    """The Tune record of each dispatch, in the manifest's order of dispatches."""
    return [d.tune for op in g.ops for d in op.dispatches]


def tuning_notes(g: Graph, table: Mapping[str, dict]) -> list[str]:
    """What a compile with a tuning table took from it, refused, or did not need."""
    if not table:
        return []
    records = {t.key: t for t in tunes(g) if t is not None}
    took = sorted(k for k, t in records.items() if t.source == "table")
    refused = sorted(k for k, t in records.items() if t.source == "refused")
    unused = len([k for k in table if k not in records])
    notes = [f"tuning table: {len(took)} of {len(records)} tunable kernel problems take its forms"]
    if refused:
        notes.append(
            f"tuning table: {len(refused)} entries name a form that is not a candidate here, so the "
            f"default is taken (tune again with this version): {', '.join(refused[:3])}"
            + (" ..." if len(refused) > 3 else "")
        )
    if unused:
        notes.append(f"tuning table: {unused} entries are for problems this model does not have")
    return notes


def tune_model(
    model,
    output=None,
    *,
    runs: int = TUNE_RUNS,
    log: Callable[[str], None] | None = None,
    **options,
):
    """Compile ``model`` as ``compile_model`` does, each tunable kernel in the form measured
    fastest on this machine's WebGPU device (module docstring), over ``runs`` passes. The
    report's notes give the GPU time of the tuned kernels before and after."""
    from .artifact import check_output_dir
    from .driver import compile_model
    from .precision import check_precisions
    from .target import get_target

    if isinstance(model, Graph):
        raise CompileError(
            "tuning compiles the model once per candidate form; a Graph compiles once (passes change it in place)",
            hint="pass the ONNX model or an IR file",
        )
    if options.get("tuning"):
        raise CompileError(
            "--tune measures the kernels' forms and --tuning takes them from a table: give one"
        )
    options.pop("tuning", None)
    on_stage = options.pop("on_stage", None)
    target = get_target(options.pop("target", None))
    if output is not None:
        check_output_dir(output, options.get("force", False))  # before the work, not after it
    say = log or (lambda _line: None)
    t0 = time.perf_counter()
    # key -> form (JSON text) -> the sum over its dispatches of each one's least GPU seconds
    measured: dict[str, dict[str, float]] = {}
    defaults: dict[str, str] = {}
    failed: list[str] = []
    precision = options.pop("precision", None)
    for p in check_precisions(precision) or [None]:
        with tempfile.TemporaryDirectory(prefix="onnx2wgsl-tune-") as tmp:
            # one artifact per round, then ``runs`` passes over them all (so that a slow spell
            # of the machine falls on every form alike), each dispatch's least time kept
            rounds: list[tuple[Path, list[Tune | None]]] = []
            while not rounds or len(rounds) < max((t.candidates for t in rounds[0][1] if t), default=0):
                where = Path(tmp) / f"round{len(rounds)}"
                res = compile_model(
                    model, where, target=replace(target, explore=len(rounds)), precision=p, **options
                )
                rounds.append((where, tunes(res.graph)))
            defaults.update({t.key: t.choice for t in rounds[0][1] if t is not None})
            best: dict[int, dict[int, float]] = {}  # round -> dispatch -> least seconds
            device = None
            for n in range(max(1, runs) if len(rounds) > 1 else 0):
                for r, (where, _records) in enumerate(rounds):
                    if r in best and best[r] is None:
                        continue  # refused by the device
                    try:
                        times, device = _measure(where, device)
                    except DeviceError as e:  # a candidate form this device refuses: its round is skipped
                        if "did not load" not in str(e):
                            raise
                        failed.append(f"round {r} ({first_line(e, 200)})")
                        best[r], device = None, None
                        continue
                    got = best.setdefault(r, {})
                    for i, sec in times.items():
                        got[i] = min(got.get(i, sec), sec)
                say(
                    f"tune: pass {n + 1} of {runs} over {len(rounds)} rounds ({time.perf_counter() - t0:.0f} s)"
                )
            for r, (_where, records) in enumerate(rounds):
                for i, t in enumerate(records):
                    if t is not None and t.source == "explore" and best.get(r) and i in best[r]:
                        forms = measured.setdefault(t.key, {})
                        forms[t.choice] = forms.get(t.choice, 0.0) + best[r][i]
    table = {key: json.loads(_pick(forms, defaults.get(key))) for key, forms in measured.items()}
    for key, forms in sorted(measured.items()):
        ranked = sorted(forms.items(), key=lambda kv: (kv[1], kv[0]))
        say(
            f"tune: {key}: "
            + ", ".join(
                f"{f} {t * 1e3:.2f} ms" + (" (default)" if f == defaults.get(key) else "") for f, t in ranked
            )
        )
    result = compile_model(
        model, output, target=replace(target, tuning=table), precision=precision, on_stage=on_stage, **options
    )
    chosen = {k: Tune.text(v) for k, v in table.items()}
    before = sum(forms.get(defaults.get(k, ""), 0.0) for k, forms in measured.items())
    after = sum(forms[chosen[k]] for k, forms in measured.items())
    changed = sum(chosen[k] != defaults.get(k) for k in table)
    notes = [
        f"--tune: {sum(map(len, measured.values()))} forms of {len(measured)} kernel problems measured "
        f"({runs} passes, {time.perf_counter() - t0:.0f} s); {changed} take a form other than the default "
        f"(one must be {TUNE_MARGIN:.0%} faster); their GPU time {before * 1e3:.2f} -> {after * 1e3:.2f} ms "
        "on this device"
        if measured
        else "--tune: this model has no tunable kernel"
    ]
    if failed:
        notes.append("--tune: rounds that did not run on this device: " + "; ".join(failed))
    result.report.notes += notes
    return result


def _pick(forms: Mapping[str, float], default: str | None) -> str:
    """The fastest form; the default unless that one is TUNE_MARGIN faster (timing noise alone
    should not change a kernel)."""
    fastest = min(sorted(forms), key=forms.__getitem__)
    if default in forms and forms[fastest] > forms[default] * (1 - TUNE_MARGIN):
        return default
    return fastest


def _measure(path: Path, device) -> tuple[dict[int, float], object]:
    """Each dispatch's GPU time (seconds) in a profiled run of the artifact at ``path`` on
    random inputs (symbols at their bounds), after one run that is not timed, and the device
    it ran on."""
    from onnx2wgsl.runtime.session import InferenceSession

    from .cli import sample_feeds

    sess = InferenceSession(path, device=device, profile=True)
    try:
        feeds = sample_feeds(sess, np.random.default_rng(0))
        sess.run(None, feeds)  # (the driver compiles each pipeline at its first dispatch)
        return dict(sess.run_profiled(None, feeds)[1]), sess.device
    finally:
        sess.release()

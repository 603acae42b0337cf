"""The ``onnx2wgsl`` command line: compile, run, bench, generate, inspect, ops."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from onnx2wgsl import __version__
from onnx2wgsl.errors import Onnx2WgslError, first_line

from .host_eval import FOLD_LIMIT


class UsageError(Onnx2WgslError):
    pass


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value:
            raise UsageError(f"{what} {item!r} must look like NAME=VALUE")
        out[name] = value
    return out


def _bytes(text: str) -> int:
    """A byte count for argparse: 1048576, 512M, 2G."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count (e.g. 1048576, 512M, 2G)")
    return int(digits) * scale


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"shape {text!r} must look like 1x3x224x224") from None
    if any(d < 0 for d in dims):
        raise UsageError(f"shape {text!r} has a negative dim")
    return dims


def _progress(stage: str, _graph) -> None:
    print(f"  .. {stage}", file=sys.stderr, flush=True)


def _shapes_and_dims(args: argparse.Namespace) -> tuple[dict, dict]:
    shapes = {k: _shape(v) for k, v in _pairs(args.shape, "--shape").items()}
    dims = {}
    for k, v in _pairs(args.dim, "--dim").items():
        lo, sep, hi = v.partition("..")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise UsageError(f"--dim {k}={v}: the value must be a non-negative integer N or a range LO..HI")
        if sep and int(lo) > int(hi):
            raise UsageError(f"--dim {k}={v}: the range is empty (LO > HI)")
        dims[k] = (int(lo), int(hi)) if sep else int(v)
    return shapes, dims


def cmd_compile(args: argparse.Namespace) -> int:
    from .driver import IRDumper, compile_model

    shapes, dims = _shapes_and_dims(args)
    constants = {k: _load_array(v) for k, v in _pairs(args.const, "--const").items()}
    generation = None
    if args.max_length is not None:
        from .generation import Generation

        generation = Generation(
            args.max_length, _pairs(args.state, "--state"), args.sample_candidates, args.max_prompt
        )
    elif args.state or args.sample_candidates or args.max_prompt:
        raise UsageError(
            "--state, --max-prompt and --sample-candidates apply to a compile for generation: "
            "give --max-length N too"
        )
    hooks = [_progress] if args.verbose else []
    if args.dump_ir:
        hooks.append(IRDumper(args.dump_ir, args.opt_level, force=args.force))
    if args.tune and args.tuning:
        raise UsageError("--tune measures the kernels' forms and --tuning takes them from a table: give one")
    if args.tune_runs is not None and not args.tune:
        raise UsageError("--tune-runs applies to --tune")
    if args.tune_runs is not None and args.tune_runs < 1:
        raise UsageError("--tune-runs takes a count of 1 or more")
    options = dict(
        shapes=shapes,
        dims=dims,
        constants=constants,
        target=args.limits,
        opt_level=args.opt_level,
        verify_ir=args.verify_ir,
        on_stage=(lambda stage, g: [h(stage, g) for h in hooks]) if hooks else None,
        force=args.force,
        fold_limit=args.fold_limit,
        freeze_initializers=args.freeze_initializers,
        generation=generation,
        precision=args.precision,
        subgroups=args.subgroups,
    )
    if args.tune:
        from .tune import TUNE_RUNS, tune_model

        log = (lambda line: print(f"  .. {line}", file=sys.stderr, flush=True)) if args.verbose else None
        res = tune_model(args.model, args.output, runs=args.tune_runs or TUNE_RUNS, log=log, **options)
    else:
        res = compile_model(args.model, args.output, tuning=args.tuning, **options)
    if args.target == "js":
        from .package_js import write_js_package

        write_js_package(args.output, args.model, name=args.package_name)
    if args.json:
        print(json.dumps(res.report.as_dict(), indent=1))
    else:
        print(res.report.summary())
        if args.target == "js":
            print(f"  js package: {args.output} (npm-installable ES module; serve it as static files)")
    return 0


def _load_array(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"input file not found: {path!r}")
    try:
        if p.suffix == ".pb":
            import onnx

            from .validate import tensor_array

            return tensor_array(onnx.load_tensor(str(p)), "tensor")
        return np.load(p, allow_pickle=False)
    except Onnx2WgslError as e:
        raise UsageError(f"{path!r}: {e}") from e
    except Exception as e:  # numpy and protobuf raise many types for a damaged file
        raise UsageError(
            f"{path!r} is not a readable .npy or TensorProto .pb file ({type(e).__name__}: {first_line(e, 200)})"
        ) from e


def random_input(dtype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dt)
    return rng.random(shape, dtype=np.float32).astype(dt)


def _feeds(sess, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The inputs of a run: --input files, else random, at --dim values of the symbols (each
    at its bound when not given)."""
    given = {k: _load_array(v) for k, v in _pairs(args.input, "--input").items()}
    values = {k: int(v) for k, v in _pairs(getattr(args, "dim", None), "--dim").items()}
    unknown = set(values) - set(sess.symbols)
    if unknown:
        raise UsageError(f"--dim names {sorted(unknown)}, not the artifact's symbols {list(sess.symbols)}")
    return sample_feeds(sess, np.random.default_rng(args.seed), given, values)


def sample_feeds(sess, rng: np.random.Generator, given: dict | None = None, values: dict | None = None):
    """A run's inputs: those ``given``, the others random, at the symbols' ``values`` (each at
    its bound when not given)."""
    given, values = dict(given or {}), values or {}
    env = {k: values.get(k, hi) for k, (_, hi) in sess.symbols.items()}
    feeds = {}
    for io in sess.get_inputs() + sess.get_overridable_initializers():
        if io.name in given:
            feeds[io.name] = given.pop(io.name)
        elif not io.optional:  # an optional input not given keeps its default
            shape = [
                d if isinstance(d, int) else _symbolic_dim(sess, io, i, env) for i, d in enumerate(io.shape)
            ]
            feeds[io.name] = random_input(io.dtype, shape, rng)
    if given:
        names = [io.name for io in sess.get_inputs() + sess.get_overridable_initializers()]
        raise UsageError(f"--input names {sorted(given)} are not model inputs; the inputs are {names}")
    return feeds


def _symbolic_dim(sess, io, i: int, env: dict[str, int]) -> int:
    from onnx2wgsl.runtime.manifest import evaluate

    spec = next(x for x in sess.manifest["inputs"] if x["name"] == io.name)
    return evaluate(spec["shape"][i], env)


def cmd_bench(args: argparse.Namespace) -> int:
    """Load an artifact, run it --warmup times, then time --iters runs (wall clock); with
    --profile, each dispatch's GPU time (timestamp queries), heaviest kernels first."""
    import onnx2wgsl

    t0 = time.perf_counter()
    sess = onnx2wgsl.load(args.artifact, profile=args.profile)
    t_load = time.perf_counter() - t0
    feeds = _feeds(sess, args)
    t0 = time.perf_counter()
    sess.run(None, feeds)
    t_first = time.perf_counter() - t0
    for _ in range(max(0, args.warmup - 1)):
        sess.run(None, feeds)
    walls, gpu = [], []
    for _ in range(max(1, args.iters)):
        t0 = time.perf_counter()
        if args.profile:
            gpu.append(sess.run_profiled(None, feeds)[1])
        else:
            sess.run(None, feeds)
        walls.append(time.perf_counter() - t0)
    at = ", ".join(f"{k}={v.shape}" for k, v in feeds.items())
    print(f"{args.artifact} on {_device_name(sess)}  ({at})")
    print(f"  load            {t_load * 1000:10.1f} ms  (weights, shaders, pipelines, bind groups)")
    print(f"  first run       {t_first * 1000:10.1f} ms")
    w = np.array(walls) * 1000
    print(f"  warm runs ({len(w)})  median {np.median(w):.2f} ms, min {w.min():.2f}, max {w.max():.2f}"
          + ("  (each dispatch in its own timed pass)" if args.profile else ""))  # fmt: skip
    # the symbols' values of these feeds (the flops of symbolic dispatches are expressions)
    env = sess.symbol_values(feeds)
    roof = None
    if args.roofline:
        from onnx2wgsl.runtime.manifest import evaluate

        from .roofline import measure

        roof = measure(sess.device if args.profile else None)
        print(f"  {roof.summary()}")
        work = sum(evaluate(d.get("flops", 0), env) for d in sess.manifest["dispatches"])
        print(f"  the median run does {work / 1e9:.3f} GFLOP: {work / (np.median(w) / 1000) / 1e9:.2f} GFLOP/s, "
              f"{work / (np.median(w) / 1000) / 1e9 / roof.gflops:.1%} of the peak")  # fmt: skip
    if args.profile:
        print(profile_table(sess.manifest, gpu, float(np.median(w)) / 1000, args.top, env, roof))
    return 0


def profile_table(
    m: dict,
    runs: list[list[tuple[int, float]]],
    wall: float,
    top: int | None = None,
    env: dict | None = None,
    roof=None,
) -> str:
    """Per-kernel GPU times (median over runs), heaviest first: share of the total, the
    operations it does (the compiler's estimate) and GFLOP/s, the bytes its bindings span (at
    the bounds) and GB/s over them, and the ONNX node it runs."""
    from onnx2wgsl.runtime.manifest import evaluate

    per: dict[int, list[float]] = {}
    for run in runs:
        for k, t in run:
            per.setdefault(k, []).append(t)
    rows = sorted(((float(np.median(ts)), k) for k, ts in per.items()), reverse=True)
    total = sum(t for t, _ in rows)
    lines = [
        f"  {'#':>4} {'GPU ms':>9} {'share':>6} {'MFLOP':>9} {'GFLOP/s':>8} {'MB':>8} {'GB/s':>7}"
        + (f" {'roof':>6}" if roof else "")
        + f"  {'shader':24s} node"
    ]
    work = 0
    for t, k in rows[:top] if top else rows:
        d = m["dispatches"][k]
        f = evaluate(d.get("flops", 0), env or {})
        work += f
        nbytes = sum(b["size"] for b in d["bindings"])
        lines.append(
            f"  {k:4d} {t * 1000:9.3f} {t / total if total else 0:6.1%} {f / 1e6:9.2f} {f / t / 1e9 if t else 0:8.2f} "
            f"{nbytes / 1e6:8.2f} {nbytes / t / 1e9 if t else 0:7.2f}"
            # the fraction of the roofline: the least time the device needs for its work and bytes
            + (f" {max(f / roof.gflops, nbytes / roof.gbps) / 1e9 / t if t else 0:6.1%}" if roof else "")
            + f"  {m['shaders'][d['shader']]['name']:24s} "
            f"{d.get('label', '')}"
        )
    lines.append(
        f"  GPU total {total * 1000:.2f} ms over {len(rows)} dispatches = {total / wall if wall else 0:.0%} "
        f"of the median run's wall time; {work / total / 1e9 if total else 0:.2f} GFLOP/s over the kernels shown"
    )
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    import onnx2wgsl

    t0 = time.perf_counter()
    sess = onnx2wgsl.load(args.artifact)
    t_load = time.perf_counter() - t0
    feeds = _feeds(sess, args)
    times = []
    outputs = None
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        outputs = sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    print(f"loaded {args.artifact} in {t_load:.2f}s on {_device_name(sess)}")
    for io, y in zip(sess.get_outputs(), outputs):
        digest = ""
        if y.size:
            flat = y.reshape(-1).astype(np.float64)
            digest = f"min {flat.min():.6g} max {flat.max():.6g} mean {flat.mean():.6g} first {np.array2string(y.reshape(-1)[:4], precision=5)}"
        print(f"  {io.name}: {y.dtype}{list(y.shape)}  {digest}")
    first = times[0]
    rest = sorted(times[1:])
    line = f"run: first {first * 1000:.1f} ms"
    if rest:
        line += f", median of next {len(rest)} {rest[len(rest) // 2] * 1000:.1f} ms"
    print(line)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for i, y in enumerate(outputs):
            np.save(out / f"output_{i}.npy", y)
    status = 0
    for name, path in _pairs(args.expect, "--expect").items():
        names = [io.name for io in sess.get_outputs()]
        if name not in names:
            raise UsageError(f"--expect names {name!r}, not an output; the outputs are {names}")
        ref = _load_array(path)
        y = outputs[names.index(name)]
        ok = y.shape == ref.shape and np.allclose(y, ref, rtol=args.rtol, atol=args.atol)
        err = float(np.abs(y.astype(np.float64) - ref).max()) if y.shape == ref.shape and y.size else 0.0
        print(
            f"  {name} vs {path}: {'match' if ok else 'MISMATCH'} (max abs diff {err:.3g}, rtol {args.rtol}, atol {args.atol})"
        )
        status |= 0 if ok else 1
    return status


def cmd_generate(args: argparse.Namespace) -> int:
    """Greedy generation from an artifact compiled with --max-length: tokens (or text, with a
    tokenizer) printed as they come, then the prefill time, time to first token and tokens/s."""
    import onnx2wgsl

    if (args.prompt_ids is None) == (args.prompt is None):
        raise UsageError("give the prompt as --prompt-ids 1,2,3 or as --prompt TEXT with --tokenizer")
    tokenizer = None
    if args.prompt is not None or args.tokenizer:
        if not args.tokenizer:
            raise UsageError("--prompt TEXT needs --tokenizer tokenizer.json (or give --prompt-ids)")
        from onnx2wgsl.runtime.generate import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    if args.prompt is not None:
        ids = tokenizer.encode(args.prompt).ids
    else:
        try:
            ids = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
        except ValueError:
            raise UsageError(f"--prompt-ids {args.prompt_ids!r} must be token ids like 1,2,3") from None
    if not ids:
        raise UsageError("the prompt has no tokens")
    t0 = time.perf_counter()
    gen = onnx2wgsl.Generator(args.artifact)
    t_load = time.perf_counter() - t0
    out: list[int] = []
    shown = ""
    t0 = time.perf_counter()
    t_first = 0.0
    sampling = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
    }
    tokens = gen.generate(ids, max_new_tokens=args.max_new_tokens, eos_token_id=args.eos, **sampling)
    for token in tokens:
        if not out:
            t_first = time.perf_counter() - t0
        out.append(token)
        if tokenizer is None:
            print(token, end=" ", flush=True)
        else:  # decoded as a whole: a token may complete a character the one before began
            text = tokenizer.decode(out)
            print(text[len(shown) :] if text.startswith(shown) else text, end="", flush=True)
            shown = text
    total = time.perf_counter() - t0
    print()
    decode = total - t_first
    rate = f"{(len(out) - 1) / decode:.1f} tokens/s" if len(out) > 1 and decode > 0 else "n/a"
    print(
        f"loaded {args.artifact} in {t_load:.2f}s on {_device_name(gen.session)}\n"
        f"  prefill {len(ids)} tokens in {t_first * 1000:.1f} ms (time to first token)\n"
        f"  decode {len(out) - 1} tokens in {decode * 1000:.1f} ms: {rate}",
        file=sys.stderr,
    )
    return 0


def _device_name(sess) -> str:
    try:
        info = sess.device.adapter.info
        return f"{info['device']} ({info['backend_type']})"
    except Exception:
        return "WebGPU device"


def cmd_inspect(args: argparse.Namespace) -> int:
    from onnx2wgsl.ir import WeightBlob, load_ir, print_ir, save_ir

    from .driver import infer_stage, run_to_stage, stage_names

    src = Path(args.source)
    names = stage_names(args.opt_level)
    if args.stage is not None and args.stage not in names:
        raise UsageError(f"--stage {args.stage!r} is not a stage; the stages are {', '.join(names)}")
    if src.is_dir():
        return _inspect_dir(src, args, names)
    if not src.is_file():
        raise UsageError(f"{args.source!r} is not a file or directory")
    shapes, dims = _shapes_and_dims(args)
    if src.suffix == ".ir":
        mod = load_ir(src)
        given = mod.stage or infer_stage(mod.graph)
        stage = args.stage or given
        if stage == given and not args.output:
            sys.stdout.write(src.read_text(encoding="utf-8"))  # as it is; its weights lie beside it
            return 0
        model = mod.graph
    else:
        model, given, stage = str(src), None, args.stage or "import"
    g = run_to_stage(
        model, stage, shapes=shapes, dims=dims, target=args.limits, opt_level=args.opt_level, stage=given
    )
    if args.output:
        save_ir(g, args.output, stage=stage)
        print(f"wrote {args.output} (the IR after {stage})", file=sys.stderr)
    else:
        sys.stdout.write("// @weights[a:b]: offsets only; `inspect -o FILE.ir` writes the weights too\n")
        sys.stdout.write(print_ir(g, stage=stage, weights=WeightBlob(keep=False)))
    return 0


def _inspect_dir(src: Path, args: argparse.Namespace, names: list[str]) -> int:
    """A dump directory (NN-<stage>.ir files) or an artifact directory (manifest.json)."""
    dumps = sorted(src.glob("[0-9][0-9]-*.ir"))
    if dumps:
        by_stage = {p.stem[3:]: p for p in dumps}
        if args.stage is None:
            from onnx2wgsl.ir import load_ir

            print(f"IR dump in {src}: pick one with --stage NAME")
            for stage, p in by_stage.items():
                g = load_ir(p).graph
                kernels = sum(op.kind == "kernel" for op in g.ops)
                print(f"  {stage:16s} {p.name:24s} {len(g.ops):6d} ops {kernels:6d} kernels")
            return 0
        if args.stage not in by_stage:
            raise UsageError(f"{src} has no IR after stage {args.stage!r}; it has {', '.join(by_stage)}")
        sys.stdout.write(by_stage[args.stage].read_text(encoding="utf-8"))
        return 0
    if (src / "manifest.json").is_file():
        if args.stage not in (None, "plan"):
            raise UsageError(
                "an artifact holds the planned schedule only; --stage applies to models and IR files"
            )
        from onnx2wgsl.runtime.manifest import is_index, read, read_any

        m = read_any(src)
        if not is_index(m):
            print(schedule_summary(m))
            return 0
        for v in m["variants"]:  # a compile for several precisions: each variant's schedule
            print(f"precision variant {v['precision']} ({src / v['path']}), needs features {v['features']}")
            print(schedule_summary(read(src / v["path"])))
        return 0
    raise UsageError(f"{str(src)!r} holds neither IR files (NN-<stage>.ir) nor an artifact (manifest.json)")


def schedule_summary(m: dict) -> str:
    """A planned artifact, readable: buffers, inputs and outputs, then one line per dispatch
    with its bindings (``ro`` read-only weights, ``rw`` read-write storage)."""
    from onnx2wgsl.runtime.manifest import show_dim, show_shape

    lines = [f"artifact {m['name']!r}  (target {m['target']['name']}, {m.get('producer', '?')})"]
    if m.get("symbols"):
        lines.append("symbols  " + ", ".join(f"{s['name']}={s['min']}..{s['max']}" for s in m["symbols"]))
    lines.append("buffers")
    for b in m["buffers"]:
        lines.append(f"  {b['name']:12s} {b['kind']:8s} {b['size']:>14,} bytes")
    for key in ("inputs", "outputs"):
        lines.append(key)
        for io in m[key]:
            lines.append(
                f"  {io['name']!r}: {io['dtype']}{show_shape(io['shape'])} at {io['buffer']}[{io['offset']}:{io['offset'] + io['size']}]"
                + (" (optional: has a default)" if "default" in io else "")
            )
    lines.append(f"dispatches ({len(m['dispatches'])})")
    for i, d in enumerate(m["dispatches"]):
        sh = m["shaders"][d["shader"]]
        binds = ", ".join(
            f"{ {'storage': 'rw', 'uniform': 'dims'}.get(t, 'ro') } {b['buffer']}[{b['offset']}:{b['offset'] + b['size']}]"
            for b, t in zip(d["bindings"], sh["bindings"])
        )
        grid = (
            " x ".join(show_dim(n) for n in d["grid"]) if m.get("symbols") else "x".join(map(str, d["grid"]))
        )
        lines.append(f"  {i:4d} {sh['name']:24s} grid {grid:12s} {d.get('label', ''):28s} {binds}")
    return "\n".join(lines)


def cmd_ops(args: argparse.Namespace) -> int:
    from .lowering import supported_ops

    ops = supported_ops()
    for name, how in ops.items():
        print(f"{name:24s} {how}")
    print(f"\n{len(ops)} ops; any op whose inputs are all constants also folds at compile time")
    return 0


def cmd_limits(args: argparse.Namespace) -> int:
    from .target import device_target, target_json

    text = target_json(device_target())
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onnx2wgsl", description="Compile ONNX models to WGSL and run them on WebGPU."
    )
    p.add_argument("--version", action="version", version=f"onnx2wgsl {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    from .driver import stage_names

    stages = ", ".join(stage_names(2))
    c = sub.add_parser("compile", help="compile an ONNX model (or IR text) into an artifact directory")
    c.add_argument(
        "model", help="the .onnx file, or a FILE.ir (compiled on from the stage it was dumped after)"
    )
    c.add_argument(
        "-o",
        "--output",
        required=True,
        help="artifact directory to write: new, empty or holding an earlier artifact (see --force)",
    )
    c.add_argument(
        "--force",
        action="store_true",
        help="write into -o (and --dump-ir) DIR even when it holds other files; they are kept",
    )
    c.add_argument(
        "--shape", action="append", metavar="NAME=AxBxC", help="fix an input's whole shape (repeatable)"
    )
    c.add_argument(
        "--dim",
        action="append",
        metavar="SYMBOL=N|LO..HI",
        help="bind a symbolic dim to N, or keep it symbolic over LO..HI (repeatable)",
    )
    c.add_argument(
        "--const",
        action="append",
        metavar="NAME=FILE",
        help="freeze an input to the value in a .npy or TensorProto .pb file; it folds into the "
        "model and is no longer an input (repeatable)",
    )
    c.add_argument(
        "--freeze-initializers",
        action="store_true",
        help="compile every input that has an initializer of its name (IR version >= 4, which "
        "makes the initializer only a default) in as that constant: faster, but no longer "
        "feedable; without it such inputs stay inputs that default to their initializer",
    )
    c.add_argument(
        "--limits",
        default=None,
        metavar="NAME|FILE.json",
        help="limits profile to compile against (default: webgpu, the spec's default limits, for a GPU; "
        "cpu: the same for a CPU adapter such as lavapipe or SwiftShader, whose kernels split no reductions "
        "across lanes; device: this machine's adapter)",
    )
    c.add_argument(
        "-O",
        dest="opt_level",
        type=int,
        default=2,
        choices=range(4),
        metavar="LEVEL",
        help="optimization level 0-3 (default 2)",
    )
    c.add_argument(
        "--precision",
        default=None,
        metavar="fp32|fp16|fp16,fp32",
        help="fp16: store activations and weights as f16 where every kernel touching them converts "
        "(computing in f32; the range guard keeps overflow-prone results f32); the artifact then needs "
        "the device feature shader-f16 (default: fp16 for a float16 model, else fp32). Several, in order of preference (fp16,fp32): "
        "one artifact each in DIR/<precision> under an index manifest; the runtimes load the first "
        "the device runs",
    )
    c.add_argument(
        "--subgroups",
        action="store_true",
        help="let kernels use subgroup operations (the matmul and convolutions share loads, row "
        "reductions fold in a subgroup); the artifact then needs the device feature subgroups "
        "(lavapipe and most GPUs have it)",
    )
    c.add_argument(
        "--tune",
        action="store_true",
        help="measure the forms each tunable kernel may take (matmul and conv tiles) on this "
        "machine's WebGPU device and compile the fastest; the manifest records them, and "
        "--tuning DIR builds the same artifact again without a device",
    )
    c.add_argument(
        "--tune-runs",
        type=int,
        default=None,
        metavar="N",
        help="with --tune, passes over the candidates, a profiled run of each (default 3; each "
        "dispatch's least time counts)",
    )
    c.add_argument(
        "--tuning",
        metavar="DIR|FILE.json",
        help="take the kernels' forms from a tuning table: an artifact compiled with --tune (its "
        "directory or manifest.json) or a JSON file of {key: form}",
    )
    c.add_argument(
        "--target",
        choices=("python", "js"),
        default="python",
        help="python: the artifact only (default); js: also the browser runtime, types, package.json "
        "and model.onnx, making DIR an npm package",
    )
    c.add_argument(
        "--package-name",
        metavar="NAME",
        help="npm package name for --target js (default: from the model file)",
    )
    c.add_argument(
        "--fold-limit",
        type=_bytes,
        default=FOLD_LIMIT,
        metavar="BYTES",
        help=f"the most bytes one tensor folded at compile time may take (default {FOLD_LIMIT:,}; "
        "suffixes K, M, G)",
    )
    c.add_argument(
        "--max-length",
        type=int,
        metavar="N",
        help="compile a decoder with a KV cache for generation (`onnx2wgsl generate`): prompt and "
        "later tokens up to N in all, the greedy choice as output next_token",
    )
    c.add_argument(
        "--state",
        action="append",
        metavar="PAST=PRESENT",
        help="with --max-length, a past input fed by a present output of the step before "
        "(default: recognised by name, past_key_values.N.key -> present.N.key ...)",
    )
    c.add_argument(
        "--max-prompt",
        type=int,
        metavar="N",
        help="with --max-length, the most tokens one step takes (default the max length); a longer "
        "prompt runs in pieces, and memory is planned for N new tokens at once",
    )
    c.add_argument(
        "--sample-candidates",
        type=int,
        default=0,
        metavar="K",
        help="with --max-length, also sample on the GPU (temperature, top-k, top-p, repetition "
        "penalty) among the K best tokens of each step",
    )
    c.add_argument("--verify-ir", action="store_true", help="check the IR after every stage")
    c.add_argument(
        "--dump-ir",
        metavar="DIR",
        help=f"write the IR after every stage as DIR/NN-<stage>.ir (+ DIR/weights.bin); stages: {stages}",
    )
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("-v", "--verbose", action="store_true", help="show each stage as it finishes")
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    c.set_defaults(fn=cmd_compile)

    r = sub.add_parser("run", help="run a compiled artifact on the WebGPU device")
    r.add_argument("artifact", help="artifact directory made by `onnx2wgsl compile`")
    r.add_argument(
        "--input",
        action="append",
        metavar="NAME=FILE",
        help="input from a .npy or TensorProto .pb file (others are random, or their default)",
    )
    r.add_argument(
        "--expect",
        action="append",
        metavar="NAME=FILE",
        help="compare an output with a reference .npy/.pb; exit 1 on mismatch",
    )
    r.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance for --expect (default 1e-3)")
    r.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance for --expect (default 1e-4)")
    r.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run N times and report the median after the first"
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    r.add_argument("--output-dir", metavar="DIR", help="save outputs as DIR/output_<i>.npy")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    r.set_defaults(fn=cmd_run)

    b = sub.add_parser(
        "bench", help="time a compiled artifact's runs; --profile times each kernel on the GPU"
    )
    b.add_argument("artifact", help="artifact directory made by `onnx2wgsl compile`")
    b.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed runs first (default 3)")
    b.add_argument("--iters", type=int, default=10, metavar="N", help="timed runs (default 10)")
    b.add_argument("--profile", action="store_true", help="GPU time of every dispatch (timestamp-query)")
    b.add_argument("--top", type=int, metavar="N", help="with --profile, show the N heaviest dispatches")
    b.add_argument(
        "--roofline",
        action="store_true",
        help="measure the adapter's peak f32 multiply-add rate and copy bandwidth, and report against them",
    )
    b.add_argument("--dim", action="append", metavar="NAME=N", help="a symbol's value (default: its bound)")
    b.add_argument("--input", action="append", metavar="NAME=FILE", help="input from a .npy or .pb file")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    b.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    b.set_defaults(fn=cmd_bench)

    gen = sub.add_parser(
        "generate", help="generate tokens greedily from a decoder compiled with --max-length"
    )
    gen.add_argument("artifact", help="artifact directory made by `onnx2wgsl compile ... --max-length N`")
    gen.add_argument("--prompt-ids", metavar="1,2,3", help="the prompt as token ids")
    gen.add_argument("--prompt", metavar="TEXT", help="the prompt as text (needs --tokenizer)")
    gen.add_argument(
        "--tokenizer", metavar="tokenizer.json", help="a Hugging Face tokenizer file: text in and out"
    )
    gen.add_argument(
        "--max-new-tokens", type=int, default=64, metavar="N", help="tokens to generate (default 64)"
    )
    gen.add_argument("--eos", type=int, action="append", metavar="ID", help="stop after this token id")
    gen.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        help="sample at this temperature (needs --sample-candidates)",
    )
    gen.add_argument("--top-k", type=int, metavar="K", help="sample among the K best tokens")
    gen.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help="sample among the fewest best tokens holding this probability",
    )
    gen.add_argument(
        "--repetition-penalty", type=float, metavar="R", help="divide the logits of tokens seen by this"
    )
    gen.add_argument("--seed", type=int, metavar="N", help="seed of the sampling draws")
    gen.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    gen.set_defaults(fn=cmd_generate)

    i = sub.add_parser(
        "inspect",
        help="print the IR of a model at any stage, an IR file, an IR dump or an artifact's schedule",
        description="Print IR text. MODEL.onnx: the IR after --stage (default import). FILE.ir: the "
        "file, or the IR after a later --stage. DIR of an IR dump (compile --dump-ir): a list of its "
        "stages, or the one --stage names. Artifact DIR (manifest.json): its planned schedule "
        "(buffers, inputs, outputs, one line per dispatch).",
    )
    i.add_argument("source", metavar="MODEL.onnx|FILE.ir|DIR")
    i.add_argument("--stage", metavar="NAME", help=f"the stage whose IR to print: {stages}")
    i.add_argument("-o", "--output", metavar="FILE.ir", help="write the IR (and FILE.weights.bin) instead")
    i.add_argument("--shape", action="append", metavar="NAME=AxBxC", help="as for compile")
    i.add_argument("--dim", action="append", metavar="SYMBOL=N", help="as for compile")
    i.add_argument("--limits", default=None, metavar="NAME|FILE.json", help="as for compile")
    i.add_argument(
        "-O", dest="opt_level", type=int, default=2, choices=range(4), metavar="LEVEL", help="as for compile"
    )
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    i.set_defaults(fn=cmd_inspect)

    o = sub.add_parser("ops", help="list the ONNX ops that compile to WebGPU")
    o.set_defaults(fn=cmd_ops)

    lim = sub.add_parser("limits", help="print this machine's WebGPU limits as a target JSON for --limits")
    lim.add_argument("-o", "--output", metavar="FILE.json", help="write to a file instead of stdout")
    lim.set_defaults(fn=cmd_limits)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("ONNX2WGSL_DEBUG") == "1"
    try:
        return args.fn(args)
    except Onnx2WgslError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`onnx2wgsl inspect ... | head`): not an error; silence the flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if debug:
            raise
        print(
            f"internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

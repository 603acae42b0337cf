"""onnx2wgsl side by side with onnxruntime's WebGPU provider on the same adapter, and with
onnxruntime's CPU provider, and write benchmarks/RESULTS.md.

    bash benchmarks/setup.sh                     # Mesa 25 lavapipe + the peer's venv, in .cache/bench/
    .venv/bin/python benchmarks/run.py              # first runs cache off and warm, warm runs, the browser pair

Each measurement is a fresh process (benchmarks/worker.py) and the engines take turns model
by model. onnx2wgsl's compile is timed in a process of its own; its first run is then load +
first inference like the others'. All GPU engines see one Vulkan ICD, Mesa 25's lavapipe
(VK_ICD_FILENAMES), unless --adapter mesa22 (the system's lavapipe; ort-webgpu is then
skipped: Dawn refuses Mesa 22) or --adapter system (the system's Vulkan driver as it is, a real
GPU's; --peer-python names the peer's Python where .cache/bench has none). Outputs are compared with ort-cpu's (or the first engine's):
a run that disagrees is marked MISMATCH and the command exits 1.

The browser pair runs in the same command (benchmarks/browser.py): onnx2wgsl's JS package and
onnxruntime-web's WebGPU backend in headless Chromium, for --browser-models (a subset by
default: the browser's software adapter is slow; none with --quick unless named). It needs
`bash scripts/setup-browser.sh`; without it the run goes on and RESULTS.md says why.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / ".cache" / "bench"
MESA25 = CACHE / "mesa25"
PEER_PY = CACHE / "ort-webgpu" / "bin" / "python"
WORKER = HERE / "worker.py"
sys.path.insert(0, str(ROOT / "tests"))
from light_models import LIGHT_MODELS, randomized  # noqa: E402  (the tests' model helpers)

TRANSFORMERS = ROOT / "tests" / "models"
# onnx2wgsl-fp16: the same compile at --precision fp16 (f16 storage, f32 arithmetic)
# numpy: numpy's sgemm (its BLAS) on the matmul microbenchmark only, what a CPU library reaches
ENGINES = ["onnx2wgsl", "onnx2wgsl-fp16", "ort-webgpu", "ort-cpu", "numpy"]
MATMUL_FLOP = 2 * 1024**3  # matmul1024's multiply-adds, two operations each
FP16_TOLERANCE = 1e-2  # of the reference's largest magnitude: f16 storage keeps ~3 digits
BROWSER_ENGINES = ["onnx2wgsl-js", "ort-web"]  # benchmarks/browser.py: headless Chromium
QUICK_MODEL = "squeezenet"
# the browser's adapter here (SwiftShader) is several times slower than lavapipe: a subset
BROWSER_MODELS = [
    "squeezenet",
    "inception_v1",
    "resnet50",
    "bert_tiny_dynamo",
    "whisper_encoder_tiny_torchscript",
]
TRANSFORMER_DIMS = {"batch": 1, "seq": 128}
# a model's own: the tiny Whisper decoder has 64 positions; frames are its encoder states
MODEL_DIMS = {"whisper_decoder_tiny_dynamo": {"seq": 64, "frames": 50}}
# models with a KV cache (optimum's and onnxruntime-genai's dim names) run one decode step: one
# new token after 127 cached ones
DECODE_DIMS = {
    "batch_size": 1, "sequence_length": 1, "past_sequence_length": 127, "total_sequence_length": 128,
}  # fmt: skip


# --- models -------------------------------------------------------------------------------------


def light_models() -> list[str]:
    return list(LIGHT_MODELS)


def transformer_models() -> list[str]:
    # (onnxruntime-genai's exports are left out: their head size is a symbolic dim and their
    # inputs f16 or a vocabulary of 128 tokens; tests/test_generate.py runs them)
    return sorted(p.stem for p in TRANSFORMERS.glob("*.onnx") if not p.stem.startswith("llama_genai"))


def all_models() -> list[str]:
    """Cheapest first, so that an interrupted run has covered the most models."""
    heavy = ["vgg19", "zfnet512", "bvlc_alexnet", "resnet50", "inception_v2", "densenet121"]
    light = sorted(light_models(), key=lambda m: (m in heavy, heavy[::-1].index(m) if m in heavy else 0, m))
    return transformer_models() + list(MICRO) + light


def _one_op(name: str, nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    """A microbenchmark graph: float inputs and outputs of fixed shapes."""
    info = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    g = helper.make_graph(nodes, name, [info(*i) for i in inputs], [info(*o) for o in outputs], list(inits))
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(g, opset_imports=opsets, ir_version=8)


def _const_matmul(name: str, m: int, k: int, n: int) -> onnx.ModelProto:
    """A [m, k] input times constant [k, n] weights (seeded, of unit-size products)."""
    b = (np.random.default_rng(0).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    return _one_op(
        name, [helper.make_node("MatMul", ["a", "b"], ["y"])],
        [("a", [m, k])], [("y", [m, n])], [numpy_helper.from_array(b, "b")],
    )  # fmt: skip


def _matmul() -> onnx.ModelProto:
    return _const_matmul("matmul1024", 1024, 1024, 1024)


def _gemv() -> onnx.ModelProto:
    """A decode step's linear layer of a 7B LLM: one token's row times 4096 x 4096 weights."""
    return _const_matmul("gemv4096", 1, 4096, 4096)


def _gemv_q4() -> onnx.ModelProto:
    """The same with 4-bit weights (MatMulNBits, blocks of 32 with a scale each), as LLMs ship."""
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (4096, 128, 16), dtype=np.uint8)  # [N, blocks, 32 values in 16 bytes]
    scales = rng.uniform(0.001, 0.01, (4096, 128)).astype(np.float32)
    node = helper.make_node(
        "MatMulNBits",
        ["a", "q", "scales"],
        ["y"],
        domain="com.microsoft",
        K=4096,
        N=4096,
        bits=4,
        block_size=32,
    )
    return _one_op(
        "gemv4096_q4", [node], [("a", [1, 4096])], [("y", [1, 4096])],
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(scales, "scales")],
    )  # fmt: skip


def _conv() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((256, 256, 3, 3)) / 48).astype(np.float32)
    b = (rng.standard_normal(256) * 0.1).astype(np.float32)
    return _one_op(
        "conv3x3_256", [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        [("x", [1, 256, 56, 56])], [("y", [1, 256, 56, 56])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip


def _layernorm() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    g, b = (rng.standard_normal(768).astype(np.float32) for _ in range(2))
    return _one_op(
        "layernorm512x768", [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)],
        [("x", [1, 512, 768])], [("y", [1, 512, 768])], [numpy_helper.from_array(g, "g"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip


def _softmax() -> onnx.ModelProto:
    return _one_op(
        "softmax12x128x128", [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        [("x", [12, 128, 128])], [("y", [12, 128, 128])],
    )  # fmt: skip


def _attention() -> onnx.ModelProto:
    """BERT-base's attention at sequence 128 as torch exports it (onnx2wgsl fuses it into one
    Attention kernel; onnxruntime's WebGPU provider runs the ops)."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["z"]),
        helper.make_node("Softmax", ["z"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    shape = [1, 12, 128, 64]
    return _one_op(
        "attention12x128x64", nodes, [("q", shape), ("k", shape), ("v", shape)], [("y", shape)],
        [numpy_helper.from_array(np.array(0.125, np.float32), "scale")],
    )  # fmt: skip


def _attention_decode() -> onnx.ModelProto:
    """A decode step's attention in a 7B LLM at 4096 tokens: one query row per head (32 heads
    of 128) over a cache of 4096 keys and values, held as constants so that the run's IO is
    the row alone (com.microsoft MultiHeadAttention, which onnxruntime's WebGPU provider runs)."""
    rng = np.random.default_rng(0)
    k, v = (rng.standard_normal((1, 4096, 32 * 128)).astype(np.float32) for _ in range(2))
    node = helper.make_node(
        "MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=32
    )
    return _one_op(
        "attn_decode4096", [node], [("q", [1, 1, 32 * 128])], [("y", [1, 1, 32 * 128])],
        [numpy_helper.from_array(k, "k"), numpy_helper.from_array(v, "v")],
    )  # fmt: skip


# the microbenchmarks beside the models: name -> its graph
MICRO = {
    "matmul1024": _matmul,
    "gemv4096": _gemv,
    "gemv4096_q4": _gemv_q4,
    "conv3x3_256": _conv,
    "layernorm512x768": _layernorm,
    "softmax12x128x128": _softmax,
    "attention12x128x64": _attention,
    "attn_decode4096": _attention_decode,
}


def _feeds(model: onnx.ModelProto, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded feeds for the model's inputs (not its initializers): token ids below 1000,
    segment ids 0 or 1, masks of ones, uniform [0, 1) floats elsewhere."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value or _dim_value(d.dim_param, dims) for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == TensorProto.INT64:
            if "mask" in vi.name:
                feeds[vi.name] = np.ones(shape, np.int64)
            elif "type" in vi.name:  # BERT's segment ids: 0 or 1 (its token type table has 2 rows)
                feeds[vi.name] = rng.integers(0, 2, shape).astype(np.int64)
            else:
                feeds[vi.name] = rng.integers(0, 1000, shape).astype(np.int64)
        else:
            feeds[vi.name] = rng.random(shape, dtype=np.float32)
    return feeds


def _dim_value(param: str, dims: dict[str, int]) -> int:
    """A symbolic dim's value: a name in ``dims``, or a sum of them (optimum's
    'past_sequence_length + sequence_length')."""
    try:
        return sum(dims[t.strip()] for t in param.split("+"))
    except KeyError as e:
        raise SystemExit(f"run.py: no value for the input dim {param!r} (known: {', '.join(dims)})") from e


def prepare(name: str, where: Path) -> tuple[Path, Path, dict]:
    """Write the model and its feeds under ``where``: (model path, feeds path, dims)."""
    dims: dict[str, int] = {}
    if name in light_models():
        model = randomized(name)  # the tests' random weights, logits as an output
    elif name in MICRO:
        model = MICRO[name]()
    elif name in transformer_models():
        src = TRANSFORMERS / f"{name}.onnx"
        model = onnx.load(str(src))
        params = {d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim}
        known = {**TRANSFORMER_DIMS, **DECODE_DIMS, **MODEL_DIMS.get(name, {})}
        dims = {t.strip(): known[t.strip()] for d in params for t in d.split("+") if t.strip() in known}
    else:
        raise SystemExit(f"run.py: unknown model {name!r}; models: {', '.join(all_models())}")
    path = where / f"{name}.onnx"
    onnx.save(model, str(path))
    feeds_path = where / f"{name}.feeds.npz"
    np.savez(feeds_path, **_feeds(model, dims))
    return path, feeds_path, dims


# --- processes ----------------------------------------------------------------------------------


def engine_env(engine: str, adapter: str, cache: str) -> dict[str, str]:
    env = dict(os.environ)
    # every engine's Python modules load from bytecode, as an installed package's do (pip writes
    # it at install; an editable checkout on first import): PYTHONDONTWRITEBYTECODE would have
    # every process compile the checkout's modules again, never onnxruntime's
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("XDG_RUNTIME_DIR", str(Path(tempfile.gettempdir()) / f"onnx2wgsl-xdg-{os.getuid()}"))
    Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    if adapter == "mesa25":
        env["VK_ICD_FILENAMES"] = str(MESA25 / "lvp_icd.json")
        lib = str(MESA25 / "usr" / "lib" / "x86_64-linux-gnu")
        env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    if cache == "cold":  # ("both" runs its warm processes with the cache on)
        env.update(COLD_CACHE)
    else:
        for k in COLD_CACHE:
            env.pop(k, None)
    return env


# the drivers' shader disk caches off: Mesa's, and NVIDIA's (its Vulkan driver reads the GL name)
COLD_CACHE = {"MESA_SHADER_CACHE_DISABLE": "true", "__GL_SHADER_DISK_CACHE": "0"}


def python_for(engine: str, peer: Path) -> str:
    return str(peer) if engine == "ort-webgpu" else sys.executable


def worker(
    engine: str, args: list[str], env: dict, timeout: float, peer: Path = PEER_PY
) -> tuple[dict | None, str | None]:
    """Run worker.py; (its result, None) or (None, an error line)."""
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "result.json"
        cmd = [python_for(engine, peer), str(WORKER), *args[:-1], str(res), *args[-1]]
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:.0f} s"
        if p.returncode != 0 or not res.exists():
            tail = (p.stderr or p.stdout).strip().splitlines()
            return None, f"exit {p.returncode}: {tail[-1] if tail else ''}"
        return json.loads(res.read_text()), None


def measure(name, engines, args, work: Path, log) -> dict:
    """Every engine on one model: {engine: result dict (or {"error": ...})}."""
    model, feeds, dims = prepare(name, work)
    out: dict[str, dict] = {}
    for engine in [e for e in engines if e in ENGINES]:
        if engine == "numpy" and name != "matmul1024":
            continue
        env = engine_env(engine, args.adapter, args.cache)
        r: dict = {}
        target = str(model)
        if engine.startswith("onnx2wgsl"):
            artifact = work / f"{name}.{engine}.artifact"
            flags = ["--dims", json.dumps(dims)] if dims else []
            flags += ["--precision", "fp16"] if engine == "onnx2wgsl-fp16" else []
            flags += ["--subgroups", args.subgroups, "--limits", args.limits] + (
                ["--tune"] if args.tune else []
            )
            c, err = worker(engine, ["compile", str(model), str(artifact), flags], env, args.timeout)
            if err:
                out[engine] = {"error": f"compile {err}"}
                log(f"  {engine:11s} compile failed: {err}")
                continue
            r.update(c)
            target = str(artifact)
        outputs = work / f"{name}.{engine}.out.npz"
        common = ["run", engine, target, str(feeds)]
        if args.cache == "both":  # a first run with Mesa's shader cache off, then the warm ones
            cold, err = worker(engine, [*common, ["--warmup", "0", "--iters", "0"]],
                               engine_env(engine, args.adapter, "cold"), args.timeout, args.peer_python)  # fmt: skip
            if err:
                out[engine] = {"error": f"cold process {err}"}
                log(f"  {engine:11s} cold process failed: {err}")
                continue
            r["first_cold_s"], r["load_cold_s"] = cold["first_s"], cold["load_s"]
        if args.cache in (
            "warm",
            "both",
        ):  # one untimed process first: Mesa's disk cache now holds the shaders
            _, err = worker(
                engine, [*common, ["--warmup", "0", "--iters", "0"]], env, args.timeout, args.peer_python
            )
            if err:
                out[engine] = {"error": f"warm-up process {err}"}
                log(f"  {engine:11s} warm-up process failed: {err}")
                continue
        flags = ["--outputs", str(outputs), "--warmup", str(args.warmup), "--iters", str(args.iters)]
        res, err = worker(engine, [*common, flags], env, args.timeout, args.peer_python)
        if err:
            out[engine] = {"error": err}
            log(f"  {engine:11s} failed: {err}")
            continue
        r.update(res)
        with np.load(outputs) as z:
            r["arrays"] = [z[k] for k in r["outputs"]]
        out[engine] = r
        w = np.array(r["warm_s"]) * 1000
        log(f"  {engine:11s} first {r['first_s'] * 1000:9.1f} ms  warm median {np.median(w):9.2f} ms"
            + (f"  first, cache off {r['first_cold_s'] * 1000:.0f} ms" if "first_cold_s" in r else "")
            + (f"  compile {r['compile_s']:.2f} s" if "compile_s" in r else ""))  # fmt: skip
    if name == "matmul1024" and "onnx2wgsl" in engines:  # the adapter's peak, to read the kernel against
        roof, err = worker(
            "onnx2wgsl", ["roofline", []], engine_env("onnx2wgsl", args.adapter, args.cache), args.timeout
        )
        out["roofline"] = roof or {"error": err}
        log(
            f"  roofline    {roof['gflops']:.1f} GFLOP/s f32 multiply-add"
            if roof
            else f"  roofline failed: {err}"
        )
    if name in args.browser_models and (mine := [e for e in BROWSER_ENGINES if e in engines]):
        import browser

        res = browser.measure(name, model, feeds, dims, work, engines=mine, iters=args.browser_iters,
                              warmup=args.browser_warmup, timeout=args.timeout, log=log)  # fmt: skip
        out.update(res)
    _compare(out)
    return out


def _compare(out: dict) -> None:
    """Each engine's outputs against ort-cpu's (else the first engine's that ran): max |diff|,
    and a verdict: within 1e-3 of the reference's largest magnitude (of at least 1e-3)."""
    ok = [e for e in ENGINES + BROWSER_ENGINES if e in out and "arrays" in out[e]]
    if not ok:
        return
    ref_engine = "ort-cpu" if "ort-cpu" in ok else ok[0]
    ref = out[ref_engine]["arrays"]
    for e in ok:
        r = out[e]
        r["reference"] = ref_engine
        if len(r["arrays"]) != len(ref):
            r["diff"], r["agree"] = float("inf"), False
            continue
        diffs, agree = [], True
        for a, b in zip(r["arrays"], ref):
            if a.shape != b.shape:
                diffs.append(float("inf"))
                agree = False
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            d = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
            rel = FP16_TOLERANCE if e == "onnx2wgsl-fp16" else 1e-3
            tol = rel * max(1e-3, float(np.max(np.abs(b64))) if b.size else 0.0)
            diffs.append(d)
            agree = agree and np.isfinite(a64).all() and d <= tol
        r["diff"], r["agree"] = max(diffs) if diffs else 0.0, bool(agree)


# --- facts about the machine --------------------------------------------------------------------


def cpu_facts() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {usable} cores usable ({os.cpu_count()} online)"


def adapter_description(adapter: str) -> str:
    code = (
        "import wgpu; i = wgpu.gpu.request_adapter_sync(power_preference='high-performance').info; "
        "print(f\"{i['device']} / {i['backend_type']} / {i['description']}\")"
    )
    p = subprocess.run([sys.executable, "-c", code], env=engine_env("onnx2wgsl", adapter, "warm"),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    return p.stdout.strip() or f"(no adapter: {p.stderr.strip().splitlines()[-1:]})"


def versions(engines: list[str], peer: Path = PEER_PY) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    v = {}
    for pkg in ("onnx2wgsl", "onnxruntime", "wgpu", "onnx", "numpy"):
        try:
            v[pkg] = version(pkg)
        except PackageNotFoundError:
            v[pkg] = "not installed"
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
        if rev:
            v["onnx2wgsl"] += f" (git {rev})"
    except OSError:
        pass
    if any(e in engines for e in BROWSER_ENGINES):
        import browser

        try:
            chromium = subprocess.run(
                [browser.CHROMIUM, "--version"], capture_output=True, text=True, timeout=60
            )
            v["chromium"] = chromium.stdout.strip() or "?"
        except (OSError, subprocess.TimeoutExpired):
            v["chromium"] = "?"
        v["onnxruntime-web"] = browser.ort_web_version()
    if "ort-webgpu" in engines and peer.exists():
        p = subprocess.run([str(peer), "-c", "import onnxruntime as o; print(o.__version__)"],
                           capture_output=True, text=True)  # fmt: skip
        v["onnxruntime-webgpu"] = p.stdout.strip() or "?"
    return v


# --- report -------------------------------------------------------------------------------------


def _ms(s: float | None) -> str:
    if s is None:
        return "—"
    ms = s * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _median(r: dict) -> float | None:
    return float(np.median(r["warm_s"])) if r.get("warm_s") else None


def _warm_cell(res: dict, e: str, engines: list[str]) -> str:
    r = res.get(e)
    if r is None:
        return "skipped" if e not in engines else "—"
    if "error" in r:
        return "error"
    cell = f"{_ms(_median(r))} ({_ms(min(r['warm_s']))}-{_ms(max(r['warm_s']))})"
    return cell + (" MISMATCH" if r.get("agree") is False else "")


def _first_cell(res: dict, e: str) -> str:
    r = res.get(e)
    if r is None or "error" in r:
        return "—"
    return _ms(r["first_s"]) + (f" ({r['compile_s']:.1f} s)" if "compile_s" in r else "")


def _browser_table(results: dict, engines: list[str], args) -> list[str]:
    if args.browser_skipped:
        return ["", f"The browser pair did not run: {args.browser_skipped}."]
    rows = {n: r for n, r in results.items() if any(e in r for e in BROWSER_ENGINES)}
    if not rows:
        return []
    lines = [
        "",
        "## In the browser",
        "",
        "Headless Chromium on its own WebGPU adapter (see the adapter line below), a fresh browser per"
        " engine and model, the same page and feeds (benchmarks/browser.py): onnx2wgsl's JS package"
        " against onnxruntime-web's WebGPU backend (a fresh profile each, so no shader cache). **warm** = median (min-max) of"
        f" {args.browser_iters} runs after {args.browser_warmup} untimed; **first** = session creation"
        " + first run (creation alone in parentheses).",
        "",
    ]
    adapters = sorted(
        {res[e]["adapter"] for res in rows.values() for e in BROWSER_ENGINES if res.get(e, {}).get("adapter")}
    )
    lines += [f"Browser adapter: {', '.join(adapters) or '?'}.", ""]
    head = ["model", "onnx2wgsl JS warm", "onnxruntime-web warm", "ours / ORT-web", "onnx2wgsl JS first (create)",
            "onnxruntime-web first (create)", "agree"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in rows.items():
        a, b = res.get("onnx2wgsl-js", {}), res.get("ort-web", {})
        ratio = f"{_median(a) / _median(b):.2f}" if _median(a) and _median(b) else "—"
        first = ["—" if "first_s" not in r else f"{_ms(r['first_s'])} ({_ms(r['load_s'])})" for r in (a, b)]
        ran = [res[e] for e in BROWSER_ENGINES if "agree" in res.get(e, {})]
        agree = "—" if not ran else ("yes" if all(r["agree"] for r in ran) else "**NO**")
        lines.append("| " + " | ".join([name, _warm_cell(res, "onnx2wgsl-js", engines), _warm_cell(res, "ort-web", engines),
                                         ratio, *first, agree]) + " |")  # fmt: skip
    return lines


def _mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:,.2f}"


def _fp16_table(results: dict, engines: list[str]) -> list[str]:
    """onnx2wgsl at --precision fp16 next to fp32: warm time, weights.bin and arena bytes."""
    if "onnx2wgsl-fp16" not in engines:
        return []
    lines = [
        "",
        "## fp16 storage next to fp32",
        "",
        "onnx2wgsl compiled at `--precision fp16` (activations and weights stored as f16 where every kernel"
        " converts, arithmetic in f32) and at the default fp32: warm medians, weights.bin and the arena"
        f" (MB), the fp16 figure over the fp32 one; **agree**: fp16 within {FP16_TOLERANCE:g} of the"
        " reference's largest magnitude.",
        "",
    ]
    head = ["model", "fp32 warm", "fp16 warm", "time fp16 / fp32", "weights fp32", "weights fp16", "weights ratio",
            "arena fp32", "arena fp16", "arena ratio", "fp16 max abs diff", "agree"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        a, b = res.get("onnx2wgsl", {}), res.get("onnx2wgsl-fp16", {})
        if "error" in b or not b:
            lines.append(f"| {name} |" + " — |" * (len(head) - 2) + f" {b.get('error', 'not run')} |")
            continue

        def ratio(x, y):
            return f"{x / y:.2f}" if x and y else "—"

        lines.append("| " + " | ".join([
            name, _ms(_median(a)), _ms(_median(b)), ratio(_median(b), _median(a)),
            _mb(a.get("weight_bytes")), _mb(b.get("weight_bytes")), ratio(b.get("weight_bytes"), a.get("weight_bytes")),
            _mb(a.get("arena_bytes")), _mb(b.get("arena_bytes")), ratio(b.get("arena_bytes"), a.get("arena_bytes")),
            f"{b['diff']:.2e}" if "diff" in b else "—", "yes" if b.get("agree") else "**NO**"]) + " |")  # fmt: skip
    return lines


# the yardstick: these four CNNs, ours over ORT-WebGPU
SUMMARY_MODELS = ("squeezenet", "resnet50", "inception_v1", "densenet121")


def _summary(results: dict, args) -> list[str]:
    """The median over SUMMARY_MODELS of ours / ORT-WebGPU: warm, first run, first run cache off."""
    rows = [results[m] for m in SUMMARY_MODELS if m in results]
    ratios = {}
    for what, get in (("warm", _median), ("first run", lambda r: r.get("first_s")),
                      ("first run, cache off", lambda r: r.get("first_cold_s"))):  # fmt: skip
        vals = [get(r["onnx2wgsl"]) / get(r["ort-webgpu"]) for r in rows
                if get(r.get("onnx2wgsl", {})) and get(r.get("ort-webgpu", {}))]  # fmt: skip
        if vals and len(vals) == len(SUMMARY_MODELS):
            ratios[what] = float(np.median(vals))
    if not ratios:
        return []
    text = ", ".join(f"{k} **{v:.2f}**" for k, v in ratios.items())
    return [f"Median over {', '.join(SUMMARY_MODELS)} of onnx2wgsl / ORT-WebGPU: {text}"
            " (first runs: load + first inference; onnx2wgsl compiles ahead of time).", ""]  # fmt: skip


def _matmul_line(results: dict) -> list[str]:
    """matmul1024 in GFLOP/s: each engine's warm median, onnx2wgsl's as a fraction of numpy's
    sgemm measured in the same run, and of the adapter's peak (the roofline microkernel)."""
    res = results.get("matmul1024", {})
    rate = {
        e: MATMUL_FLOP / t / 1e9
        for e in ("onnx2wgsl", "ort-webgpu", "numpy")
        if (t := _median(res.get(e, {})))
    }
    if "onnx2wgsl" not in rate or "numpy" not in rate:
        return []
    peak = res.get("roofline", {}).get("gflops")
    text = ", ".join(f"{e} {g:.1f}" for e, g in rate.items())
    line = (f"MatMul 1024³ (GFLOP/s, warm medians): {text}; onnx2wgsl is **{rate['onnx2wgsl'] / rate['numpy']:.1%}**"
            f" of numpy's sgemm ({res['numpy'].get('blas', '?')}) in this run")  # fmt: skip
    if peak:
        line += (f", and {rate['onnx2wgsl'] / peak:.1%} of the adapter's measured peak of {peak:.1f} GFLOP/s"
                 f" (f32 multiply-add microkernel; numpy's sgemm is {rate['numpy'] / peak:.2f}× that peak)")  # fmt: skip
    return [line + ".", ""]


def report(results: dict, engines: list[str], args, facts: dict, elapsed: float, pending=()) -> str:
    ours_vs = "ort-webgpu" if "ort-webgpu" in engines else None
    lines = [
        "# Benchmarks: onnx2wgsl vs onnxruntime",
        "",
        "Written by `benchmarks/run.py` (do not edit by hand). Times in ms, wall clock around each",
        "engine's own calls, each engine in a fresh process. **warm** = median (min-max) of"
        f" {args.iters} runs after {args.warmup} untimed; **first** = load (session creation) +"
        " first inference; onnx2wgsl's compile is timed in a process of its own.",
        f"Shader cache: **{args.cache}** ("
        + {
            "cold": "`MESA_SHADER_CACHE_DISABLE=true __GL_SHADER_DISK_CACHE=0` for every engine",
            "warm": "one untimed process per engine and model ran first, so the driver's disk cache holds the shaders",
            "both": "**first, cache off** is a process with `MESA_SHADER_CACHE_DISABLE=true __GL_SHADER_DISK_CACHE=0`;"
            " then one untimed process filled the driver's disk cache, and **first** and **warm** come from a"
            " process after it",
        }[args.cache]
        + ").",  # fmt: skip
        "**ours / ORT-WebGPU** is the ratio of warm medians (below 1: onnx2wgsl is faster)."
        " **max abs diff** compares each engine's outputs with "
        + ("ort-cpu's" if "ort-cpu" in engines else "the first engine's")
        + " (MISMATCH: over 1e-3 of the reference's largest magnitude).",
    ]
    sub = {r["subgroups"] for m in results.values() for r in m.values() if "subgroups" in r}
    if sub:
        how = "with" if sub == {True} else "without" if sub == {False} else "for some models with"
        lines.append(f"onnx2wgsl compiled {how} `--subgroups` (`run.py --subgroups {args.subgroups}`:"
                     " auto = when the adapter offers subgroups; the browser's JS package without).")  # fmt: skip
    targets = sorted({r["target"] for m in results.values() for r in m.values() if "target" in r})
    if targets:
        lines.append(f"onnx2wgsl compiled for the target {' and '.join(f'`{t}`' for t in targets)} (`run.py --limits "
                     f"{args.limits}`: auto = `cpu` for a CPU adapter, whose kernels split no reductions across lanes; "
                     "else `webgpu`).")  # fmt: skip
    if args.tune:
        lines.append("onnx2wgsl compiled with `--tune` (`run.py --tune`): each tunable kernel's form measured on"
                     " this adapter; the compile times include the tuning.")  # fmt: skip
    lines.append("")
    if args.note:
        lines += [f"> {args.note}", ""]
    if pending:
        lines += [f"> **Partial**: {len(results)} of {len(results) + len(pending)} models measured so far;"
                  f" not measured: {', '.join(pending)}.", ""]  # fmt: skip
    lines += _summary(results, args)
    lines += _matmul_line(results)
    cold = args.cache == "both"
    head = ["model", "onnx2wgsl warm", "ORT-WebGPU warm", "ours / ORT-WebGPU", "ORT-CPU warm",
            "onnx2wgsl first (compile)", "ORT-WebGPU first", "ORT-CPU first"]  # fmt: skip
    head += ["onnx2wgsl first, cache off", "ORT-WebGPU first, cache off"] if cold else []
    head += ["agree"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        ratio = "n/a (no ORT-WebGPU)" if ours_vs is None else "—"
        a, b = res.get("onnx2wgsl", {}), res.get("ort-webgpu", {})
        if ours_vs and _median(a) and _median(b):
            ratio = f"{_median(a) / _median(b):.2f}"
        ran = [r for r in res.values() if "agree" in r]
        agree = "—" if not ran else ("yes" if all(r["agree"] for r in ran) else "**NO**")
        cells = [name, _warm_cell(res, "onnx2wgsl", engines), _warm_cell(res, "ort-webgpu", engines), ratio, _warm_cell(res, "ort-cpu", engines),
                 _first_cell(res, "onnx2wgsl"), _first_cell(res, "ort-webgpu"), _first_cell(res, "ort-cpu")]  # fmt: skip
        if cold:
            cells += [_ms(res.get(e, {}).get("first_cold_s")) for e in ("onnx2wgsl", "ort-webgpu")]
        lines.append("| " + " | ".join(cells + [agree]) + " |")
    lines += _fp16_table(results, engines)
    lines += _browser_table(results, engines, args)
    lines += [
        "",
        "## Each engine",
        "",
        "**load** = session creation; **ours / this** = onnx2wgsl's warm median over this engine's (in the"
        " browser, the JS package's);"
        " **providers**: the execution providers ORT-WebGPU's session holds (ORT places some small"
        " shape computations on its CPU provider by design; a session that fell back to the CPU"
        " entirely is refused).",
        "",
    ]
    head = ["model", "engine", "compile s", "load", "first", "warm median", "min", "max",
            "ours / this", "max abs diff", "note"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        for e in engines:
            r = res.get(e)
            if r is None:
                continue
            ours = _median(res.get("onnx2wgsl-js" if e in BROWSER_ENGINES else "onnx2wgsl", {}))
            if "error" in r:
                lines.append(f"| {name} | {e} |" + " — |" * 8 + f" {r['error'].replace('|', '/')} |")
                continue
            t = _median(r)
            note = "" if r.get("agree", True) else f"MISMATCH vs {r.get('reference')}"
            if e == "ort-webgpu":
                note = (
                    (note + " " if note else "")
                    + "providers "
                    + "+".join(p.replace("ExecutionProvider", "") for p in r.get("providers", []))
                )
            lines.append("| " + " | ".join([
                name, e, f"{r['compile_s']:.2f}" if "compile_s" in r else "—", _ms(r["load_s"]),
                _ms(r["first_s"]), _ms(t), _ms(min(r["warm_s"])), _ms(max(r["warm_s"])),
                f"{ours / t:.2f}" if ours and t else "—",
                f"{r['diff']:.2e}" if "diff" in r else "—", note]) + " |")  # fmt: skip
    lines += ["", "## Machine and versions", ""]
    lines += [
        f"- date: {facts['date']}",
        f"- CPU: {facts['cpu']}",
        f"- adapter ({args.adapter}): {facts['adapter']}",
    ]
    lines += [f"- {k}: {v}" for k, v in facts["versions"].items()]
    lines += [f"- python: {platform.python_version()}, {platform.platform()}",
              f"- wall time of the whole command: {elapsed / 60:.1f} min", "",
              "Command:", "", "```", facts["command"], "```", ""]  # fmt: skip
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help=f"comma-separated (default all): {', '.join(all_models())}")
    p.add_argument(
        "--engines", help=f"comma-separated subset of {','.join(ENGINES + BROWSER_ENGINES)} (default all)"
    )
    p.add_argument("--browser-models", help=f"comma-separated models the browser engines run, or 'none' (default {','.join(BROWSER_MODELS)}; none with --quick)")  # fmt: skip
    p.add_argument("--browser-iters", type=int, default=3, help="timed warm runs in the browser (default 3)")
    p.add_argument("--browser-warmup", type=int, default=1, help="untimed runs before them (default 1)")
    p.add_argument("--adapter", choices=["mesa25", "mesa22", "system"], default="mesa25",
                   help="mesa25: .cache/bench/mesa25 (benchmarks/setup.sh); mesa22: the system lavapipe, no ort-webgpu; "
                        "system: the system's Vulkan driver as it is (a real GPU)")  # fmt: skip
    p.add_argument("--peer-python", type=Path, default=PEER_PY,
                   help=f"the Python with onnxruntime-webgpu that runs ort-webgpu (default {PEER_PY.relative_to(ROOT)})")  # fmt: skip
    p.add_argument("--cache", choices=["both", "cold", "warm"], default="both",
                   help="Mesa's shader cache for first runs: both (default: a first run with the cache off, then "
                        "one with it warm), cold or warm")  # fmt: skip
    p.add_argument("--subgroups", choices=["auto", "on", "off"], default="auto",
                   help="compile onnx2wgsl with --subgroups: auto = when the adapter offers them (default)")  # fmt: skip
    p.add_argument("--limits", choices=["auto", "webgpu", "cpu"], default="auto",
                   help="onnx2wgsl's compile target: auto (default) = cpu for a CPU adapter (lavapipe), else webgpu")  # fmt: skip
    p.add_argument("--tune", action="store_true",
                   help="compile onnx2wgsl with --tune: its kernels' forms measured on the adapter (slower compiles)")  # fmt: skip
    p.add_argument("--iters", type=int, default=5, help="timed warm runs (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before them (default 2)")
    p.add_argument("--quick", action="store_true", help=f"only {QUICK_MODEL}, 1 warm run, no warm-up runs")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per process (default 1800)")
    p.add_argument("--note", default="", help="a line to put at the top of the results")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = p.parse_args(argv)
    args.peer_python = args.peer_python.absolute()

    every = ENGINES + BROWSER_ENGINES
    engines = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else every
    if bad := [e for e in engines if e not in every]:
        p.error(f"unknown engines {bad}; choose from {every}")
    engines = [e for e in every if e in engines]  # a fixed order
    if args.quick:
        args.iters, args.warmup = 1, 0
        args.browser_iters, args.browser_warmup = 1, 0
        models = [QUICK_MODEL]
    else:
        models = [m.strip() for m in args.models.split(",")] if args.models else all_models()
    if args.browser_models:
        args.browser_models = (
            [] if args.browser_models == "none" else [m.strip() for m in args.browser_models.split(",")]
        )
    else:
        args.browser_models = [] if args.quick else [m for m in BROWSER_MODELS if m in models]
    args.browser_skipped = None
    if any(e in engines for e in BROWSER_ENGINES) and args.browser_models:
        import browser

        if why := browser.unavailable():
            if args.engines:  # asked for by name
                p.error(f"the browser engines cannot run: {why}")
            print(f"run.py: skipping the browser engines: {why}", file=sys.stderr)
            args.browser_skipped = why
            engines = [e for e in engines if e not in BROWSER_ENGINES]
    else:
        engines = [e for e in engines if e not in BROWSER_ENGINES]
    if args.adapter == "mesa22" and "ort-webgpu" in engines:
        print(
            "run.py: --adapter mesa22: skipping ort-webgpu (Dawn accepts no Mesa 22 lavapipe)",
            file=sys.stderr,
        )
        engines.remove("ort-webgpu")
    if args.adapter == "mesa25" and not (MESA25 / "lvp_icd.json").exists():
        p.error("no .cache/bench/mesa25: run `bash benchmarks/setup.sh` (or pass --adapter mesa22)")
    if "ort-webgpu" in engines and not args.peer_python.exists():
        p.error(f"no {args.peer_python}: run `bash benchmarks/setup.sh`, name another with --peer-python, or leave out ort-webgpu")  # fmt: skip

    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable, os.path.relpath(__file__, ROOT), *(sys.argv[1:] if argv is None else argv)])  # fmt: skip
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_facts(),
        "adapter": adapter_description(args.adapter),
        "versions": versions(engines, args.peer_python),
        "command": command,
    }
    print(f"adapter: {facts['adapter']}\nengines: {', '.join(engines)}; cache {args.cache}; "
          f"{args.iters} warm runs after {args.warmup}", flush=True)  # fmt: skip
    if args.adapter == "mesa25" and "Mesa 25" not in facts["adapter"]:
        print(f"run.py: expected Mesa 25 lavapipe, got {facts['adapter']}", file=sys.stderr)
        return 2
    if args.adapter == "system" and "no adapter" in facts["adapter"]:
        print(f"run.py: --adapter system: {facts['adapter']}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    bad = False
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnx2wgsl-bench-") as d:
        for i, name in enumerate(models):
            print(f"{name}", flush=True)
            work = Path(d) / name
            work.mkdir()
            results[name] = measure(name, engines, args, work, lambda s: print(s, flush=True))
            for r in results[name].values():
                r.pop("arrays", None)
                bad = bad or "error" in r or r.get("agree") is False
            # written after every model: an interrupted run still leaves what it measured
            pending = models[i + 1 :]
            text = report(results, engines, args, facts, time.perf_counter() - t0, pending)
            args.out.write_text(text)
    print(f"wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

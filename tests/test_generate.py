"""Token-by-token generation: a decoder with a KV cache compiled with ``--max-length``
(compiler/generation.py) and run by ``onnx2wgsl.Generator`` (runtime/generate.py), checked
against a step-by-step onnxruntime CPU loop over the same ONNX model, with the cache kept on
the GPU: no GPU objects made and at most 16 bytes read back per step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from test_runtime import count_gpu_creations

import onnx2wgsl
from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.cli import main
from onnx2wgsl.compiler.generation import Generation, prepare, state_pairs
from onnx2wgsl.errors import CompileError, InputError, ManifestError
from onnx2wgsl.runtime import manifest as mf

MODELS = Path(__file__).parent / "models"
DECODERS = ["llama_tiny_kv", "gpt2_tiny_kv", "gpt2_tiny_kv_optimum"]  # (the last by optimum's exporter)
PROMPT = [1, 5, 7, 9]
MAX_LENGTH = 80  # the prompt and 64 new tokens fit


def compiled_for_generation(tmp_path_factory, names, **options) -> dict[str, Path]:
    """Each named test decoder compiled for generation (max length MAX_LENGTH) in a folder of
    its own: name -> folder."""
    out = {}
    for name in names:
        out[name] = tmp_path_factory.mktemp(name)
        compile_model(MODELS / f"{name}.onnx", out[name], generation=Generation(MAX_LENGTH), **options)
    return out


class StepRecorder:
    """Records what each generation step asks of the GPU (installed on the device's classes
    with ``monkeypatch``): the buffer copies (src, dst, bytes), the buffers cleared and the
    bytes read back to the CPU."""

    def __init__(self, monkeypatch):
        from wgpu.backends.wgpu_native import GPUBuffer, GPUCommandEncoder, GPUQueue

        self.copies: list[tuple] = []
        self.clears = 0
        self.read = 0

        def copy(original):
            def wrapper(enc, src, src_offset, dst, dst_offset, size):
                self.copies.append((src, dst, size))
                return original(enc, src, src_offset, dst, dst_offset, size)

            return wrapper

        def clear(original):
            def wrapper(*a, **k):
                self.clears += 1
                return original(*a, **k)

            return wrapper

        def counted(original):
            def wrapper(*a, **k):
                data = original(*a, **k)
                self.read += memoryview(data).nbytes
                return data

            return wrapper

        monkeypatch.setattr(
            GPUCommandEncoder, "copy_buffer_to_buffer", copy(GPUCommandEncoder.copy_buffer_to_buffer)
        )
        monkeypatch.setattr(GPUCommandEncoder, "clear_buffer", clear(GPUCommandEncoder.clear_buffer))
        for cls, name in (
            (GPUBuffer, "read_mapped"),
            (GPUBuffer, "_experimental_get_mapped_range"),
            (GPUQueue, "read_buffer"),
        ):
            monkeypatch.setattr(cls, name, counted(getattr(cls, name)))

    def generate(self, gen, prompt, n: int, **options) -> tuple[list[int], list[dict]]:
        """``gen.generate(prompt, max_new_tokens=n, **options)``: the ids and, for each step,
        {"copies": [(src, dst, bytes)], "clears": count, "read": bytes}."""
        tokens, steps = [], []
        self.copies, self.clears, self.read = [], 0, 0
        for token in gen.generate(prompt, max_new_tokens=n, **options):
            tokens.append(token)
            steps.append({"copies": self.copies, "clears": self.clears, "read": self.read})
            self.copies, self.clears, self.read = [], 0, 0
        return tokens, steps


def ort_greedy(path, prompt: list[int], n: int, head_size: int | None = None) -> list[int]:
    """Greedy ids by onnxruntime on the CPU: the prompt in one step, then one token per step,
    each step's present fed back as the next one's past (``head_size`` where the model names
    the past's last dim; ``path`` a file or a model's bytes)."""
    s = ort.InferenceSession(
        str(path) if isinstance(path, Path) else path, providers=["CPUExecutionProvider"]
    )
    ins = {i.name: i for i in s.get_inputs()}
    names = [o.name for o in s.get_outputs()]
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    past = {
        k: np.zeros((1, i.shape[1], 0, head_size or i.shape[3]), types[i.type])
        for k, i in ins.items()
        if k.startswith("past")
    }
    ids, total, out = np.array([prompt], np.int64), 0, []
    for _ in range(n):
        seq = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, total + seq), np.int64), **past}
        if "position_ids" in ins:
            feed["position_ids"] = np.arange(total, total + seq)[None]
        res = dict(zip(names, s.run(None, feed)))
        out.append(int(np.argmax(res["logits"][0, -1])))
        past = {k: res[k.replace("past_key_values", "present")] for k in past}
        total += seq
        ids = np.array([[out[-1]]], np.int64)
    return out


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return compiled_for_generation(tmp_path_factory, DECODERS)


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    """The Llama decoder with its cache copied between steps: at -O0 its attention stays
    unfused, so its presents are not written in place (compiler/passes/kv_share.py)."""
    path = tmp_path_factory.mktemp("llama_tiny_kv_copied")
    compile_model(MODELS / "llama_tiny_kv.onnx", path, generation=Generation(MAX_LENGTH), opt_level=0)
    return path


@pytest.fixture(scope="module")
def references():
    return {name: ort_greedy(MODELS / f"{name}.onnx", PROMPT, 64) for name in DECODERS}


# -- compile (no device) ---------------------------------------------------------------------
def test_manifest_records_the_state_pairs_and_bounds(copied):
    m = mf.read(copied)
    gen = m["generation"]
    assert gen["max_length"] == MAX_LENGTH
    assert gen["position_ids"] == "position_ids" and gen["attention_mask"] == "attention_mask"
    assert [(s["past"], s["present"]) for s in gen["state"]] == [
        (f"past_key_values.{i}.{k}", f"present.{i}.{k}") for i in range(2) for k in ("key", "value")
    ]
    symbols = {s["name"]: (s["min"], s["max"]) for s in m["symbols"]}
    assert symbols == {"sequence_length": (1, MAX_LENGTH), "past_sequence_length": (0, MAX_LENGTH - 1)}
    (tok,) = [o for o in m["outputs"] if o["name"] == "next_token"]
    assert tok["dtype"] == "int64" and tok["shape"] == [1, 1] and tok["size"] == 4
    mask = next(i for i in m["inputs"] if i["name"] == "attention_mask")
    assert mask["shape"] == [1, ["+", "past_sequence_length", "sequence_length"]]
    # the cache lies in buffers that hold no output: a present is copied into its past's slot
    out_buffers = {o["buffer"] for o in m["outputs"]}
    assert all(
        next(i for i in m["inputs"] if i["name"] == s["past"])["buffer"] not in out_buffers
        for s in gen["state"]
    )


def test_compile_is_deterministic(artifacts, tmp_path):
    compile_model(MODELS / "gpt2_tiny_kv.onnx", tmp_path, generation=Generation(MAX_LENGTH))
    for f in ("manifest.json", "weights.bin"):
        assert (tmp_path / f).read_bytes() == (artifacts["gpt2_tiny_kv"] / f).read_bytes()


def test_state_pairs_by_name_or_given():
    m = onnx.load(MODELS / "gpt2_tiny_kv.onnx", load_external_data=False)
    assert ("past_key_values.1.value", "present.1.value") in state_pairs(m, {})
    given = {"past_key_values.0.key": "present.0.key"}
    assert state_pairs(m, given) == list(given.items())
    with pytest.raises(CompileError, match="no model input"):
        state_pairs(m, {"past.0": "present.0.key"})
    with pytest.raises(CompileError, match="no model output"):
        state_pairs(m, {"past_key_values.0.key": "present.9.key"})


def test_a_model_without_a_cache_is_refused(tmp_path):
    with pytest.raises(CompileError, match="no past/present pairs"):
        compile_model(MODELS / "llama_tiny_torchscript.onnx", tmp_path, generation=Generation(32))


def test_cli_compile_state_needs_max_length(tmp_path, capsys):
    model = str(MODELS / "gpt2_tiny_kv.onnx")
    assert main(["compile", model, "-o", str(tmp_path / "a"), "--state", "a=b"]) == 1
    assert "--max-length" in capsys.readouterr().err
    args = ["compile", model, "-o", str(tmp_path / "b"), "--max-length", "16"]
    assert main([*args, "--state", "past_key_values.0.key=present.0.key"]) == 0
    gen = json.loads((tmp_path / "b" / "manifest.json").read_text())["generation"]
    assert gen["state"] == [{"past": "past_key_values.0.key", "present": "present.0.key"}]


def test_manifest_refuses_a_past_beside_outputs(copied):
    m = mf.read(copied)
    past = next(i for i in m["inputs"] if i["name"] == "past_key_values.0.key")
    past["buffer"] = m["outputs"][0]["buffer"]
    past["offset"] = 0
    with pytest.raises(ManifestError, match="holds outputs"):
        mf.validate(m)
    m = mf.read(copied)
    m["generation"]["max_length"] = MAX_LENGTH + 1  # past_sequence_length's range is too short
    with pytest.raises(ManifestError, match="max_length"):
        mf.validate(m)
    m = mf.read(copied)
    m["generation"]["sampling"] = {"params": "input_ids", "token": "next_token", "candidates": 4}
    with pytest.raises(ManifestError, match="float input"):
        mf.validate(m)


# -- on the device ---------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", DECODERS)
def test_greedy_64_tokens_match_onnxruntime(name, artifacts, references, device):
    gen = onnx2wgsl.Generator(artifacts[name], device=device)
    got = list(gen.generate(PROMPT, max_new_tokens=64))
    assert got == references[name]
    assert len(set(got)) > 16  # (the reference is not one token repeated)


@pytest.mark.gpu
def test_generate_makes_no_gpu_objects_and_reads_4_bytes_a_step(
    artifacts, sampling_artifact, references, device, monkeypatch
):
    gen = onnx2wgsl.Generator(artifacts["llama_tiny_kv"], device=device)
    calls = count_gpu_creations(device, monkeypatch)
    device.create_bind_group_layout(entries=[])  # the counter sees creations
    assert calls["create_bind_group_layout"] == 1
    calls["create_bind_group_layout"] = 0
    recorder = StepRecorder(monkeypatch)
    got, steps = recorder.generate(gen, PROMPT, 64)
    per_step = [step["read"] for step in steps]
    assert got == references["llama_tiny_kv"]
    assert calls == {name: 0 for name in calls}
    assert max(per_step) <= 16 and per_step[0] > 0
    # sampling on the GPU too: after load, nothing made, 4 bytes a step
    sampler = onnx2wgsl.Generator(sampling_artifact, device=device)
    calls.update({name: 0 for name in calls})
    _, steps = recorder.generate(sampler, PROMPT, 32, temperature=0.8, top_k=8, top_p=0.9, seed=1)
    per_step = [step["read"] for step in steps]
    assert calls == {name: 0 for name in calls}
    assert len(per_step) == 32 and max(per_step) <= 16


@pytest.mark.gpu
def test_generate_continues_until_reset(artifacts, references, device):
    gen = onnx2wgsl.Generator(artifacts["gpt2_tiny_kv"], device=device)
    first = list(gen.generate(PROMPT, max_new_tokens=10))
    rest = list(gen.generate([], max_new_tokens=10))  # goes on from the last token chosen
    assert first + rest == references["gpt2_tiny_kv"][:20]
    gen.reset()
    assert list(gen.generate(PROMPT, max_new_tokens=5)) == references["gpt2_tiny_kv"][:5]


@pytest.mark.gpu
def test_generate_stops_at_eos_and_at_max_length(artifacts, references, device):
    ref = references["llama_tiny_kv"]
    gen = onnx2wgsl.Generator(artifacts["llama_tiny_kv"], device=device)
    assert list(gen.generate(PROMPT, max_new_tokens=64, eos_token_id=ref[6])) == ref[: ref.index(ref[6]) + 1]
    gen.reset()
    long = [3] * (MAX_LENGTH - 3)
    got = list(gen.generate(long, max_new_tokens=64))
    assert len(got) == 3  # the sequence holds MAX_LENGTH tokens
    assert got == ort_greedy(MODELS / "llama_tiny_kv.onnx", long, 3)
    with pytest.raises(InputError, match="max length"):
        gen.generate([1], max_new_tokens=1)
    gen.reset()
    with pytest.raises(InputError, match="max length"):
        gen.generate([3] * (MAX_LENGTH + 1))


def merged_decoder(path: Path) -> onnx.ModelProto:
    """The decoder as optimum's decoder_model_merged has it: an If on input use_cache_branch
    over two copies of the graph (optimum's other branch is the decoder without a past)."""
    m = onnx.load(path)
    g = m.graph

    def branch(tag: str) -> onnx.GraphProto:
        rename: dict[str, str] = {}
        nodes = []
        for n in g.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = f"{tag}/{n.name}"
            for i, x in enumerate(copy.input):
                copy.input[i] = rename.get(x, x)
            for i, y in enumerate(copy.output):
                if y:
                    rename[y] = copy.output[i] = f"{tag}/{y}"
            nodes.append(copy)
        outs = [
            helper.make_tensor_value_info(rename[o.name], o.type.tensor_type.elem_type, None)
            for o in g.output
        ]
        return helper.make_graph(nodes, tag, [], outs)

    node = helper.make_node(
        "If", ["use_cache_branch"], [o.name for o in g.output], then_branch=branch("with_past"),
        else_branch=branch("without_past"),
    )  # fmt: skip
    del g.node[:]
    g.node.append(node)
    g.input.append(helper.make_tensor_value_info("use_cache_branch", onnx.TensorProto.BOOL, [1]))
    return m


@pytest.mark.gpu
def test_a_merged_decoder_runs_its_cache_branch(references, tmp_path, device):
    model = merged_decoder(MODELS / "llama_tiny_kv.onnx")
    res = compile_model(model, tmp_path, generation=Generation(MAX_LENGTH))
    assert "use_cache_branch" not in [i["name"] for i in res.artifact.manifest["inputs"]]
    gen = onnx2wgsl.Generator(tmp_path, device=device)
    assert list(gen.generate(PROMPT, max_new_tokens=16)) == references["llama_tiny_kv"][:16]


@pytest.mark.gpu
def test_an_artifact_not_compiled_for_generation_is_refused(tmp_path, device):
    compile_model(MODELS / "gpt2_tiny_kv.onnx", tmp_path, dims={"batch_size": 1, "sequence_length": (1, 8),
                  "past_sequence_length": (0, 8)})  # fmt: skip
    with pytest.raises(InputError, match="--max-length"):
        onnx2wgsl.Generator(tmp_path, device=device)


@pytest.mark.gpu
def test_cli_generate_prints_the_tokens_and_timings(artifacts, references, capsys):
    ids = ",".join(map(str, PROMPT))
    assert (
        main(["generate", str(artifacts["gpt2_tiny_kv"]), "--prompt-ids", ids, "--max-new-tokens", "12"]) == 0
    )
    out = capsys.readouterr()
    assert [int(t) for t in out.out.split()] == references["gpt2_tiny_kv"][:12]
    for what in ("prefill 4 tokens", "time to first token", "tokens/s"):
        assert what in out.err


@pytest.mark.gpu
def test_cli_generate_with_a_tokenizer(artifacts, references, tmp_path, capsys):
    import tokenizers

    vocab = {f"w{i}": i for i in range(1000)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    prompt = " ".join(f"w{i}" for i in PROMPT)
    args = [
        "generate",
        str(artifacts["llama_tiny_kv"]),
        "--prompt",
        prompt,
        "--tokenizer",
        str(tmp_path / "tokenizer.json"),
    ]
    assert main([*args, "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.split() == [f"w{i}" for i in references["llama_tiny_kv"][:8]]


def test_cli_generate_needs_a_prompt(capsys, tmp_path):
    assert main(["generate", str(tmp_path)]) == 1
    assert "--prompt-ids" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "--prompt", "hi"]) == 1
    assert "--tokenizer" in capsys.readouterr().err


# -- sampling --------------------------------------------------------------------------------
CANDIDATES = 16


def numpy_sample(logits: np.ndarray, seen: set[int], params: list[float], u: float) -> int:
    """The sampling rule, in numpy: repetition penalty, temperature, the K candidates, top-k,
    top-p, then the first candidate whose cumulative probability passes u."""
    temperature, top_k, top_p, penalty = params
    x = logits.astype(np.float64).copy()
    for t in seen:
        x[t] = x[t] / penalty if x[t] > 0 else x[t] * penalty
    x /= temperature
    order = np.argsort(-x, kind="stable")[:CANDIDATES]
    v = x[order]
    if top_k > 0:
        v[int(top_k) :] = -np.inf
    p = np.exp(v - v.max())
    p /= p.sum()
    p[np.cumsum(p) - p >= top_p] = 0
    cum = np.cumsum(p)
    return int(order[np.argmax(cum > u * cum[-1])])


def ort_sampled(
    model: onnx.ModelProto, record: dict, prompt: list[int], n: int, params: list[float], seed: int
):
    """Sampled ids by onnxruntime on the CPU over the model as compiled for generation (its
    sampling nodes appended), fed the same draws as the Generator; and each step's logits."""
    from onnx2wgsl.runtime.generate import uniforms

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in s.get_inputs()}
    names = [o.name for o in s.get_outputs()]
    state = {
        p["past"]: np.zeros([d if isinstance(d, int) else 1 - (i == 2) for i, d in enumerate(ins[p["past"]].shape)],
                            np.float32)
        for p in record["state"]
    }  # fmt: skip
    draws = uniforms(seed)
    ids, total, out, steps = np.array([prompt], np.int64), 0, [], []
    for _ in range(n):
        seq = ids.shape[1]
        u = next(draws)
        feed = {"input_ids": ids, "attention_mask": np.ones((1, total + seq), np.int64), **state,
                "sampling_params": np.array([*params, u], np.float32)}  # fmt: skip
        if "position_ids" in ins:
            feed["position_ids"] = np.arange(total, total + seq)[None]
        res = dict(zip(names, s.run(None, feed)))
        out.append(int(res["sampled_token"][0, 0]))
        steps.append((res["logits"][0, -1], u))
        state = {p["past"]: res[p["present"]] for p in record["state"]}
        total += seq
        ids = np.array([[out[-1]]], np.int64)
    return out, steps


SAMPLING = [[1.0, 0, 1.0, 1.0], [0.8, 5, 0.9, 1.3], [1.5, 0, 0.7, 1.0], [0.7, 3, 1.0, 2.0]]


@pytest.fixture(scope="module")
def sampling_model():
    m = onnx.load(MODELS / "llama_tiny_kv.onnx")
    model, _, _, record = prepare(m, Generation(MAX_LENGTH, sample_candidates=CANDIDATES), {}, {})
    return model, record


@pytest.mark.parametrize("params", SAMPLING)
def test_the_sampling_nodes_follow_the_rule(sampling_model, params):
    model, record = sampling_model
    prompt = [1, 5, 7, 9]
    got, steps = ort_sampled(model, record, prompt, 12, params, seed=3)
    seen = set(prompt)
    for token, (logits, u) in zip(got, steps):
        assert token == numpy_sample(logits, seen, params, u)
        seen.add(token)
    assert len(set(got)) > 1


@pytest.fixture(scope="module")
def sampling_artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampling")
    compile_model(
        MODELS / "llama_tiny_kv.onnx", path, generation=Generation(MAX_LENGTH, sample_candidates=CANDIDATES)
    )
    return path


@pytest.mark.gpu
def test_sampling_on_the_gpu_matches_onnxruntime(sampling_model, sampling_artifact, device):
    model, record = sampling_model
    gen = onnx2wgsl.Generator(sampling_artifact, device=device)
    for params in SAMPLING:
        want, _ = ort_sampled(model, record, PROMPT, 40, params, seed=11)
        gen.reset()
        t, k, p, r = params
        got = list(gen.generate(PROMPT, 40, temperature=t, top_k=k, top_p=p, repetition_penalty=r, seed=11))
        assert got == want
    gen.reset()  # the same seed, the same tokens
    first = list(gen.generate(PROMPT, 8, temperature=0.9, seed=5))
    gen.reset()
    assert list(gen.generate(PROMPT, 8, temperature=0.9, seed=5)) == first
    gen.reset()
    greedy = ort_greedy(MODELS / "llama_tiny_kv.onnx", PROMPT, 8)
    assert list(gen.generate(PROMPT, 8)) == greedy
    gen.reset()
    assert list(gen.generate(PROMPT, 8, temperature=0)) == greedy
    with pytest.raises(InputError, match="top_p"):
        gen.generate(PROMPT, 8, top_p=0)


@pytest.mark.gpu
def test_a_greedy_artifact_refuses_sampling(artifacts, device):
    gen = onnx2wgsl.Generator(artifacts["gpt2_tiny_kv"], device=device)
    with pytest.raises(InputError, match="--sample-candidates"):
        gen.generate(PROMPT, 4, temperature=0.8)


@pytest.mark.gpu
def test_cli_generate_samples_with_a_seed(sampling_artifact, device, capsys):
    gen = onnx2wgsl.Generator(sampling_artifact, device=device)
    want = list(
        gen.generate(PROMPT, 10, temperature=0.8, top_k=8, top_p=0.95, repetition_penalty=1.2, seed=4)
    )
    args = ["generate", str(sampling_artifact), "--prompt-ids", "1,5,7,9", "--max-new-tokens", "10"]
    sampling = [
        "--temperature",
        "0.8",
        "--top-k",
        "8",
        "--top-p",
        "0.95",
        "--repetition-penalty",
        "1.2",
        "--seed",
        "4",
    ]
    assert main([*args, *sampling]) == 0
    assert [int(t) for t in capsys.readouterr().out.split()] == want


@pytest.mark.gpu
def test_a_prompt_longer_than_a_step_runs_in_pieces(references, tmp_path, device):
    """--max-prompt 3: memory for 3 new tokens a step; a prompt of 4 (or 40) runs in pieces."""
    res = compile_model(
        MODELS / "gpt2_tiny_kv.onnx", tmp_path, generation=Generation(MAX_LENGTH, max_prompt=3)
    )
    symbols = {s["name"]: s["max"] for s in res.artifact.manifest["symbols"]}
    assert symbols == {"sequence_length": 3, "total_sequence_length": MAX_LENGTH}
    gen = onnx2wgsl.Generator(tmp_path, device=device)
    assert list(gen.generate(PROMPT, max_new_tokens=24)) == references["gpt2_tiny_kv"][:24]
    gen.reset()
    long = [(7 * i) % 1000 for i in range(40)]
    assert list(gen.generate(long, max_new_tokens=8)) == ort_greedy(MODELS / "gpt2_tiny_kv.onnx", long, 8)
    with pytest.raises(CompileError, match="--max-prompt"):
        compile_model(MODELS / "gpt2_tiny_kv.onnx", tmp_path / "x", generation=Generation(8, max_prompt=9))


def test_generate_js_types_check_with_tsc(tmp_path):
    """A generation artifact's package ships generate.js with types that a consumer checks."""
    import subprocess

    tools = Path(__file__).resolve().parent.parent / ".cache" / "jstools" / "node_modules"
    if not (tools / ".bin" / "tsc").is_file():
        pytest.skip("typescript not installed (bash scripts/setup-browser.sh)")
    pkg = tmp_path / "llm"
    onnx2wgsl.compile(MODELS / "gpt2_tiny_kv.onnx", pkg, emit="js", generation=Generation(16))
    assert (
        json.loads((pkg / "package.json").read_text())["exports"]["./generate"]["default"] == "./generate.js"
    )
    (tmp_path / "main.ts").write_text(
        "import { createSession } from './llm/index.js';\n"
        "import { generate, resetGeneration } from './llm/generate.js';\n"
        "const s = await createSession();\nconst ac = new AbortController();\nconst ids: number[] = [];\n"
        "for await (const id of generate(s, [1, 2], { maxNewTokens: 4, eosTokenId: [0], signal: ac.signal })) ids.push(id);\n"
        "resetGeneration(s);\n"
        "for await (const id of s.generate([3], { maxNewTokens: 2 })) ids.push(id);\n"  # (the method form)
        "s.resetGeneration();\nexport {};\n"
    )
    (tmp_path / "bad.ts").write_text(
        "import { createSession } from './llm/index.js';\nimport { generate } from './llm/generate.js';\n"
        "const s = await createSession();\ngenerate(s, [1], { maxNewTokens: 'many' });\nexport {};\n"
    )
    (tmp_path / "node_modules").symlink_to(tools)
    base = [str(tools / ".bin" / "tsc"), "--noEmit", "--strict", "--target", "es2022", "--module", "esnext",
            "--moduleResolution", "bundler", "--lib", "es2022,dom"]  # fmt: skip
    r = subprocess.run([*base, "main.ts", "bad.ts"], capture_output=True, text=True, cwd=tmp_path)
    errors = [line for line in r.stdout.splitlines() if ": error TS" in line]
    assert len(errors) == 1 and errors[0].startswith("bad.ts(4,"), r.stdout + r.stderr


@pytest.mark.parametrize(
    "past, present",
    [
        ("past_key_values.3.key", "present.3.key"),
        ("past_key_values.0.value", "present.0.value"),
        ("past_key.2", "present_key.2"),
        ("past_value_1", "present_value_1"),
        ("past.0", "present.0"),  # GPT-2's old form, keys and values stacked
    ],
)
def test_state_pairs_recognised_by_name(past, present):
    x = helper.make_tensor_value_info
    graph = helper.make_graph(
        [
            helper.make_node("Identity", [past], [present]),
            helper.make_node("Identity", ["input_ids"], ["logits"]),
        ],
        "g",
        [
            x("input_ids", onnx.TensorProto.INT64, ["b", "s"]),
            x(past, onnx.TensorProto.FLOAT, ["b", 2, "p", 4]),
        ],
        [
            x("logits", onnx.TensorProto.INT64, ["b", "s"]),
            x(present, onnx.TensorProto.FLOAT, ["b", 2, "t", 4]),
        ],
    )
    assert state_pairs(helper.make_model(graph), {}) == [(past, present)]


@pytest.mark.gpu
def test_a_batch_of_sequences(references, tmp_path, device):
    """--dim batch_size=2: two prompts of one length, an array of 2 ids a step, each row the
    ids of its own sequence; sampling draws for each row."""
    prompts = np.array([PROMPT, [2, 4, 6, 8]])
    generation = Generation(40, sample_candidates=CANDIDATES)
    compile_model(MODELS / "llama_tiny_kv.onnx", tmp_path, dims={"batch_size": 2}, generation=generation)
    gen = onnx2wgsl.Generator(tmp_path, device=device)
    assert gen.batch == 2
    steps = list(gen.generate(prompts, max_new_tokens=16))
    got = np.stack(steps, axis=1)
    assert got.shape == (2, 16)
    assert got[0].tolist() == references["llama_tiny_kv"][:16]
    assert got[1].tolist() == ort_greedy(MODELS / "llama_tiny_kv.onnx", [2, 4, 6, 8], 16)
    gen.reset()  # two rows of one prompt sample differently (a draw per row), reproducibly
    twice = np.array([PROMPT, PROMPT])
    a = np.stack(list(gen.generate(twice, 12, temperature=1.0, seed=2)), axis=1)
    gen.reset()
    b = np.stack(list(gen.generate(twice, 12, temperature=1.0, seed=2)), axis=1)
    assert (a == b).all() and (a[0] != a[1]).any()
    gen.reset()
    with pytest.raises(InputError, match=r"\[2, n\]"):
        gen.generate(PROMPT)


@pytest.mark.gpu
def test_generate_text_with_a_tokenizer(artifacts, references, tmp_path, device):
    import tokenizers

    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(1000)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    with onnx2wgsl.Generator(artifacts["llama_tiny_kv"], device=device) as gen:
        text = "".join(gen.generate_text("w1 w5 w7 w9", tmp_path / "tokenizer.json", max_new_tokens=8))
        assert text.split() == [f"w{i}" for i in references["llama_tiny_kv"][:8]]
    with pytest.raises(InputError, match="not found"):
        gen.generate_text("w1", tmp_path / "missing.json").__next__()


@pytest.mark.gpu
def test_one_token_a_step_and_the_shortest_sequence(tmp_path, device):
    """--max-prompt 1 fixes the sequence dim to 1 (the prompt goes in token by token); a max
    length of 2 holds a prompt token and one more; 1 is refused."""
    model = MODELS / "gpt2_tiny_kv.onnx"
    res = compile_model(model, tmp_path / "a", generation=Generation(8, max_prompt=1))
    assert [s["name"] for s in res.artifact.manifest["symbols"]] == ["total_sequence_length"]
    gen = onnx2wgsl.Generator(tmp_path / "a", device=device)
    assert list(gen.generate([5, 6, 7], 5)) == ort_greedy(model, [5, 6, 7], 5)
    compile_model(model, tmp_path / "b", generation=Generation(2))
    assert list(onnx2wgsl.Generator(tmp_path / "b", device=device).generate([5], 5)) == ort_greedy(
        model, [5], 1
    )
    with pytest.raises(CompileError, match="at least 2"):
        compile_model(model, tmp_path / "c", generation=Generation(1))


@pytest.mark.gpu
def test_output_logits_reads_back_the_last_positions_logits(artifacts, device):
    s = ort.InferenceSession(str(MODELS / "llama_tiny_kv.onnx"), providers=["CPUExecutionProvider"])
    past = {
        f"past_key_values.{i}.{k}": np.zeros((1, 2, 0, 8), np.float32)
        for i in range(2)
        for k in ("key", "value")
    }
    gen = onnx2wgsl.Generator(artifacts["llama_tiny_kv"], device=device)
    ids, total = np.array([PROMPT]), 0
    for token, logits in gen.generate(PROMPT, max_new_tokens=6, output_logits=True):
        n = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, total + n), np.int64),
                "position_ids": np.arange(total, total + n)[None], **past}  # fmt: skip
        res = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))
        np.testing.assert_allclose(logits, res["logits"][0, -1], rtol=1e-4, atol=1e-5)
        assert token == int(np.argmax(logits))
        past = {k: res[k.replace("past_key_values", "present")] for k in past}
        total += n
        ids = np.array([[token]])


# -- onnxruntime-genai's model builder form (tools/export_genai.py) -----------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name, n", [("llama_genai_fp32", 64), ("llama_genai_int4", 24)])
def test_genai_models_generate_as_onnxruntime(name, n, tmp_path, device):
    """GroupQueryAttention models, as onnxruntime-genai's builder writes them (the seqlens and
    total length computed from attention_mask, the head size a dim_param of its own that
    --dim binds), generate onnxruntime's greedy ids. The int4 model runs in onnxruntime with
    MatMulNBits' accuracy_level 0 (its CPU kernel otherwise rounds activations to int8)."""
    from test_gqa import accuracy_level_0

    model = onnx.load(MODELS / f"{name}.onnx")
    compile_model(model, tmp_path, generation=Generation(MAX_LENGTH), dims={"kv_cache_dim": 16})
    want = ort_greedy(accuracy_level_0(model).SerializeToString(), PROMPT, n, head_size=16)
    with onnx2wgsl.Generator(tmp_path, device=device) as gen:
        got = list(gen.generate(PROMPT, max_new_tokens=n))
    assert got == want
    assert len(set(got)) > 5  # (not one token repeated)


def test_a_max_length_past_the_rotary_caches_is_refused(tmp_path):
    model = onnx.load(MODELS / "llama_genai_fp32.onnx")  # caches of 128 positions
    with pytest.raises(CompileError, match="past the 128 positions of the rotary caches"):
        compile_model(model, tmp_path, generation=Generation(200), dims={"kv_cache_dim": 16})

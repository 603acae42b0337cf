"""Full-size models as people export them: export, compile, run, compare (run by hand, not in CI).

Two steps, in two environments:

1. ``export`` needs torch, torchvision, transformers and optimum (``optimum-cli``), which the test
   environment does not carry. Every model has random weights from its published config (nothing
   is downloaded); a WordLevel tokenizer or a feature extractor is saved beside it where optimum
   needs one::

       python3 -m venv /work/venv-optimum
       /work/venv-optimum/bin/pip install torch==2.13.0 'optimum[onnx]' transformers onnxruntime onnxscript
       /work/venv-optimum/bin/pip install -c <(echo torch==2.13.0) torchvision==0.28.0  # see docs/wild_models.md
       /work/venv-optimum/bin/python tools/wild_models.py export --work /tmp/wild [--only NAME,...]

2. ``check`` (the repo's venv) compiles each exported ONNX file with the ``onnx2wgsl`` command line
   as a user would, runs the artifact on the WebGPU adapter with random inputs, compares with
   onnxruntime's CPU provider (largest error over the output's largest magnitude) and prints the
   table of docs/wild_models.md::

       .venv/bin/python tools/wild_models.py check --work /tmp/wild [--only NAME,...]

3. ``fp16`` (the repo's venv) converts each exported file to float16 (onnxruntime's converter,
   float16 inputs and outputs, as a float16 export has them), compiles it with no ``--precision``
   (a float16 model compiles at fp16: f16 weights and activations), runs it on float16 inputs
   and compares with onnxruntime's CPU provider on the float32 file (bar: 1e-2 of each output's
   largest magnitude, the bar of --precision fp16)::

       .venv/bin/python tools/wild_models.py fp16 --work /tmp/wild --only bert-base,vit-base

The models are hundreds of MB each: keep them out of the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# name -> how it is exported and compiled. "files": the ONNX files (relative to the export dir)
# to check, each with its --dim/--shape flags and the sizes its random inputs take.
SEQ = 32
MODELS: dict[str, dict] = {
    "bert-base": {"exporter": "optimum", "task": "feature-extraction"},
    "bert-base-O2": {
        "exporter": "optimum --optimize O2",
        "task": "feature-extraction",
        "hf": "bert-base",
        "args": ["--optimize", "O2"],
    },
    "distilbert-base": {"exporter": "optimum", "task": "feature-extraction"},
    "vit-base": {"exporter": "optimum", "task": "image-classification"},
    "whisper-tiny": {"exporter": "optimum", "task": "automatic-speech-recognition-with-past"},
    "gpt2": {"exporter": "optimum", "task": "text-generation-with-past"},
    "gpt2-O2": {
        "exporter": "optimum --optimize O2",
        "task": "text-generation-with-past",
        "hf": "gpt2",
        "args": ["--optimize", "O2"],
    },
    "t5-small": {"exporter": "optimum", "task": "text2text-generation-with-past"},
    "llama-tinyllama-2l": {"exporter": "optimum", "task": "text-generation-with-past"},
    "llama-tinyllama-2l-genai-int4": {
        "exporter": "onnxruntime-genai builder",
        "task": "-p int4 -e webgpu (GQA, MatMulNBits, fp16)",
        "hf": "llama-tinyllama-2l",
        "args": ["-p", "int4", "-e", "webgpu"],
    },
    "wav2vec2-base": {"exporter": "optimum", "task": "feature-extraction"},
    "resnet18": {"exporter": "torch.onnx", "task": "image-classification"},
    "mobilenet_v3_small": {"exporter": "torch.onnx", "task": "image-classification"},
    "efficientnet_b0": {"exporter": "torch.onnx", "task": "image-classification"},
    "fcn-ocr-dynamic": {"exporter": "torch.onnx", "task": "dense prediction, dynamic H and W"},
    "crnn-ocr-dynamic-width": {"exporter": "torch.onnx", "task": "text line recognition, dynamic W"},
    "fcn-ocr-dynamic-sized": {"exporter": "torch.onnx dynamo", "task": "dense prediction, dynamic H and W"},
}


# ---------------------------------------------------------------- export (torch + optimum venv)


def _word_tokenizer(out: Path, vocab_size: int, **special) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    names = {"unk_token": "w0", "pad_token": "w1", "bos_token": "w2", "eos_token": "w3", **special}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=names["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, **names).save_pretrained(out)


def _hf_model(name: str, hf: Path) -> None:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if name == "bert-base":
        cfg = tf.BertConfig()  # bert-base-uncased: 12 layers, 768 hidden, 12 heads, vocab 30522
        tf.BertModel(cfg).save_pretrained(hf)
        _word_tokenizer(hf, cfg.vocab_size, cls_token="w4", sep_token="w5", mask_token="w6")
    elif name == "distilbert-base":
        cfg = tf.DistilBertConfig()
        tf.DistilBertModel(cfg).save_pretrained(hf)
        _word_tokenizer(hf, cfg.vocab_size, cls_token="w4", sep_token="w5", mask_token="w6")
    elif name == "vit-base":
        cfg = tf.ViTConfig(num_labels=1000)  # google/vit-base-patch16-224
        tf.ViTForImageClassification(cfg).save_pretrained(hf)
        tf.ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(hf)
    elif name == "whisper-tiny":
        cfg = tf.WhisperConfig(
            vocab_size=51865,
            num_mel_bins=80,
            encoder_layers=4,
            encoder_attention_heads=6,
            decoder_layers=4,
            decoder_attention_heads=6,
            d_model=384,
            encoder_ffn_dim=1536,
            decoder_ffn_dim=1536,
            max_source_positions=1500,
            max_target_positions=448,
            decoder_start_token_id=50258,
            pad_token_id=50257,
            bos_token_id=50257,
            eos_token_id=50257,
        )
        tf.WhisperForConditionalGeneration(cfg).save_pretrained(hf)
        tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(hf)
        _word_tokenizer(hf, cfg.vocab_size)
    elif name == "gpt2":
        cfg = tf.GPT2Config()  # gpt2: 124M, vocab 50257
        tf.GPT2LMHeadModel(cfg).save_pretrained(hf)
        _word_tokenizer(hf, cfg.vocab_size)
    elif name == "t5-small":
        cfg = tf.T5Config(
            vocab_size=32128,
            d_model=512,
            d_kv=64,
            d_ff=2048,
            num_layers=6,
            num_heads=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
        tf.T5ForConditionalGeneration(cfg).save_pretrained(hf)
        _word_tokenizer(hf, cfg.vocab_size, pad_token="w0", eos_token="w1", unk_token="w2", bos_token="w3")
    elif name == "llama-tinyllama-2l":
        cfg = tf.LlamaConfig(  # TinyLlama-1.1B's shapes, 2 layers
            vocab_size=32000,
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=2,
            num_attention_heads=32,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
        )
        tf.LlamaForCausalLM(cfg).save_pretrained(hf)
        _word_tokenizer(hf, cfg.vocab_size)
    elif name == "wav2vec2-base":
        cfg = tf.Wav2Vec2Config()  # facebook/wav2vec2-base: conv feature encoder + 12 layers
        tf.Wav2Vec2Model(cfg).save_pretrained(hf)
        tf.Wav2Vec2FeatureExtractor().save_pretrained(hf)
    else:
        raise KeyError(name)


def _calibrate_batchnorm(model, x) -> None:
    """Running statistics from a few random batches: at their initial values (mean 0, var 1)
    deep random nets such as EfficientNet shrink activations to ~1e-14, which compares nothing."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for i in range(2):
            model(torch.randn(4, *x.shape[1:], generator=torch.Generator().manual_seed(i)))
    model.eval()


def _torchvision(name: str, out: Path) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    dyn = None
    if name.startswith("fcn-ocr-dynamic"):
        # upsampled by 2 (needs H and W divisible by 16), or to the skip's size (any H and W)
        sized = name.endswith("-sized")

        class Det(torch.nn.Module):
            def __init__(self):
                super().__init__()
                c = [3, 16, 32, 64, 128]
                self.down = torch.nn.ModuleList(
                    torch.nn.Sequential(
                        torch.nn.Conv2d(c[i], c[i + 1], 3, stride=2, padding=1),
                        torch.nn.BatchNorm2d(c[i + 1]),
                        torch.nn.ReLU(),
                        torch.nn.Conv2d(c[i + 1], c[i + 1], 3, padding=1),
                        torch.nn.ReLU(),
                    )
                    for i in range(4)
                )
                self.lat = torch.nn.ModuleList(torch.nn.Conv2d(c[i + 1], 32, 1) for i in range(4))
                self.head = torch.nn.Sequential(
                    torch.nn.Conv2d(32, 16, 3, padding=1),
                    torch.nn.ReLU(),
                    torch.nn.ConvTranspose2d(16, 8, 2, stride=2),
                    torch.nn.ReLU(),
                    torch.nn.ConvTranspose2d(8, 1, 2, stride=2),
                    torch.nn.Sigmoid(),
                )

            def forward(self, x):
                feats = []
                for d in self.down:
                    x = d(x)
                    feats.append(x)
                y = self.lat[3](feats[3])
                for i in (2, 1, 0):
                    skip = self.lat[i](feats[i])
                    if sized:
                        up = torch.nn.functional.interpolate(y, size=skip.shape[-2:], mode="nearest")
                    else:
                        up = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
                    y = up + skip
                return self.head(y)

        model = Det().eval()
        dyn = {"image": {0: "batch", 2: "height", 3: "width"}, "prob": {0: "batch", 2: "oh", 3: "ow"}}
        args = (torch.randn(1, 3, 64, 128),)
    elif name == "crnn-ocr-dynamic-width":

        class CRNN(torch.nn.Module):
            """A CRNN text-line recognizer: conv stack over a 32-pixel-high line of any width,
            a bidirectional LSTM over the columns, per-column class log-probabilities."""

            def __init__(self, classes: int = 97):
                super().__init__()
                c = torch.nn
                self.conv = c.Sequential(
                    c.Conv2d(1, 32, 3, padding=1), c.ReLU(), c.MaxPool2d(2),
                    c.Conv2d(32, 64, 3, padding=1), c.ReLU(), c.MaxPool2d(2),
                    c.Conv2d(64, 128, 3, padding=1), c.BatchNorm2d(128), c.ReLU(), c.MaxPool2d((2, 1)),
                    c.Conv2d(128, 128, 3, padding=1), c.ReLU(), c.MaxPool2d((4, 1)),
                )  # fmt: skip
                self.rnn = c.LSTM(128, 96, bidirectional=True, batch_first=True)
                self.fc = c.Linear(192, classes)

            def forward(self, x):
                f = self.conv(x).squeeze(2).permute(0, 2, 1)  # [b, W/4, 128]
                y, _ = self.rnn(f)
                return self.fc(y).log_softmax(-1)

        model = CRNN().eval()
        dyn = {"image": {0: "batch", 3: "width"}, "logits": {0: "batch", 1: "steps"}}
        args = (torch.randn(1, 1, 32, 128),)
    else:
        model = getattr(torchvision.models, name)(weights=None).eval()
        dyn = {"image": {0: "batch"}, "logits": {0: "batch"}}
        args = (torch.randn(1, 3, 224, 224),)
    _calibrate_batchnorm(model, args[0])
    out.mkdir(parents=True, exist_ok=True)
    outname = "prob" if name.startswith("fcn-ocr-dynamic") else "logits"
    if name == "fcn-ocr-dynamic-sized":  # the dynamo exporter keeps skip.shape symbolic
        h, w = torch.export.Dim("height", min=32, max=512), torch.export.Dim("width", min=32, max=1024)
        with torch.no_grad():
            prog = torch.onnx.export(
                model,
                args,
                input_names=["image"],
                output_names=["prob"],
                dynamic_shapes=({2: h, 3: w},),
                opset_version=18,
                dynamo=True,
            )
        prog.save(str(out / "model.onnx"))
        return
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(out / "model.onnx"),
            input_names=["image"],
            output_names=[outname],
            dynamic_axes=dyn,
            opset_version=17,
            dynamo=False,
        )


def export(work: Path, names: list[str]) -> None:
    for name in names:
        spec = MODELS[name]
        d = work / name
        onnx_dir = d / "onnx"
        if (onnx_dir / "done").exists():
            print(f"{name}: exported already")
            continue
        shutil.rmtree(onnx_dir, ignore_errors=True)
        t0 = time.time()
        if spec["exporter"].startswith("torch.onnx"):
            _torchvision(name, onnx_dir)
        elif spec["exporter"].startswith("onnxruntime-genai"):
            # onnxruntime-genai's model builder (the LLM form run on WebGPU); it lives in its own
            # environment (GENAI_PYTHON, default /work/export-venv/bin/python)
            hf = work / spec["hf"] / "hf"
            py = os.environ.get("GENAI_PYTHON", "/work/export-venv/bin/python")
            cmd = [py, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(onnx_dir)]
            cmd += [*spec["args"], "-c", str(d / "cache")]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        else:
            hf = work / spec.get("hf", name) / "hf"
            if not (hf / "config.json").exists():
                _hf_model(spec.get("hf", name), hf)
            cli = Path(sys.executable).parent / "optimum-cli"
            cmd = [
                str(cli),
                "export",
                "onnx",
                "--model",
                str(hf),
                "--task",
                spec["task"],
                *spec.get("args", []),
                str(onnx_dir),
            ]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        (onnx_dir / "done").write_text("")
        print(f"{name}: exported in {time.time() - t0:.0f}s", flush=True)


# ---------------------------------------------------------------- check (the repo's venv)

# Per ONNX file: the dims to keep symbolic (or bind) and the values random inputs use.
B = 1


def plan(name: str, onnx_dir: Path) -> list[tuple[str, str, list[str], dict]]:
    """(file, artifact name, compile flags, sizes of the run) for each ONNX file of a model."""
    files = sorted(p.name for p in onnx_dir.glob("*.onnx"))
    out = []
    for f in files:
        flags: list[str] = []
        run: dict = {}
        if name in ("bert-base", "bert-base-O2", "distilbert-base"):
            flags = ["--dim", "batch_size=1..2", "--dim", "sequence_length=1..128"]
            run = {"batch_size": 1, "sequence_length": SEQ}
        elif name == "vit-base":
            flags = [
                "--dim",
                "batch_size=1",
                "--dim",
                "num_channels=3",
                "--dim",
                "height=224",
                "--dim",
                "width=224",
            ]
            run = {"batch_size": 1, "num_channels": 3, "height": 224, "width": 224}
        elif name == "wav2vec2-base":
            flags = ["--dim", "batch_size=1", "--dim", "sequence_length=400..48000"]
            run = {"batch_size": 1, "sequence_length": 16000}
        elif name in ("resnet18", "mobilenet_v3_small", "efficientnet_b0"):
            flags = ["--dim", "batch=1"]
            run = {"batch": 1}
        elif name == "crnn-ocr-dynamic-width":
            flags = ["--dim", "batch=1..2", "--dim", "width=16..512"]
            run = {"batch": 1, "width": 200}
        elif name.startswith("fcn-ocr-dynamic"):
            flags = ["--dim", "batch=1", "--dim", "height=32..256", "--dim", "width=32..512"]
            run = {"batch": 1, "height": 96, "width": 160}
            if name.endswith("-sized"):
                run = {"batch": 1, "height": 100, "width": 150}  # any size: not a multiple of 16
        elif name == "whisper-tiny":
            flags = ["--dim", "batch_size=1"]
            run = {"batch_size": 1}
            if f.startswith("encoder"):
                pass
            else:
                flags += [
                    "--dim",
                    "decoder_sequence_length=1..64",
                    "--dim",
                    "encoder_sequence_length=1500",
                ]
                run.update(decoder_sequence_length=4, encoder_sequence_length=1500)
                if "past" in f or "merged" in f:
                    flags += ["--dim", "past_decoder_sequence_length=1..64"]
                    run.update(past_decoder_sequence_length=8)
        elif name in ("gpt2", "gpt2-O2", "llama-tinyllama-2l"):
            flags = [
                "--dim",
                "batch_size=1",
                "--dim",
                "sequence_length=1..64",
                "--dim",
                "past_sequence_length=1..64",
            ]
            run = {"batch_size": 1, "sequence_length": 8, "past_sequence_length": 8}
        elif name == "llama-tinyllama-2l-genai-int4":
            flags = [
                "--dim",
                "batch_size=1",
                "--dim",
                "sequence_length=1..64",
                "--dim",
                "past_sequence_length=0..64",
                "--dim",
                "total_sequence_length=1..128",
                "--dim",
                "kv_cache_dim=64",
            ]
            run = {
                "batch_size": 1,
                "sequence_length": 8,
                "past_sequence_length": 8,
                "total_sequence_length": 16,
            }
            run["kv_cache_dim"] = 64
        elif name == "t5-small":
            flags = ["--dim", "batch_size=1", "--dim", "encoder_sequence_length=1..64"]
            run = {"batch_size": 1, "encoder_sequence_length": 16}
            if f.startswith("decoder"):
                flags += ["--dim", "decoder_sequence_length=1..64"]
                run.update(decoder_sequence_length=4)
            if "past" in f or "merged" in f:
                flags += ["--dim", "past_decoder_sequence_length=1..64"]
                run.update(past_decoder_sequence_length=8)
        if name in ("gpt2", "gpt2-O2", "llama-tinyllama-2l"):
            # the first step of generation feeds an empty cache
            zero = [x if x != "past_sequence_length=1..64" else "past_sequence_length=0..64" for x in flags]
            out.append((f, "model-past0", zero, {**run, "past_sequence_length": 0}))
        if name == "fcn-ocr-dynamic":
            # its sizes agree only for H and W divisible by 16, which a range cannot say: the
            # symbolic compile is refused (recorded); bound dims compile
            out.append(
                (f, "model-bound", ["--dim", "batch=1", "--dim", "height=96", "--dim", "width=160"], run)
            )
        if "merged" in f:
            # One If on the run-time flag use_cache_branch selects outputs whose shapes differ
            # between its branches: one artifact per value of the flag (--const).
            for flag in (True, False):
                np.save(onnx_dir.parent / f"use_cache_{int(flag)}.npy", np.array([flag]))
                extra = ["--const", f"use_cache_branch={onnx_dir.parent / f'use_cache_{int(flag)}.npy'}"]
                out.append(
                    (f, f"{Path(f).stem}-cache{int(flag)}", flags + extra, {**run, "use_cache_branch": flag})
                )
            continue
        out.append((f, Path(f).stem, flags, run))
    return out


def _dim_value(param: str, sizes: dict) -> int:
    """A dim_param's size in this run; exporters write derived dims as arithmetic over others."""
    if param in sizes:
        return sizes[param]
    try:
        return int(eval(param, {"__builtins__": {}}, dict(sizes)))  # noqa: S307 - our own exports
    except (NameError, SyntaxError):
        return 1


def random_feeds(model_path: Path, sizes: dict) -> dict[str, np.ndarray]:
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            else:
                shape.append(_dim_value(d.dim_param, sizes))
        dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        n = inp.name
        if n == "use_cache_branch":
            feeds[n] = np.array([sizes.get("use_cache_branch", True)])
        elif np.issubdtype(dt, np.integer):
            if "mask" in n:
                feeds[n] = np.ones(shape, dt)
            elif "token_type" in n:
                feeds[n] = np.zeros(shape, dt)
            elif "position" in n:
                start = sizes.get("past_sequence_length", 0)
                feeds[n] = np.broadcast_to(np.arange(start, start + shape[-1], dtype=dt), shape).copy()
            else:
                feeds[n] = rng.integers(0, 1000, shape).astype(dt)
        elif dt == np.bool_:
            feeds[n] = np.ones(shape, dt)
        else:
            feeds[n] = rng.standard_normal(shape).astype(dt)
    return feeds


def _reference_model(path: Path, art: Path) -> str:
    """The model onnxruntime runs as the reference: ``path``, or a copy with MatMulNBits'
    accuracy_level 0 (onnxruntime's CPU kernel rounds the activations to int8 at level 4, as
    onnxruntime-genai's builder writes it: about 1% off the float result, which onnx2wgsl
    computes)."""
    import onnx

    model = onnx.load(str(path))
    changed = False
    for n in model.graph.node:
        for a in n.attribute:
            if n.op_type == "MatMulNBits" and a.name == "accuracy_level" and a.i:
                a.i, changed = 0, True
    if not changed:
        return str(path)
    copy = art.parent / f"{art.name}-reference" / path.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(copy), save_as_external_data=True, location=path.name + ".data")
    return str(copy)


def check_file(path: Path, flags: list[str], sizes: dict, art: Path, venv_bin: Path) -> dict:
    import onnxruntime as ort

    row: dict = {"file": path.name, "flags": " ".join(f"'{x}'" if " " in x else x for x in flags)}
    shutil.rmtree(art, ignore_errors=True)
    cmd = [str(venv_bin / "onnx2wgsl"), "compile", str(path), "-o", str(art), *flags]
    row["cmd"] = " ".join(f"'{x}'" if " " in x else x for x in cmd)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    row["compile_s"] = round(time.time() - t0, 1)
    if r.returncode != 0:
        row["status"] = "compile error"
        row["error"] = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1][:400]
        return row
    import onnx2wgsl

    feeds = random_feeds(path, sizes)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref_sess = ort.InferenceSession(_reference_model(path, art), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in ref_sess.get_outputs()]
    ref = ref_sess.run(None, feeds)
    try:
        with onnx2wgsl.load(art) as sess:
            in_names = {i.name for i in sess.get_inputs()} | {
                i.name for i in getattr(sess, "get_overridable_initializers", lambda: [])()
            }
            gfeeds = {k: v for k, v in feeds.items() if k in in_names}
            t0 = time.time()
            got = sess.run(names, gfeeds)
            row["run_s"] = round(time.time() - t0, 2)
    except Exception as e:  # noqa: BLE001 - recorded in the table
        row["status"] = "run error"
        row["error"] = f"{type(e).__name__}: {e}"[:400]
        return row
    worst = 0.0
    worst_name = ""
    # the bar: 1e-3 of the output's scale; float16 outputs 4e-3 (onnxruntime rounds every
    # intermediate to float16, about 5e-4 each; onnx2wgsl computes in f32 and rounds once)
    bar = 4e-3 if any(np.asarray(a).dtype == np.float16 for a in ref) else 1e-3
    row["bar"] = bar
    for n, a, b in zip(names, ref, got):
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        if a.shape != b.shape:
            row["status"] = "mismatch"
            row["error"] = f"{n}: shape {b.shape} vs onnxruntime {a.shape}"
            return row
        if a.size == 0:
            continue
        scale = max(np.abs(a).max(), 1e-6)
        err = float(np.abs(a - b).max() / scale)
        if err > worst:
            worst, worst_name = err, n
    row["max_rel_err"] = worst
    row["worst_output"] = worst_name
    row["status"] = "ok" if worst <= bar else "mismatch"
    return row


def check(work: Path, names: list[str]) -> None:
    venv_bin = Path(sys.executable).parent
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in names:
        onnx_dir = work / name / "onnx"
        if not (onnx_dir / "done").exists():
            print(f"{name}: not exported (run `export` first)")
            continue
        import onnx

        rows = []
        for f, label, flags, sizes in plan(name, onnx_dir):
            row = check_file(onnx_dir / f, flags, sizes, work / name / "art" / label, venv_bin)
            row["file"] = label
            m = onnx.load(str(onnx_dir / f), load_external_data=False)
            row["opset"] = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
            row["run_sizes"] = sizes
            print(name, json.dumps(row), flush=True)
            rows.append(row)
        results[name] = rows
        results_path.write_text(json.dumps(results, indent=1))
    print(table(results))


def fp16(work: Path, names: list[str]) -> None:
    """Each exported file converted to float16 and compiled as it is (fp16 by default), against
    onnxruntime on the float32 file: | model | file | run at | max rel err | status |."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    import onnx2wgsl

    lines = ["| model | file | run at | storage | max rel err | status |", "|---|---|---|---|---:|---|"]
    for name in names:
        onnx_dir = work / name / "onnx"
        if not (onnx_dir / "done").exists():
            print(f"{name}: not exported (run `export` first)")
            continue
        for f, label, flags, sizes in plan(name, onnx_dir):
            src, half = onnx_dir / f, work / name / "fp16" / f
            half.parent.mkdir(parents=True, exist_ok=True)
            if not half.exists():
                m = convert_float_to_float16(
                    onnx.load(str(src)), keep_io_types=False, disable_shape_infer=True
                )
                onnx.save(m, str(half), save_as_external_data=True, location=f + ".data")
            art = work / name / "art" / f"{label}-fp16"
            shutil.rmtree(art, ignore_errors=True)
            cmd = [
                str(Path(sys.executable).parent / "onnx2wgsl"),
                "compile",
                str(half),
                "-o",
                str(art),
                *flags,
            ]
            r = subprocess.run(cmd, capture_output=True, text=True)
            run_at = ", ".join(f"{k}={v}" for k, v in sizes.items())
            if r.returncode != 0:
                error = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1][:240].replace("|", "/")
                lines.append(f"| {name} | {label} | {run_at} | | | compile error: {error} |")
                print(lines[-1], flush=True)
                continue
            storage = "f16" if "a float16 model: compiled at --precision fp16" in r.stdout else "f32"
            feeds = random_feeds(src, sizes)
            so = ort.SessionOptions()
            so.log_severity_level = 3
            ref_sess = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
            names_out = [o.name for o in ref_sess.get_outputs()]
            ref = ref_sess.run(None, feeds)
            kinds = {
                i.name: i.type.tensor_type.elem_type
                for i in onnx.load(str(half), load_external_data=False).graph.input
            }
            feeds = {
                k: v.astype(np.float16) if kinds.get(k) == onnx.TensorProto.FLOAT16 else v
                for k, v in feeds.items()
            }
            with onnx2wgsl.load(art) as sess:
                got = sess.run(
                    names_out, {i.name: feeds[i.name] for i in sess.get_inputs() if i.name in feeds}
                )
            worst = 0.0
            for a, b in zip(ref, got):
                a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
                if a.size:
                    err = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6))
                    worst = max(worst, err if np.isfinite(b).all() else float("inf"))
            status = "ok" if worst <= 1e-2 else "mismatch"
            lines.append(f"| {name} | {label} | {run_at} | {storage} | {worst:.1e} | {status} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


PADDED = {  # a batch of 2 whose first row is left-padded: masks with zeros, positions from them
    "bert-base": (["batch_size=1..2", "sequence_length=1..128"], {"b": 2, "s": 24}),
    "distilbert-base": (["batch_size=1..2", "sequence_length=1..128"], {"b": 2, "s": 24}),
    "gpt2": (
        ["batch_size=1..2", "sequence_length=1..64", "past_sequence_length=0..64"],
        {"b": 2, "s": 6, "p": 5},
    ),
    "llama-tinyllama-2l": (
        ["batch_size=1..2", "sequence_length=1..64", "past_sequence_length=0..64"],
        {"b": 2, "s": 6, "p": 5},
    ),
}


def padded(work: Path, names: list[str]) -> None:
    """Batches of 2 with a left-padded row (attention masks with zeros), as generation batches
    prompts of different lengths: the masked paths of the fused attention at full width."""
    import onnxruntime as ort

    import onnx2wgsl

    for name in names:
        if name not in PADDED:
            continue
        dims, n = PADDED[name]
        path = work / name / "onnx" / "model.onnx"
        art = work / name / "art" / "padded"
        shutil.rmtree(art, ignore_errors=True)
        cmd = [str(Path(sys.executable).parent / "onnx2wgsl"), "compile", str(path), "-o", str(art)]
        subprocess.run(cmd + [x for d in dims for x in ("--dim", d)], check=True, capture_output=True)
        b, s, p = n["b"], n["s"], n.get("p", 0)
        rng = np.random.default_rng(1)
        ref_sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds: dict[str, np.ndarray] = {}
        for i in ref_sess.get_inputs():
            if i.name == "input_ids":
                feeds[i.name] = rng.integers(0, 1000, (b, s)).astype(np.int64)
            elif i.name == "attention_mask":
                mask = np.ones((b, p + s), np.int64)
                mask[0, : (p + s) // 3] = 0
                feeds[i.name] = mask
            elif i.name == "token_type_ids":
                feeds[i.name] = np.zeros((b, s), np.int64)
            elif i.name == "position_ids":
                mask = feeds["attention_mask"]
                pos = np.cumsum(mask, -1) - 1
                pos[mask == 0] = 1
                feeds[i.name] = pos[:, -s:].astype(np.int64)
            elif i.name.startswith("past_key_values"):
                feeds[i.name] = rng.standard_normal([b, i.shape[1], p, i.shape[3]]).astype(np.float32)
        ref = ref_sess.run(None, feeds)
        with onnx2wgsl.load(art) as sess:
            got = sess.run([o.name for o in ref_sess.get_outputs()], feeds)
        worst = max(float(np.abs(a - g).max() / max(np.abs(a).max(), 1e-6)) for a, g in zip(ref, got))
        print(f"| {name} | {' '.join(dims)} | {', '.join(f'{k}={v}' for k, v in n.items())} | {worst:.1e} |")


def table(results: dict) -> str:
    lines = [
        "| model | exporter | task | file | opset | dims (compile) | run at | compile s | run s | max rel err | status |",
        "|---|---|---|---|---:|---|---|---:|---:|---:|---|",
    ]
    for name, spec in MODELS.items():
        for row in results.get(name, []):
            err = f"{row['max_rel_err']:.1e}" if "max_rel_err" in row else ""
            error = row.get("error", "").removeprefix("error: ")
            status = row["status"] + (f": {error[:240]}{'...' if len(error) > 240 else ''}" if error else "")
            run_at = ", ".join(f"{k}={v}" for k, v in row.get("run_sizes", {}).items())
            flags = " ".join(
                f"use_cache_branch={'true' if x.endswith('1.npy') else 'false'}" if x.endswith(".npy") else x
                for x in row["flags"].replace("--dim ", "").split(" ")
            )
            lines.append(
                f"| {name} | {spec['exporter']} | {spec['task']} | {row['file']} | {row.get('opset', '')} | "
                f"{flags} | {run_at} | {row['compile_s']} | {row.get('run_s', '')} | {err} | "
                f"{status.replace('|', '/')} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["export", "check", "fp16", "padded", "table"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/wild"))
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    a = ap.parse_args()
    names = [n for n in a.only.split(",") if n] or list(MODELS)
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model {n!r}; one of {', '.join(MODELS)}")
    a.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp/xdg")
    if a.step == "export":
        export(a.work, names)
    elif a.step == "check":
        check(a.work, names)
    elif a.step == "fp16":
        fp16(a.work, names)
    elif a.step == "padded":
        padded(a.work, names)
    else:
        print(table(json.loads((a.work / "results.json").read_text())))


if __name__ == "__main__":
    main()

"""generate.js on a decoder compiled for generation at ``--precision fp16,fp32``, its KV cache
copied between steps (-O0): the fp16 variant stores each past and present as f16, so a step
copies 2 bytes an element (the manifest's storage), the fp32 one 4. The package entry loads the
first variant the adapter runs: fp16 where it has shader-f16; Chromium's SwiftShader lacks it,
so there the fp32 variant generates. Either way the greedy ids are onnxruntime's and each
step's cache copies are the presents' bytes as that variant stores them."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnx2wgsl.compiler.generation import Generation
from onnx2wgsl.runtime import manifest as mf

pytestmark = [pytest.mark.gpu, pytest.mark.browser]
MODEL = Path(__file__).resolve().parents[1] / "models" / "llama_tiny_kv.onnx"
PROMPT = [1, 5, 7, 9]
N = 24


def test_generate_copies_each_present_as_its_variant_stores_it(page, compiled):
    from test_generate import ort_greedy

    url, out = compiled("llama_kv_copied_fp16", str(MODEL), generation=Generation(48), opt_level=0,
                        precision="fp16,fp32")  # fmt: skip
    storage, sizes = {}, {}
    for precision in ("fp16", "fp32"):
        m = mf.read(out / precision)
        ios = {io["name"]: io for io in m["inputs"] + m["outputs"]}
        pairs = [(ios[s["past"]], ios[s["present"]]) for s in m["generation"]["state"]]
        assert len(pairs) == 4 and not any(s.get("shared") for s in m["generation"]["state"])
        storage[precision] = {io["storage"] for pair in pairs for io in pair}
        sizes[precision] = [io["size"] for pair in pairs for io in pair]
    assert storage == {"fp16": {"f16"}, "fp32": {"f32"}}
    assert [2 * s for s in sizes["fp16"]] == sizes["fp32"]  # (half the cache)
    page.open("/tests/harness.html")
    res = page.evaluate(
        """async ([pkg, prompt, n]) => {
        const mod = await import(pkg + 'index.js');
        const { generate } = await import(pkg + 'generate.js');
        const adapter = await navigator.gpu.requestAdapter();
        const s = await mod.createSession();
        const copies = [];
        const copy = GPUCommandEncoder.prototype.copyBufferToBuffer;
        GPUCommandEncoder.prototype.copyBufferToBuffer = function (...a) {
          copies.push(a[a.length - 1]);
          return copy.apply(this, a);
        };
        const tokens = [], steps = [];
        try {
          for await (const t of generate(s, prompt, { maxNewTokens: n })) {
            tokens.push(t);
            steps.push(copies.splice(0));
          }
        } finally {
          GPUCommandEncoder.prototype.copyBufferToBuffer = copy;
        }
        await s.release();
        return { f16: adapter.features.has('shader-f16'), precision: s.precision, tokens, steps };
        }""",
        [url, PROMPT, N],
    )
    assert res["precision"] == ("fp16" if res["f16"] else "fp32")
    assert res["tokens"] == ort_greedy(MODEL, PROMPT, N)
    # each step: the 4 presents [1, 2, positions so far, 8] into their pasts, then the chosen id
    stored = "f16" if res["precision"] == "fp16" else "f32"
    for i, step in enumerate(res["steps"]):
        assert step == [4] + [mf.stored_nbytes(stored, 2 * (len(PROMPT) + i) * 8)] * 4, i

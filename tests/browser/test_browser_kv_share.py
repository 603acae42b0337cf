"""generate.js over GroupQueryAttention caches written in place (onnxruntime-genai's form): each
past is its present's buffer, so a step copies nothing but the chosen id to the read-back
buffer, and the greedy ids are onnxruntime's."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from onnx2wgsl.compiler.generation import Generation

pytestmark = [pytest.mark.gpu, pytest.mark.browser]
MODEL = Path(__file__).resolve().parents[1] / "models" / "llama_genai_fp32.onnx"
PROMPT = [1, 5, 7, 9]


def test_generate_copies_no_cache(page, compiled):
    from test_generate import ort_greedy

    url, _ = compiled(
        "llama_genai_shared", str(MODEL), generation=Generation(48, max_prompt=3), dims={"kv_cache_dim": 16}
    )
    page.open("/tests/harness.html")
    out = page.evaluate(
        """async ([pkg, prompt]) => withModule(pkg, async (rt) => {
        const s = await rt.InferenceSession.create(pkg);
        const { generate, resetGeneration } = await import(pkg + 'generate.js');
        const copies = [];
        const copy = GPUCommandEncoder.prototype.copyBufferToBuffer;
        GPUCommandEncoder.prototype.copyBufferToBuffer = function (...a) {
          copies.push(a[a.length - 1]);
          return copy.apply(this, a);
        };
        const first = [];
        for await (const t of generate(s, prompt, { maxNewTokens: 24 })) first.push(t);
        GPUCommandEncoder.prototype.copyBufferToBuffer = copy;
        resetGeneration(s);
        const again = [];
        for await (const t of generate(s, prompt, { maxNewTokens: 6 })) again.push(t);
        await s.release();
        return { first, again, copies };
        })""",
        [url, PROMPT],
    )
    ref = ort_greedy(onnx.load(MODEL).SerializeToString(), PROMPT, 24, head_size=16)
    assert out["first"] == ref
    assert out["again"] == ref[:6]
    assert out["copies"] == [4] * 24  # the chosen id alone, once a token

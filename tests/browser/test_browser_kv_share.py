"""generate.js over KV caches written in place, GroupQueryAttention's (onnxruntime-genai's form)
and a torch export's Concat(past, new) (compiler/passes/kv_share.py): each past is its
present's buffer, so a step copies nothing but the chosen id to the read-back buffer, and the
greedy ids are onnxruntime's."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from onnx2wgsl.compiler.generation import Generation

pytestmark = [pytest.mark.gpu, pytest.mark.browser]
MODELS = Path(__file__).resolve().parents[1] / "models"
PROMPT = [1, 5, 7, 9]


@pytest.mark.parametrize(
    "name, dims, head_size",
    [("llama_genai_fp32", {"kv_cache_dim": 16}, 16), ("llama_tiny_kv", {}, None)],
    ids=["gqa", "concat"],
)
def test_generate_copies_no_cache(name, dims, head_size, page, compiled):
    from test_generate import ort_greedy

    model = MODELS / f"{name}.onnx"
    url, _ = compiled(f"{name}_shared", str(model), generation=Generation(48, max_prompt=3), dims=dims)
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
    ref = ort_greedy(onnx.load(model).SerializeToString(), PROMPT, 24, head_size=head_size)
    assert out["first"] == ref
    assert out["again"] == ref[:6]
    assert out["copies"] == [4] * 24  # the chosen id alone, once a token

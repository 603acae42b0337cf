"""Token-by-token generation in Chromium: generate.js's ``generate(session, ids)`` on a decoder
compiled with --max-length gives the greedy ids of onnxruntime's step-by-step loop, with the KV cache on the
GPU and nothing but a command encoder and a submit per step; an AbortSignal stops it."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnx2wgsl.compiler.generation import Generation

pytestmark = [pytest.mark.gpu, pytest.mark.browser]
MODEL = Path(__file__).resolve().parents[1] / "models" / "llama_tiny_kv.onnx"
PROMPT = [1, 5, 7, 9]


@pytest.fixture
def llm(page, compiled):
    url, _ = compiled("llama_kv", str(MODEL), generation=Generation(48, sample_candidates=8, max_prompt=3))
    page.open("/tests/harness.html")
    return page, url


def test_generate_streams_the_greedy_ids_and_creates_nothing(llm):
    from test_generate import ort_greedy

    page, url = llm
    out = page.evaluate(
        """async ([pkg, prompt]) => withModule(pkg, async (rt) => {
        const s = await rt.InferenceSession.create(pkg);
        const { generate, resetGeneration } = await import(pkg + 'generate.js');
        const first = [];
        const mapped = [];
        const map = GPUBuffer.prototype.mapAsync;
        GPUBuffer.prototype.mapAsync = function (mode, offset, size) {
          mapped.push(size ?? this.size);
          return map.call(this, mode, offset, size);
        };
        setCounting(true);
        for await (const t of generate(s, prompt, { maxNewTokens: 24 })) first.push(t);
        setCounting(false);
        GPUBuffer.prototype.mapAsync = map;
        const made = { ...counts };
        const more = [];
        for await (const t of s.generate([], { maxNewTokens: 4 })) more.push(t);  // goes on (as a method)
        s.resetGeneration();
        const again = [];
        for await (const t of generate(s, prompt, { maxNewTokens: 6 })) again.push(t);
        const ac = new AbortController();
        resetGeneration(s);
        const stopped = [];
        for await (const t of generate(s, prompt, { maxNewTokens: 24, signal: ac.signal })) {
          stopped.push(t);
          if (stopped.length == 3) ac.abort();
        }
        resetGeneration(s);
        const sampled = [];
        for await (const t of generate(s, prompt, { maxNewTokens: 6, temperature: 0.8, topK: 4, seed: 1 })) sampled.push(t);
        resetGeneration(s);
        const resampled = [];
        for await (const t of generate(s, prompt, { maxNewTokens: 6, temperature: 0.8, topK: 4, seed: 1 })) resampled.push(t);
        let error = 'none';
        try { await generate(s, [1], { maxNewTokens: 60 }).next(); await generate(s, new Array(60).fill(1)).next(); }
        catch (e) { error = `${e.name}: ${e.message}`; }
        await s.release();
        return { first, made, mapped, more, again, stopped, sampled, resampled, error };
        })""",
        [url, PROMPT],
    )
    ref = ort_greedy(MODEL, PROMPT, 28)
    assert out["first"] == ref[:24]
    assert out["more"] == ref[24:28]
    assert out["again"] == ref[:6] and out["stopped"] == ref[:3]
    # a step: one command encoder and one submit, no buffer, pipeline or bind group
    # (the prompt of 4 runs in two steps: at most 3 tokens a step)
    assert out["made"] == {"createCommandEncoder": 25, "submit": 25}, out["made"]
    assert len(out["mapped"]) == 24 and max(out["mapped"]) <= 8  # bytes read back a step
    assert out["sampled"] == out["resampled"] and len(out["sampled"]) == 6
    assert "InputError" in out["error"] and "max length 48" in out["error"]

"""examples/web/textgen.html in Chromium: the page streams the text generator's greedy text
(that of onnxruntime's step-by-step loop) into the page with generate.js, and its Stop button
ends the stream before the next step."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from onnx2wgsl.compiler.generation import Generation

pytestmark = [pytest.mark.gpu, pytest.mark.browser]
TEXTGEN = Path(__file__).resolve().parents[2] / "examples" / "textgen"
PROMPT = "And God said"
SHOWN = 80  # characters streamed before Stop is pressed


@pytest.fixture(scope="module")
def textgen(compiled):
    url, out = compiled("textgen", TEXTGEN / "model.onnx", generation=Generation(64, sample_candidates=16))
    shutil.copyfile(TEXTGEN / "vocab.json", out / "vocab.json")  # (as examples/web/build.py does)
    return url


def test_textgen_page_streams_the_greedy_text_and_stops(page, textgen, tmp_path):
    from test_textgen import greedy_pieces

    page.page.set_viewport_size({"width": 820, "height": 560})
    page.open(f"/examples/textgen.html?model={textgen}&prompt={PROMPT.replace(' ', '+')}&n=60&temperature=0")
    assert page.evaluate("() => window.__error || null") is None
    # press Stop (the page's button) as soon as SHOWN characters are on the page
    page.evaluate(
        """(shown) => {
        const generated = document.getElementById('generated');
        new MutationObserver((_, observer) => {
          if (generated.textContent.length >= shown) { document.getElementById('stop').click(); observer.disconnect(); }
        }).observe(generated, { childList: true, characterData: true, subtree: true });
        document.getElementById('go').click();
        }""",
        SHOWN,
    )
    page.wait("window.__done")
    assert page.evaluate("() => window.__error || null") is None
    result = page.evaluate("() => window.__result")
    text, count = result["text"], result["count"]
    # the greedy tokens, one at a time; abort is seen before the next step: at most the step
    # under way when Stop is pressed ends after it
    pieces = greedy_pieces(PROMPT, 60)
    shown = next(i for i in range(1, 61) if len("".join(pieces[:i])) >= SHOWN)
    assert result["stopped"] and shown <= count <= shown + 1, (text, shown)
    assert text == "".join(pieces[:count])
    assert page.evaluate("() => document.getElementById('prompted').textContent") == PROMPT
    status = page.evaluate("() => document.getElementById('status').textContent")
    assert status == f"stopped after {count} tokens"
    assert "tokens/s" in page.evaluate("() => document.getElementById('timing').textContent")
    assert page.evaluate(
        "() => [document.getElementById('go').disabled, document.getElementById('stop').disabled]"
    ) == [False, True]
    shot = tmp_path / "textgen.png"
    page.page.screenshot(path=str(shot))
    if os.environ.get("ONNX2WGSL_SCREENSHOT"):  # keep it to look at
        Path(os.environ["ONNX2WGSL_SCREENSHOT"]).write_bytes(shot.read_bytes())
    assert shot.stat().st_size > 0

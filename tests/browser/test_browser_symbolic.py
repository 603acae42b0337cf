"""The browser runtime on the hand-made artifact with dims chosen at run time (format version 3):
any size up to the bounds in one session with nothing created per run, the dims uniform written
when the values change, zero-work dispatches skipped, and the same errors as the Python runtime."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from browser_support import decode
from hand_artifacts import MALFORMED, symbolic_manifest, write_artifact

pytestmark = [pytest.mark.gpu, pytest.mark.browser]

# the feeds, made in the page: x[i] = i / 2 - 3 (seq x 4), t[i] = i / 4, p zeros, q zeros (k)
SESSION = """
const rt = await import('/runtime/index.js');
const s = await rt.InferenceSession.create('/m/sym/');
const feeds = (seq, k) => ({
  x: new rt.Tensor('float32', Float32Array.from({ length: seq * 4 }, (_, i) => i / 2 - 3), [seq, 4]),
  t: new rt.Tensor('float32', Float32Array.from({ length: seq }, (_, i) => i / 4), [seq]),
  p: new rt.Tensor('float32', new Float32Array(2 * seq), [2 * seq]),
  q: new rt.Tensor('int32', new Int32Array(k), [k]),
});
const message = async (f) => { try { await f(); return 'no error'; } catch (e) { return `${e.name}: ${e.message}`; } };
"""


@pytest.fixture
def sym(page, server):
    write_artifact(server.root / "m" / "sym")
    page.open("/tests/harness.html")
    return page


def test_any_size_up_to_the_bound_in_one_session(sym):
    out = sym.evaluate(
        """async (runs) => {"""
        + SESSION
        + """
        const writes = [];
        const queue = s.device.queue;
        const write = queue.writeBuffer;
        queue.writeBuffer = function (buf, at, data, ...rest) {
          if (buf.label == 'dims') writes.push([...data]);
          return write.call(this, buf, at, data, ...rest);
        };
        await s.run(feeds(3, 1));
        setCounting(true);
        const results = [];
        for (const [seq, k] of runs) results.push(await encodeOutputs(await s.run(feeds(seq, k))));
        setCounting(false);
        queue.writeBuffer = write;
        const zero = s._plans.get('seq=0, k=4')[0].length;
        const meta = [s.inputMetadata.map((m) => m.shape), s.outputMetadata.map((m) => m.shape), s.symbols];
        await s.release();
        return { results, writes, counts: { ...counts }, zero, meta, plans: s._plans.size };
        }""",
        [[1, 1], [17, 2], [17, 2], [128, 5], [64, 3], [17, 2], [0, 4]],
    )
    runs = [(1, 1), (17, 2), (17, 2), (128, 5), (64, 3), (17, 2), (0, 4)]
    for (seq, k), got in zip(runs, out["results"]):
        x = np.arange(seq * 4, dtype=np.float32).reshape(seq, 4) / 2 - 3
        t = np.arange(seq, dtype=np.float32) / 4
        np.testing.assert_array_equal(decode(got["y"]), x * 2 + seq + 100 * k)
        np.testing.assert_array_equal(decode(got["z"]), t + 1)
        assert got["y"]["dims"] == [seq, 4] and got["z"]["dims"] == [seq]
    # a run: one command encoder and one submit (none for seq = 0), nothing else created
    assert out["counts"] == {"createCommandEncoder": 6, "submit": 6}, out["counts"]
    assert out["writes"] == [
        [3, 1, 0, 0],
        [1, 1, 0, 0],
        [17, 2, 0, 0],
        [128, 5, 0, 0],
        [64, 3, 0, 0],
        [17, 2, 0, 0],
    ]
    assert out["zero"] == 0 and out["plans"] == 6
    assert out["meta"] == [
        [["seq", 4], ["seq"], ["2*seq"], ["k"]],
        [["seq", 4], ["seq"]],
        {"seq": {"name": "seq", "min": 0, "max": 128}, "k": {"name": "k", "min": 1, "max": 5}},
    ]


def test_bad_feeds_are_input_errors(sym):
    out = sym.evaluate(
        """async () => {"""
        + SESSION
        + """
        const f = feeds(4, 1);
        const T = (type, n, dims) => new rt.Tensor(type, type == 'int32' ? new Int32Array(n) : new Float32Array(n), dims);
        const got = {
          range: await message(() => s.run({ ...f, x: T('float32', 129 * 4, [129, 4]) })),
          k: await message(() => s.run({ ...f, q: T('int32', 6, [6]) })),
          agree: await message(() => s.run({ ...f, t: T('float32', 5, [5]) })),
          expr: await message(() => s.run({ ...f, p: T('float32', 9, [9]) })),
          static: await message(() => s.run({ ...f, x: T('float32', 20, [4, 5]) })),
          plain: await message(() => s.run({ ...f, x: new Float32Array(16) })),
          good: (await s.run(f)).z.dims,
        };
        await s.release();
        return got;
        }"""
    )
    assert out == {
        "range": "InputError: input 'x' dim 0 (seq) is 129, outside seq's range 0..128",
        "k": "InputError: input 'q' dim 0 (k) is 6, outside k's range 1..5",
        "agree": "InputError: input 't' dim 0 (seq) must be 4 for seq=4, k=1, got 5",
        "expr": "InputError: input 'p' dim 0 (2*seq) must be 8 for seq=4, k=1, got 9",
        "static": "InputError: input 'x' must have shape [seq, 4], got [4, 5]",
        "plain": "InputError: input 'x' must have shape [seq, 4], got no dims (feed a Tensor)",
        "good": [4],
    }


def test_grids_beyond_the_limit_at_run_time_fail_clearly(page, server):
    m = symbolic_manifest()
    m["dispatches"][1]["grid"] = [["*", ["%", "seq", 2], 70000], 1, 1]
    write_artifact(server.root / "m" / "sym", m)
    page.open("/tests/harness.html")
    out = page.evaluate(
        """async () => {"""
        + SESSION
        + """
        const ok = (await s.run(feeds(128, 1))).y.dims;
        const bad = await message(() => s.run(feeds(127, 1)));
        await s.release();
        return [ok, bad];
        }"""
    )
    assert out == [
        [128, 4],
        "InputError: dispatch 1 grid [70000, 1, 1] at seq=127, k=1 is beyond the artifact's bounds",
    ]


def test_malformed_manifests_give_the_python_runtimes_errors(page, server):
    from onnx2wgsl.errors import ManifestError
    from onnx2wgsl.runtime import manifest as mf

    cases = {}
    for case, (edit, _) in MALFORMED.items():
        m = symbolic_manifest()
        edit(m)
        cases[case] = json.loads(json.dumps(m))
    page.open("/tests/harness.html")
    got = page.evaluate(
        """async (cases) => {
        const rt = await import('/runtime/index.js');
        const out = {};
        for (const [k, m] of Object.entries(cases)) {
          try { rt.validateManifest(JSON.parse(m)); out[k] = 'valid'; } catch (e) { out[k] = `${e.name}: ${e.message}`; }
        }
        return out;
        }""",
        {k: json.dumps(m) for k, m in cases.items()},  # as text: Playwright nests only so deep
    )
    plain = lambda text: re.sub(r"(\d),(\d{3})", r"\1\2", text)  # noqa: E731 (Python groups digits)
    for case, m in cases.items():
        with pytest.raises(ManifestError) as e:
            mf.validate(m)
        assert got[case] == f"ManifestError: {plain(str(e.value))}", case
        assert got[case].startswith(f"ManifestError: {plain(MALFORMED[case][1])}"), case

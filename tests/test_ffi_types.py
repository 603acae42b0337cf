"""runtime.ffi_types: the C types primed ahead of use are exactly the ones cffi's parser gives,
and a fresh process that loads and runs a model parses no type string at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers import two_layer_model

import onnx2wgsl
from onnx2wgsl.runtime import ffi_types


def _parsed(ffi, text):
    """What cffi's own path gives for ``text`` (as _typeof_locked computes it)."""
    tp = ffi._parser.parse_type(text)
    function = tp.is_raw_function
    if function:
        tp = tp.as_function_pointer()
    with ffi._lock:
        return ffi._get_cached_btype(tp), function


def test_primed_types_equal_parsed_ones():
    from wgpu.backends.wgpu_native._ffi import ffi

    ffi_types.prime()
    texts = list(ffi_types._OTHER)
    wgpu_names = sorted(
        k[len("typedef ") :] for k in ffi._parser._declarations if k.startswith("typedef WGPU")
    )
    assert len(wgpu_names) > 100  # the header's typedefs are there to prime from
    texts += [f"{n} *" for n in wgpu_names[::7]] + [f"{n}[]" for n in wgpu_names[3::7]]
    for text in texts:
        assert ffi._parsed_types[text] == _parsed(ffi, text), text
    # and they work as types: an array of structs, a callback's pointer type
    arr = ffi.new("WGPUBindGroupEntry[]", 3)
    assert ffi.sizeof(arr) == 3 * ffi.sizeof("WGPUBindGroupEntry")
    assert ffi._parsed_types[ffi_types._OTHER[-1]][1] is True


def test_prime_is_idempotent():
    ffi_types.prime()
    assert ffi_types.prime() == 0


@pytest.mark.gpu
def test_a_fresh_process_parses_no_type_string(tmp_path):
    """Load and run in a new process with cffi's type parser watched: everything the session
    and a run use was primed (a parse costs 12-80 ms in a fresh process)."""
    onnx2wgsl.compile(two_layer_model(), tmp_path / "a")
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from wgpu.backends.wgpu_native._ffi import ffi
        seen = []
        original = ffi._parser.parse_type
        ffi._parser.parse_type = lambda text: seen.append(text) or original(text)
        import onnx2wgsl
        sess = onnx2wgsl.load(sys.argv[1])
        feeds = {i.name: np.ones(i.shape, np.float32) for i in sess.get_inputs()}
        sess.run(None, feeds)
        sess.run(None, feeds)
        print("PARSED", seen)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "a")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "PARSED []" in out.stdout, out.stdout

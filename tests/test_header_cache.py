"""runtime.ffi_types: the syntax trees of wgpu-py's C header (and of the type strings its import
parses), cached so that a fresh process parses none of them again, give cffi exactly the
declarations a parse gives, and a bad cache is parsed over."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

# prints how many texts pycparser parsed (the header, and all), a digest of cffi's declarations
# and a size
SCRIPT = textwrap.dedent(
    """
    import hashlib
    from cffi import cparser
    parsed = []
    make = cparser._get_parser
    def watched():
        p = make()
        parse = p.parse
        p.parse = lambda text, *a, **k: parsed.append(len(text)) or parse(text, *a, **k)
        return p
    cparser._get_parser = watched
    from onnx2wgsl.runtime import ffi_types
    ffi_types.prime()
    from wgpu.backends.wgpu_native._ffi import ffi, lib
    d = ffi._parser._declarations
    text = repr(sorted((k, str(t), q) for k, (t, q) in d.items())) + repr(sorted(ffi._parser._int_constants.items()))
    text += repr([(t, str(ffi._parsed_types[t])) for t in ffi_types._OTHER])  # primed from a cached parse
    print("PARSED", sum(n > 50_000 for n in parsed), len(parsed))
    print("DECLS", len(d), hashlib.sha256(text.encode()).hexdigest())
    print("SIZE", ffi.sizeof("WGPUBindGroupEntry"), lib.wgpuGetVersion() > 0)
    """
)


def _run(cache) -> dict[str, str]:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    env.pop("ONNX2WGSL_NO_HEADER_CACHE", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def test_header_tree_cached_gives_the_parsed_declarations(tmp_path):
    parsed = _run(tmp_path)  # cffi's own parse, which writes the cache
    (cached,) = (tmp_path / "onnx2wgsl").glob("wgpu-header-*.json")
    assert parsed["PARSED"].startswith("1 ") and int(parsed["DECLS"].split()[0]) > 500
    again = _run(tmp_path)  # reads it
    assert again == {**parsed, "PARSED": "0 0"}

    # a damaged or foreign cache is parsed over and written again
    good = hashlib.sha256(cached.read_bytes()).hexdigest()
    for bad in (
        cached.read_text()[:1000],
        '{"classes": ["FileAST"], "files": [], "trees": [["x", [0, null, null], {}]]}',
    ):
        cached.write_text(bad)
        assert _run(tmp_path) == parsed
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == good

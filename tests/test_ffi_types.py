"""runtime.ffi_types: wgpu-py's backend on cffi's compiled tables of its header, cached in the
user's cache folder: the same declarations as wgpu-py's own in-line FFI (every function's type,
constant, typedef, struct layout and enum), made on a miss with one parse, read on a hit with
none (pycparser never imported), a bad cache made again; and, when it is turned off, the in-line
FFI's type strings primed as cffi's parser gives them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import two_layer_model

import onnx2wgsl
from onnx2wgsl.runtime import ffi_types

# prints which FFI wgpu-py's backend holds, a digest of every declaration it gives (type names
# without the struct/enum/union word, as the two kinds of FFI name anonymous typedefs otherwise),
# and whether pycparser was imported
DECLARATIONS = textwrap.dedent(
    """
    import hashlib, re, sys
    from onnx2wgsl.runtime import ffi_types
    kind = ffi_types.prime()
    from wgpu.backends.wgpu_native._ffi import ffi, lib
    name_of = lambda t: re.sub(r"\\b(struct|enum|union) ", "", t.cname)
    items = []
    for name in sorted(dir(lib)):
        try:
            v = getattr(lib, name)
        except Exception:  # a non-integer constant: neither FFI gives it from a dlopen()ed library
            items.append((name, None))
            continue
        items.append((name, v if isinstance(v, int) else name_of(ffi.typeof(v))))
    typedefs, structs, unions = ffi.list_types()
    for name in typedefs:
        t = ffi.typeof(name)
        try:
            size = (ffi.sizeof(t), ffi.alignof(t))
        except Exception:
            size = None
        items.append((name, name_of(t), t.kind, size, sorted(t.elements.items()) if t.kind == "enum" else None))
    for word, names in (("struct", structs), ("union", unions)):
        for name in names:
            t = ffi.typeof(f"{word} {name}")
            try:
                ffi.sizeof(t)  # (a compiled FFI completes a struct's fields when first sized)
            except Exception:
                items.append((name, "opaque"))
                continue
            items.append((name, [(f, name_of(x.type), x.offset, x.bitshift, x.bitsize) for f, x in t.fields]))
    print("KIND", kind)
    print("DECLS", len(items), len(typedefs), hashlib.sha256(repr(items).encode()).hexdigest())
    print("PYCPARSER", "pycparser" in sys.modules)
    print("SIZE", ffi.sizeof("WGPUBindGroupEntry"), lib.wgpuGetVersion() > 0)
    """
)


def _run(script: str, cache, *args: str, off: bool = False) -> dict[str, str]:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    env.pop("ONNX2WGSL_NO_HEADER_CACHE", None)
    if off:
        env["ONNX2WGSL_NO_HEADER_CACHE"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def test_compiled_tables_give_the_inline_declarations(tmp_path):
    inline = _run(DECLARATIONS, tmp_path, off=True)  # wgpu-py's own FFI; no cache written
    assert inline["KIND"] == "in-line" and not list(tmp_path.glob("onnx2wgsl/*"))
    assert int(inline["DECLS"].split()[0]) > 1000 and int(inline["DECLS"].split()[1]) > 400

    made = _run(DECLARATIONS, tmp_path)  # a miss: parsed once, the tables written
    (cached,) = (tmp_path / "onnx2wgsl").glob("wgpu-ffi-*.json")
    assert made == {**inline, "KIND": "compiled"}

    again = _run(DECLARATIONS, tmp_path)  # a hit: nothing parsed
    assert again == {**made, "PYCPARSER": "False"}

    # a damaged or foreign cache is made again, and gives the same
    good = hashlib.sha256(cached.read_bytes()).hexdigest()
    data = json.loads(cached.read_text())
    for bad in (
        cached.read_text()[:1000],
        json.dumps({**data, "key": "0" * 64}),
        json.dumps({**data, "tables": {**data["tables"], "_types": "not bytes"}}),
        json.dumps({**data, "tables": {**data["tables"], "_other": 1}}),
    ):
        cached.write_text(bad)
        assert _run(DECLARATIONS, tmp_path) == made
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == good


def test_tables_round_trip_through_json(tmp_path):
    from wgpu._coreutils import get_header_filename

    header = open(get_header_filename("combined_header.h")).read()
    tables = ffi_types.make_tables(header)
    assert isinstance(tables["_types"], bytes) and len(tables["_globals"]) > 1000
    ffi_types.save_tables(tmp_path / "t.json", "k", tables)
    assert ffi_types.load_tables(tmp_path / "t.json", "k") == tables
    assert ffi_types.load_tables(tmp_path / "t.json", "other key") is None
    assert ffi_types.load_tables(tmp_path / "missing.json", "k") is None


def _parsed(ffi, text):
    """What cffi's own path gives for ``text`` (as _typeof_locked computes it)."""
    tp = ffi._parser.parse_type(text)
    function = tp.is_raw_function
    if function:
        tp = tp.as_function_pointer()
    with ffi._lock:
        return ffi._get_cached_btype(tp), function


def test_inline_primed_types_equal_parsed_ones():
    from cffi import FFI
    from wgpu._coreutils import get_header_filename

    ffi = FFI()
    ffi.cdef(open(get_header_filename("combined_header.h")).read())
    assert ffi_types.prime_inline(ffi) > 100
    assert ffi_types.prime_inline(ffi) == 0  # all there already
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
    kind = ffi_types.prime()
    assert kind in ("compiled", "in-line") and ffi_types.prime() == kind


# loads and runs a model, printing which FFI the backend holds and whether pycparser was
# imported; in-line, cffi's type parser is watched too
LOAD_AND_RUN = textwrap.dedent(
    """
    import sys
    import numpy as np
    seen = []
    if sys.argv[2] == "in-line":
        from wgpu.backends.wgpu_native._ffi import ffi
        original = ffi._parser.parse_type
        ffi._parser.parse_type = lambda text: seen.append(text) or original(text)
    import onnx2wgsl
    from onnx2wgsl.runtime import ffi_types
    sess = onnx2wgsl.load(sys.argv[1])
    feeds = {i.name: np.ones(i.shape, np.float32) for i in sess.get_inputs()}
    sess.run(None, feeds)
    sess.run(None, feeds)
    print("KIND", ffi_types.prime())
    print("PYCPARSER", "pycparser" in sys.modules)
    print("PARSED", seen)
    """
)


@pytest.mark.gpu
def test_a_fresh_process_parses_nothing(tmp_path):
    """Load and run in a new process: on a warm cache, no C text is parsed at all; with wgpu-py
    imported first (its in-line FFI), every type string a session and its runs use was primed
    (a parse costs 12-80 ms in a fresh process)."""
    onnx2wgsl.compile(two_layer_model(), tmp_path / "a")
    _run(LOAD_AND_RUN, tmp_path, str(tmp_path / "a"), "compiled")  # fills the cache
    warm = _run(LOAD_AND_RUN, tmp_path, str(tmp_path / "a"), "compiled")
    assert warm == {"KIND": "compiled", "PYCPARSER": "False", "PARSED": "[]"}
    inline = _run(LOAD_AND_RUN, tmp_path, str(tmp_path / "a"), "in-line")
    assert inline == {"KIND": "in-line", "PYCPARSER": "True", "PARSED": "[]"}

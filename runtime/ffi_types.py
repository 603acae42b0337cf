"""Faster session creation on wgpu-py: its C declarations as cffi's compiled type tables.

wgpu-py declares wgpu-native's API to cffi in cffi's "in-line ABI" mode. Importing its native
backend hands cffi the C header (wgpu.h, about 100 KB), which cffi parses with pycparser, in
pure Python: 0.2-0.5 s of every fresh process. Later, each C type string wgpu-py allocates by
("WGPUBindGroupEntry[]", "uint32_t []", a callback's signature) is parsed again by pycparser
the first time a process uses it, 12-80 ms each; creating a session and running it once uses
about thirty.

cffi's "out-of-line ABI" mode holds the same declarations as compact tables that its C backend
reads as they are used (the tables cffi's recompiler writes into a generated module), and
parses type strings in C. ``prime()`` imports wgpu-py's backend with cffi's FFI class stood in
for by ``_Standin``: given wgpu-py's header, it becomes the FFI built from that header's tables,
kept in the user's cache folder (``$XDG_CACHE_HOME/onnx2wgsl``, as JSON, keyed by the header's
text and cffi's version). The first process that meets a header parses it once with cffi's own
parser and writes the tables with cffi's own recompiler; later ones parse nothing and never
import pycparser. Both kinds of FFI are cffi's and call the same library through the same
backend. A cache that is missing, unreadable or unexpected is made again; anything unexpected
in cffi leaves wgpu-py on its own in-line FFI.

``ONNX2WGSL_NO_HEADER_CACHE=1`` turns this off: wgpu-py's own in-line FFI, with its type strings
parsed ahead of use in one pycparser run (``prime_inline``) instead of one run each. The same
happens when wgpu-py's backend was imported before ``prime()`` (by a caller's own use of wgpu).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

FFI_MODULE = "wgpu.backends.wgpu_native._ffi"
MODULE_NAME = "_onnx2wgsl_wgpu"  # the compiled FFI's module name (cffi shows it in some errors)

# the strings other than WGPU* pointers and arrays that a session's creation and runs use
# (wgpu 0.32); a string missing here still works, it is parsed when first used
_OTHER = (
    "char []",
    "uint8_t []",
    "uint8_t *",
    "uint32_t []",
    "uintptr_t",
    "intptr_t",
    "WGPUChainedStruct * ",
    "void(WGPURequestAdapterStatus, WGPUAdapter, WGPUStringView, void *, void *)",
    "void(WGPURequestDeviceStatus, WGPUDevice, WGPUStringView, void *, void *)",
    "void(WGPUDevice const *, WGPUDeviceLostReason, WGPUStringView, void *, void *)",
    "void(WGPUDevice const *, WGPUErrorType, WGPUStringView, void *, void *)",
    "void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)",
)

_done = False


def prime() -> str:
    """Import wgpu-py's native backend on cffi's compiled tables (once a process); returns
    which FFI the backend holds: "compiled", "in-line" or "" (the backend failed to import:
    wgpu's own error comes when it is used)."""
    global _done
    if not _done:
        _done = True
        with _compiled_ffi():
            try:
                import wgpu.backends.wgpu_native._ffi  # noqa: F401
            except Exception:
                return ""
        prime_inline(sys.modules[FFI_MODULE].ffi)
    module = sys.modules.get(FFI_MODULE)
    if module is None:
        return ""
    return "compiled" if isinstance(module.ffi, _Standin) and module.ffi.compiled else "in-line"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onnx2wgsl"


def _disabled() -> bool:
    return os.environ.get("ONNX2WGSL_NO_HEADER_CACHE", "") not in ("", "0")


class _compiled_ffi:
    """While wgpu-py's backend is imported (a ``with`` block), ``cffi.FFI`` is ``_Standin``. Does
    nothing when the backend is imported already or when turned off."""

    def __enter__(self):
        self.restore = None
        if FFI_MODULE in sys.modules or _disabled():
            return self
        try:
            import _cffi_backend
            import cffi
        except Exception:
            return self
        if not hasattr(_cffi_backend, "FFI"):
            return self
        original = cffi.FFI
        _Standin.make_inline = original
        _Standin.thread = threading.get_ident()  # (another thread's FFI stays cffi's own)
        cffi.FFI = _Standin
        self.restore = lambda: setattr(cffi, "FFI", original)
        return self

    def __exit__(self, *exc):
        if self.restore:
            self.restore()
        return False


class _Standin:
    """cffi's FFI to wgpu-py's backend: on its ``cdef`` of one header, the compiled FFI of that
    header (``compiled`` is True); otherwise cffi's own in-line FFI with every call replayed.
    Everything else is the chosen FFI's own attribute (kept on this object after its first use,
    so that wgpu-py's calls through it cost what they would cost on the FFI itself)."""

    make_inline = None  # cffi's FFI class, set while the stand-in is in place
    thread = None  # the thread importing wgpu-py's backend

    def __init__(self, *args, **kwargs):
        self._args = (args, kwargs)
        self._calls: list[tuple[str, tuple, dict]] = []
        self._ffi = None
        self.compiled = False

    def cdef(self, csource, *args, **kwargs):
        self._calls.append(("cdef", (csource, *args), kwargs))
        if (
            len(self._calls) == 1
            and not args
            and not kwargs
            and self._args == ((), {})
            and threading.get_ident() == _Standin.thread
        ):
            self._ffi = compiled_ffi(csource)
            self.compiled = self._ffi is not None
            if self.compiled:
                return None
        return self._inline(pending=True).cdef(csource, *args, **kwargs)

    def set_source(self, module_name, source, *args, **kwargs):
        self._calls.append(("set_source", (module_name, source, *args), kwargs))
        if self.compiled:  # (wgpu-py names a source only because cffi's in-line dlopen asks)
            return None
        return self._inline(pending=True).set_source(module_name, source, *args, **kwargs)

    def _inline(self, pending: bool = False):
        """cffi's in-line FFI, made once, with every call made so far replayed on it (but the
        ``pending`` last one, which the caller makes)."""
        if self.compiled:  # a second header after a compiled first one: start again in-line
            self.compiled, self._ffi = False, None
            for name in [k for k in self.__dict__ if k not in _Standin._OWN]:
                del self.__dict__[name]
        if self._ffi is None:
            args, kwargs = self._args
            self._ffi = _Standin.make_inline(*args, **kwargs)
            for name, a, k in self._calls[:-1] if pending else self._calls:
                getattr(self._ffi, name)(*a, **k)
        return self._ffi

    _OWN = frozenset({"_args", "_calls", "_ffi", "compiled"})

    def __getattr__(self, name):
        if name.startswith("__") or name in _Standin._OWN:
            raise AttributeError(name)
        value = getattr(self._ffi if self._ffi is not None else self._inline(), name)
        if name != "errno":  # (a property of the FFI)
            self.__dict__[name] = value
        return value


# --- the compiled tables, cached --------------------------------------------------------------

_KEYWORDS = ("_version", "_types", "_globals", "_struct_unions", "_enums", "_typenames")


def compiled_ffi(csource: str):
    """cffi's compiled FFI of ``csource``, from the cached tables (made and cached on a miss);
    None when cffi does not make or take them as expected."""
    try:
        import _cffi_backend
        import cffi

        key = hashlib.sha256(f"{cffi.__version__}\0{csource}".encode()).hexdigest()
        path = cache_dir() / f"wgpu-ffi-{key[:32]}.json"
        tables = load_tables(path, key)
        if tables is None:
            tables = make_tables(csource)
            save_tables(path, key, tables)
        return _cffi_backend.FFI(MODULE_NAME, **tables)
    except Exception:
        return None


def make_tables(csource: str) -> dict:
    """The keyword arguments of the compiled FFI that cffi's recompiler writes for ``csource``
    (one parse by cffi's own parser)."""
    import cffi
    from cffi.recompiler import make_py_source

    ffi = (_Standin.make_inline or cffi.FFI)()  # (cffi's own, also while the stand-in is in place)
    ffi.cdef(csource)
    out = io.StringIO()
    make_py_source(ffi, MODULE_NAME, out)
    # the module cffi writes: ``import _cffi_backend`` then ``ffi = _cffi_backend.FFI(name,
    # _version=..., _types=b'...', ...)``, every argument a literal
    tree = ast.parse(out.getvalue())
    (call,) = [s.value for s in tree.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Call)]
    tables = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    if set(tables) - set(_KEYWORDS) or "_types" not in tables:
        raise ValueError(f"unexpected arguments {sorted(tables)} in cffi's compiled FFI")
    return tables


def _encode(v):
    """A table as JSON: bytes as {"b": latin-1 text}, tuples as lists."""
    if isinstance(v, bytes):
        return {"b": v.decode("latin-1")}
    if isinstance(v, tuple):
        return [_encode(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise TypeError(f"unexpected {type(v).__name__} in cffi's tables")


def _decode(v):
    if type(v) is list:
        return tuple(_decode(x) for x in v)
    if type(v) is dict and set(v) == {"b"} and type(v["b"]) is str:
        return v["b"].encode("latin-1")
    if type(v) is int:
        return v
    raise ValueError("not a table")


def save_tables(path: Path, key: str, tables: dict) -> None:
    """Write ``tables`` for the header of ``key`` to ``path`` (atomically; nothing on failure)."""
    try:
        data = json.dumps({"key": key, "tables": {k: _encode(v) for k, v in tables.items()}})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except Exception:
        pass


def load_tables(path: Path, key: str) -> dict | None:
    """The tables ``save_tables`` wrote for the header of ``key``, or None when the file is
    missing or not what it writes."""
    try:
        data = json.loads(path.read_text())
        if data.get("key") != key or set(data["tables"]) - set(_KEYWORDS):
            return None
        tables = {k: _decode(v) for k, v in data["tables"].items()}
        if not isinstance(tables.get("_types"), bytes) or not isinstance(tables.get("_version"), int):
            return None
        return tables
    except Exception:
        return None


# --- the in-line FFI: its type strings parsed ahead of use ------------------------------------


def prime_inline(ffi) -> int:
    """Fill an in-line FFI's table of parsed type strings ahead of use: the pointer and open-array
    forms of every ``WGPU*`` typedef from the type models it holds after reading the header, and
    ``_OTHER`` through a single pycparser run, all built through cffi's own cache, as its own
    parse would. Returns how many were added: 0 for a compiled FFI (it parses in C), or when
    cffi's internals are not the expected ones (strings are then parsed on demand, only slower)."""
    try:
        from cffi import model

        parser, parsed, lock = ffi._parser, ffi._parsed_types, ffi._lock
    except Exception:
        return 0
    added = 0
    with lock:  # cffi's own lock, which its type cache is used under
        try:
            for key, (tp, _quals) in list(parser._declarations.items()):
                if key.startswith("typedef WGPU"):
                    name = key[len("typedef ") :]
                    for text, form in (
                        (f"{name} *", model.PointerType(tp)),
                        (f"{name}[]", model.ArrayType(tp, None)),
                    ):
                        if text not in parsed:
                            parsed[text] = (ffi._get_cached_btype(form), False)
                            added += 1
            # the others in one run of the parser: one dummy function declaration each, as
            # cffi's parse_type wraps a single string
            texts = [t for t in _OTHER if t not in parsed]
            if texts:
                ast_ = parser._parse("".join(f"void __dummy{k}(\n{t}\n);\n" for k, t in enumerate(texts)))[0]
                for text, node in zip(texts, ast_.ext[-len(texts) :]):
                    tp, _quals = parser._get_type_and_quals(node.type.args.params[0].type)
                    function = tp.is_raw_function
                    if function:
                        tp = tp.as_function_pointer()
                    parsed[text] = (ffi._get_cached_btype(tp), function)
                    added += 1
        except Exception:  # an unexpected cffi: keep its own (slower) path for what is left
            pass
    return added

"""Faster session creation on wgpu-py: its C types resolved up front, in one parse.

wgpu-py talks to wgpu-native through cffi, and names each C type it allocates as a string
("WGPUBindGroupEntry[]", "uint32_t []", a callback's signature). cffi turns each new string
into a type by running pycparser over the string plus one typedef line for every type of the
header (about 430 of them for wgpu.h), so each distinct string costs 12-80 ms the first time a
process uses it. Creating a session and running it once touches about thirty of them, which
made up a third to a half of a fresh process's load time on a software GPU.

``prime()`` fills cffi's table of parsed strings ahead of use: the pointer and open-array forms
of every ``WGPU*`` typedef from the type models cffi already holds after reading the header,
and the few other strings wgpu-py uses (``_OTHER``) through a single pycparser run. The types
it stores are the ones cffi's own parse would give, built through cffi's own cache. Any
surprise in cffi's internals (another version, another layout) leaves the rest of the table
untouched: those strings are then parsed on demand as before, only slower.

Before that, importing wgpu-py's native backend parses its C header (wgpu.h, about 100 KB)
with pycparser, in pure Python: 0.2-0.5 s of every fresh process, as long as the rest of a
small model's session creation. ``prime()`` keeps the syntax tree of that parse in the user's
cache folder (``$XDG_CACHE_HOME/onnx2wgsl``, as JSON, keyed by the header's text and the
versions of cffi and pycparser) and hands it to cffi instead of parsing when the text is the
same. cffi still builds its types from the tree as before. A cache that is missing, unreadable
or unexpected is ignored (the header is parsed, and the cache written again when possible);
``ONNX2WGSL_NO_HEADER_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

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


def prime() -> int:
    """Resolve wgpu-py's C type strings ahead of use; returns how many were added (0 when
    already done, or when cffi's internals are not the expected ones)."""
    global _done
    if _done:
        return 0
    _done = True
    with _header_cache():  # (the parse of ``_OTHER`` below is cached too)
        return _prime()


def _prime() -> int:
    try:
        from cffi import model
        from wgpu.backends.wgpu_native._ffi import ffi
    except Exception:
        return 0
    added = 0
    with ffi._lock:  # cffi's own lock, which its type cache is used under
        try:
            parser, parsed = ffi._parser, ffi._parsed_types
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
                ast = parser._parse("".join(f"void __dummy{k}(\n{t}\n);\n" for k, t in enumerate(texts)))[0]
                for text, node in zip(texts, ast.ext[-len(texts) :]):
                    tp, _quals = parser._get_type_and_quals(node.type.args.params[0].type)
                    function = tp.is_raw_function
                    if function:
                        tp = tp.as_function_pointer()
                    parsed[text] = (ffi._get_cached_btype(tp), function)
                    added += 1
        except Exception:  # an unexpected cffi: keep its own (slower) path for what is left
            pass
    return added


# --- the header's syntax tree, cached --------------------------------------------------------

FFI_MODULE = "wgpu.backends.wgpu_native._ffi"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onnx2wgsl"


class _header_cache:
    """While wgpu-py's backend is imported (a ``with`` block), cffi's parses (of the wgpu header,
    and of the type strings the import itself uses before ``prime`` can fill cffi's table) take
    their syntax trees from the cache; on a miss they are parsed and the cache written after
    the import. Does nothing when the backend is imported already, when turned off, or when
    cffi or pycparser are not the expected ones."""

    def __enter__(self):
        self.restore = None
        if FFI_MODULE in sys.modules or os.environ.get("ONNX2WGSL_NO_HEADER_CACHE", "") not in ("", "0"):
            return self
        try:
            import cffi
            import pycparser
            from cffi.cparser import Parser
            from wgpu._coreutils import get_header_filename

            header = Path(get_header_filename("combined_header.h")).read_text()
        except Exception:
            return self
        key = hashlib.sha256(f"{cffi.__version__}\0{pycparser.__version__}\0{header}".encode()).hexdigest()
        self.path = cache_dir() / f"wgpu-header-{key[:32]}.json"
        self.trees = load_trees(self.path) or {}
        self.parsed = {}  # csource -> (tree, macros) parsed in this block
        original = Parser._parse

        def _parse(parser, csource, *rest):
            if rest or type(csource) is not str:
                return original(parser, csource, *rest)
            if csource in self.trees:
                tree, macros = self.trees[csource]
                return tree, dict(macros), csource
            ast, macros, text = original(parser, csource)
            self.parsed[csource] = (ast, dict(macros))
            return ast, macros, text

        Parser._parse = _parse
        self.restore = lambda: setattr(Parser, "_parse", original)
        return self

    def __exit__(self, exc_type, *exc):
        if self.restore:
            self.restore()
            if self.parsed and exc_type is None:
                save_trees(self.path, {**self.trees, **self.parsed})
        return False


def save_trees(path: Path, trees: dict) -> None:
    """Write pycparser trees with cffi's macros, by the source text they parse, to ``path``
    (atomically; nothing on failure).

    A node is written as ``[class index, file index, line, *fields]`` (its fields in
    ``__slots__`` order, without coord and __weakref__; the indices into the lists of class
    names and coordinates' file names); lists as lists (never starting with an int)."""
    try:
        from pycparser import c_ast

        classes: dict[str, int] = {}
        files: dict[str, int] = {}

        def enc(v):
            if isinstance(v, c_ast.Node):
                k = classes.setdefault(type(v).__name__, len(classes))
                c = v.coord
                where = [None, None] if c is None else [files.setdefault(c.file, len(files)), c.line]
                return [k, *where] + [enc(getattr(v, f)) for f in type(v).__slots__[:-2]]
            if isinstance(v, list):
                return [enc(x) for x in v]
            if v is None or isinstance(v, (str, bool)):
                return v
            raise TypeError(f"unexpected {type(v).__name__} in the tree")

        out = [[text, enc(ast), macros] for text, (ast, macros) in trees.items()]
        data = json.dumps(
            {"classes": list(classes), "files": list(files), "trees": out}, separators=(",", ":")
        )
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


def load_trees(path: Path) -> dict | None:
    """{source text: (tree, macros)} from ``path``, or None when it is missing or not as
    ``save_trees`` writes: nodes are made only of pycparser's own AST classes, fields set by
    name."""
    try:
        data = json.loads(path.read_text())
        from pycparser import c_ast
        from pycparser.c_parser import Coord

        classes = []
        for name in data["classes"]:
            cls = getattr(c_ast, name)
            if not (isinstance(cls, type) and issubclass(cls, c_ast.Node) and cls is not c_ast.Node):
                return None
            classes.append((cls, cls.__slots__[:-2]))
        files = [str(f) for f in data["files"]]
        coords = {}  # one Coord per place (the parser's are never changed)

        def dec(v):
            if type(v) is not list:
                return v
            if v and type(v[0]) is int:
                cls, fields = classes[v[0]]
                if len(v) != len(fields) + 3:
                    raise ValueError("a node with other fields")
                node = cls.__new__(cls)
                for f, x in zip(fields, v[3:]):
                    setattr(node, f, dec(x))
                if v[1] is None:
                    node.coord = None
                else:
                    c = coords.get((v[1], v[2]))
                    if c is None:
                        c = coords[v[1], v[2]] = Coord(files[v[1]], int(v[2]))
                    node.coord = c
                return node
            return [dec(x) for x in v]

        trees = {}
        for text, tree, macros in data["trees"]:
            tree = dec(tree)
            if not (isinstance(text, str) and isinstance(tree, c_ast.FileAST) and isinstance(macros, dict)):
                return None
            trees[text] = (tree, macros)
        return trees
    except Exception:
        return None

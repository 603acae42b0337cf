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
"""

from __future__ import annotations

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

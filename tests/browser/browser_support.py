"""Helpers the browser tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import base64

import numpy as np


def decode(out: dict) -> np.ndarray:
    """An output the harness encoded -> numpy (float16 bits and bool bytes included)."""
    dtype = np.dtype(out["type"]) if out["type"] != "bfloat16" else np.dtype(np.uint16)
    return np.frombuffer(base64.b64decode(out["b64"]), dtype=dtype).reshape(out["dims"])


def read_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium's screenshots are)."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, head = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = head
    assert depth == 8 and color in (2, 6) and not interlace, f"unsupported PNG {head}"
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        f, line = (
            raw[y * (stride + 1)],
            np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32),
        )
        cur = line.copy()
        if f == 1:
            for x in range(bpp, stride):
                cur[x] = (cur[x] + cur[x - bpp]) & 255
        elif f == 2:
            cur = (line + prev) & 255
        elif f == 3:
            for x in range(stride):
                cur[x] = (line[x] + ((cur[x - bpp] if x >= bpp else 0) + prev[x]) // 2) & 255
        elif f == 4:
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b, c = prev[x], prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y], prev = cur, cur
    return out.reshape(height, width, bpp)

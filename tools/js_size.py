"""Print the size of the browser runtime (runtime/js): raw, minified with terser, and
minified + gzipped (level 9), the number a page pays to load it.

    python tools/js_size.py [--check BYTES]   # exit 1 if min+gzip of the runtime exceeds BYTES

terser comes from `bash scripts/setup-browser.sh` (.cache/jstools), or set ONNX2WGSL_TERSER.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "runtime" / "js"
# the runtime proper, and the three-line package entry that binds it to its artifact
FILES = ("onnx2wgsl.js", "index.js")
TERSER_ARGS = ["--module", "--compress", "passes=2", "--mangle", "--ecma", "2020"]


def terser() -> str:
    """The terser executable: $ONNX2WGSL_TERSER, .cache/jstools, or PATH."""
    for candidate in (
        os.environ.get("ONNX2WGSL_TERSER"),
        str(ROOT / ".cache" / "jstools" / "node_modules" / ".bin" / "terser"),
        shutil.which("terser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("terser not found: run `bash scripts/setup-browser.sh` (or set ONNX2WGSL_TERSER)")


def minify(path: Path) -> bytes:
    r = subprocess.run([terser(), str(path), *TERSER_ARGS], capture_output=True, check=False)
    if r.returncode:
        raise SystemExit(f"terser failed on {path}: {r.stderr.decode()}")
    return r.stdout


def gzipped(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def sizes() -> dict[str, tuple[int, int, int]]:
    """file -> (raw, minified, minified+gzip) bytes."""
    out = {}
    for name in FILES:
        raw = (JS / name).read_bytes()
        mini = minify(JS / name)
        out[name] = (len(raw), len(mini), gzipped(mini))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", type=int, metavar="BYTES", help="fail if onnx2wgsl.js min+gzip exceeds BYTES")
    args = ap.parse_args()
    table = sizes()
    print(f"{'file':18s} {'raw':>8s} {'minified':>9s} {'min+gzip':>9s}")
    for name, (raw, mini, gz) in table.items():
        print(f"{name:18s} {raw:8,d} {mini:9,d} {gz:9,d}")
    gz = table["onnx2wgsl.js"][2]
    print(f"runtime min+gzip: {gz:,d} bytes ({gz / 1024:.2f} KiB; terser {' '.join(TERSER_ARGS)}, gzip -9)")
    if args.check is not None and gz > args.check:
        print(f"over the budget of {args.check:,d} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the web examples: compile the digit classifier into a JS package under model/ and
write samples.json (one test digit of each class), and compile the text generator
(examples/textgen) for generation into textgen-model/ with its vocab.json. Then serve this folder:

    python examples/web/build.py && python -m http.server -d examples/web 8000
    # open http://127.0.0.1:8000/  (and /worker.html, /fallback.html, /textgen.html)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

import onnx2wgsl

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent / "digits"
TEXTGEN = HERE.parent / "textgen"


def samples() -> dict:
    """The first test image of each class, as integers 0..16 (the images are k/16 exactly)."""
    d = np.load(DIGITS / "digits_test.npz")
    images, labels = d["images"], d["labels"]
    picked = [int(np.flatnonzero(labels == k)[0]) for k in range(10)]
    return {
        "source": "examples/digits/digits_test.npz (scikit-learn's 8x8 digits, test split); pixel = value / 16",
        "indices": picked,
        "labels": [int(labels[i]) for i in picked],
        "images": [[round(float(v) * 16) for v in images[i].ravel()] for i in picked],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "model"), help="package folder (default: examples/web/model)")
    ap.add_argument(
        "--textgen-out",
        default=str(HERE / "textgen-model"),
        help="the text generator's package folder (default: examples/web/textgen-model)",
    )
    args = ap.parse_args()
    report = onnx2wgsl.compile(DIGITS / "model.onnx", args.out, dims={"batch": 1}, emit="js")
    print(report.summary())
    (HERE / "samples.json").write_text(json.dumps(samples(), separators=(",", ":")) + "\n")
    print(f"wrote {args.out} and {HERE / 'samples.json'}")
    build_textgen(args.textgen_out)
    print(f"wrote {args.textgen_out}")


def build_textgen(out) -> None:
    """The text generator's package (with generate.js) and its vocabulary beside it."""
    from onnx2wgsl.compiler.generation import Generation

    onnx2wgsl.compile(
        TEXTGEN / "model.onnx", out, emit="js", generation=Generation(64, sample_candidates=16), force=True
    )
    shutil.copyfile(TEXTGEN / "vocab.json", Path(out) / "vocab.json")


if __name__ == "__main__":
    main()

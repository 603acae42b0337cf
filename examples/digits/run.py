"""The bundled example, end to end: compile a digit classifier to WGSL, run it on WebGPU,
and check its outputs against the reference probabilities PyTorch computed for it.

    python examples/digits/run.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import onnx2wgsl

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--out", default=str(HERE / "out"), help="artifact directory (default: examples/digits/out)"
    )
    args = ap.parse_args()

    data = np.load(HERE / "digits_test.npz")
    images, labels, reference = data["images"], data["labels"], data["reference"]

    # The model's batch dim is symbolic; bind it to the whole test set at compile time.
    report = onnx2wgsl.compile(HERE / "model.onnx", args.out, dims={"batch": len(images)})
    print(report.summary())

    sess = onnx2wgsl.load(args.out)
    print(f"\ninputs  {[(i.name, i.dtype, i.shape) for i in sess.get_inputs()]}")
    print(f"outputs {[(o.name, o.dtype, o.shape) for o in sess.get_outputs()]}")
    times = []
    for _ in range(5):
        t = time.perf_counter()
        (probs,) = sess.run(None, {"image": images})
        times.append(time.perf_counter() - t)

    accuracy = float((probs.argmax(axis=1) == labels).mean())
    diff = float(np.abs(probs - reference).max())
    agree = bool(np.allclose(probs, reference, rtol=1e-3, atol=1e-4))
    print(f"\nclassified {len(images)} digits: accuracy {accuracy:.3f}")
    print(f"first 10 predictions {probs.argmax(axis=1)[:10].tolist()}, labels {labels[:10].tolist()}")
    print(f"run time: first {times[0] * 1000:.1f} ms, median {sorted(times)[2] * 1000:.1f} ms")
    print(
        f"agreement with the reference: max abs diff {diff:.2e} -> {'OK' if agree else 'MISMATCH'} (rtol 1e-3, atol 1e-4)"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

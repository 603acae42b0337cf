"""The nine light CNNs shipped in the onnx wheel, and variants that make their outputs informative.

Their shipped references come from ConstantOfShape weight fills (every class scores the
same), so tests also run each model with the fills replaced by seeded random weights and
with the input of its final Softmax exposed as an extra output (the logits).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))


def light_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


def light_reference(name: str) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(LIGHT_DIR / f"light_{name}_output_0.pb")))


def light_input(name: str) -> tuple[str, np.ndarray]:
    """The input the shipped references were made with (as onnx's backend test runner makes it)."""
    m = onnx.load(str(light_path(name)))
    inits = {t.name for t in m.graph.initializer}
    (inp,) = [i for i in m.graph.input if i.name not in inits]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    n = int(np.prod(shape))
    return inp.name, (np.arange(n).reshape(shape) / n).astype(np.float32)


def random_input(name: str, seed: int = 0) -> tuple[str, np.ndarray]:
    input_name, x = light_input(name)
    return input_name, np.random.default_rng(seed).random(x.shape, dtype=np.float32)


def randomized(name: str, seed: int = 0) -> onnx.ModelProto:
    """The model with each ConstantOfShape weight fill replaced by a seeded random initializer
    (scaled like He init, so activations stay in range), and the final Softmax's input added
    as a graph output."""
    m = onnx.load(str(light_path(name)))
    rng = np.random.default_rng(seed)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep, new_inits, used_shapes = [], [], set()
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(d) for d in inits[n.input[0]])
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if len(shape) == 1:  # biases, BN params: near 1 for scales/variances, small otherwise
                data = (
                    rng.uniform(0.5, 1.5, shape)
                    if _is_positive_param(n.output[0])
                    else rng.normal(0, 0.1, shape)
                )
            else:
                data = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
            new_inits.append(numpy_helper.from_array(data.astype(np.float32), n.output[0]))
            used_shapes.add(n.input[0])
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    still = [t for t in g.initializer if t.name not in used_shapes]
    del g.initializer[:]
    g.initializer.extend(still + new_inits)
    still_in = [i for i in g.input if i.name not in used_shapes]
    del g.input[:]
    g.input.extend(still_in)
    softmax = [n for n in g.node if n.op_type == "Softmax"]
    if softmax:
        logits = softmax[-1].input[0]
        g.output.append(helper.make_value_info(logits, onnx.TypeProto()))
        g.output[-1].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return m


def _is_positive_param(name: str) -> bool:
    n = name.lower()
    return any(k in n for k in ("_s_", "scale", "_var", "riv", "_s0", "bn_s"))

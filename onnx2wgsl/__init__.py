"""onnx2wgsl: an ahead-of-time compiler from ONNX to WGSL, with thin WebGPU runtimes.

report = onnx2wgsl.compile("model.onnx", "out/")
sess = onnx2wgsl.load("out/")
(y,) = sess.run(None, {"x": x})
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    CompileError,
    ConstantRequiredError,
    DeviceError,
    InputError,
    InternalError,
    IRError,
    ManifestError,
    Onnx2WgslError,
    ShapeRequiredError,
    UnsupportedError,
)


def compile(
    model,
    output=None,
    *,
    shapes=None,
    dims=None,
    target=None,
    opt_level=2,
    emit="python",
    constants=None,
    force=False,
    fold_limit=None,
    freeze_initializers=False,
    generation=None,
    precision=None,
    subgroups=False,
    tuning=None,
    tune=False,
    tune_runs=None,
):
    """Compile an ONNX model (path or ModelProto) into an artifact directory.

    ``shapes`` maps input names to shapes (tuples or "1x3x224x224"); ``dims`` binds symbolic
    dims by name (``{"batch": 1}``) or keeps one symbolic over a range (``{"seq": (1, 128)}``,
    the CLI's ``--dim seq=1..128``; for now only the import stage takes such dims); ``constants`` maps input names to arrays that freeze those inputs (they fold
    into the model and leave its inputs). An input with an initializer of its name (IR version
    >= 4) is an input whose default is that initializer (a run that does not feed it uses it),
    unless an op needs its value at compile time (a Reshape's shape...): it is then compiled in
    with that value; ``freeze_initializers=True`` compiles every such initializer in as a
    constant (faster: folding, fusion and weight packing apply). ``emit="js"`` also makes the directory an npm
    package for the browser (the CLI's ``--target js``). ``output`` must be new, empty or hold
    an earlier artifact; ``force=True`` writes into any folder (its other files are kept).
    ``fold_limit`` caps the bytes of one tensor folded on the host (default 1 GiB).
    ``generation`` (``onnx2wgsl.compiler.generation.Generation(max_length, state,
    sample_candidates)``, the CLI's ``--max-length``) compiles a decoder with a KV cache for
    ``onnx2wgsl.Generator``. ``precision="fp16"`` (the CLI's ``--precision fp16``) stores
    activations and weights as f16 where every kernel converts at its loads and stores, computing
    in f32; the artifact then needs the device feature shader-f16. Without a precision a
    float16 model compiles at fp16 and any other at fp32; ``"fp16,fp32"`` writes both, and the
    runtimes load the first the device runs. ``subgroups=True`` (the CLI's ``--subgroups``) lets
    kernels share loads through subgroup operations; the artifact then needs the device feature
    subgroups. ``tune=True`` (the CLI's ``--tune``) measures the forms of each tunable kernel
    (matmul and conv tiles) on this machine's WebGPU device, ``tune_runs`` passes over the
    candidates (default 3), and compiles the fastest; the manifest records them as a table, and
    ``tuning=`` (that artifact's directory or manifest.json, a JSON file of the table, or a
    dict) builds the same artifact again without measuring.
    Returns the CompileReport
    (``.summary()`` prints it)."""
    from functools import partial

    from .compiler import compile_model

    if emit not in ("python", "js"):
        raise ValueError(f"emit must be 'python' or 'js', not {emit!r}")
    if emit == "js" and output is None:
        raise ValueError("emit='js' needs an output directory")
    if tune_runs is not None and not tune:
        raise ValueError("tune_runs applies to tune=True")
    if tune and tuning is not None:
        raise ValueError(
            "tune=True measures the kernels' forms and tuning= takes them from a table: give one"
        )
    if tune:
        from .compiler.tune import TUNE_RUNS, tune_model

        run = partial(tune_model, runs=TUNE_RUNS if tune_runs is None else int(tune_runs))
    else:
        run = partial(compile_model, tuning=tuning)
    report = run(
        model,
        output,
        shapes=shapes,
        dims=dims,
        target=target,
        opt_level=opt_level,
        constants=constants,
        force=force,
        freeze_initializers=freeze_initializers,
        generation=generation,
        precision=precision,
        subgroups=subgroups,
        **({} if fold_limit is None else {"fold_limit": int(fold_limit)}),
    ).report
    if emit == "js":
        from .compiler.package_js import write_js_package

        write_js_package(output, model)
    return report


def load(directory, **kwargs):
    """Load a compiled artifact on a WebGPU device: an InferenceSession ready to ``run``."""
    from .runtime import InferenceSession

    return InferenceSession(directory, **kwargs)


def __getattr__(name: str):
    if name == "GpuTensor":  # the runtime's, imported when first asked for
        from .runtime import GpuTensor

        return GpuTensor
    if name == "Generator":
        from .runtime.generate import Generator

        return Generator
    raise AttributeError(f"module 'onnx2wgsl' has no attribute {name!r}")


__all__ = [
    "CompileError", "ConstantRequiredError", "DeviceError", "Generator", "GpuTensor", "InputError", "InternalError", "IRError",
    "ManifestError", "Onnx2WgslError", "ShapeRequiredError", "UnsupportedError", "__version__", "compile", "load",
]  # fmt: skip

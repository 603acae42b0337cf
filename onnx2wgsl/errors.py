"""Errors users see: each renders as one line that names the problem and the fix."""

from __future__ import annotations


def first_line(e: BaseException, limit: int = 300, lines: int = 1) -> str:
    """The first line (or ``lines`` lines, joined) of an exception's message, for a one-line
    error of ours that quotes a foreign one; '' when it has no message."""
    text = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return " / ".join(text[:lines])[:limit]


class Onnx2WgslError(Exception):
    """Base of every error onnx2wgsl raises on purpose (the CLI prints it as one line)."""


class CompileError(Onnx2WgslError):
    """The model cannot be compiled as given; names the node, op type and opset when known."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        op: str | None = None,
        opset: int | None = None,
        hint: str | None = None,
    ):
        self.message = message
        self.node = node
        self.op = op
        self.opset = opset
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.op is not None:
            where = f"{self.op} node {self.node!r}" if self.node else f"{self.op} node"
            if self.opset is not None:
                where += f" (opset {self.opset})"
            where += ": "
        text = where + self.message
        if self.hint:
            text += f"; {self.hint}"
        return text


class UnsupportedError(CompileError):
    """An op, dtype or attribute value that onnx2wgsl cannot run on WebGPU."""


class ConstantRequiredError(UnsupportedError):
    """An op needs the value of a graph input at compile time (a shape, axes, pads, k...).

    ``inputs`` names those graph inputs: compiling again with ``constants={name: value}``
    (CLI ``--const NAME=FILE``) freezes them, which is what ``onnx2wgsl.backend`` does at run
    time when a model is fed such inputs."""

    def __init__(self, message: str, *, inputs: tuple[str, ...] = (), **kwargs):
        self.inputs = tuple(inputs)
        super().__init__(message, **kwargs)


class ShapeRequiredError(CompileError):
    """Graph inputs with dims that nothing binds (symbolic or unnamed): ``inputs`` names them.
    Compiling again with ``shapes=`` or ``dims=`` binds them; ``onnx2wgsl.backend`` does so
    from the arrays it is fed."""

    def __init__(self, message: str, *, inputs: tuple[str, ...] = (), **kwargs):
        self.inputs = tuple(inputs)
        super().__init__(message, **kwargs)


class InputError(Onnx2WgslError, ValueError):
    """A run was fed a wrong input name, dtype or shape."""


class ManifestError(Onnx2WgslError):
    """An artifact directory is missing, damaged or of an unknown format version."""


class DeviceError(Onnx2WgslError):
    """No WebGPU adapter, or one that lacks the features or limits an artifact needs."""


class IRError(CompileError):
    """An IR graph given to the compiler (text or Graph) whose op breaks what a stage relies on:
    a missing attribute or operand, types that do not fit the op. IR from the compiler's own
    dumps never does; an edited one may, and the compiler checks its structure, not every op's
    meaning, so what a stage then raises is reported as this, naming the stage and the op."""

    def __init__(self, stage: str, error: BaseException, *, node: str | None = None, op: str | None = None):
        self.stage = stage
        self.error = error
        line = first_line(error, 200)
        what = type(error).__name__ + (f": {line}" if line else "")
        super().__init__(
            f"the IR breaks what stage {stage!r} relies on ({what})",
            node=node,
            op=op,
            hint="check the op's attributes, operands and types against what onnx2wgsl prints for "
            "such an op; if the IR is as onnx2wgsl printed it, this is a bug: please report it",
        )


class InternalError(Onnx2WgslError):
    """A bug in onnx2wgsl: an exception that no check of ours anticipated, wrapped at the
    compiler's boundary (``compile_model``, the IR parser) with the stage and, when known, the
    node it was raised in, so that only onnx2wgsl's errors leave. ``error`` is the original;
    the fuzzer (tools/fuzz.py) counts these as findings to fix."""

    def __init__(
        self,
        stage: str,
        error: BaseException,
        *,
        node: str | None = None,
        op: str | None = None,
        opset: int | None = None,
    ):
        self.stage = stage
        self.error = error
        self.node = node
        self.op = op
        self.opset = opset
        where = f"stage {stage!r}"
        if op is not None:
            where += f", {op} node {node!r}" if node else f", {op} node"
            if opset is not None:
                where += f" (opset {opset})"
        line = first_line(error)
        what = type(error).__name__ + (f": {line}" if line else "")
        super().__init__(
            f"internal error in {where}: {what}; this is a bug in onnx2wgsl, please report it with "
            "the model (--debug shows the traceback)"
        )

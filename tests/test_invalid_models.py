"""Invalid and careless input: only onnx2wgsl's errors leave the compiler, each one line that
names what is wrong; models that ONNX and onnxruntime refuse are refused too."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import node_model

from onnx2wgsl.compiler import cli, compile_model
from onnx2wgsl.errors import InternalError
from onnx2wgsl.ir import parse_ir, print_ir

X = np.zeros((2, 4), np.float32)


def _relu() -> object:
    return node_model("Relu", {"x": X})


# -- the boundary: anything unexpected is an InternalError naming where it happened ---------------
def test_an_unexpected_exception_in_import_names_the_node(monkeypatch):
    from onnx2wgsl.compiler import frontend

    def broken(g, info):
        raise KeyError("planted")

    monkeypatch.setattr(frontend, "legalize", broken)
    with pytest.raises(InternalError, match=r"stage 'import', Relu node \(opset 17\): KeyError") as e:
        compile_model(_relu())
    assert isinstance(e.value.error, KeyError) and "\n" not in str(e.value)
    assert "please report it" in str(e.value)


def test_an_unexpected_exception_in_a_pass_names_the_pass(monkeypatch):
    from onnx2wgsl.compiler.passes.canonicalize import Canonicalize

    def broken(self, g):
        raise IndexError("planted")

    monkeypatch.setattr(Canonicalize, "run", broken)
    with pytest.raises(InternalError, match="stage 'canonicalize': IndexError: planted"):
        compile_model(_relu())


def test_an_unexpected_exception_in_lowering_names_the_op(monkeypatch):
    from onnx2wgsl.compiler import lowering

    def broken(ctx, op):
        raise ZeroDivisionError("planted")

    monkeypatch.setitem(lowering._LOWERINGS, "Relu", broken)
    with pytest.raises(InternalError, match="stage 'lower', Relu node: ZeroDivisionError"):
        compile_model(_relu())


def test_the_callers_own_hook_errors_pass_through_unwrapped():
    def hook(stage, g):
        raise ValueError("the caller's")

    with pytest.raises(ValueError, match="the caller's"):
        compile_model(_relu(), on_stage=hook)


def test_an_unexpected_exception_in_the_ir_parser_is_internal(monkeypatch):
    from onnx2wgsl.ir import parser

    text = print_ir(compile_model(_relu()).graph)

    def broken(self, rec, outer):
        raise KeyError("planted")

    monkeypatch.setattr(parser._Builder, "graph", broken)
    with pytest.raises(InternalError, match="stage 'parse': KeyError"):
        parse_ir(text)


def test_the_cli_prints_an_internal_error_as_one_line(monkeypatch, tmp_path, capsys):
    import onnx

    from onnx2wgsl.compiler import lowering

    monkeypatch.setitem(lowering._LOWERINGS, "Relu", lambda ctx, op: 1 / 0)
    onnx.save(_relu(), tmp_path / "m.onnx")
    assert cli.main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error in stage 'lower', Relu node") and err.count("\n") == 1

"""KernelBuilder (compiler/lowering/builder.py): operand binding, addressing and in-place pairs,
checked on the kernels it renders (no GPU)."""

from __future__ import annotations

from onnx2wgsl.compiler.lowering import LowerCtx
from onnx2wgsl.compiler.lowering.builder import KernelBuilder, Sweep
from onnx2wgsl.compiler.lowering.indexing import View, contiguous, permuted
from onnx2wgsl.compiler.target import get_target
from onnx2wgsl.ir import DType, Graph, TensorType


def _setup(*shapes):
    g = Graph()
    values = [g.value(f"v{k}", TensorType(DType.f32, s)) for k, s in enumerate(shapes)]
    return LowerCtx(g, get_target(None)), g, values


def test_each_value_is_bound_once_reads_first():
    ctx, g, (x, y) = _setup((4, 8), (4, 8))
    k = KernelBuilder(ctx, (4, 8))
    t = k.target(y, contiguous((4, 8)))
    a, b = k.load(x, contiguous((4, 8))), k.load(x, View(0, (0, 1)))
    k.add(f"{t} = {a} + {b} + {k.read(x)}[0];")
    d = k.dispatch()
    assert [(b.value, b.write) for b in d.bindings] == [(x, False), (y, True)]
    assert [b.name for b in g.shaders[d.shader].buffers] == ["in0", "out0"]
    assert d.inplace == ()  # x is also read as a whole buffer


def test_dense_views_merge_into_the_flat_index():
    ctx, g, (x, y) = _setup((2, 3, 4), (2, 3, 4))
    k = KernelBuilder(ctx, (2, 3, 4))
    k.add(f"let a = {k.load(x, contiguous((2, 3, 4)))};", f"{k.target(y, contiguous((2, 3, 4)))} = a * 2.0f;")
    d = k.dispatch()
    text = g.shaders[d.shader].text
    assert "let a = in0[i];" in text and "out0[i] = a * 2.0f;" in text and "let c" not in text
    assert d.inplace == ((0, 1),)  # x is read before the line that stores y


def test_a_named_coordinate_keeps_the_space_as_it_is():
    ctx, g, (x, y) = _setup((2, 3, 4), (2, 3, 4))
    k = KernelBuilder(ctx, (2, 3, 4))
    k.add(f"{k.target(y, contiguous((2, 3, 4)))} = {k.load(x, contiguous((2, 3, 4)))} + f32({k.c(1)});")
    text = g.shaders[k.dispatch().shader].text
    assert "let c1 = (i / 4u) % 3u;" in text and "let c0" not in text


def test_in_place_needs_every_read_at_the_store_before_it():
    ctx, g, (x, y) = _setup((4, 8), (8, 4))
    k = KernelBuilder(ctx, (8, 4))  # a transpose: x is read where y is not written
    k.add(f"{k.target(y, contiguous((8, 4)))} = {k.load(x, permuted((4, 8), (1, 0)))};")
    assert k.dispatch().inplace == ()
    ctx, g, (x, y) = _setup((8,), (8,))
    k = KernelBuilder(ctx, (8,))
    t, a = k.target(y, contiguous((8,))), k.load(x, contiguous((8,)))
    k.add(f"{t} = 1.0f;", f"{t} = {t} + {a};")  # x read after y's first store
    assert k.dispatch().inplace == ()
    k = KernelBuilder(ctx, (8,))
    k.add(f"{k.target(y, contiguous((8,)))} = {k.load(x, contiguous((8,)))};")  # read in the store's line
    assert k.dispatch().inplace == ()


def test_group_one_is_one_invocation_per_point():
    ctx, g, (y,) = _setup((100,))
    names = []
    for group in (None, 1):
        k = KernelBuilder(ctx, (100,), group=group)
        k.store("0.0f", y)
        d = k.dispatch()
        names.append(d.shader)
        assert d.grid == (2, 1, 1)
    assert names[0] == names[1]


def test_row_kernel_element_writes_go_in_place_unless_split():
    ctx, g, (x, y, m) = _setup((16, 64), (16, 64), (16,))
    k = KernelBuilder(ctx, (16, 64), reduced=[1], comment="test")
    a = k.load(x, contiguous((16, 64)))
    k.sweep(Sweep([("s", "f32", "0.0f")], [f"s = s + {a};"], ["red_s[lid] += red_s[lid + half];"]))
    k.row_write(m, "s")
    k.elem_write(y, contiguous((16, 64)), f"{a} - s")
    d = k.dispatch()
    assert [(b.value, b.write) for b in d.bindings] == [(x, False), (m, True), (y, True)]
    assert d.inplace == ((0, 2),)
    text = g.shaders[d.shader].text
    assert "let a0 = in0[kb0 + r];" in text and "out1[kb1 + r] = a0 - s;" in text
    k = KernelBuilder(ctx, (16, 64), reduced=[1], split=(4, 16), group=64, comment="test")
    k.sweep(Sweep([("s", "f32", "0.0f")], [f"s = s + {k.load(x, contiguous((16, 64)))};"], []))
    k.row_write(m, "s")
    assert k.dispatch().inplace == ()

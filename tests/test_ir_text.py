"""IR text: print -> parse is exact for every construct and every stage of real models; broken
text gives a ParseError naming line and column; compiles restart from dumped text. No GPU."""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import replace

import numpy as np
import onnx
import pytest
from helpers import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from light_models import LIGHT_MODELS, light_path, randomized

from onnx2wgsl.compiler import compile_model
from onnx2wgsl.compiler.driver import IRDumper, infer_stage, run_to_stage, stage_names
from onnx2wgsl.errors import CompileError
from onnx2wgsl.ir import (
    Binding,
    Buffer,
    Dispatch,
    DType,
    Graph,
    Kernel,
    Op,
    ParseError,
    Placement,
    TensorType,
    Value,
    WeightBlob,
    graph_diff,
    load_ir,
    parse_ir,
    parse_module,
    print_ir,
    save_ir,
    verify,
)
from onnx2wgsl.ir.kernel import Fold, Ref, Slot


def round_trip(g: Graph, blob: bool = True) -> tuple[str, Graph]:
    weights = WeightBlob() if blob else None
    text = print_ir(g, weights=weights)
    back = parse_ir(text, bytes(weights) if weights else None)
    diff = graph_diff(g, back)
    assert diff is None, diff
    assert print_ir(back, weights=WeightBlob() if blob else None) == text  # printing is a fixed point
    return text, back


# -- the nine light models, every stage -----------------------------------------------------------
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_round_trips_at_every_stage(name):
    seen = []

    def check(stage: str, g: Graph) -> None:
        blob = WeightBlob()
        text = print_ir(g, stage=stage, weights=blob)
        mod = parse_module(text, bytes(blob))
        assert mod.stage == stage
        diff = graph_diff(g, mod.graph)
        assert diff is None, f"{name} after {stage}: {diff}"
        verify(mod.graph, static=True)
        seen.append(stage)

    compile_model(str(light_path(name)), on_stage=check)
    assert seen == stage_names()


def test_real_weights_go_to_the_blob_and_come_back_exactly(tmp_path):
    g = run_to_stage(randomized("squeezenet"), "dce")
    path = save_ir(g, tmp_path / "sq.ir", stage="dce")
    blob = (tmp_path / "sq.weights.bin").read_bytes()
    assert len(blob) > 1_000_000  # the random weights are not splats
    mod = load_ir(path)
    assert mod.stage == "dce" and graph_diff(g, mod.graph) is None
    text = path.read_text()
    assert "@weights[" in text and "hex" not in text


def test_fills_print_compactly_and_parse_without_memory():
    # vgg19's weights are ConstantOfShape fills (548 MB): one short line each, and the parsed
    # constants are broadcast views of one element
    g = run_to_stage(str(light_path("vgg19")), "import")
    blob = WeightBlob()
    text = print_ir(g, weights=blob)
    assert len(text) < 50_000 and blob.size < 100_000
    back = parse_ir(text, bytes(blob))
    big = max(back.constants(), key=lambda v: v.type.numel)
    assert big.type.numel * 4 > 100e6 and big.data.strides == (0,) * big.data.ndim
    assert graph_diff(g, back) is None


# -- restarting a compile from text -----------------------------------------------------------------
def _artifact_bytes(res) -> tuple:
    return (res.artifact.manifest, res.artifact.shaders, res.artifact.weights)


@pytest.mark.parametrize("name", ["squeezenet", "inception_v2"])
def test_compile_restarted_from_any_stage_gives_the_same_artifact(name, tmp_path):
    dumper = IRDumper(tmp_path / "dump")
    direct = compile_model(str(light_path(name)), on_stage=dumper)
    assert [p.name for p in dumper.files] == [f"{i:02d}-{s}.ir" for i, s in enumerate(stage_names())]
    for path in dumper.files:
        res = compile_model(str(path))
        assert _artifact_bytes(res) == _artifact_bytes(direct), path.name
        assert res.report.kernels == direct.report.kernels
        assert res.report.arena_bytes == direct.report.arena_bytes


def test_vgg19_restarted_from_import_text_gives_the_same_artifact():
    # its weight fills parse to read-only broadcast views, which lowering splits and packs
    texts = {}

    def keep(stage: str, g: Graph) -> None:
        if stage == "import":
            blob = WeightBlob()
            texts[stage] = (print_ir(g, stage=stage, weights=blob), bytes(blob))

    direct = compile_model(str(light_path("vgg19")), on_stage=keep)
    mod = parse_module(*texts["import"])
    assert _artifact_bytes(compile_model(mod.graph, stage=mod.stage)) == _artifact_bytes(direct)


def test_compile_from_a_graph_infers_its_stage():
    g = run_to_stage(str(light_path("squeezenet")), "lower")
    assert infer_stage(g) == "lower"
    ran = []
    compile_model(g, on_stage=lambda s, _: ran.append(s))
    assert ran == ["concat-in-place", "in-place", "plan"]


def test_run_to_stage_refuses_to_go_back():
    g = run_to_stage(str(light_path("squeezenet")), "plan")
    with pytest.raises(CompileError, match="past 'dce'"):
        run_to_stage(g, "dce", stage="plan")
    with pytest.raises(CompileError, match="the stages are import, canonicalize"):
        run_to_stage(g, "fusion")


def test_ir_input_takes_no_shapes(tmp_path):
    g = run_to_stage(str(light_path("squeezenet")), "import")
    path = save_ir(g, tmp_path / "a.ir", stage="import")
    with pytest.raises(CompileError, match="--shape and --dim apply to ONNX models"):
        compile_model(str(path), dims={"batch": 1})


def test_invalid_ir_is_a_compile_error_not_a_crash(tmp_path):
    path = tmp_path / "bad.ir"
    path.write_text(
        'stage "dce"\ngraph @g(%x: f32[2]) -> (%y: f32[2]) {\n  %y = Relu(%x) : f32[2]\n  %z = Relu(%y) : f32[3]\n}\n'
    )
    compile_model(str(path))  # valid: a dangling op is fine
    path.write_text('stage "lower"\ngraph @g(%x: f32[2]) -> (%y: f32[2]) {\n  %y = kernel(%x) : f32[2]\n}\n')
    with pytest.raises(CompileError, match="the IR is not valid .*kernel op has no dispatches"):
        compile_model(str(path))


# -- the text form of each construct --------------------------------------------------------------
def test_the_style_guide_example_parses():
    text = """
    graph @mlp(%x: f32[batch,784]) -> (%z: f32[batch,128]) {
      %w = const f32[784,128] @weights[0:401408]
      %h = MatMul(%x, %w) : f32[batch,128]
      %z = Relu(%h) : f32[batch,128]
    }
    """
    w = np.arange(784 * 128, dtype=np.float32).reshape(784, 128)
    g = parse_ir(text, w.tobytes())
    assert [op.kind for op in g.ops] == ["MatMul", "Relu"]
    assert g.inputs[0].type == TensorType(DType.f32, ("batch", 784))
    np.testing.assert_array_equal(g.ops[0].inputs[1].data, w)
    round_trip(g)


def _kernel(text: str, *buffers: Buffer) -> Kernel:
    """A kernel that loads each buffer once (or spells a NaN), then ends in ``text``."""
    uses = [p for b in buffers for p in ("\n  let x = ", Ref(b.name), "[0];")]
    uses = uses or ["\n  let x = ", Slot("f32_bits"), "(0x7fc00000u);"]
    return Kernel(buffers, 64, (Slot("bindings"), Slot("entry"), *uses, "\n" + text))


def _odd_graph() -> Graph:
    g = Graph(name="odd / ü")
    x = g.add_input("gpu_0/data 0:1", TensorType(DType.f32, ("batch", "const", "5", 3, "a b", "")))
    e = g.add_input("", TensorType(DType.i64, ()))
    small = g.const(np.array([np.nan, -0.0, np.inf, 1e-45], np.float32), "at")
    half = g.const(np.array([[1.5, -2.0], [65504.0, 6e-8]], np.float16), "graph")
    bools = g.const(np.array([True, False, True]), "%")
    strs = g.const(np.array(['a"b', "\\", "\n", "\ud800", "é"], dtype=object), "strings", dtype=DType.string)
    u64 = g.const(np.array([2**64 - 1, 0], np.uint64), "u64")
    big = g.const(np.arange(40, dtype=np.int64), "big")
    sub = Graph(name="body")
    i = sub.add_input("i", TensorType(DType.i64, ()))
    inner = sub.make_op("Add", [i, e], [TensorType(DType.i64, ())], name="inner")
    sub.append(inner)
    sub.outputs = [inner.outputs[0]]
    attrs = {
        "int": -(2**70), "float": -0.0, "nan": float("nan"), "neg_nan": -float("nan"), "inf": float("-inf"),
        "tiny": 5e-324, "str": 'q"\\\x00\u2028', "bool": True, "none": None,
        "ints": [1, -2], "floats": [0.1, 1e300], "strings": ["", "x"], "empty": [], "tuple": (1,),
        "tensor": np.array([1, 2], np.int64), "scalar": np.array(True), "f16": np.ones((2, 2), np.float16),
        "tensors": [np.zeros(3, np.float32), np.arange(30, dtype=np.int32)], "graph": sub, "graphs": [sub],
        "dict": {"k k": [1.5], "": None},
    }  # fmt: skip
    op = g.make_op(
        "Weird Op",
        [x, None, e, small, half, bools, strs, u64, big],
        [TensorType(DType.f32, (2,)), TensorType(DType.bool, (1,))],
        attrs,
        name="node #1",
        domain="com.x-y",
        out_names=["out,1", "graph"],
    )
    g.append(op)
    k = Op(
        "kernel",
        [op.outputs[0]],
        [Value("k/out", TensorType(DType.f32, (2,)))],
        {"op": "Relu"},
        name="relu",
        dispatches=[
            Dispatch("000 map", (1, 2, 3), [Binding(op.outputs[0]), Binding(op.outputs[0], 4, None)]),
            Dispatch("001", (7, 1, 1), [Binding(op.outputs[0], 0, 8), Binding(op.outputs[0], 4, 0, True)]),
        ],
    )
    g.append(k)
    g.append(Op("Print", [k.outputs[0]], [], name=""))
    k.outputs[0].placement = Placement("arena 0", 256, 8)
    x.placement = Placement("", 0, 0)
    g.outputs = [op.outputs[0], op.outputs[1], x, k.outputs[0], small]
    g.opset = {"": 17, "com.x-y": 1}
    g.metadata = {"producer": "x", "n": 3, "nested": {"list": [1, "a"]}}
    g.shaders = {
        "000 map": _kernel(
            '\n// """ inside\n', Buffer("a", "f32", "read"), Buffer("b", "vec4<f32>", "read_write")
        ),
        "001": replace(_kernel("no newline at end"), fold=Fold(65535, 2, 70000, 70000, 1)),
        "002": _kernel('ends in "'),
    }
    g.buffers = {"arena 0": {"kind": "arena", "size": 1024}}
    g.fresh_name("at")  # advances the name counter
    g.reserve_name("gone")
    return g


def test_every_construct_round_trips():
    g = _odd_graph()
    text, back = round_trip(g, blob=True)
    round_trip(g, blob=False)
    assert back.ops[0].domain == "com.x-y" and back.ops[0].name == "node #1"
    assert back.ops[0].inputs[1] is None and len(back.ops[0].outputs) == 2
    assert back.ops[1].dispatches[1].bindings[1].write and back.ops[1].dispatches[0].bindings[0].size is None
    assert back.ops[0].attrs["graph"].ops[0].inputs[1] is back.inputs[1]  # nested graph sees outer values
    assert back.outputs[4].data.dtype == np.float32 and np.signbit(back.outputs[4].data[1])
    # the name generator goes on where it was: a restarted compile names new values the same
    assert [back.fresh_name(n) for n in ("at", "gone", "new")] == [
        g.fresh_name(n) for n in ("at", "gone", "new")
    ]
    for snippet in [
        '%"gpu_0/data 0:1": f32[batch,"const","5",3,"a b",""]',
        '%"out,1", %graph.1 = "com.x-y"::"Weird Op"(%"gpu_0/data 0:1", _, %v.0,',
        'float = -0.0, "nan" = nan, neg_nan = nan(0xfff8000000000000), "inf" = -inf, tiny = 5e-324',
        "tensor = i64[2] [1, 2], scalar = bool[] [true], f16 = f16[2,2] splat(1.0)",
        "%at = const f32[4] [nan, -0.0, inf, 1e-45]",
        'at @"arena 0"[256:264] #relu',
        'dispatch @"000 map"(%"out,1", %"out,1"[4:]) grid(1, 2, 3)',
        'dispatch @001(%"out,1"[0:8], write %"out,1"[4:4]) grid(7, 1, 1)',
        "Print(%k/out)",
        'names {next = 3, retired = ["at.2", "gone"]}',
        'shader @"000 map"(a: f32 read, b: "vec4<f32>" read_write) workgroup(64) "${@bindings}${@entry}'
        '\\n  let x = ${a}[0];\\n  let x = ${b}[0];\\n\\n// \\"\\"\\" inside\\n"',
        'shader @001() workgroup(64) fold(65535, 2, 70000, 70000, 1) """\n${@bindings}${@entry}\n'
        '  let x = ${@f32_bits}(0x7fc00000u);\nno newline at end"""',
    ]:
        assert snippet in text, snippet


def test_ints_beyond_a_dtype_and_dense_count_mismatches_are_parse_errors():
    for text, message in [
        ("graph @g() -> () {\n  %c = const i8[2] [1, 300]\n  F(%c)\n}", "300 is out of range for i8"),
        ("graph @g() -> () {\n  %c = const f32[3] [1.0, 2.0]\n  F(%c)\n}", "f32[3] needs 3 values, got 2"),
        ('graph @g() -> () {\n  %c = const f32[2] hex"00"\n  F(%c)\n}', "holds 1 bytes, but 2 x f32 need 8"),
        ("graph @g() -> () {\n  %c = const f32[2] @weights[0:8]\n  F(%c)\n}", "no"),
    ]:
        with pytest.raises(ParseError) as e:
            parse_ir(text)
        assert e.value.line == 2 and message.split()[0] in str(e.value), str(e.value)


# -- parse errors -----------------------------------------------------------------------------------
GOOD = """graph @g(%x: f32[2,3]) -> (%z: f32[2,3]) {
  %w = const f32[3] [1.0, 2.0, 3.0]
  %y = Add(%x, %w) : f32[2,3]
  %z = Relu(%y) {alpha = 0.5} : f32[2,3]
}
"""


@pytest.mark.parametrize(
    "line_no, old, new, at, message, expected",
    [
        (3, "Add(%x, %w)", "Add(%x %w)", "%w", "unexpected '%w'", "','"),
        (3, ": f32[2,3]", ": f33[2,3]", "f33", "unknown dtype 'f33'", "f32"),
        (4, "%y)", "%q)", "%q", "%q is used before it is defined", None),
        (2, "[1.0, 2.0, 3.0]", "[1.0, 2.0]", "1.0", "f32[3] needs 3 values, got 2", None),
        (4, "{alpha = 0.5}", "{alpha = 0.5,}", "}", "unexpected '}'", "a name"),
        (4, "{alpha = 0.5}", "{alpha = 0.5 ยิ}", "ยิ", "unexpected character 'ย'", "'}'"),
        (1, "-> (%z: f32[2,3])", "-> (%z: f32[2,2])", "%z", "result %z is declared f32[2,2]", None),
        (3, "%y = Add", "%x = Add", "%x", "%x is defined twice", None),
        (2, "const f32[3]", "const f32[3,]", ",]", "unexpected ']'", "an integer"),
        (2, "1.0, 2.0", "1.0, 2.0.0", ".0, 3.0", "unexpected character '.'", "','"),
    ],
)
def test_broken_text_names_line_column_text_and_expected(line_no, old, new, at, message, expected):
    lines = GOOD.splitlines()
    assert old in lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace(old, new)
    col = lines[line_no - 1].index(at, lines[line_no - 1].index(new)) + 1
    if at == ",]":
        col += 1
    with pytest.raises(ParseError) as e:
        parse_ir("\n".join(lines), source="bad.ir")
    err = e.value
    assert (err.line, err.column) == (line_no, col), str(err)
    assert message in err.message, str(err)
    if expected is not None:
        assert any(expected in x for x in err.expected), err.expected
    assert str(err).startswith(f"bad.ir:{line_no}:{col}: ")
    assert "\n" not in str(err)


def test_truncated_text_is_an_error_at_its_end():
    with pytest.raises(ParseError) as e:
        parse_ir(GOOD[:60])
    assert e.value.line == 2 and "unexpected end of text" in str(e.value)


def test_cli_prints_a_parse_error_as_one_line(tmp_path):
    path = tmp_path / "broken.ir"
    path.write_text(GOOD.replace("Relu(%y)", "Relu(%y"))
    for args in (
        ["compile", str(path), "-o", str(tmp_path / "out")],
        ["inspect", str(path), "--stage", "plan"],
    ):
        r = cli(*args)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}:4:16: unexpected '{{'"), r.stderr


# -- command line -------------------------------------------------------------------------------
def test_cli_dump_inspect_and_compile_from_ir(tmp_path):
    model = str(light_path("squeezenet"))
    dump, out1, out2 = tmp_path / "dump", tmp_path / "a", tmp_path / "b"
    r = cli("compile", model, "-o", str(out1), "--dump-ir", str(dump))
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in dump.iterdir())
    assert files == [f"{i:02d}-{s}.ir" for i, s in enumerate(stage_names())] + ["weights.bin"]

    file = {s: f"{i:02d}-{s}.ir" for i, s in enumerate(stage_names())}
    r = cli("inspect", str(dump))
    assert r.returncode == 0 and "fold-constants" in r.stdout and file["plan"] in r.stdout
    r = cli("inspect", str(dump), "--stage", "lower")
    assert r.returncode == 0 and r.stdout == (dump / file["lower"]).read_text()

    r = cli("inspect", model, "--stage", "dce")
    assert r.returncode == 0 and 'stage "dce"' in r.stdout and "= Conv(" in r.stdout
    r = cli("inspect", str(dump / file["dce"]), "--stage", "plan")
    assert r.returncode == 0 and "dispatch @" in r.stdout and " at @arena0[" in r.stdout
    r = cli("inspect", model, "--stage", "lower", "-o", str(tmp_path / "low.ir"))
    assert r.returncode == 0 and load_ir(tmp_path / "low.ir").stage == "lower"

    r = cli("inspect", str(out1))
    manifest = json.loads((out1 / "manifest.json").read_text())
    n, first = len(manifest["dispatches"]), manifest["shaders"][0]["name"]
    assert first.startswith("000_conv")
    assert r.returncode == 0 and f"dispatches ({n})" in r.stdout and first in r.stdout

    r = cli("compile", str(dump / file["fold-constants"]), "-o", str(out2))
    assert r.returncode == 0, r.stderr
    for f in ("manifest.json", "weights.bin"):
        assert (out1 / f).read_bytes() == (out2 / f).read_bytes()


def test_cli_bad_stage_lists_the_stages(tmp_path):
    r = cli("inspect", str(light_path("squeezenet")), "--stage", "fuse")
    assert r.returncode == 1
    assert f"the stages are {', '.join(stage_names())}" in r.stderr
    r = cli("inspect", "--help")
    squeeze = lambda text: "".join(text.split())  # noqa: E731 (argparse wraps lines, even at hyphens)
    assert r.returncode == 0 and squeeze(", ".join(stage_names())) in squeeze(r.stdout)


# -- property tests -------------------------------------------------------------------------------
_PIECES = list('/:% @#"\\\n\t{}[](),=-.é\u2028\ud800😀\x00') + [
    "a",
    "b_1",
    "x.y",
    "9",
    "const",
    "graph",
    "nan",
    "at",
]
names = st.lists(st.sampled_from(_PIECES), max_size=3).map("".join)
dtypes = st.sampled_from(list(DType))


def _float_bits(dt: np.dtype):
    return st.binary(min_size=dt.itemsize, max_size=dt.itemsize)


@st.composite
def arrays(draw, max_numel: int = 24):
    dt = draw(dtypes)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = int(np.prod(shape))
    if n > max_numel:
        shape, n = (max_numel,), max_numel
    if dt == DType.string:
        return np.array(draw(st.lists(st.text(max_size=4), min_size=n, max_size=n)), dtype=object).reshape(
            shape
        )
    npdt = dt.numpy
    how = draw(st.sampled_from(["bytes", "splat", "small"]))
    if how == "splat" and n:
        one = np.frombuffer(draw(_float_bits(npdt)), dtype=npdt)
        if dt == DType.bool:
            one = one.view(np.uint8) != 0
        return np.full(shape, one[0], dtype=npdt) if draw(st.booleans()) else np.broadcast_to(one[0], shape)
    raw = draw(st.binary(min_size=n * npdt.itemsize, max_size=n * npdt.itemsize))
    a = np.frombuffer(raw, dtype=npdt).reshape(shape)
    if dt == DType.bool:
        a = a.view(np.uint8).astype(bool)  # a bool byte is 0 or 1
    if how == "small" and dt.is_float:
        a = (np.arange(n) / 4 - 1).astype(npdt).reshape(shape)
    return a


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(min_size=8, max_size=8).map(lambda b: struct.unpack("<d", b)[0]),
)
scalars = st.one_of(st.integers(), floats, names, st.booleans(), st.none(), arrays(max_numel=20))
literals = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=2).map(tuple),
        st.dictionaries(names, inner, max_size=2),
    ),
    max_leaves=5,
)
types = st.builds(
    TensorType,
    dtypes,
    st.lists(st.one_of(st.integers(0, 2**40), names), max_size=4).map(tuple),
)


@st.composite
def graphs(draw, depth: int = 0, outer: list[Value] | None = None, used: set | None = None) -> Graph:
    """Well-formed graphs: every construct the text has, odd names, nested graph attributes."""
    g = Graph(name=draw(names))
    used = set() if used is None else used  # value names are unique, nested graphs included

    def fresh() -> str:
        n = draw(names)
        if n in used:
            n += f"/{len(used)}"
        used.add(n)
        return n

    def place(v: Value) -> None:
        if draw(st.booleans()):
            v.placement = Placement(draw(names), draw(st.integers(0, 2**33)), draw(st.integers(0, 2**20)))

    defined: list[Value] = []
    for _ in range(draw(st.integers(0, 3))):
        v = Value(fresh(), draw(types))
        place(v)
        g.inputs.append(v)
        defined.append(v)
    for _ in range(draw(st.integers(0, 3))):
        data = draw(arrays(max_numel=40))
        dt = DType.string if data.dtype == np.dtype(object) else DType.from_numpy(data.dtype)
        v = Value(fresh(), TensorType(dt, data.shape), data=data)
        place(v)
        defined.append(v)
    texts = st.text(max_size=30).filter(lambda t: "$" not in t and "\x00" not in t)
    shaders = {draw(names): _kernel(draw(texts)) for _ in range(draw(st.integers(0, 2)))}
    g.shaders = shaders
    visible = defined + list(outer or [])
    for _ in range(draw(st.integers(0, 5))):
        ins = draw(
            st.lists(st.one_of(st.none(), st.sampled_from(visible)) if visible else st.none(), max_size=4)
        )
        outs = [Value(fresh(), draw(types)) for _ in range(draw(st.integers(0, 3)))]
        for v in outs:
            place(v)
        attrs = draw(st.dictionaries(names, literals, max_size=3))
        if depth == 0 and draw(st.integers(0, 5)) == 0:
            attrs[draw(names)] = draw(graphs(depth=1, outer=visible, used=used))
        dispatches = []
        operands = [v for v in ins if v is not None] + outs
        if shaders and operands and draw(st.booleans()):
            for _ in range(draw(st.integers(1, 2))):
                binds = [
                    Binding(
                        draw(st.sampled_from(operands)),
                        draw(st.integers(0, 2**20)),
                        draw(st.one_of(st.none(), st.integers(0, 2**20))),
                        draw(st.booleans()),
                    )
                    for _ in range(draw(st.integers(0, 3)))
                ]
                grid = tuple(draw(st.lists(st.integers(0, 65535), min_size=3, max_size=3)))
                dispatches.append(Dispatch(draw(st.sampled_from(sorted(shaders))), grid, binds))
        op = Op(draw(names), ins, outs, attrs, name=draw(names), domain=draw(names), dispatches=dispatches)
        g.ops.append(op)
        defined += outs
        visible += outs
    g.outputs = draw(st.lists(st.sampled_from(defined), max_size=3)) if defined else []
    # values the graph does not reach (an unused constant) are not part of it
    g.opset = draw(st.dictionaries(names, st.integers(0, 30), max_size=2))
    g.metadata = draw(st.dictionaries(names, literals, max_size=2))
    g.buffers = draw(st.dictionaries(names, st.dictionaries(names, literals, max_size=2), max_size=2))
    g._counter = itertools.count(draw(st.integers(0, 10)))
    g._names = set(draw(st.lists(names, max_size=3)))
    return g


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same cases every run; tools/fuzz.py explores
)
@given(graphs(), st.booleans())
def test_random_graphs_round_trip(g, blob):
    weights = WeightBlob() if blob else None
    text = print_ir(g, weights=weights, stage="x")
    back = parse_ir(text, bytes(weights) if weights else None)
    assert graph_diff(g, back) is None, graph_diff(g, back)


_MANGLE_BASES = [print_ir(_odd_graph()), print_ir(_odd_graph(), weights=WeightBlob()), GOOD]


@settings(max_examples=250, deadline=None, derandomize=True)
@given(st.data())
def test_mangled_text_gives_parse_errors_only(data):
    """Delete, insert or replace characters of valid text: the result parses or raises
    ParseError, never any other exception."""
    text = data.draw(st.sampled_from(_MANGLE_BASES))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        edit = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        char = data.draw(
            st.one_of(st.sampled_from(list('%@#"[](){}:,=_-.0123456789e\\\n ') + ["\ufffd"]), st.characters())
        )
        if edit == "delete":
            text = text[:at] + text[at + 1 :]
        elif edit == "insert":
            text = text[:at] + char + text[at:]
        else:
            text = text[:at] + char + text[at + 1 :]
    try:
        parse_ir(text, bytes(range(256)) * 64)
    except ParseError as e:
        assert "\n" not in str(e) and e.line >= 0


def test_onnx_model_names_survive(tmp_path):
    # value names straight from an exporter: slashes, colons, spaces, unicode
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("in put:0/ü", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("out/1", TensorProto.FLOAT, [2, 3])
    nodes = [
        helper.make_node("Relu", ["in put:0/ü"], ["mid dle"], name="relu/1 a"),
        helper.make_node("Identity", ["mid dle"], ["out/1"], name=""),
    ]
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    m.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(m, path)

    def check(stage, g):
        round_trip(g)

    compile_model(str(path), on_stage=check)


def test_symbolic_dims_print_with_their_ranges_and_round_trip():
    from onnx2wgsl.ir.symbolic import Expr, Symbol, floordiv, smax

    b, s = Symbol("batch", 1, 4), Symbol("seq", 1, 128)
    B, S = Expr.symbol(b), Expr.symbol(s)
    g = Graph(name="m")
    g.symbols = {"batch": b, "seq": s}
    x = g.add_input("x", TensorType(DType.f32, (B, S, 32)))
    shapes = [
        (B * S * 32,),
        (2 * S + 1, floordiv(S + 1, 2), smax(S, 4)),
        (floordiv(floordiv(S + 3, 2) * B + 1, 3),),
    ]
    g.outputs = [g.append(g.make_op("Foo", [x], [TensorType(DType.f32, sh)])).outputs[0] for sh in shapes]
    verify(g)
    text = print_ir(g)
    assert "dims {batch = 1..4, seq = 1..128}" in text
    assert "%x: f32[batch,seq,32]" in text and "f32[(2*seq + 1),(((seq + 1) // 2)),(max(4, seq))]" in text
    back = parse_ir(text)
    assert not graph_diff(g, back) and print_ir(back) == text
    assert back.outputs[1].type.shape_bound == (257, 64, 128)
    assert back.inputs[0].type.numel_bound == 4 * 128 * 32 and not back.inputs[0].type.is_static


@pytest.mark.parametrize(
    "text, message",
    [
        ("dims {seq = 4..1}\ngraph @m(%x: f32[seq]) -> () {}", "range 4..1"),
        ("dims {seq = 1..4, seq = 1..8}\ngraph @m(%x: f32[seq]) -> () {}", "declared twice"),
        ("dims {seq = 1..4}\ngraph @m(%x: f32[(seq + len)]) -> () {}", "no declared dim"),
    ],
)
def test_bad_symbolic_dims_are_parse_errors(text, message):
    with pytest.raises(ParseError, match=message):
        parse_ir(text)

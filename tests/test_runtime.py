"""The Python runtime: load builds everything once; run only encodes; inputs are checked."""

from __future__ import annotations

import numpy as np
import pytest
import wgpu
from helpers import node_model, ort_run, rand, two_layer_model

import onnx2wgsl
from onnx2wgsl.errors import InputError, ManifestError
from onnx2wgsl.runtime.manifest import VERSION

pytestmark = pytest.mark.gpu


@pytest.fixture
def session(tmp_path, device):
    onnx2wgsl.compile(two_layer_model(), tmp_path / "a")
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        yield sess


COUNTED = ("create_compute_pipeline", "create_compute_pipeline_async", "create_bind_group", "create_shader_module",
           "create_bind_group_layout", "create_pipeline_layout", "create_buffer", "create_buffer_with_data")  # fmt: skip


def count_gpu_creations(device, monkeypatch) -> dict[str, int]:
    """Counts, by method, the GPU objects ``device`` creates from now on (the COUNTED calls)."""
    calls = {name: 0 for name in COUNTED}
    dev_cls = type(device)
    for name in COUNTED:
        original = getattr(dev_cls, name)

        def counting(self, *a, __name=name, __orig=original, **k):
            calls[__name] += 1
            return __orig(self, *a, **k)

        monkeypatch.setattr(dev_cls, name, counting)
    return calls


def test_run_creates_no_gpu_objects(session, monkeypatch):
    calls = count_gpu_creations(session.device, monkeypatch)
    # the counter sees creations: prove it with one (outside run) before trusting a zero
    session.device.create_bind_group_layout(entries=[])
    assert calls["create_bind_group_layout"] == 1
    calls["create_bind_group_layout"] = 0
    x = rand(2, 8)
    for _ in range(3):
        session.run(None, {"x": x})
    assert calls == {name: 0 for name in COUNTED}


def test_outputs_and_selection(session):
    x = rand(2, 8)
    y, z = session.run(None, {"x": x})
    want_y, want_z = ort_run(two_layer_model(), {"x": x})
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, want_z, rtol=1e-5, atol=1e-6)
    (z2,) = session.run(["z"], {"x": x})
    np.testing.assert_array_equal(z2, z)


def test_io_metadata(session):
    (i,) = session.get_inputs()
    assert (i.name, i.dtype, i.shape, i.type) == ("x", "float32", [2, 8], "tensor(float)")
    assert [o.name for o in session.get_outputs()] == ["y", "z"]
    assert session.get_outputs()[0].shape == [2, 4]


def test_repeated_runs_are_independent(session):
    """Outputs are arrays of their own (converted out of the mapped readback buffer, which the
    next run reuses): a later run leaves them as they were, and they can be written."""
    a, b = rand(2, 8, seed=1), rand(2, 8, seed=2)
    ya = session.run(None, {"x": a})
    kept = [p.copy() for p in ya]
    yb = session.run(None, {"x": b})
    ya2 = session.run(None, {"x": a})
    for p, q, k, r in zip(ya, ya2, kept, yb):
        np.testing.assert_array_equal(p, k)
        np.testing.assert_array_equal(p, q)
        assert not np.array_equal(p, r)
        p += 1.0  # writable, and no other output sees it
        np.testing.assert_array_equal(q, k)


@pytest.mark.parametrize(
    "feed,message",
    [
        ({"nope": rand(2, 8)}, "unknown input names ['nope']; the model expects: x (float32[2, 8])"),
        ({}, "missing inputs ['x']"),
        ({"x": rand(2, 8).astype(np.float64)}, "input 'x' must be float32, got float64"),
        ({"x": rand(8, 2)}, "input 'x' must have shape [2, 8], got [8, 2]"),
    ],
)
def test_bad_feeds_name_what_was_expected(session, feed, message):
    with pytest.raises(InputError) as e:
        session.run(None, feed)
    assert message in str(e.value)


def test_unknown_output_name(session):
    with pytest.raises(
        InputError, match=r"unknown output names \['w'\]; the model's outputs are \['y', 'z'\]"
    ):
        session.run(["w"], {"x": rand(2, 8)})


def test_damaged_artifacts_are_refused(tmp_path, device):
    with pytest.raises(ManifestError, match="not a compiled artifact"):
        onnx2wgsl.load(tmp_path, device=device)
    onnx2wgsl.compile(two_layer_model(), tmp_path / "a")
    blob = (tmp_path / "a" / "weights.bin").read_bytes()
    (tmp_path / "a" / "weights.bin").write_bytes(blob[:-4] + b"\0\0\0\1")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        onnx2wgsl.load(tmp_path / "a", device=device)
    m = (tmp_path / "a" / "manifest.json").read_text().replace(f'"version": {VERSION}', '"version": 99')
    (tmp_path / "a" / "manifest.json").write_text(m)
    with pytest.raises(ManifestError, match="version 99 is not 2 or 3"):
        onnx2wgsl.load(tmp_path / "a", device=device)


def test_weights_of_one_value_are_filled_in_their_mapped_buffer(tmp_path, device):
    """A constant of one repeated value is a fill segment (no bytes in weights.bin), written
    into the weight buffer with the other segments while it is mapped."""
    import json

    model = node_model(
        "Gemm",
        {"a": rand(4, 64)},
        initializers={"b": np.full((64, 32), 0.5, np.float32), "c": rand(32, seed=2)},
    )
    onnx2wgsl.compile(model, tmp_path / "a", opt_level=0)
    segments = json.loads((tmp_path / "a" / "manifest.json").read_text())["weights"]["segments"]
    assert [s["fill"] for s in segments if "fill" in s] == [int(np.float32(0.5).view(np.uint32))]
    assert any("fill" not in s for s in segments)
    x = rand(4, 64, seed=3)
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        (y,) = sess.run(None, {"a": x})
        assert all(buf.map_state == "unmapped" for buf in sess.buffers.values())
    np.testing.assert_allclose(y, ort_run(model, {"a": x})[0], rtol=1e-5, atol=1e-5)


def test_segments_at_4_past_a_multiple_of_8_are_written_after_the_mapping(tmp_path, device):
    """The manifest lets a segment start at any multiple of 4 in its buffer; a mapped range
    starts at a multiple of 8, so such a segment (bytes or a fill) is written through the queue
    once the buffer is unmapped (a fuzzed manifest raised wgpu's ValueError here)."""
    import json

    model = node_model(
        "Gemm",
        {"a": rand(4, 64)},
        initializers={"b": np.full((64, 32), 0.5, np.float32), "c": rand(32, seed=2)},
    )
    onnx2wgsl.compile(model, tmp_path / "a", opt_level=0)
    path = tmp_path / "a" / "manifest.json"
    m = json.loads(path.read_text())
    sizes = {b["name"]: b["size"] for b in m["buffers"]}
    weights = (tmp_path / "a" / m["weights"]["file"]).read_bytes()
    # each segment also written again 4 bytes past the end of the buffer's other data
    extra = []
    for seg in m["weights"]["segments"]:
        end = max(s["offset"] + s["size"] for s in m["weights"]["segments"] + extra if s["buffer"] == seg["buffer"])
        extra.append(dict(seg, offset=end + 4 + (end % 8 == 4) * 4))
    for seg in extra:
        sizes[seg["buffer"]] = max(sizes[seg["buffer"]], seg["offset"] + seg["size"])
        assert seg["offset"] % 8 == 4
    for b in m["buffers"]:
        b["size"] = -(-sizes[b["name"]] // 256) * 256
    m["weights"]["segments"] += extra
    path.write_text(json.dumps(m))
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        for seg in extra:
            got = bytes(device.queue.read_buffer(sess.buffers[seg["buffer"]], seg["offset"], seg["size"]))
            if "fill" in seg:
                assert got == np.full(seg["size"] // 4, seg["fill"], np.uint32).tobytes()
            else:
                assert got == weights[seg["file_offset"] : seg["file_offset"] + seg["size"]]
        x = rand(4, 64, seed=3)
        (y,) = sess.run(None, {"a": x})
    np.testing.assert_allclose(y, ort_run(model, {"a": x})[0], rtol=1e-5, atol=1e-5)


def test_a_shader_the_device_refuses_is_named(tmp_path, device):
    """Pipelines are made on threads: the error is the first refused shader's, in the
    artifact's order, as a DeviceError; a shader file that is not the manifest's is refused
    before the device sees it."""
    import hashlib
    import json

    from onnx2wgsl.errors import DeviceError

    onnx2wgsl.compile(two_layer_model(), tmp_path / "a")
    path = tmp_path / "a" / "manifest.json"
    m = json.loads(path.read_text())
    assert len(m["shaders"]) >= 2
    for s in m["shaders"][1:]:  # every shader but the first: the second is named
        code = (tmp_path / "a" / s["file"]).read_text().replace("@compute", "@compute fn broken() {}", 1)
        (tmp_path / "a" / s["file"]).write_text(code)
        s["sha256"] = hashlib.sha256(code.encode()).hexdigest()
    path.write_text(json.dumps(m))
    with pytest.raises(DeviceError, match=f"shader {m['shaders'][1]['name']} .* did not load on this device"):
        onnx2wgsl.load(tmp_path / "a", device=device)
    (tmp_path / "a" / m["shaders"][0]["file"]).write_text("// not the compiled shader")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        onnx2wgsl.load(tmp_path / "a", device=device)


def test_int64_input_is_computed_as_int32(tmp_path, device):
    model = node_model("Add", {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.ones(3, np.int64)})
    onnx2wgsl.compile(model, tmp_path / "a")
    with onnx2wgsl.load(tmp_path / "a", device=device) as sess:
        a = np.arange(6, dtype=np.int64).reshape(2, 3) - 3
        (y,) = sess.run(None, {"a": a, "b": np.full(3, 7, np.int64)})
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, a + 7)
        with pytest.raises(InputError, match="outside the int32 range"):
            sess.run(None, {"a": a + 2**40, "b": np.ones(3, np.int64)})


def test_adapter_is_vulkan(device):
    assert isinstance(device, wgpu.GPUDevice)
    assert device.adapter.info["backend_type"] in ("Vulkan", "Metal", "D3D12")

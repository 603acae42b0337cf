"""--target js packaging and the browser runtime's source: files, determinism, no eval, size,
TypeScript types, npm packing, and that a wheel ships runtime/js. (Running it is in tests/browser.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import onnx2wgsl

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "digits" / "model.onnx"
JS = ROOT / "runtime" / "js"
JSTOOLS = ROOT / ".cache" / "jstools" / "node_modules"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(path: Path, what: str) -> None:
    if not path.exists():
        if IN_CI:
            pytest.fail(
                f"CI=true but {what} is missing ({path}); run bash scripts/setup-browser.sh", pytrace=False
            )
        pytest.skip(f"{what} is missing; run bash scripts/setup-browser.sh")


def _compile(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "onnx2wgsl",
        "compile",
        str(MODEL),
        "-o",
        str(out),
        "--dim",
        "batch=1",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "digits"
    r = _compile(out, "--target", "js")
    assert r.returncode == 0, r.stderr
    assert f"js package: {out}" in r.stdout
    return out


def test_target_js_writes_an_npm_package(package):
    names = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    shaders = [n for n in names if n.startswith("shaders/")]
    assert sorted(set(names) - set(shaders)) == [
        "README.md", "index.d.ts", "index.js", "manifest.json", "model.onnx", "onnx2wgsl.d.ts",
        "onnx2wgsl.js", "package.json", "profile.d.ts", "profile.js", "weights.bin",
    ]  # fmt: skip
    pkg = json.loads((package / "package.json").read_text())
    assert pkg["name"] == "digits" and pkg["type"] == "module"
    assert pkg["main"] == "./index.js" and pkg["types"] == "./index.d.ts"
    assert pkg["exports"]["."] == {"types": "./index.d.ts", "default": "./index.js"}
    for f in pkg["files"]:
        assert (package / f).exists(), f
    assert not pkg.get("dependencies")
    assert (package / "model.onnx").read_bytes() == MODEL.read_bytes()
    for f in ("onnx2wgsl.js", "onnx2wgsl.d.ts", "index.js", "profile.js", "profile.d.ts"):  # copied unchanged
        assert (package / f).read_bytes() == (JS / f).read_bytes()
    dts = (package / "index.d.ts").read_text()
    assert '"image": Tensor<"float32"> | DataTypeMap["float32"] | GPUBuffer;' in dts
    assert 'export type OutputName = "probabilities";' in dts
    readme = (package / "README.md").read_text()
    assert "| input | `image` | float32 | [1, 1, 8, 8] | f32 |" in readme and "who owns what" in readme


def test_target_python_writes_the_artifact_only(tmp_path):
    r = _compile(tmp_path / "d")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["manifest.json", "shaders", "weights.bin"]


def test_package_is_byte_deterministic(package, tmp_path):
    again = tmp_path / "digits"
    assert _compile(again, "--target", "js").returncode == 0

    def tree(d: Path) -> dict:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    assert tree(again) == tree(package)


def test_python_api_emit_js_from_a_proto(tmp_path):
    import onnx

    proto = onnx.load(str(MODEL))
    onnx2wgsl.compile(proto, tmp_path / "p", dims={"batch": 1}, emit="js")
    assert json.loads((tmp_path / "p" / "package.json").read_text())["name"] == "main_graph"
    assert onnx.load(str(tmp_path / "p" / "model.onnx")).graph == proto.graph
    with pytest.raises(ValueError, match="emit must be"):
        onnx2wgsl.compile(proto, tmp_path / "q", emit="wasm")


def test_runtime_generates_no_code():
    """Safe under a strict CSP: no eval, no Function constructor, no string timers, no workers
    from blobs (tests/browser checks it in Chromium under script-src 'self' too)."""
    for f in ("onnx2wgsl.js", "index.js"):
        src = (JS / f).read_text()
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", src, flags=re.S)
        for pattern in (r"\beval\s*\(", r"\bFunction\s*\(", r"new\s+Function", r"set(Timeout|Interval)\s*\(\s*['\"`]",
                        r"createObjectURL", r"\bimport\s*\(", r"document\.", r"\bwindow\."):  # fmt: skip
            assert not re.search(pattern, code), f"{f} matches {pattern}"


def test_runtime_min_gzip_size_is_within_8_kib():
    _need(JSTOOLS / ".bin" / "terser", "terser")
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "js_size.py"), "--check", "8192"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    size = int(re.search(r"runtime min\+gzip: ([\d,]+) bytes", r.stdout).group(1).replace(",", ""))
    assert 2000 < size <= 8192, r.stdout


TS_CONSUMER = """
import { createSession, isModelSupported, modelUrl, Tensor, type ModelFeeds, type OutputName } from './digits/index.js';
import { createProfiledSession, profile } from './digits/profile.js';

async function main(device: GPUDevice, input: GPUBuffer): Promise<number> {
  const support = await isModelSupported();
  if (!support.supported) throw new Error(support.reason);
  const session = await createSession({ device, preferredOutputLocation: 'gpu-buffer', onProgress: (p) => console.log(p.stage, p.loaded / p.total) });
  const feeds: ModelFeeds = { image: new Tensor('float32', new Float32Array(64), [1, 1, 8, 8]) };
  const name: OutputName = 'probabilities';
  const out = await session.run(feeds, { fetches: [name] });
  const data = await out[name].getData();
  await session.run({ image: input }, { fetches: { probabilities: input } });
  out[name].dispose();
  await session.release();
  const dim = session.inputMetadata[0].shape[0]; // a number, or a symbol's name or expression
  const seq = session.symbols['seq']?.max ?? 0;
  const profiled = await createProfiledSession(modelUrl, { powerPreference: 'high-performance' });
  const { kernels, gpuMs } = await profile(profiled, feeds);
  const heaviest: string = kernels[0].label + kernels[0].ms.toFixed(3) + (kernels[0].gflops ?? 0);
  return data.length + (typeof dim == 'number' ? dim : 0) + seq + gpuMs + heaviest.length;
}
export { main };
"""


def test_type_declarations_check_with_tsc(package, tmp_path):
    _need(JSTOOLS / ".bin" / "tsc", "typescript")
    shutil.copytree(package, tmp_path / "digits")
    (tmp_path / "main.ts").write_text(TS_CONSUMER)
    (tmp_path / "bad.ts").write_text(
        "import { createSession } from './digits/index.js';\n"
        "const s = await createSession();\nawait s.run({ image: 'not a tensor' });\nexport {};\n"
    )
    (tmp_path / "node_modules").symlink_to(JSTOOLS)  # where a consumer has @webgpu/types
    base = [str(JSTOOLS / ".bin" / "tsc"), "--noEmit", "--strict", "--target", "es2022", "--module", "esnext",
            "--moduleResolution", "bundler", "--lib", "es2022,dom"]  # fmt: skip
    r = subprocess.run([*base, "main.ts", "bad.ts"], capture_output=True, text=True, cwd=tmp_path)
    errors = [line for line in r.stdout.splitlines() if ": error TS" in line]
    # main.ts type-checks; bad.ts's string feed is refused
    assert len(errors) == 1 and errors[0].startswith("bad.ts(3,"), r.stdout + r.stderr


def test_npm_packs_the_package(package):
    npm = shutil.which("npm")
    if npm is None:
        _need(Path("/nonexistent/npm"), "npm")
    r = subprocess.run([npm, "pack", "--dry-run", "--json"], capture_output=True, text=True, cwd=package)
    assert r.returncode == 0, r.stderr
    files = {f["path"] for f in json.loads(r.stdout)[0]["files"]}
    assert {
        "package.json",
        "index.js",
        "index.d.ts",
        "onnx2wgsl.js",
        "manifest.json",
        "weights.bin",
        "model.onnx",
    } <= files
    assert any(f.startswith("shaders/") for f in files)


@pytest.mark.slow
def test_wheel_ships_the_js_runtime(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("onnx2wgsl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("onnx2wgsl.js", "onnx2wgsl.d.ts", "index.js"):
        assert f"onnx2wgsl/runtime/js/{f}" in names

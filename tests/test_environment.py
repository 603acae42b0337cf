"""The test environment is the pinned one: every package that onnx2wgsl and its test extras pull
in is pinned in constraints.txt and installed at its pin, so a new release of any of them cannot
change what a test expects (see constraints.txt for how to bump one)."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert m, f"constraints.txt: {line!r} is not NAME==VERSION"
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def closure(root: str, extras: tuple[str, ...]) -> set[str]:
    """The distributions that installing root[extras] brings in, by their requirement markers
    under this interpreter."""
    seen: set[str] = set()
    todo = [(root, extras)]
    while todo:
        name, extra = todo.pop()
        for text in md.requires(name) or []:
            req = Requirement(text)
            env = default_environment()
            active = req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extra))
            dep = canonicalize_name(req.name)
            if active and dep != canonicalize_name(root) and dep not in seen:
                seen.add(dep)
                todo.append((dep, tuple(req.extras)))
            elif active and dep == canonicalize_name(root):
                todo.append((root, tuple(req.extras)))  # onnx2wgsl[dev] names onnx2wgsl[test]
    return seen


def test_every_package_the_tests_use_is_pinned_and_installed_at_its_pin():
    pinned = pins()
    needed = closure("onnx2wgsl", ("test",))
    assert {"onnx", "onnxruntime", "numpy", "ml-dtypes", "protobuf", "wgpu", "pytest"} <= needed
    unpinned = sorted(needed - set(pinned))
    assert not unpinned, f"add these to constraints.txt: {unpinned}"
    wrong = {n: (md.version(n), pinned[n]) for n in sorted(needed) if md.version(n) != pinned[n]}
    assert not wrong, (
        f"installed (installed, pinned): {wrong}; install with "
        "`.venv/bin/pip install -c constraints.txt -e '.[test]'` (README)"
    )

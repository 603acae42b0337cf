#!/usr/bin/env bash
# benchmarks/run.py on a machine with a real GPU and no package registry (a lent or air-gapped
# one), from a checkout of this repository:
#
#   bash benchmarks/offline.sh WHEELS PEER_WHEELS [run.py options...]
#
# WHEELS holds onnx2wgsl's wheel (`pip wheel --no-deps . -w WHEELS`) and those of its
# dependencies that the machine's python3 lacks (often wgpu, cffi, pycparser, lark, rendercanvas);
# PEER_WHEELS holds onnxruntime-webgpu's and what it lacks. Fetch them where a registry is
# reachable, for the machine's Python and platform, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d WHEELS wgpu==0.32.0 ...
# Both sets are installed into folders of their own under $TMPDIR (pip --no-index --target),
# never into the system, so the plain onnxruntime the machine may have stays for ort-cpu. The
# run then takes the system's Vulkan driver as it is (run.py --adapter system) and the peer's
# own Python path. A machine without a Vulkan loader needs libvulkan.so.1; where the loader
# does not find the driver, set VK_DRIVER_FILES to its ICD json first.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,18p' "$0" >&2
  exit 2
fi
wheels="$(cd "$1" && pwd)"
peer_wheels="$(cd "$2" && pwd)"
shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="${TMPDIR:-/tmp}/onnx2wgsl-offline"
py="$(command -v python3)"
rm -rf "$tmp" && mkdir -p "$tmp"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
"$py" -m pip install -q --no-index --no-deps --no-cache-dir --target "$tmp/site" "$wheels"/*.whl
"$py" -m pip install -q --no-index --no-deps --no-cache-dir --target "$tmp/peer" "$peer_wheels"/*.whl
printf '#!/bin/sh\nPYTHONPATH=%s exec %s "$@"\n' "$tmp/peer" "$py" > "$tmp/peer-python"
chmod +x "$tmp/peer-python"
export PYTHONPATH="$tmp/site"
# (from outside the checkout: its onnx2wgsl/ folder would shadow the installed package)
(cd "$tmp" && "$py" -c "import onnx2wgsl, wgpu; print('onnx2wgsl from', onnx2wgsl.__file__)")
"$tmp/peer-python" -c "import onnxruntime as o; print('peer', o.__version__, o.get_available_providers())"
cd "$root"
exec "$py" benchmarks/run.py --adapter system --peer-python "$tmp/peer-python" "$@"

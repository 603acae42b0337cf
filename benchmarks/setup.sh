#!/usr/bin/env bash
# What benchmarks/run.py needs beyond the project's venv, all under .cache/bench/ (idempotent):
#   mesa25/       Mesa 25's lavapipe from Debian 12's bookworm-backports, unpacked into a private
#                 prefix (never installed system-wide), with an ICD json pointing at it:
#                 VK_ICD_FILENAMES=.cache/bench/mesa25/lvp_icd.json
#                 LD_LIBRARY_PATH=.cache/bench/mesa25/usr/lib/x86_64-linux-gnu
#   ort-webgpu/   a venv with onnxruntime-webgpu (the peer), pinned by requirements-peer.txt;
#                 it conflicts with the plain onnxruntime of the project's venv.
# Needs the bookworm-backports apt source (scripts/setup-gpu.sh --backports adds it); apt-get
# download fetches the .debs without installing anything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="$root/.cache/bench"
mesa="$cache/mesa25"
peer="$cache/ort-webgpu"
mkdir -p "$cache"

# --- Mesa 25 lavapipe in a private prefix ---------------------------------------------------
if [ ! -f "$mesa/lvp_icd.json" ] || [ ! -f "$mesa/.complete" ]; then
  # (the policy into a variable first: under pipefail, grep -q closing the pipe early can fail it)
  policy="$(apt-cache policy mesa-vulkan-drivers 2>/dev/null || true)"
  if ! grep -q 'bookworm-backports' <<<"$policy"; then
    echo "setup.sh: no bookworm-backports candidate for mesa-vulkan-drivers;" \
         "add the source (scripts/setup-gpu.sh --backports does) and run apt-get update" >&2
    exit 2
  fi
  rm -rf "$mesa" "$cache/debs"
  mkdir -p "$cache/debs" "$mesa"
  sandbox=(); if [ "$(id -u)" = 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
  (cd "$cache/debs" && apt-get download -qq "${sandbox[@]}" -t bookworm-backports \
      mesa-vulkan-drivers libdrm2 libdrm-amdgpu1)
  for deb in "$cache"/debs/*.deb; do dpkg -x "$deb" "$mesa"; done
  lib="$(find "$mesa" -name libvulkan_lvp.so | head -n1)"
  src="$(find "$mesa" -path '*vulkan/icd.d/lvp_icd*.json' | head -n1)"
  if [ -z "$lib" ] || [ -z "$src" ]; then
    echo "setup.sh: the mesa-vulkan-drivers package has no libvulkan_lvp.so / lvp_icd json" >&2
    exit 1
  fi
  python3 - "$src" "$lib" "$mesa/lvp_icd.json" <<'PY'
import json, sys
src, lib, dst = sys.argv[1:]
d = json.load(open(src))
d["ICD"]["library_path"] = lib
json.dump(d, open(dst, "w"), indent=2)
PY
  dpkg-deb -f "$(ls "$cache"/debs/mesa-vulkan-drivers_*.deb)" Version > "$mesa/VERSION"
  rm -rf "$cache/debs"
  touch "$mesa/.complete"
fi
# the driver links against the system's LLVM, X and Wayland libraries that Mesa 22 already needs
missing="$(LD_LIBRARY_PATH="$mesa/usr/lib/x86_64-linux-gnu" ldd "$(find "$mesa" -name libvulkan_lvp.so | head -n1)" \
  | awk '/not found/ {print $1}' | tr '\n' ' ')"
if [ -n "$missing" ]; then
  echo "setup.sh: Mesa 25's lavapipe needs $missing- run scripts/setup-gpu.sh (Mesa 22 and its libraries) first" >&2
  exit 1
fi
if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
  echo "setup.sh: no Vulkan loader (libvulkan1): run scripts/setup-gpu.sh first" >&2
  exit 1
fi
echo "mesa25: $(cat "$mesa/VERSION") in $mesa"

# --- onnxruntime-webgpu in its own venv -------------------------------------------------------
req="$here/requirements-peer.txt"
if [ ! -f "$peer/.complete" ] || ! cmp -s "$req" "$peer/.complete"; then
  rm -rf "$peer"
  python3 -m venv "$peer"
  "$peer/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$peer/.complete"
fi
echo "ort-webgpu: $("$peer/bin/python" -c 'import onnxruntime as o; print(o.__version__)') in $peer"

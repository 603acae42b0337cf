#!/usr/bin/env bash
# Install what the browser tests and the JS size report need, on Debian or Ubuntu:
#   - Debian's Chromium (its SwiftShader WebGPU adapter runs compute on the CPU);
#   - Node.js and npm when missing, then into .cache/jstools (pinned, no lock file):
#     terser (the minifier tools/js_size.py measures with), typescript and @webgpu/types (the
#     emitted .d.ts files are type-checked), onnxruntime-web (the WASM fallback example's test).
# Playwright for Python comes with the test extras (pip install -e '.[test]').
# Run as root (it uses sudo when not root and sudo exists).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "chromium: $(chromium --version 2>/dev/null | head -1)"

JSTOOLS=.cache/jstools
mkdir -p "$JSTOOLS"
[ -f "$JSTOOLS/package.json" ] || echo '{"private": true}' > "$JSTOOLS/package.json"
npm install --prefix "$JSTOOLS" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
  terser@5.51.2 typescript@5.9.3 @webgpu/types@0.1.74 onnxruntime-web@1.30.0 >/dev/null
echo "js tools: terser $("$JSTOOLS/node_modules/.bin/terser" --version | cut -d' ' -f2), typescript $("$JSTOOLS/node_modules/.bin/tsc" --version | cut -d' ' -f2)"

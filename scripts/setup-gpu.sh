#!/usr/bin/env bash
# Install a software WebGPU adapter (Mesa's lavapipe, Vulkan on the CPU) on Debian or Ubuntu, and
# what `python3 -m venv` needs there (python3-venv), since the README's commands make a venv.
#
# The distribution's own Mesa is the default and the project's test adapter: Debian 12 ships
# Mesa 22.3, whose lavapipe has limits newer ones lack (it ends every loop of an invocation
# after 65,535 back-edges), so the tests see what such machines do.
#   --backports   on Debian 12, take Mesa 25 from bookworm-backports instead: several times
#                 faster, and what Dawn-based engines (onnxruntime's WebGPU provider) accept.
# Run as root (it uses sudo when not root and sudo exists).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

backports=false
for arg in "$@"; do
  case "$arg" in
    --backports) backports=true ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup-gpu.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

suite=()
if $backports; then
  if ! grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null \
      || [ ! -f /etc/apt/sources.list.d/debian.sources ]; then
    echo "setup-gpu.sh: --backports is for Debian 12 (bookworm) with deb822 sources" >&2
    exit 2
  fi
  if [ ! -f /etc/apt/sources.list.d/backports.sources ]; then
    # the first stanza of the system's own sources, pointed at the backports suite
    sed -n '1,/^$/p' /etc/apt/sources.list.d/debian.sources \
      | sed 's/^Suites:.*/Suites: bookworm-backports/' \
      | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
  fi
  suite=(-t bookworm-backports)
fi

need_venv=false
probe="$(mktemp -d)"
python3 -m venv "$probe/venv" >/dev/null 2>&1 || need_venv=true
rm -rf "$probe"

$SUDO apt-get update -qq
pkgs=(mesa-vulkan-drivers libvulkan1)
if $need_venv; then pkgs+=(python3-venv); fi
$SUDO apt-get install -y -qq "${suite[@]}" "${pkgs[@]}" >/dev/null
echo "lavapipe: $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"

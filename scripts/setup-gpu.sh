#!/usr/bin/env bash
# Install a software WebGPU adapter (Mesa's lavapipe, Vulkan on the CPU) on Debian or Ubuntu.
# On Debian 12 it takes Mesa 25 from bookworm-backports, whose lavapipe is several times
# faster than Mesa 22's. Run as root (it uses sudo when not root and sudo exists).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

if [ -f /etc/os-release ] && grep -q '^VERSION_CODENAME=bookworm' /etc/os-release \
    && [ -f /etc/apt/sources.list.d/debian.sources ] && [ ! -f /etc/apt/sources.list.d/backports.sources ]; then
  # the first stanza of the system's own sources, pointed at the backports suite
  sed -n '1,/^$/p' /etc/apt/sources.list.d/debian.sources \
    | sed 's/^Suites:.*/Suites: bookworm-backports/' \
    | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
fi
$SUDO apt-get update -qq
if apt-cache policy mesa-vulkan-drivers 2>/dev/null | grep -q bookworm-backports; then
  $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
else
  $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
echo "lavapipe: $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"

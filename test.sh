#!/bin/sh
# Runs every test: the README's second command (.ci/run runs it too).
#
# The GPU tests need a Vulkan adapter and fail, rather than skip, without one. On Debian or
# Ubuntu with no Vulkan driver installed, this first installs Mesa's lavapipe (a software
# adapter that runs the shaders on the CPU) and the Vulkan loader with apt-get: as root
# directly, or through sudo. Elsewhere (macOS's Metal, Windows, a GPU driver already
# installed) it installs nothing. Arguments go to `cargo test`.
set -eu
cd "$(dirname "$0")"

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for package in mesa-vulkan-drivers libvulkan1; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
            missing="$missing $package"
        fi
    done
    if [ -n "$missing" ]; then
        if [ "$(id -u)" -eq 0 ]; then
            sudo=""
        elif command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "test.sh: the GPU tests need$missing; install them as root" >&2
            exit 1
        fi
        echo "test.sh: installing$missing (a software Vulkan adapter for the GPU tests)"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
fi

# On a machine with no desktop session, Mesa's device-selection layer prints
# "XDG_RUNTIME_DIR is invalid or not set" for every GPU context the tests open; the binary
# turns the layer off itself (src/main.rs), the test processes get the same here.
if [ -z "${XDG_RUNTIME_DIR:-}" ] && [ -z "${MESA_VK_DEVICE_SELECT:-}" ]; then
    export NODEVICE_SELECT=1
fi

exec cargo test --release "$@"

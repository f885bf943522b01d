#!/bin/sh
# Runs every test: the README's second command (.ci/run runs it too).
#
# The GPU tests need a Vulkan adapter, and `serve`'s page is tested in a headless Chromium
# through WebDriver; those tests fail, rather than skip, without them. On Debian or Ubuntu this
# first installs what is missing of Mesa's lavapipe (a software Vulkan adapter that runs the
# shaders on the CPU; a real GPU's driver, if there is one, is still preferred), the Vulkan
# loader, Chromium and its WebDriver, with apt-get: as root directly, or through sudo.
# Elsewhere (no apt-get: macOS, Windows) it installs nothing. Arguments go to `cargo test`.
set -eu
cd "$(dirname "$0")"

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for package in mesa-vulkan-drivers libvulkan1 chromium chromium-driver; do
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
            echo "test.sh: the tests need$missing; install them as root" >&2
            exit 1
        fi
        echo "test.sh: installing$missing (for the GPU and browser tests)"
        # A freshly booted machine's automatic updates may hold the package lock for a while.
        apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300"
        if ! { $apt update -qq && $apt install -y -qq $missing >/dev/null; }; then
            echo "test.sh: could not install$missing; install them (as root) and run again" >&2
            exit 1
        fi
    fi
fi

# On a machine with no desktop session, Mesa's device-selection layer prints
# "XDG_RUNTIME_DIR is invalid or not set" for every GPU context the tests open; the binary
# turns the layer off itself (src/main.rs), the test processes get the same here.
if [ -z "${XDG_RUNTIME_DIR:-}" ] && [ -z "${MESA_VK_DEVICE_SELECT:-}" ]; then
    export NODEVICE_SELECT=1
fi

exec cargo test --release "$@"

#!/usr/bin/env bash
# Set up a fresh Debian or Ubuntu machine for hydra-edge: the apt packages its builds and
# emulators need, then the Python environment in .venv. `make demo`, `make test` and .ci/run
# all call this one script; it is idempotent and quick when nothing is missing.
#
#   toolchain/setup.sh            apt packages, then .venv
#   toolchain/setup.sh --apt      apt packages only
#   toolchain/setup.sh --venv     .venv only
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}   # the Makefile's; a test points it elsewhere
STAMP=$VENV/.installed
want_apt=1
want_venv=1
case "${1:-}" in
    --apt)  want_venv=0 ;;
    --venv) want_apt=0 ;;
    "") ;;
    *) echo "usage: $0 [--apt | --venv]" >&2; exit 2 ;;
esac

# Which Debian packages are missing, judged by the commands and files each one provides.
missing_packages() {
    local need=()
    command -v gcc  >/dev/null || need+=(gcc)
    command -v make >/dev/null || need+=(make)
    # a Python without venv/ensurepip (Debian's own python3 splits them out)
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    # STM32F746: arm-none-eabi-gcc with newlib(-nano), run under qemu-system-arm (mps2-an500)
    command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi)
    if ! command -v arm-none-eabi-gcc >/dev/null \
        || [ ! -f "$(arm-none-eabi-gcc -print-file-name=nano.specs)" ]; then
        need+=(libnewlib-arm-none-eabi)
    fi
    # its C++ library (libstdc++ for newlib): the TFLite Micro + CMSIS-NN peer that
    # benchmarks/vs_tflm_cmsis.py builds is C++ (the compiler alone has no <cstdint>)
    if ! command -v arm-none-eabi-g++ >/dev/null \
        || [ ! -f "$(arm-none-eabi-g++ -print-file-name=libstdc++.a)" ]; then
        need+=(libstdc++-arm-none-eabi-newlib)
    fi
    command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
    # Jetson boards: static aarch64 Linux builds, run under qemu-aarch64
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
    if ! command -v aarch64-linux-gnu-gcc >/dev/null \
        || [ ! -f "$(aarch64-linux-gnu-gcc -print-file-name=libc.a)" ]; then
        need+=(libc6-dev-arm64-cross)   # the static glibc, only a Recommends of the compiler
    fi
    command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
    # hydra-edge flash: the real tools (tests run them without a probe)
    command -v openocd  >/dev/null || need+=(openocd)
    command -v st-flash >/dev/null || need+=(stlink-tools)
    # the search's tests train on real data: Fashion-MNIST's idx files
    [ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
    echo "${need[@]}"
}

install_apt() {
    local need
    need=$(missing_packages)
    [ -z "$need" ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        elif command -v sudo >/dev/null && [ -t 0 ]; then
            sudo="sudo"        # a person at a terminal can type the password
        else
            echo "hydra-edge set-up: these Debian packages are missing: $need" >&2
            echo "install them as root, then run this again:" >&2
            echo "    apt-get update && apt-get install -y --no-install-recommends $need" >&2
            exit 1
        fi
    fi
    echo "hydra-edge set-up: installing $need"
    # shellcheck disable=SC2086  # $need is a list of package names
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need
}

# torch is pinned to the CPU wheel, installed first so that nothing pulls a CUDA build.
install_venv() {
    if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
        return 0
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "hydra-edge set-up: $PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())');" \
             "hydra-edge needs 3.11 or newer: run 'make PYTHON=python3.11 ...' with a newer one" >&2
        exit 1
    fi
    echo "hydra-edge set-up: Python environment in $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q torch==2.13.0
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    touch "$STAMP"
}

[ "$want_apt" = 1 ] && install_apt
[ "$want_venv" = 1 ] && install_venv
exit 0

"""toolchain/setup.sh, the one set-up script behind `make demo`, `make test` and .ci/run.

The real install runs on a fresh machine (by hand, quoted in the issue's closing note); here the script
runs on a PATH that lacks the cross toolchains, with stand-ins for `id`, `sudo` and `apt-get` that
record what they were asked, so the three ways it can go are checked without installing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "toolchain" / "setup.sh"
CROSS = ["gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "libstdc++-arm-none-eabi-newlib", "qemu-system-arm",
         "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "qemu-user", "openocd", "stlink-tools"]


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _bare_path(tmp_path: Path, uid: int, sudo: str | None) -> tuple[Path, Path]:
    """A bin folder with only what the script needs to decide, and a log the stand-ins write to."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "env", "gcc", "make"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    os.symlink(sys.executable, bin_dir / "python3")
    _stub(bin_dir, "id", f"echo {uid}")
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}')
    if sudo is not None:
        _stub(bin_dir, "sudo", sudo.replace("LOG", str(log)))
    return bin_dir, log


def _setup(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": str(bin_dir), "PYTHON": str(bin_dir / "python3"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([str(bin_dir / "bash"), str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def _installed(log: Path) -> list[str]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("apt-get install")]
    assert len(lines) == 1, lines
    return lines[0].split()


def test_root_installs_every_missing_package(tmp_path):
    bin_dir, log = _bare_path(tmp_path, uid=0, sudo=None)
    done = _setup(bin_dir, "--apt")
    assert done.returncode == 0, done.stderr
    words = _installed(log)
    assert words[:2] == ["apt-get", "install"] and "-y" in words
    for package in CROSS:
        assert package in words
    assert "gcc" not in words and "make" not in words  # present on this PATH


def test_user_with_passwordless_sudo_goes_through_sudo(tmp_path):
    # sudo -n true succeeds; any other sudo call is recorded, then run
    sudo = 'if [ "$1" = -n ] && [ "$2" = true ]; then exit 0; fi\necho "sudo $*" >> LOG\nshift; exec "$@"'
    bin_dir, log = _bare_path(tmp_path, uid=1000, sudo=sudo)
    done = _setup(bin_dir, "--apt")
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert any(c.startswith("sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install") for c in calls), calls
    assert "qemu-system-arm" in _installed(log)


def test_user_without_sudo_gets_one_message_naming_the_packages(tmp_path):
    bin_dir, log = _bare_path(tmp_path, uid=1000, sudo=None)
    done = _setup(bin_dir, "--apt")
    assert done.returncode == 1
    assert not log.exists()  # nothing was attempted
    assert "these Debian packages are missing" in done.stderr
    command = next(line for line in done.stderr.splitlines() if "apt-get install" in line)
    for package in CROSS:
        assert package in command


def test_nothing_missing_installs_nothing(tmp_path):
    bin_dir, log = _bare_path(tmp_path, uid=0, sudo=None)
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-g++", "qemu-system-arm", "aarch64-linux-gnu-gcc", "qemu-aarch64",
                 "openocd", "st-flash"):
        real = shutil.which(tool)
        if real is None:
            pytest.fail(f"{tool} is not installed: run toolchain/setup.sh (CI does)")
        os.symlink(real, bin_dir / tool)
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.fail("dataset-fashion-mnist is not installed: run toolchain/setup.sh (CI does)")
    done = _setup(bin_dir, "--apt")
    assert done.returncode == 0, done.stderr
    assert not log.exists()


def test_unknown_option_is_a_usage_error(tmp_path):
    bin_dir, _ = _bare_path(tmp_path, uid=0, sudo=None)
    done = _setup(bin_dir, "--everything")
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_too_old_python_is_named_before_anything_is_made(tmp_path):
    bin_dir, _ = _bare_path(tmp_path, uid=0, sudo=None)
    (bin_dir / "python3").unlink()
    _stub(bin_dir, "python3", f'case "$2" in *platform*) echo 3.10.12;; *version_info*) exit 1;; '
                              f'*) exec {sys.executable} "$@";; esac')
    venv = tmp_path / "venv"
    env = {"PATH": str(bin_dir), "PYTHON": str(bin_dir / "python3"), "VENV": str(venv)}
    done = subprocess.run([str(bin_dir / "bash"), str(SCRIPT), "--venv"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "Python 3.10.12" in done.stderr and "3.11 or newer" in done.stderr
    assert not venv.exists()

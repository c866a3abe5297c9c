"""A file of src/native compiled on its own into a shared library, with the extension's flags and warnings as
errors, for a test to load through ctypes. ``make test`` installs the compiler (gcc): without one this fails,
saying so, rather than skip the native tests."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[2] / "src" / "native"
FLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC")


def compile_native(source: str, out: Path, *extra: str) -> Path:
    """``src/native/<source>`` compiled to ``out``."""
    cc = shutil.which(str(sysconfig.get_config_var("CC") or "cc").split()[0]) or shutil.which("cc")
    assert cc is not None, "no C compiler: make test installs gcc (or: apt-get install gcc)"
    subprocess.run([cc, *FLAGS, *extra, "-o", str(out), str(NATIVE / source)], check=True)
    return out

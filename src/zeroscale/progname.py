"""The name to show in hints for running the ``zeroscale`` command again."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import sys
from pathlib import Path


def command_name() -> str:
    """How to run the ``zeroscale`` command that is running, for hints to copy: ``zeroscale`` when that name
    on PATH is this very script, else the path it was started by (``.venv/bin/zeroscale`` after ``make run``,
    whose virtual environment is not on PATH)."""
    started = sys.argv[0] if sys.argv else ""
    if Path(started).name != "zeroscale":
        return "zeroscale"  # python -m zeroscale, or embedded: no better name to give
    on_path = shutil.which("zeroscale")
    with contextlib.suppress(OSError):
        if on_path is not None and Path(on_path).samefile(started):
            return "zeroscale"
    return shlex.quote(started)

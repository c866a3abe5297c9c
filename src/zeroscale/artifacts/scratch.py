"""Scratch entries in a temporary directory (the model cache's, the requirements environments', the image
registry's): named ``<pid>-<random><suffix>``, so that whoever finds one whose process died removes it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from zeroscale.fstree import remove_tree_quietly


def scratch_path(parent: Path, suffix: str = "") -> Path:
    """A fresh name in ``parent``, owned by this process."""
    return parent / f"{os.getpid()}-{uuid.uuid4().hex}{suffix}"


@contextlib.contextmanager
def staging_dir(parent: Path, suffix: str = "") -> Iterator[Path]:
    """A new empty directory in ``parent``, removed on exit with whatever it still holds (rename it into
    place to keep it)."""
    path = scratch_path(parent, suffix)
    path.mkdir()
    try:
        yield path
    finally:
        remove_tree_quietly(path)


def remove_stale(parent: Path) -> None:
    """Remove the entries in ``parent`` of processes that no longer run."""
    for entry in parent.iterdir():
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            remove_tree_quietly(entry)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Directory trees deeper than Python's recursion limit and longer than PATH_MAX, for the removal tests."""

from __future__ import annotations

import os
from pathlib import Path


def make_deep(root: Path, depth: int) -> None:
    """``root/d/d/.../d/f`` (``depth`` directories), made one level at a time relative to a descriptor."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as out:
            out.write(b"x")
    finally:
        os.close(fd)

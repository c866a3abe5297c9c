"""Removing a directory tree of any depth.

``shutil.rmtree`` (Python 3.11) recurses once per directory level: a tree 1000 levels deep (an archive
member ``d/d/.../d/f``, or what a model made in its scratch directory) raises ``RecursionError``, which
``ignore_errors`` does not cover, and past ``PATH_MAX`` (4096 bytes) no path-based call reaches the bottom.

``remove_tree`` walks down and back up with one directory descriptor open at a time, every call relative to
it (``dir_fd``), so neither the depth nor the length of the full path matters. On the way up it opens
``..`` and checks that it is the directory it came from (device and inode), so a directory moved away
meanwhile stops the removal instead of sending it elsewhere. Symlinks are removed, never followed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass, field

log = logging.getLogger("zeroscale.fstree")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Level:
    """One directory on the way down: its name in its parent, its identity, its subdirectories still to do."""

    name: str
    ident: tuple[int, int]
    pending: list[str] = field(default_factory=list)


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _clear_files(fd: int) -> list[str]:
    """Unlink every entry of the directory at ``fd`` that is not a directory; return the subdirectories."""
    subdirs: list[str] = []
    with os.scandir(fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if is_dir:
            subdirs.append(name)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)
    return subdirs


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` and everything under it (a file or symlink is just unlinked); nothing there is fine.

    Raises OSError when something cannot be removed (what could be is removed first, down that branch)."""
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    fd = os.open(path, _DIR_FLAGS)
    try:
        levels = [_Level("", _ident(fd), _clear_files(fd))]
        while True:
            level = levels[-1]
            if level.pending:
                name = level.pending.pop()
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):  # no longer a directory
                        raise
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=fd)
                    continue
                os.close(fd)
                fd = child
                levels.append(_Level(name, _ident(fd), _clear_files(fd)))
                continue
            if len(levels) == 1:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            levels.pop()
            if _ident(fd) != levels[-1].ident:
                raise OSError(errno.ESTALE, f"a directory under {path} was moved while it was being removed")
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(level.name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def remove_tree_quietly(path: str | os.PathLike[str]) -> None:
    """``remove_tree`` for clean-ups: a failure is logged (a warning naming the path), never raised."""
    try:
        remove_tree(path)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """The sizes of the files beneath ``path`` (links not followed; what cannot be read counts nothing)."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total

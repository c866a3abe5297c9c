"""Locks on a cache's entry directories that hold between processes: ``flock`` on the directory itself.

A cache several processes share (a Ray node's artifact cache, one per node for every front end's agent)
cannot know what the others use. Each process holds a shared lock on every entry its workers use, for as
long as they do; an eviction takes an exclusive lock without waiting, and an entry it cannot lock is in use
somewhere. The lock is on the directory's inode, so it follows the entry through the rename that evicts it:
a process that waited for its shared lock while the entry was being evicted finds, once it has the lock,
that the path no longer names what it locked, and fetches the entry again. Locks go with their process
(a killed front end's agent holds nothing), and with ``O_CLOEXEC`` no worker or zygote inherits one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def lock_shared(directory: Path, *, still_at: Path | None = None) -> int | None:
    """A descriptor holding a shared lock on ``directory`` (waiting while it is being evicted), or None when
    it is gone. With ``still_at``: None too when, once locked, ``still_at`` no longer names that directory
    (it was moved away while this waited)."""
    try:
        fd = os.open(directory, _FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if still_at is not None:
            here, locked = os.stat(still_at), os.fstat(fd)
            if (here.st_dev, here.st_ino) != (locked.st_dev, locked.st_ino):
                raise FileNotFoundError(still_at)
    except (FileNotFoundError, NotADirectoryError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_lock_exclusive(directory: Path) -> int | None:
    """A descriptor holding an exclusive lock on ``directory``, or None at once when any process (this one
    included, through another descriptor) holds a lock on it, or it is gone, or the path no longer names
    what was locked (another process evicted it and another placed it again between the open and the lock:
    the new one may be held)."""
    try:
        fd = os.open(directory, _FLAGS)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        here, locked = os.stat(directory), os.fstat(fd)
        if (here.st_dev, here.st_ino) != (locked.st_dev, locked.st_ino):
            raise FileNotFoundError(directory)
    except OSError:
        os.close(fd)
        return None
    return fd


def unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)

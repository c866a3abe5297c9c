"""Where the workers' Unix sockets live, so that every socket path fits in ``sockaddr_un``.

A Unix socket's path is at most 107 bytes on Linux (``sun_path`` holds 108 with its NUL). The sockets (each
worker's, each template's control socket) belong in ``<data dir>/workers``, but a data directory deep in a
file system leaves no room for their names there: binding fails with "AF_UNIX path too long". Then they go
to a short directory of their own in the system's temporary directory instead, named after the workers
directory (the same one for the same data directory, so a restarted server finds what a killed one left),
private to the server's user, and refused if anyone else made it first.

``socket_dir`` is pure (the server's worker manager and its sandbox policies must agree on it);
``prepare`` creates the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

SUN_PATH_MAX = 107  # bytes of a socket's path, not counting the NUL
NAME_MAX = 32  # bytes of the longest socket name made in the directory (``socket_name``)


class SocketDirError(RuntimeError):
    pass


def socket_dir(workers_dir: Path) -> Path:
    """``workers_dir`` when a name of ``NAME_MAX`` bytes fits under it, else the short directory for it."""
    wanted = os.fsencode(os.path.abspath(workers_dir))
    if len(wanted) + 1 + NAME_MAX <= SUN_PATH_MAX:
        return workers_dir
    digest = hashlib.sha256(wanted).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"zeroscale-{os.geteuid()}-{digest}"


def socket_name(name: str, suffix: str) -> str:
    """``name + suffix``, or a digest of ``name`` with ``suffix`` when that is longer than ``NAME_MAX``
    (a worker id carries its container's hostname, up to 63 characters, chosen by the user)."""
    full = name + suffix
    if len(os.fsencode(full)) <= NAME_MAX:
        return full
    return hashlib.sha256(os.fsencode(name)).hexdigest()[: NAME_MAX - len(suffix)] + suffix


def prepare(workers_dir: Path) -> Path:
    """Create the socket directory for ``workers_dir`` (``socket_dir``) and return it. Raises SocketDirError
    when even the short directory is too long (a long ``TMPDIR``), or when it exists and is not a directory
    of this user's that only this user may write (another user could otherwise read or plant sockets)."""
    path = socket_dir(workers_dir)
    if path == workers_dir:
        path.mkdir(parents=True, exist_ok=True)
        return path
    if len(os.fsencode(str(path))) + 1 + NAME_MAX > SUN_PATH_MAX:
        raise SocketDirError(
            f"no room for Unix socket names under {workers_dir} nor under {path}: use a data directory "
            "with a shorter path, or set TMPDIR to a short directory"
        )
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SocketDirError(
            f"{path} (the workers' sockets, as {workers_dir} is too long for them) exists and is not a "
            "directory of this user's that only it may write: remove it, or use a data directory with a "
            "shorter path"
        )
    return path

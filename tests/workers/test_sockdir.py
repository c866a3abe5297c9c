"""Where the workers' Unix sockets go: under the workers directory when their paths fit, else in a short
private directory of the server's user in the temporary directory."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroscale.workers.sockdir import (
    NAME_MAX,
    SUN_PATH_MAX,
    SocketDirError,
    prepare,
    socket_dir,
    socket_name,
)


@pytest.fixture
def tmpdir_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short TMPDIR of the test's own (``tempfile`` caches the directory it found first)."""
    short = Path("/tmp") / f"zs-sd-{os.getpid()}"
    short.mkdir(exist_ok=True)
    monkeypatch.setattr("tempfile.tempdir", str(short))
    yield short
    for left in short.iterdir():
        left.rmdir()
    short.rmdir()


def test_a_short_workers_dir_keeps_its_sockets(tmpdir_env: Path) -> None:
    workers = tmpdir_env / "data" / "workers"
    assert len(str(workers)) + 1 + NAME_MAX <= SUN_PATH_MAX
    assert socket_dir(workers) == workers
    assert prepare(workers) == workers and workers.is_dir()
    workers.rmdir()
    workers.parent.rmdir()


def test_a_deep_workers_dir_gets_a_short_private_one_that_a_socket_fits_in(
    tmp_path: Path, tmpdir_env: Path
) -> None:
    deep = tmp_path / ("x" * 100) / "workers"
    short = socket_dir(deep)
    assert short.parent == tmpdir_env
    assert short == socket_dir(deep), "the same for the same workers directory (a restart finds it)"
    assert short != socket_dir(tmp_path / ("y" * 100) / "workers")
    assert prepare(deep) == short
    assert short.is_dir() and (short.stat().st_mode & 0o777) == 0o700
    assert prepare(deep) == short, "a second server start takes it again"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(short / socket_name("c" * 63 + "-0001-abcdef12", ".sock")))
    finally:
        sock.close()
    for left in short.iterdir():
        left.unlink()


def test_a_short_dir_someone_else_could_write_is_refused(tmp_path: Path, tmpdir_env: Path) -> None:
    deep = tmp_path / ("x" * 100) / "workers"
    short = socket_dir(deep)
    short.mkdir(mode=0o777)
    os.chmod(short, 0o777)
    with pytest.raises(SocketDirError, match="only it may write"):
        prepare(deep)
    short.rmdir()
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    short.symlink_to(target)  # planted: the sockets would land where its maker chose
    try:
        with pytest.raises(SocketDirError, match="is not a directory of this user's"):
            prepare(deep)
    finally:
        short.unlink()


def test_a_temporary_directory_too_deep_as_well_is_an_error_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / ("t" * 90)))
    with pytest.raises(SocketDirError, match="set TMPDIR to a short directory"):
        prepare(tmp_path / ("x" * 100) / "workers")


def test_socket_names_fit_and_stay_distinct() -> None:
    assert socket_name("0001-abcdef12", ".sock") == "0001-abcdef12.sock"
    long_a = socket_name("a" * 63 + "-0001-abcdef12", ".sock")
    long_b = socket_name("a" * 63 + "-0002-abcdef12", ".sock")
    assert len(long_a) == NAME_MAX and long_a.endswith(".sock")
    assert long_a != long_b

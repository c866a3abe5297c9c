"""Removing trees deeper than Python's recursion limit and longer than PATH_MAX, without following links."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from deeptree import make_deep
from zeroscale.fstree import remove_tree, remove_tree_quietly

DEPTH = 3000  # past the recursion limit (1000) and, at 2 bytes a level, past PATH_MAX (4096)


def test_shutil_rmtree_fails_on_this_tree(tmp_path: Path) -> None:
    """What the audit saw (Python 3.11): the tree this module exists for breaks shutil.rmtree."""
    if sys.version_info >= (3, 12):
        pytest.skip("shutil.rmtree does not recurse per level from Python 3.12 on")
    root = tmp_path / "deep"
    root.mkdir()
    make_deep(root, 1200)
    with pytest.raises(RecursionError):
        shutil.rmtree(root, ignore_errors=True)
    remove_tree(root)


def test_removes_a_tree_deeper_than_recursion_and_path_max(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    make_deep(root, DEPTH)
    remove_tree(root)
    assert list(tmp_path.iterdir()) == []


def test_removes_a_wide_tree_with_every_kind_of_entry(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for i in range(30):
        sub = root / f"dir{i}" / "inner"
        sub.mkdir(parents=True)
        (sub / "file").write_bytes(b"x" * i)
        (root / f"file{i}").write_text("y")
    (root / "dir0" / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "dir0" / "fifo")
    (root / "dir1" / "loop").symlink_to(root)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    remove_tree(root)
    assert list(tmp_path.iterdir()) == []


def test_symlinks_are_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "link").symlink_to(outside)
    (root / "top-link").symlink_to(outside / "keep")
    remove_tree(root)
    assert not root.exists()
    assert (outside / "keep").read_text() == "kept"
    link = tmp_path / "link-to-dir"
    link.symlink_to(outside)
    remove_tree(link)  # the link itself goes; what it points at stays
    assert not link.is_symlink() and (outside / "keep").exists()


def test_missing_path_and_plain_file(tmp_path: Path) -> None:
    remove_tree(tmp_path / "nothing")
    plain = tmp_path / "plain"
    plain.write_text("x")
    remove_tree(plain)
    assert not plain.exists()


def _quiet_removal_of_a_locked_tree(base: Path) -> str:
    """What ``remove_tree_quietly`` logs for a tree with a directory its caller may not write."""
    root = base / "tree"
    locked = root / "locked"
    locked.mkdir(parents=True)
    (locked / "file").write_text("x")
    locked.chmod(0o555)
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(PermissionError):
            remove_tree(root)
        remove_tree_quietly(root)
    finally:
        logging.getLogger().removeHandler(handler)
        locked.chmod(0o755)
    remove_tree(root)
    assert not root.exists()
    return "\n".join(said)


def test_quiet_removal_logs_what_it_cannot_remove(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        assert f"could not remove {tmp_path / 'tree'}" in _quiet_removal_of_a_locked_tree(tmp_path)
        return
    # root may remove anything: the same as an unprivileged user, in a child that became one (in a
    # directory of /tmp it can reach: pytest's are root's alone)
    base = Path(tempfile.mkdtemp(prefix="fstree-"))
    base.chmod(0o777)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            said = _quiet_removal_of_a_locked_tree(base)
            code = 0 if f"could not remove {base / 'tree'}" in said else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    remove_tree(base)
    assert os.waitstatus_to_exitcode(status) == 0

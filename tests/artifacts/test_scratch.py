"""Scratch entries named after their process: staging directories and the removal of dead ones' leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deeptree import make_deep
from zeroscale.artifacts.scratch import remove_stale, scratch_path, staging_dir


def test_staging_dir_is_removed_unless_renamed_away(tmp_path: Path) -> None:
    with staging_dir(tmp_path, ".staging") as kept, staging_dir(tmp_path) as dropped:
        assert kept.name.startswith(f"{os.getpid()}-") and kept.name.endswith(".staging")
        (dropped / "file").write_text("x")
        kept.rename(tmp_path / "entry")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_staging_dir_is_removed_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staging_dir(tmp_path):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_keeps_live_processes_and_foreign_names(tmp_path: Path) -> None:
    (tmp_path / "999999999-dead.staging").mkdir()
    (tmp_path / "999999999-dead.download").write_bytes(b"partial")
    mine = scratch_path(tmp_path, ".json")
    mine.write_text("{}")
    (tmp_path / "notes").write_text("not ours")
    remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "notes"])


def test_staging_dir_removes_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    """shutil.rmtree raised RecursionError here (audit finding 5), which left the directory behind."""
    with pytest.raises(RuntimeError), staging_dir(tmp_path, ".staging") as staging:
        make_deep(staging, 2100)
        raise RuntimeError("extraction failed")
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_removes_a_deep_tree(tmp_path: Path) -> None:
    stale = tmp_path / "999999999-dead.staging"
    stale.mkdir()
    make_deep(stale, 2100)
    remove_stale(tmp_path)
    assert list(tmp_path.iterdir()) == []

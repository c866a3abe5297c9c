"""A multi-model container's models directory: each target model's extracted directory linked in under a
name of its own, so the container (which sees only this directory) can load it by path."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from zeroscale.fstree import remove_tree_quietly


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the same content, no copy (the artifact cache is read-only to workers)
    except OSError:
        shutil.copy2(src, dst)


def stage(model_dir: Path, root: Path, name: str) -> Path:
    """``root/name``: a copy of ``model_dir`` made of hard links (copies across file systems). Idempotent;
    concurrent callers end with the same complete directory."""
    target = root / name
    if target.is_dir():
        return target
    tmp = root / f".staging-{uuid.uuid4().hex}"
    shutil.copytree(model_dir, tmp, copy_function=_link_or_copy, symlinks=True)
    try:
        os.rename(tmp, target)
    except OSError:
        remove_tree_quietly(tmp)
        if not target.is_dir():
            raise
    return target


def unstage(root: Path, name: str) -> Path | None:
    """Take ``root/name`` out of place at once (one rename: a later ``stage`` makes it afresh); returns where
    it went, for the caller to remove (``remove_tree_quietly``, off the event loop), or None if it was not
    there."""
    gone = root / f".gone-{uuid.uuid4().hex}"
    try:
        os.rename(root / name, gone)
    except FileNotFoundError:
        return None
    return gone

"""The /proc memory reader the watchdog samples."""

from __future__ import annotations

import os
import subprocess
import sys

from zeroscale.workers.memory import rss_mb, tree_rss_mb


def test_own_resident_set() -> None:
    own = rss_mb(os.getpid())
    assert own is not None and 1 < own < 100_000


def test_a_gone_process_reads_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert rss_mb(proc.pid) is None
    assert tree_rss_mb(proc.pid) is None


def test_a_tree_counts_the_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        own, tree, kid = rss_mb(os.getpid()), tree_rss_mb(os.getpid()), rss_mb(child.pid)
        assert own is not None and tree is not None and kid is not None
        assert tree >= own + kid * 0.5  # sampled at slightly different moments
    finally:
        child.kill()
        child.wait()

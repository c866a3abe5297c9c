"""Shared memory that resident sets miss, read from /proc for real processes (``workers/shmem.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

from zeroscale.workers.shmem import host_shmem_mb, tmpfs_devices, unseen_bytes

MB = 1 << 20

# Holds a shared anonymous mapping of 64 MB filled and dropped from its page tables (MADV_DONTNEED keeps
# a shared mapping's pages), one of 32 MB filled and left mapped (in its RSS already), and a memfd of 16 MB
# fallocated and never mapped; then a sparse memfd of 1 TB (truncated: it holds nothing).
HOLDER = """
import mmap, os, sys
dropped = mmap.mmap(-1, 64 << 20)
for i in range(0, len(dropped), 4096):
    dropped[i] = 1
dropped.madvise(mmap.MADV_DONTNEED)
resident = mmap.mmap(-1, 32 << 20)
for i in range(0, len(resident), 4096):
    resident[i] = 1
fd = os.memfd_create("held")
os.posix_fallocate(fd, 0, 16 << 20)
sparse = os.memfd_create("sparse")
os.ftruncate(sparse, 1 << 40)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_shared_memory_out_of_the_resident_set_is_counted_once() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        devices = tmpfs_devices()
        unseen = unseen_bytes([child.pid], devices)
        assert 80 * MB - MB < unseen < 80 * MB + 4 * MB, unseen / MB  # 64 + 16: not the resident 32
        # The same process named twice (a worker and its uid's processes overlap): its objects once, its
        # resident part twice: never more than once.
        assert unseen_bytes([child.pid, child.pid], devices) <= unseen
        assert host_shmem_mb() >= 80 + 32
    finally:
        child.kill()
        child.wait()
    assert unseen_bytes([child.pid], tmpfs_devices()) == 0


def test_a_process_without_shared_memory_has_none() -> None:
    assert unseen_bytes([os.getpid()], tmpfs_devices()) == 0

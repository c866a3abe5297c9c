"""Shared memory (shmem: tmpfs pages) a worker's processes hold but their resident sets do not show.

A shared mapping's pages stay in its object when they leave the page tables: a model can fill a shared
anonymous mapping (``mmap.mmap(-1, n)``, or ``/dev/zero`` mapped shared) 100 MB at a time and drop each
part with ``MADV_DONTNEED``, and hold any amount with an RSS of a few MB. A tmpfs file kept open (a memfd
where seccomp does not refuse them, a file in a writable directory on a tmpfs) is the same. So once a
second the memory watchdog adds, per worker, the shmem objects its processes map or keep open, less the
part of them their resident sets already count (``RssShmem``).

An object's size is what it holds (``st_blocks``, through ``/proc/<pid>/map_files`` or ``/proc/<pid>/fd``,
which a root server may read), or where that cannot be read, the extent of its mappings (an upper bound).
Only objects on a tmpfs count: a disk file's page cache can be written back and dropped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from zeroscale.workers.memory import status_bytes

_Dev = tuple[int, int]  # (major, minor)


def tmpfs_devices() -> frozenset[_Dev]:
    """The devices of this host's tmpfs mounts (``/proc/self/mountinfo``) and of the kernel's own, which
    holds every shared anonymous mapping, memfd and SysV segment (no mount shows it: read from a mapping)."""
    devices: set[_Dev] = set()
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            try:
                fstype = fields[fields.index(b"-") + 1]
            except (ValueError, IndexError):
                continue
            if fstype == b"tmpfs":
                devices.add(_dev(fields[2], 10))
    internal = _internal_device()
    if internal is not None:
        devices.add(internal)
    return frozenset(devices)


def host_shmem_mb() -> float:
    """The host's shared memory in MB (``Shmem`` of ``/proc/meminfo``): what every worker's unseen part is
    within."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"Shmem:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("inf")  # unknown: look at every worker


def unseen_bytes(pids: Iterable[int], devices: frozenset[_Dev]) -> int:
    """What the shmem objects that ``pids`` map or keep open hold, less the part their resident sets show
    (each object counted once however many of them map it); 0 for processes gone."""
    objects: dict[tuple[_Dev, int], int] = {}
    resident = 0
    for pid in pids:
        _mapped(pid, devices, objects)
        _open(pid, devices, objects)
        resident += status_bytes(pid, b"RssShmem:")
    return max(0, sum(objects.values()) - resident)


def _mapped(pid: int, devices: frozenset[_Dev], objects: dict[tuple[_Dev, int], int]) -> None:
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            text = f.read()
    except OSError:
        return
    extents: dict[tuple[_Dev, int], int] = {}
    for line in _lines_on(text, devices):
        span, _, offset, dev, inode = line.split(maxsplit=5)[:5]
        key = (_dev(dev), int(inode))
        if key in objects or key[1] == 0:
            continue
        try:
            objects[key] = os.stat(f"/proc/{pid}/map_files/{span.decode()}").st_blocks * 512
            extents.pop(key, None)
        except OSError:  # map_files needs CAP_SYS_ADMIN: the mapping's extent in the object instead
            start, end = (int(x, 16) for x in span.split(b"-"))
            extents[key] = max(extents.get(key, 0), int(offset, 16) + end - start)
    for key, extent in extents.items():
        objects.setdefault(key, extent)


def _lines_on(text: bytes, devices: frozenset[_Dev]) -> list[bytes]:
    """The lines of a maps file whose device is one of ``devices``, found with ``bytes.find`` (a worker
    maps a thousand files and libraries; splitting every line cost ~1 ms)."""
    found = []
    for major, minor in devices:
        token = f" {major:02x}:{minor:02x} ".encode()  # maps writes devices as %02x:%02x
        at = text.find(token)
        while at >= 0:
            start = text.rfind(b"\n", 0, at) + 1
            end = text.find(b"\n", at)
            found.append(text[start : end if end >= 0 else len(text)])
            at = text.find(token, at + len(token))
    return found


def _open(pid: int, devices: frozenset[_Dev], objects: dict[tuple[_Dev, int], int]) -> None:
    try:
        entries = os.scandir(f"/proc/{pid}/fd")
    except OSError:
        return
    with entries:
        for entry in entries:
            try:
                st = entry.stat()  # the file the descriptor names
            except OSError:
                continue
            dev = (os.major(st.st_dev), os.minor(st.st_dev))
            if dev in devices:
                objects.setdefault((dev, st.st_ino), st.st_blocks * 512)


def _dev(text: bytes, base: int = 16) -> _Dev:
    """``major:minor``: hex in maps, decimal in mountinfo."""
    major, minor = text.split(b":")
    return int(major, base), int(minor, base)


def _internal_device() -> _Dev | None:
    """The kernel's internal tmpfs (a memfd's device: the same mount as shared anonymous mappings')."""
    try:
        fd = os.memfd_create("zeroscale-probe", os.MFD_CLOEXEC)
    except (OSError, AttributeError):
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return os.major(st.st_dev), os.minor(st.st_dev)

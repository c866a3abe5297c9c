"""How much of a worker's output reaches its log stream: at most ``limit`` bytes a minute.

A model that prints without end (300 MB in 1.3 s in the audit) would otherwise fill the disk through its log
file. The zygote (``capture.LineRecorder``) asks ``admit`` for each read from the worker's pipe: whole lines
are kept while the minute's budget lasts (counted as they take on disk, stamps included); past it, output
is dropped (and counted, bytes and lines, as the worker wrote them) until the minute is over. Two
``[zeroscale]`` lines say so in the stream: one when dropping starts, one with the count when the minute
ends (or the worker exits). The window starts at the stream's first output; the notes are not counted.
Nothing here runs on the invoke path.

A live stream is also held to a size (``StreamBound``): ``STREAM_MINUTES`` minutes of output at the limit.
Past it, the oldest part of the file is punched out (``fallocate(PUNCH_HOLE)``: its blocks go back to the file
system, the newest half stays, offsets do not move), so a worker that floods for days, or logs for months,
keeps its latest output and a bounded file; ``logs.reader`` starts reading after the hole. A file system
that cannot punch holes leaves the stream bounded by the rate alone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import BinaryIO

WINDOW_S = 60.0
# What a line costs on disk beyond its bytes: its stamp, ``<epoch ms>\t`` (``capture.encode``). The budget
# counts it, so a flood of empty lines is held to the limit on disk too.
RECORD_OVERHEAD = 14
FLAG = "zeroscale serve --worker-log-mb-per-minute"
# A live stream's file holds at most this many minutes of output at the limit (320 MB at 10 MB a minute).
STREAM_MINUTES = 32
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
PREFIX = "[zeroscale] "


def _clock_text(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


def _fitting(data: bytes, room: int) -> int:
    """How many leading bytes of ``data`` are whole lines that fit in ``room`` (their stamps counted)."""
    keep = 0
    while True:
        newline = data.find(b"\n", keep, keep + room + 1)
        if newline < 0:
            return keep
        cost = newline + 1 - keep + RECORD_OVERHEAD
        if cost > room:
            return keep
        room -= cost
        keep = newline + 1


class OutputCap:
    """One stream's budget. ``limit`` bytes per ``window_s`` seconds (``limit`` > 0)."""

    def __init__(self, limit: int, window_s: float = WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._window_end: float | None = None
        self._used = 0
        self._dropped = 0
        self._dropped_lines = 0
        self._dropping = False

    @property
    def deadline(self) -> float | None:
        """When the count of what was dropped is due (None when nothing was)."""
        return self._window_end if self._dropping or self._dropped else None

    def admit(self, data: bytes, now: float) -> tuple[int, list[str], list[str]]:
        """How many leading bytes of ``data`` to keep (whole lines once the budget runs out), with the notes
        to write before them (the last window's count) and after them (dropping starts)."""
        before = self.roll(now)
        room = self.limit - self._used
        cost = len(data) + RECORD_OVERHEAD * data.count(b"\n")
        if cost <= room:
            self._used += cost
            return len(data), before, []
        keep = _fitting(data, room)
        self._used = self.limit
        self.drop(data[keep:])
        after: list[str] = []
        if not self._dropping:
            self._dropping = True
            assert self._window_end is not None
            after.append(
                f"{PREFIX}This worker's output passed its limit of {self._limit_text()} ({FLAG}): what it "
                f"prints until {_clock_text(self._window_end)} is dropped, and counted."
            )
        return keep, before, after

    def drop(self, data: bytes) -> None:
        """Count ``data`` as dropped (the rest of a line cut off by an earlier drop)."""
        self._dropped += len(data)
        self._dropped_lines += data.count(b"\n")

    def exhausted(self, now: float) -> bool:
        """True while this window's budget is spent: whatever comes now is dropped."""
        return self._dropping and self._window_end is not None and now < self._window_end

    def roll(self, now: float) -> list[str]:
        """Start a new window if this one is over; returns the count of what the old one dropped."""
        if self._window_end is None:
            self._window_end = now + self.window_s
            return []
        if now < self._window_end:
            return []
        notes = self.summary()
        self._window_end = now + self.window_s
        self._used = 0
        self._dropped = self._dropped_lines = 0
        self._dropping = False
        return notes

    def summary(self) -> list[str]:
        """The count of what was dropped in this window so far, as a note (none if nothing was)."""
        if not (self._dropping or self._dropped):
            return []
        return [
            f"{PREFIX}Dropped {self._dropped} bytes ({self._dropped_lines} lines) of this worker's output "
            f"over its limit of {self._limit_text()} ({FLAG})."
        ]

    def _limit_text(self) -> str:
        minutes = self.window_s / 60
        per = "a minute" if minutes == 1 else f"per {self.window_s:g} s"
        return f"{self.limit} bytes {per}"


class StreamBound:
    """One live stream's size: after every ``max_bytes / 8`` bytes written, if its file holds more than
    ``max_bytes`` on disk, everything but about its newest half is punched out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._unchecked = 0
        self.punched = 0  # bytes of the file's head punched so far (its first data offset, block-aligned)
        self.failed = False  # the file system cannot: the stream is bounded by the rate alone

    @classmethod
    def for_limit(cls, limit: int) -> StreamBound:
        return cls(limit * STREAM_MINUTES)

    def wrote(self, fd: int, count: int) -> None:
        self._unchecked += count
        if self.failed or self._unchecked < self.max_bytes // 8:
            return
        self._unchecked = 0
        st = os.fstat(fd)
        if st.st_blocks * 512 <= self.max_bytes:
            return
        block = st.st_blksize or 4096
        head = (st.st_size - self.max_bytes // 2) // block * block
        if head <= self.punched:
            return
        try:
            punch_head(fd, head)
        except OSError:
            self.failed = True
            return
        self.punched = head


_libc: ctypes.CDLL | None = None


def punch_head(fd: int, length: int) -> None:
    """Give the first ``length`` bytes of the file's blocks back to the file system (reads of them return
    zeros; the size and every offset stay). OSError where the file system cannot."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, ctypes.c_long(0), ctypes.c_long(length)) != 0:
        code = ctypes.get_errno() or errno.EOPNOTSUPP
        raise OSError(code, os.strerror(code))


def first_record_at(f: BinaryIO, offset: int = 0) -> int:
    """The first record boundary at or after ``offset`` that is not in a punched head: ``offset`` itself
    when there is data there; else the record after the hole (the first data after it is mid-record, the
    record that ends there is not whole); the end of the file when there is nothing but the hole."""
    try:
        data = os.lseek(f.fileno(), offset, os.SEEK_DATA)
    except OSError as exc:  # ENXIO: no data from there on; else no SEEK_DATA on this file system
        return max(offset, f.seek(0, os.SEEK_END)) if exc.errno == errno.ENXIO else offset
    if data <= offset:
        return offset
    pos = data
    f.seek(pos)
    while chunk := f.read(65536):
        newline = chunk.find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos += len(chunk)
    return pos

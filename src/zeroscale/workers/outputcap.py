"""How much of a worker's output reaches its log stream: at most ``limit`` bytes a minute.

A model that prints without end (300 MB in 1.3 s in the audit) would otherwise fill the disk through its log
file. The zygote (``capture.LineRecorder``) asks ``admit`` for each read from the worker's pipe: whole lines
are kept while the minute's budget lasts (counted as they take on disk, stamps included); past it, output
is dropped (and counted, bytes and lines, as the worker wrote them) until the minute is over. Two
``[zeroscale]`` lines say so in the stream: one when dropping starts, one with the count when the minute
ends (or the worker exits). The window starts at the stream's first output; the notes are not counted.
Nothing here runs on the invoke path.
"""

from __future__ import annotations

import time

WINDOW_S = 60.0
# What a line costs on disk beyond its bytes: its stamp, ``<epoch ms>\t`` (``capture.encode``). The budget
# counts it, so a flood of empty lines is held to the limit on disk too.
RECORD_OVERHEAD = 14
FLAG = "zeroscale serve --worker-log-mb-per-minute"
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

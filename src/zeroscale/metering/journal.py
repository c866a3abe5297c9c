"""The usage journal: every invocation record is appended here (one ``write`` to the OS, no fsync) before
its response goes out, so a server killed the next instant still has it. The ledger is the journal folded
into the database in batches; the position folded so far is committed in the same transaction as the
batch, so replaying the journal from that position at the next start adds exactly what was missing.

Files: ``<dir>/journal-<segment>.log`` (segments of at most ``segment_bytes``; the event loop opens the next
one when the current one is full), one JSON array per line, the fields of ``UsageRecord`` in order. A
segment wholly before the committed position is deleted. A torn last line (a crash mid-write) is skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

from zeroscale.metering.records import UsageRecord

log = logging.getLogger("zeroscale.metering")

_NAME = re.compile(r"^journal-(\d{8})\.log$")
_FIELDS = [f.name for f in fields(UsageRecord) if f.name != "id"]
_values = operator.attrgetter(*_FIELDS)
_encode = json.JSONEncoder(separators=(",", ":")).encode
SEGMENT_BYTES = 32 * 1024 * 1024

Position = tuple[int, int]  # (segment, byte offset): everything before it is in the ledger


def encode_position(pos: Position) -> str:
    return f"{pos[0]}:{pos[1]}"


def decode_position(text: str | None) -> Position:
    if not text:
        return (0, 0)
    segment, offset = text.split(":")
    return (int(segment), int(offset))


class Journal:
    """Appends from one thread (the event loop); ``committed`` and ``pending`` from the writer or at start."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = directory
        self._segment_bytes = segment_bytes
        self._fd = -1
        self.segment = 0
        self.offset = 0

    # ---- the invoke path ----
    def append(self, record: UsageRecord) -> Position:
        """Write one record; returns the position just after it."""
        line = _encode(_values(record)).encode() + b"\n"
        if self.offset + len(line) > self._segment_bytes and self.offset:
            self._open(self.segment + 1)
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: the rest would be a torn line
            raise OSError(f"usage journal: short write ({written} of {len(line)} bytes)")
        self.offset += written
        return (self.segment, self.offset)

    # ---- start and the writer ----
    def segments(self) -> list[int]:
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(self.dir):
                m = _NAME.match(entry)
                if m:
                    found.append(int(m.group(1)))
        return sorted(found)

    def unfolded(self, since: Position) -> tuple[list[UsageRecord], Position]:
        """The records after ``since`` (what a crash kept out of the ledger) and the position after them."""
        records: list[UsageRecord] = []
        end = since
        for segment in self.segments():
            if segment < since[0]:
                continue
            start = since[1] if segment == since[0] else 0
            path = self._path(segment)
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
            good = 0
            for line, length in _lines(data):
                try:
                    values = json.loads(line)
                    records.append(UsageRecord(**dict(zip(_FIELDS, values, strict=True))))
                except (ValueError, TypeError):
                    log.warning("usage journal %s: skipped a damaged record at byte %d", path, start + good)
                good += length
            end = (segment, start + good)
        return records, end

    def start(self) -> None:
        """Open a fresh segment after every one on disk (call after folding what they hold)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        self._open((existing[-1] + 1) if existing else 1)

    def committed(self, pos: Position) -> None:
        """Everything before ``pos`` is in the ledger: delete the segments before its segment."""
        for segment in self.segments():
            if segment < pos[0]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(segment))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self, segment: int) -> None:
        fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self.segment, self.offset = fd, segment, os.fstat(fd).st_size

    def _path(self, segment: int) -> Path:
        return self.dir / f"journal-{segment:08d}.log"


def _lines(data: bytes) -> Iterator[tuple[bytes, int]]:
    """Complete lines (a last one without its newline was torn by a crash: not yielded)."""
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        yield data[start:end], end + 1 - start
        start = end + 1

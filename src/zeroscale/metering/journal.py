"""The usage journal: every invocation record is appended here (one ``write`` to the OS, no fsync) before
its response goes out, so a server killed the next instant still has it. The ledger is the journal folded
into the database in batches; the position folded so far is committed in the same transaction as the
batch, so replaying the journal from that position at the next start adds exactly what was missing.

Files: ``<dir>/journal-<segment>.log`` (segments of at most ``segment_bytes``; the event loop opens the next
one when the current one is full), one line per invocation: the ``InvocationRecord`` fields metering needs,
tab-separated (names are SageMaker names and error codes: no tabs or newlines; floats in ``repr`` so they
read back exactly). About a microsecond to format, one ``write`` to the page cache. A segment wholly before
the committed position is deleted. A torn or damaged line (a crash mid-write) is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from zeroscale.events import InvocationRecord

log = logging.getLogger("zeroscale.metering")

_NAME = re.compile(r"^journal-(\d{8})\.log$")
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
    def append(self, r: InvocationRecord) -> Position:
        """Write one record; returns the position just after it."""
        line = (
            f"{r.endpoint}\t{r.variant}\t{r.worker_id}\t{r.at!r}\t{r.model_s!r}\t{r.total_s!r}\t{r.bytes_in}\t"
            f"{r.bytes_out}\t{r.status}\t{r.error_code}\t{r.memory_mb}\t{r.setup_s!r}\t{r.provisioned:d}\t"
            f"{r.batch_size}\n"
        ).encode()
        if self.offset + len(line) > self._segment_bytes and self.offset:
            self._open(self.segment + 1)
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: what was written goes, or the next line would follow it torn
            os.ftruncate(self._fd, self.offset)
            raise OSError(errno.ENOSPC, f"No space left on device (a short write of {written} bytes, undone)")
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

    def unfolded(self, since: Position) -> tuple[list[InvocationRecord], Position]:
        """The records after ``since`` (what a crash kept out of the ledger) and the position after them."""
        records: list[InvocationRecord] = []
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
                    records.append(_parse(line))
                except (ValueError, TypeError, UnicodeDecodeError):
                    log.warning("usage journal %s: skipped a damaged record at byte %d", path, start + good)
                good += length
            end = (segment, start + good)
        return records, end

    def fresh_segment(self) -> int:
        """The number of a segment after every one on disk."""
        existing = self.segments()
        return (existing[-1] + 1) if existing else 1

    def start(self) -> None:
        """Open a fresh segment after every one on disk (call after folding what they hold)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._open(self.fresh_segment())

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


def _parse(line: bytes) -> InvocationRecord:
    f = line.decode().split("\t")
    if len(f) not in (13, 14):  # 13: written before batch_size was
        raise ValueError(f"{len(f)} fields")
    return InvocationRecord(
        endpoint=f[0],
        variant=f[1],
        worker_id=f[2],
        at=float(f[3]),
        model_s=float(f[4]),
        total_s=float(f[5]),
        bytes_in=int(f[6]),
        bytes_out=int(f[7]),
        status=int(f[8]),
        error_code=f[9],
        memory_mb=int(f[10]),
        setup_s=None if f[11] == "None" else float(f[11]),
        provisioned=f[12] == "1",
        batch_size=int(f[13]) if len(f) == 14 else 1,
    )

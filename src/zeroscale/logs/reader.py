"""Reading events out of stream files: forward and backward pages by byte offset, a time seek, and a
time-ordered search across streams.

Offsets are byte positions of record boundaries, so they make stable paging tokens: appends never move
them. Records are in time order except for small inversions between the two writers of a stream (the
zygote and the server's platform events), which ``SLACK_MS`` covers when a scan stops or seeks by time.
A line without a timestamp (not written through ``workers.capture``) takes the time of the record read
just before it, or the file's modification time.

A live stream past its size has its head punched out (``workers.outputcap.StreamBound``): reads start at
``first_record``, the first whole record after the hole, and a token from before it reads from there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from zeroscale.workers.capture import parse
from zeroscale.workers.outputcap import first_record_at

SLACK_MS = 5_000
EVENT_OVERHEAD = 26  # bytes CloudWatch counts per event towards a response's 1 MB
MAX_RESPONSE_BYTES = 1024 * 1024
_CHUNK = 65536

Record = tuple[int, bytes, int, int]  # timestamp ms, message, start offset, end offset
Matcher = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Event:
    timestamp: int
    message: str
    offset: int  # where its record starts
    end: int  # just past its record


@dataclass(frozen=True, slots=True)
class Found:
    """An event of a search across streams; (timestamp, stream, offset) orders them and is unique."""

    timestamp: int
    message: str
    stream: str
    offset: int

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.timestamp, self.stream, self.offset)


def _text(message: bytes) -> str:
    return message.decode("utf-8", "replace")


def _mtime_ms(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_mtime_ns // 1_000_000


def first_record(f: BinaryIO) -> int:
    """Where the stream's first whole record starts: 0, or past the hole its head was punched into."""
    return first_record_at(f, 0)


def scan_forward(f: BinaryIO, offset: int, default_ms: int) -> Iterator[Record]:
    """Complete records from ``offset`` (a record boundary) to the end; a record still being written is not
    read, nor one that starts with a NUL (a hole punched while it was read)."""
    f.seek(offset)
    pos = offset
    carry = b""
    last_ms = default_ms
    while chunk := f.read(_CHUNK):
        data = carry + chunk if carry else chunk
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            if data[start : start + 1] == b"\0":
                start = nl + 1
                continue
            ts, message = parse(data[start:nl])
            if ts is None:
                ts = last_ms
            else:
                last_ms = ts
            yield ts, message, pos + start, pos + nl + 1
            start = nl + 1
        pos += start
        carry = data[start:]


def complete_end(f: BinaryIO) -> int:
    """The offset just past the last complete record."""
    end = f.seek(0, os.SEEK_END)
    pos = end
    while pos > 0:
        read_from = max(0, pos - _CHUNK)
        f.seek(read_from)
        nl = f.read(pos - read_from).rfind(b"\n")
        if nl >= 0:
            return read_from + nl + 1
        pos = read_from
    return 0


def scan_backward(f: BinaryIO, end: int, default_ms: int, start: int = 0) -> Iterator[Record]:
    """Complete records before ``end`` and from ``start`` (record boundaries), last first."""
    pos = end
    carry = b""
    last_ms = default_ms
    while pos > start:
        read_from = max(start, pos - _CHUNK)
        f.seek(read_from)
        data = f.read(pos - read_from) + carry
        rec_end = len(data)  # data ends with the newline of its last record
        while rec_end > 0:
            nl = data.rfind(b"\n", 0, rec_end - 1)
            if nl < 0 and read_from > start:
                break  # this record starts before the data read so far
            rec_start = nl + 1
            ts, message = parse(data[rec_start : rec_end - 1])
            if ts is None:
                ts = last_ms
            else:
                last_ms = ts
            yield ts, message, read_from + rec_start, read_from + rec_end
            rec_end = rec_start
        if read_from == start:
            return
        carry = data[:rec_end]
        pos = read_from


def seek_time(f: BinaryIO, size: int, ms: int, start: int = 0) -> int:
    """A record boundary at or before the first record stamped ``ms`` or later, and at or after ``start``
    (binary search, leaving ``SLACK_MS`` of margin)."""
    goal = ms - SLACK_MS
    lo, hi = start, size
    while hi - lo > _CHUNK:
        mid = (lo + hi) // 2
        f.seek(mid)
        data = f.read(_CHUNK)
        nl = data.find(b"\n")
        nl2 = data.find(b"\n", nl + 1) if nl >= 0 else -1
        record = mid + nl + 1
        ts = parse(data[nl + 1 : nl2])[0] if nl2 >= 0 else None
        if ts is None or record >= hi:
            hi = mid
        elif ts < goal:
            lo = record
        else:
            hi = mid
    return lo


def bounds(path: Path) -> tuple[int | None, int | None]:
    """The first and last event times of a stream (None when it has no complete record)."""
    try:
        with open(path, "rb") as f:
            default, start = _mtime_ms(f), first_record(f)
            first = next(scan_forward(f, start, default), None)
            last = next(scan_backward(f, complete_end(f), default, start), None)
    except OSError:
        return None, None
    return (first[0] if first else None), (last[0] if last else None)


def page_forward(
    path: Path,
    offset: int,
    *,
    limit: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> tuple[list[Event], int]:
    """Up to ``limit`` events from ``offset`` with start_ms <= timestamp < end_ms, and the offset to go on
    from (the end of the file when nothing more was found)."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        start = first_record(f)
        offset = max(min(offset, total), start)
        if offset == start and start_ms is not None:
            offset = seek_time(f, total, start_ms, start)
        scan = scan_forward(f, offset, _mtime_ms(f))
        events, reached = _take(scan, start_ms, end_ms, limit, max_bytes, forward=True)
    return events, offset if reached is None else reached


def page_backward(
    path: Path,
    end: int | None,
    *,
    limit: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> tuple[list[Event], int, int]:
    """Up to ``limit`` events before ``end`` (None: the end of the file) with start_ms <= timestamp <
    end_ms, in time order; with the offset to go back from and the end that was used."""
    with open(path, "rb") as f:
        last = complete_end(f)
        start = first_record(f)
        end = last if end is None else max(min(end, last), start)
        scan = scan_backward(f, end, _mtime_ms(f), start)
        events, reached = _take(scan, start_ms, end_ms, limit, max_bytes, forward=False)
    events.reverse()
    return events, end if reached is None else reached, end


def _take(
    scan: Iterable[Record],
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    max_bytes: int,
    *,
    forward: bool,
) -> tuple[list[Event], int | None]:
    """The scanned events with start_ms <= timestamp < end_ms, in scan order, up to ``limit`` events and
    ``max_bytes``; and how far the scan got: the end (forward) or start (backward) of the last record
    taken or passed over, None when none was. Stops early once past the window by more than SLACK_MS."""
    events: list[Event] = []
    size = 0
    reached: int | None = None
    for ts, message, start, end in scan:
        if (end_ms is not None and ts >= end_ms) or (start_ms is not None and ts < start_ms):
            if forward and end_ms is not None and ts >= end_ms + SLACK_MS:
                break
            if not forward and start_ms is not None and ts < start_ms - SLACK_MS:
                break
            reached = end if forward else start
            continue
        size += len(message) + EVENT_OVERHEAD
        if len(events) >= limit or (events and size > max_bytes):
            break
        events.append(Event(ts, _text(message), start, end))
        reached = end if forward else start
    return events, reached


def search(
    streams: list[tuple[str, Path]],
    *,
    limit: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
    match: Matcher | None = None,
    after: tuple[int, str, int] | None = None,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> tuple[list[Found], bool]:
    """Events of several streams in (timestamp, stream, offset) order, start_ms <= timestamp <= end_ms,
    matching, after the key ``after``: up to ``limit`` of them, and whether there are more."""
    since = start_ms
    if after is not None:
        since = after[0] if since is None else max(since, after[0])
    found: list[Found] = []
    more = False
    for name, path in streams:
        hits, stream_more = _search_stream(name, path, limit, since, end_ms, match, after)
        found.extend(hits)
        more = more or stream_more
    found.sort(key=lambda e: e.key)
    page: list[Found] = []
    size = 0
    for event in found:
        size += len(event.message.encode()) + EVENT_OVERHEAD
        if len(page) >= limit or (page and size > max_bytes):
            return page, True
        page.append(event)
    return page, more


def _search_stream(
    name: str,
    path: Path,
    limit: int,
    since: int | None,
    end_ms: int | None,
    match: Matcher | None,
    after: tuple[int, str, int] | None,
) -> tuple[list[Found], bool]:
    hits: list[Found] = []
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return [], False
    with f:
        st = os.fstat(f.fileno())
        mtime = st.st_mtime_ns // 1_000_000
        if since is not None and mtime < since - SLACK_MS:
            return [], False
        start = first_record(f)
        offset = seek_time(f, st.st_size, since, start) if since is not None else start
        newest_hit = -1
        for ts, message, start, _ in scan_forward(f, offset, mtime):
            if len(hits) >= limit and ts > newest_hit + SLACK_MS:
                hits.sort(key=lambda e: e.key)
                return hits[:limit], True
            if (since is not None and ts < since) or (end_ms is not None and ts > end_ms):
                if end_ms is not None and ts > end_ms + SLACK_MS:
                    break
                continue
            if after is not None and (ts, name, start) <= after:
                continue
            text = _text(message)
            if match is not None and not match(text):
                continue
            hits.append(Found(ts, text, name, start))
            newest_hit = max(newest_hit, ts)
    hits.sort(key=lambda e: e.key)
    return hits[:limit], len(hits) > limit

"""Paging and searching stream files: offsets as tokens, time seeks, chunk boundaries, partial records."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from zeroscale.logs.reader import (
    bounds,
    complete_end,
    page_backward,
    page_forward,
    search,
    seek_time,
)
from zeroscale.workers.capture import encode

BASE = 1_700_000_000_000


def write_stream(path: Path, count: int, *, step_ms: int = 7, width: int = 90) -> list[tuple[int, str]]:
    """``count`` records, message ``line <i>`` padded to ``width``; a few share a timestamp."""
    events = [(BASE + (i // 3) * step_ms, f"line {i:06d} ".ljust(width, ".")) for i in range(count)]
    path.write_bytes(b"".join(encode(ts, msg.encode()) for ts, msg in events))
    return events


def test_forward_pages_cover_the_stream_once_then_the_token_stays(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    want = write_stream(path, 3000)  # ~300 KB: several read chunks
    got: list[tuple[int, str]] = []
    offset = 0
    while True:
        events, nxt = page_forward(path, offset, limit=257)
        got += [(e.timestamp, e.message) for e in events]
        if not events:
            assert nxt == offset  # the end: the same token again
            break
        assert events[0].offset == offset
        offset = nxt
    assert got == want
    assert offset == path.stat().st_size


def test_backward_pages_from_the_end_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    want = write_stream(path, 3000)
    events, first, end = page_backward(path, None, limit=100)
    assert end == path.stat().st_size
    assert [(e.timestamp, e.message) for e in events] == want[-100:]
    assert events[0].offset == first
    pages = [events]
    while True:
        events, new_first, _ = page_backward(path, first, limit=333)
        if not events:
            assert new_first == first == 0
            break
        assert events[-1].end == first
        pages.insert(0, events)
        first = new_first
    assert [(e.timestamp, e.message) for page in pages for e in page] == want


def test_time_bounds(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    want = write_stream(path, 3000)
    start, end = want[1000][0], want[2000][0]  # start inclusive, end exclusive (GetLogEvents)
    inside = [w for w in want if start <= w[0] < end]
    events, _ = page_forward(path, 0, limit=10_000, start_ms=start, end_ms=end)
    assert [(e.timestamp, e.message) for e in events] == inside
    events, _, _ = page_backward(path, None, limit=10_000, start_ms=start, end_ms=end)
    assert [(e.timestamp, e.message) for e in events] == inside


def test_seek_time_lands_on_a_boundary_before_the_target(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    want = write_stream(path, 20_000, width=40)
    data = path.read_bytes()
    offsets = [0]
    for i, byte in enumerate(data):
        if byte == 0x0A:
            offsets.append(i + 1)
    rng = random.Random(3)
    with open(path, "rb") as f:
        for _ in range(50):
            i = rng.randrange(len(want))
            at = seek_time(f, len(data), want[i][0])
            first = next(j for j, w in enumerate(want) if w[0] >= want[i][0])
            assert at in offsets
            assert at <= offsets[first]
            assert offsets[first] - at < 200_000  # it did skip ahead: 5 s of slack is ~2,100 records here


def test_a_record_still_being_written_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(encode(BASE, b"complete") + b"1700000000001\tstill being wri")
    events, nxt = page_forward(path, 0, limit=10)
    assert [e.message for e in events] == ["complete"]
    assert nxt == len(encode(BASE, b"complete"))
    events, _, end = page_backward(path, None, limit=10)
    assert [e.message for e in events] == ["complete"]
    with open(path, "rb") as f:
        assert complete_end(f) == end == nxt
    assert bounds(path) == (BASE, BASE)


def test_unstamped_lines_and_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(encode(BASE, b"stamped") + b"raw line\n" + encode(BASE + 5, b"\xff\xfe"))
    events, _ = page_forward(path, 0, limit=10)
    assert [(e.timestamp, e.message) for e in events] == [
        (BASE, "stamped"),
        (BASE, "raw line"),  # the time of the record before it
        (BASE + 5, "\ufffd\ufffd"),
    ]


def test_search_merges_streams_in_time_order_and_pages_by_key(tmp_path: Path) -> None:
    streams = []
    everything = []
    for n, name in enumerate(["AllTraffic/b", "AllTraffic/a", "Other/platform"]):
        path = tmp_path / f"{n}.log"
        events = [(BASE + i * 3 + n, f"{name} {i} {'even' if i % 2 == 0 else 'odd'}") for i in range(400)]
        path.write_bytes(b"".join(encode(ts, m.encode()) for ts, m in events))
        streams.append((name, path))
        everything += [(ts, name, m) for ts, m in events]
    everything.sort()
    got = []
    after = None
    pages = 0
    while True:
        found, more = search(streams, limit=97, after=after)
        got += [(e.timestamp, e.stream, e.message) for e in found]
        pages += 1
        if not more:
            break
        after = found[-1].key
    assert got == everything
    assert pages == 13
    even, more = search(streams, limit=10_000, match=lambda m: m.endswith("even"), start_ms=BASE + 600)
    assert not more
    assert [e.message for e in even] == [
        m for ts, _, m in everything if ts >= BASE + 600 and m.endswith("even")
    ]


@pytest.mark.parametrize("limit", [1, 5])
def test_search_end_time_is_inclusive(tmp_path: Path, limit: int) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(b"".join(encode(BASE + i, f"e{i}".encode()) for i in range(10)))
    found, more = search([("s", path)], limit=limit, start_ms=BASE + 2, end_ms=BASE + 4)
    assert [e.message for e in found] == ["e2", "e3", "e4"][:limit]
    assert more == (limit < 3)

"""A worker's output over --worker-log-mb-per-minute: the recorder alone, then a real zygote and worker."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zeroscale.errors import DeployError
from zeroscale.workers.capture import LineRecorder, parse
from zeroscale.workers.manager import WorkerManager, WorkerSpec
from zeroscale.workers.outputcap import OutputCap

DROPPED = re.compile(
    rb"\[zeroscale\] Dropped (\d+) bytes \((\d+) lines\) of this worker's output over its limit"
)
PASSED = b"[zeroscale] This worker's output passed its limit of"


def messages(path: Path) -> list[bytes]:
    return [parse(line)[1] for line in path.read_bytes()[:-1].split(b"\n")]


def capped(path: Path, limit: int) -> LineRecorder:
    return LineRecorder(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), cap=OutputCap(limit))


def test_whole_lines_are_kept_up_to_the_limit_then_counted(tmp_path: Path) -> None:
    log = tmp_path / "stream.log"
    r = capped(log, 120)  # a line costs its bytes and its stamp (14) on disk
    r.feed(b"a" * 39 + b"\n" + b"b" * 39 + b"\n", 1000.0)  # 108: kept
    r.feed(b"c" * 39 + b"\n" + b"d" * 10, 1001.0)  # 162 with the c line: cut off, and what follows
    r.feed(b"dd\n" + b"e" * 99 + b"\n", 1002.0)  # budget spent: dropped, not even split into lines
    got = messages(log)
    assert got[:2] == [b"a" * 39, b"b" * 39]
    assert got[2].startswith(PASSED) and b"until " in got[2] and b"--worker-log-mb-per-minute" in got[2]
    assert len(got) == 3
    assert r.deadline == 1060.0  # the count is due when the minute that started at the first output ends
    r.due(1060.0)
    match = DROPPED.match(messages(log)[3])
    assert match and (int(match[1]), int(match[2])) == (50 + 3 + 100, 3)
    # A new minute: kept again
    r.feed(b"fresh\n", 1061.0)
    r.close(1062.0)
    assert messages(log)[4:] == [b"fresh"]


def test_the_rest_of_a_dropped_line_is_dropped_in_the_next_minute(tmp_path: Path) -> None:
    log = tmp_path / "stream.log"
    r = capped(log, 30)
    r.feed(b"x" * 50, 0.0)  # one long line without its newline yet: dropped
    r.feed(b"yyy\nnext line\n", 70.0)  # a new minute: the line's end is dropped too, the next kept
    r.close(71.0)
    got = messages(log)
    assert got[0].startswith(PASSED)
    assert DROPPED.match(got[1]) and DROPPED.match(got[1])[1] == b"50"  # type: ignore[index]
    assert got[2] == b"next line"
    assert DROPPED.match(got[3]) and DROPPED.match(got[3])[1] == b"4"  # type: ignore[index]


def test_an_exit_writes_the_count(tmp_path: Path) -> None:
    log = tmp_path / "stream.log"
    r = capped(log, 50)
    r.feed(b"fits\n" + b"z\n" * 1000, 5.0)  # 19 + 16 fit in 50, not another 16
    r.close(6.0)
    got = messages(log)
    assert got[:2] == [b"fits", b"z"] and got[2].startswith(PASSED)
    match = DROPPED.match(got[3])
    assert match and (int(match[1]), int(match[2])) == (2005 - 7, 1000 - 1)
    assert len(got) == 4


def test_no_cap_keeps_everything(tmp_path: Path) -> None:
    log = tmp_path / "stream.log"
    r = LineRecorder(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    r.feed(b"q\n" * 10_000, 1.0)
    r.close(1.0)
    assert len(messages(log)) == 10_000


# ---- a real zygote and worker ----
FLOODING_WORKER = r"""
import os, signal, sys

def model_fn(model_dir):
    print("loading weights")
    print("first lines are kept")
    line = b"y" * 99 + b"\n"
    for _ in range(200):
        sys.stdout.buffer.write(line * 10_000)  # 200 MB in all
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""
LIMIT = 256 * 1024


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[WorkerManager]:
    m = WorkerManager(tmp_path / "run", startup_timeout_s=60, log_limit=LIMIT)
    await m.open()
    yield m
    await m.close()


async def test_a_flooding_worker_keeps_its_log_bounded(manager: WorkerManager, tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text(FLOODING_WORKER)
    logs = tmp_path / "logs"
    started = time.monotonic()
    with pytest.raises(DeployError, match="killed by signal 9"):
        await manager.start(WorkerSpec(runtime="sklearn", model_dir=str(model), memory_mb=2048, log_dir=logs))
    elapsed = time.monotonic() - started
    (stream,) = logs.glob("*.log")
    size = stream.stat().st_size
    got = messages(stream)
    print(f"200 MB printed in {elapsed:.1f} s; log {size} bytes, {len(got)} records")
    assert size < LIMIT + 1024  # the limit (stamps included) and the two notes
    assert got[:2] == [b"loading weights", b"first lines are kept"]
    assert all(m == b"y" * 99 for m in got[2:-2])  # whole lines only
    assert got[-2].startswith(PASSED)
    match = DROPPED.match(got[-1])
    assert match, got[-1]
    printed = len(b"loading weights\nfirst lines are kept\n") + 200 * 10_000 * 100
    kept = sum(len(m) + 1 for m in got[:-2])
    assert int(match[1]) == printed - kept  # every byte is either in the log or counted


def test_a_live_stream_past_its_minutes_keeps_its_newest_half_on_disk(tmp_path: Path) -> None:
    """A worker that logs at its limit for longer than STREAM_MINUTES: the file's head is punched out, so
    what it holds on disk stays bounded while its newest records are all there, whole, read back from the
    first record after the hole; offsets (paging tokens) do not move."""
    from zeroscale.logs.reader import first_record, page_backward, page_forward
    from zeroscale.logs.store import LogStore
    from zeroscale.workers.capture import recorder
    from zeroscale.workers.outputcap import STREAM_MINUTES

    log = tmp_path / "logs" / "ep" / "AllTraffic" / "w1.log"
    log.parent.mkdir(parents=True)
    limit = 64 * 1024  # a minute's output: the stream holds at most 32 minutes of it, 2 MB
    r = recorder(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND), limit)
    line_no = 0
    for minute in range(3 * STREAM_MINUTES):  # three times as long as the bound: 6 MB printed and kept
        lines = []
        while sum(len(x) + 15 for x in lines) < limit - 200:
            lines.append(b"minute %04d line %08d" % (minute, line_no) + b"." * 60)
            line_no += 1
        r.feed(b"\n".join(lines) + b"\n", 1000.0 + 60 * minute)
    r.close(1000.0 + 60 * 3 * STREAM_MINUTES)
    st = log.stat()
    bound = STREAM_MINUTES * limit
    assert st.st_size > 2.5 * bound  # what was written: offsets keep counting
    assert st.st_blocks * 512 <= bound + bound // 8 + 65536  # what the disk holds
    assert st.st_blocks * 512 >= bound // 2  # the newest half at least
    [stream] = LogStore(tmp_path / "logs").streams(LogStore(tmp_path / "logs").groups()[0])
    assert stream.size == st.st_blocks * 512  # what DescribeLogStreams and the size cap count

    with open(log, "rb") as f:
        start = first_record(f)
    assert start > 0
    events, end = page_forward(log, 0, limit=10_000_000, max_bytes=1 << 40)  # a token from before the hole
    assert events[0].offset == start and end == st.st_size
    numbers = [int(e.message.split()[3][:8]) for e in events]
    assert numbers == list(range(numbers[0], line_no))  # whole records, in order, up to the last line
    assert all(e.message.endswith("." * 60) for e in events)
    back, reached, _ = page_backward(log, None, limit=10_000_000, max_bytes=1 << 40)
    assert [e.offset for e in back] == [e.offset for e in events] and reached == start


def test_a_stream_that_cannot_be_punched_is_left_to_the_rate(tmp_path: Path) -> None:
    """fallocate refused (here: a file opened read-only, EBADF; a file system without holes answers
    EOPNOTSUPP): the stream is not punched, and not tried again at every write."""
    import errno

    from zeroscale.workers.outputcap import StreamBound, punch_head

    path = tmp_path / "stream.log"
    path.write_bytes(b"x" * 200_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as err:
            punch_head(fd, 4096)
        assert err.value.errno == errno.EBADF
        bound = StreamBound(16_384)
        bound.wrote(fd, 200_000)
        assert bound.failed and bound.punched == 0
    finally:
        os.close(fd)
    assert path.stat().st_blocks * 512 >= 200_000  # nothing was punched


def test_readers_behind_a_punched_head_go_on_from_the_first_whole_record_after_it(tmp_path: Path) -> None:
    """A reader whose offset the hole overtook (a Ray node's agent shipping a stream, a paging token) goes
    on from the first whole record after the hole; one in the data stays where it is."""
    from zeroscale.workers.capture import encode
    from zeroscale.workers.outputcap import first_record_at, punch_head
    from zeroscale.workers.ray_agent import _read_records

    path = tmp_path / "w.log"
    records = [encode(1_700_000_000_000 + i, b"record %06d " % i + b"-" * 80) for i in range(3000)]
    path.write_bytes(b"".join(records))
    starts = [sum(map(len, records[:i])) for i in range(len(records))]
    fd = os.open(path, os.O_WRONLY)
    try:
        punch_head(fd, 131072)
    finally:
        os.close(fd)
    first = next(s for s in starts if s > 131072)  # the record cut by the hole's end is not whole
    with open(path, "rb") as f:
        assert first_record_at(f, 0) == first == first_record_at(f, 4096)
        assert first_record_at(f, starts[2000]) == starts[2000]
    start, chunk = _read_records(path, 100, final=False)
    assert start == first and chunk == b"".join(records)[first:]
    assert _read_records(path, starts[2500], final=False) == (starts[2500], b"".join(records[2500:]))

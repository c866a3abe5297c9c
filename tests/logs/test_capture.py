"""Worker output -> timestamped records: the recorder alone, and the real zygote capturing a real worker."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zeroscale.errors import DeployError
from zeroscale.workers.capture import PARTIAL_FLUSH_S, LineRecorder, LoopCapture, parse, strip_stamps
from zeroscale.workers.manager import WorkerManager, WorkerSpec
from zeroscale.workers.zygotes import tail


def records(path: Path) -> list[tuple[int | None, bytes]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [parse(line) for line in data[:-1].split(b"\n")]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "stream.log"


def recorder(path: Path, **kw: int) -> LineRecorder:
    return LineRecorder(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), **kw)


def test_each_line_is_a_record_stamped_when_its_newline_arrives(log: Path) -> None:
    r = recorder(log)
    r.feed(b"one\ntw", 1000.0001)
    r.feed(b"o\r\nthree\n", 1002.5)
    r.close(1003.0)
    assert records(log) == [(1000000, b"one"), (1002500, b"two"), (1002500, b"three")]


def test_stamps_never_go_backwards(log: Path) -> None:
    r = recorder(log)
    r.feed(b"late\n", 2000.0)
    r.feed(b"clock went back\n", 1999.0)
    r.close(1999.0)
    assert [ts for ts, _ in records(log)] == [2000000, 2000000]


def test_a_partial_line_is_written_after_a_while_and_at_close(log: Path) -> None:
    r = recorder(log)
    r.feed(b"progress 10%", 50.0)
    assert r.deadline == 50.0 + PARTIAL_FLUSH_S
    assert not log.read_bytes()
    r.flush(50.0 + PARTIAL_FLUSH_S)
    assert r.deadline is None
    r.feed(b"no newline before exit", 60.0)
    r.close(61.0)
    assert records(log) == [(51000, b"progress 10%"), (61000, b"no newline before exit")]


def test_long_lines_are_cut_on_character_boundaries(log: Path) -> None:
    r = recorder(log, max_line=10)
    r.feed("aaaaaaaaaé€bbbb\n".encode() + b"c" * 25, 1.0)  # é (bytes 9-10) must not be split
    r.close(2.0)
    messages = [m for _, m in records(log)]
    assert all(len(m) <= 10 for m in messages)
    assert messages[:2] == [b"a" * 9, "é€bbbb".encode()]  # cut before the character on the limit
    assert b"".join(messages[2:]) == b"c" * 25


def test_binary_output_is_kept_and_tail_strips_stamps(log: Path) -> None:
    r = recorder(log)
    blob = bytes(range(256)).replace(b"\n", b"")
    r.feed(blob + b"\n" + b"12\tlooks like a stamp\n" + b"last line\n", 5.0)
    r.close(5.0)
    assert records(log)[0] == (5000, blob)
    assert records(log)[1] == (5000, b"12\tlooks like a stamp")
    assert strip_stamps(b"5000\tx\nraw line\n") == b"x\nraw line\n"
    assert tail(log, 2) == "12\tlooks like a stamp\nlast line"


def test_parse_tolerates_unstamped_lines() -> None:
    assert parse(b"1700000000000\thello\tworld") == (1700000000000, b"hello\tworld")
    assert parse(b"no stamp") == (None, b"no stamp")
    assert parse(b"\tleading tab") == (None, b"\tleading tab")
    assert parse(b"12345678901234567890\ttoo long to be a stamp") == (
        None,
        b"12345678901234567890\ttoo long to be a stamp",
    )


# ---- the real zygote ----
DYING_WORKER = r"""
import os, signal, sys

def model_fn(model_dir):
    print("loading weights")
    sys.stdout.buffer.write(b"\x00\xff\xfe binary \x80\n")
    print("x" * 300_000)
    print("to stderr", file=sys.stderr)
    print("last words")
    sys.stdout.write("no newline before the kill")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[WorkerManager]:
    m = WorkerManager(tmp_path / "run", startup_timeout_s=60)
    await m.open()
    yield m
    await m.close()


async def test_the_zygote_keeps_every_line_of_a_worker_killed_by_sigkill(
    manager: WorkerManager, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text(DYING_WORKER)
    logs = tmp_path / "logs"
    before = int(time.time() * 1000)
    with pytest.raises(DeployError) as err:
        await manager.start(WorkerSpec(runtime="sklearn", model_dir=str(model), memory_mb=2048, log_dir=logs))
    after = int(time.time() * 1000)
    # The exit is reported only after the zygote drained the pipe: the failure carries the last lines.
    assert "killed by signal 9" in str(err.value)
    assert "last words\nno newline before the kill" in str(err.value)
    (stream,) = logs.glob("*.log")
    got = records(stream)
    assert all(ts is not None and before <= ts <= after for ts, _ in got)
    messages = [m for _, m in got]
    assert messages[0] == b"loading weights"
    assert messages[1] == b"\x00\xff\xfe binary \x80"
    long_parts = [m for m in messages if m.startswith(b"x")]
    assert len(long_parts) == 2 and b"".join(long_parts) == b"x" * 300_000
    assert messages[-3:] == [b"to stderr", b"last words", b"no newline before the kill"]


async def test_loop_capture_for_processes_the_server_starts(tmp_path: Path) -> None:
    stream = tmp_path / "logs" / "AllTraffic" / "0001-x.log"
    capture = LoopCapture(str(stream))
    code = "import os, sys; print('one'); print('partial', end='', flush=True); os.kill(os.getpid(), 9)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=capture.write_fd, stderr=capture.write_fd
    )
    capture.spawned()
    assert await proc.wait() == -9
    capture.exited()  # drains the pipe before anyone hears of the exit
    assert [m for _, m in records(stream)] == [b"one", b"partial"]
    capture.close()

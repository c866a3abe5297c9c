"""Worker output as timestamped log records, captured outside the worker.

A worker's stream file (``<data-dir>/logs/<endpoint>/<variant>/<worker-id>.log``) holds one record per line
the worker printed::

    <epoch milliseconds>\\t<the line's bytes, without its newline>\\n

The zygote (the worker's parent) gives each child a pipe as its stdout and stderr and, in its single-threaded
select loop, turns what arrives into records (``Captures``). Nothing lives in the worker, so its last lines
are kept when it crashes or is SIGKILLed: the zygote drains the pipe before it reports the exit.

- A line is stamped when its newline arrives (so a stream's stamps never go backwards); a trailing
  ``\\r`` is dropped.
- A partial line (no newline yet) is written as its own record after ``PARTIAL_FLUSH_S``, or at EOF.
- A line longer than ``MAX_LINE`` bytes (CloudWatch's event size) is cut into several records, on a UTF-8
  character boundary where there is one.
- Bytes are kept as they are (binary output included); readers decode UTF-8 with replacement.
- With a limit (``--worker-log-mb-per-minute``), at most that many bytes of a stream's output a minute are
  kept, whole lines; the rest is dropped and counted in a ``[zeroscale]`` line (``outputcap``); and the
  file keeps at most ``STREAM_MINUTES`` of them, its oldest part punched out past that (``StreamBound``).
- Each batch of records is one ``write`` on an ``O_APPEND`` file, so records from other writers (the
  server's platform events) never interleave inside one.

Lines without the ``<digits>\\t`` prefix (written by something else) are tolerated by ``parse``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import sys
import time
from collections.abc import Callable

from zeroscale.workers.outputcap import OutputCap, StreamBound

MAX_LINE = 256 * 1024 - 26  # CloudWatch Logs' largest event: 256 KB including 26 bytes of overhead
PARTIAL_FLUSH_S = 1.0
_READ_SIZE = 65536
_MAX_STAMP_DIGITS = 16


def encode(ms: int, line: bytes) -> bytes:
    """One record: ``line`` must not contain a newline."""
    return b"%d\t%s\n" % (ms, line)


def parse(record: bytes) -> tuple[int | None, bytes]:
    """A record without its newline -> (timestamp in ms, message); (None, record) for an unstamped line."""
    tab = record.find(b"\t", 0, _MAX_STAMP_DIGITS + 1)
    if tab > 0 and record[:tab].isdigit():
        return int(record[:tab]), record[tab + 1 :]
    return None, record


def strip_stamps(text: bytes) -> bytes:
    """Complete records (each ending in a newline) -> the lines as printed, stamps removed."""
    return b"\n".join(parse(line)[1] for line in text.split(b"\n"))


def _cut(data: bytes | bytearray, limit: int) -> int:
    """Where to cut ``data`` (longer than ``limit``) so no UTF-8 character is split, if possible."""
    cut = limit
    while cut > limit - 4 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > limit - 4 else limit


class LineRecorder:
    """One output stream -> records appended to one file descriptor (owned and closed by the recorder)."""

    def __init__(
        self,
        fd: int,
        *,
        max_line: int = MAX_LINE,
        cap: OutputCap | None = None,
        bound: StreamBound | None = None,
    ) -> None:
        self._fd = fd
        self._max = max_line
        self._buf = bytearray()
        self._partial_since: float | None = None
        self._last_ms = 0
        self._cap = cap
        self._bound = bound
        self._skipping = False  # dropping the rest of a line whose start was dropped

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def deadline(self) -> float | None:
        """When the buffered partial line is due to be written on its own, or the count of dropped output
        (wall-clock seconds)."""
        cap = self._cap.deadline if self._cap is not None else None
        due = [d for d in (self._partial_deadline, cap) if d is not None]
        return min(due) if due else None

    @property
    def _partial_deadline(self) -> float | None:
        return None if self._partial_since is None else self._partial_since + PARTIAL_FLUSH_S

    def due(self, now: float) -> None:
        """What is due at ``now``: the partial line, the count of dropped output."""
        partial = self._partial_deadline
        if partial is not None and partial <= now:
            self.flush(now)
        if self._cap is not None:
            self._notes(self._cap.roll(now), now)

    def feed(self, data: bytes, now: float) -> None:
        if self._cap is None:
            self._lines(data, now)
            return
        kept, after = self._admit(self._cap, data, now)
        if kept:
            self._lines(kept, now)
        self._notes(after, now)

    def _lines(self, data: bytes, now: float) -> None:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        start = buf.rfind(b"\n") + 1
        if start:
            complete = bytes(buf[: start - 1])
            del buf[:start]
            lines = complete.split(b"\n")
            if b"\r" in complete or max(map(len, lines)) > self._max:
                for line in lines:
                    self._line(line, now, out)
            else:  # the common case: one stamp for everything this read brought, records joined at once
                prefix = b"%d\t" % self._stamp(now)
                out.append(prefix + (b"\n" + prefix).join(lines) + b"\n")
        while len(buf) > self._max:
            cut = _cut(buf, self._max)
            out.append(encode(self._stamp(now), bytes(buf[:cut])))
            del buf[:cut]
        if not buf:
            self._partial_since = None
        elif start or self._partial_since is None:
            self._partial_since = now
        self._write(out)

    def flush(self, now: float) -> None:
        """Write the partial line, if any, as a record of its own."""
        if self._buf:
            out: list[bytes] = []
            self._line(bytes(self._buf), now, out)
            self._buf.clear()
            self._write(out)
        self._partial_since = None

    def close(self, now: float) -> None:
        self.flush(now)
        if self._cap is not None:
            self._notes(self._cap.summary(), now)
            self._cap = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def _admit(self, cap: OutputCap, data: bytes, now: float) -> tuple[bytes, list[str]]:
        """The part of ``data`` the cap keeps, and the notes to write after it (the count of the last window's
        drops is written here, before it)."""
        if cap.exhausted(now):  # the common case in a flood: no line is looked at
            cap.drop(data)
            self._skipping = not data.endswith(b"\n")
            return b"", []
        self._notes(cap.roll(now), now)
        if self._skipping:  # the rest of a line whose start was dropped
            newline = data.find(b"\n")
            cap.drop(data if newline < 0 else data[: newline + 1])
            if newline < 0:
                return b"", []
            self._skipping = False
            data = data[newline + 1 :]
        keep, before, after = cap.admit(data, now)
        self._notes(before, now)
        if keep < len(data):
            self._skipping = not data.endswith(b"\n")
        return data[:keep], after

    def _notes(self, notes: list[str], now: float) -> None:
        if notes:
            ms = self._stamp(now)
            self._write([encode(ms, note.encode()) for note in notes])

    def _stamp(self, now: float) -> int:
        self._last_ms = max(self._last_ms, int(now * 1000))
        return self._last_ms

    def _line(self, line: bytes, now: float, out: list[bytes]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        ms = self._stamp(now)
        while len(line) > self._max:
            cut = _cut(line, self._max)
            out.append(encode(ms, line[:cut]))
            line = line[cut:]
        out.append(encode(ms, line))

    def _write(self, records: list[bytes]) -> None:
        if not records or self._fd < 0:
            return
        view = memoryview(b"".join(records))
        size = len(view)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
            if self._bound is not None:
                self._bound.wrote(self._fd, size)
        except OSError as exc:  # disk full, file system gone: drop the output, keep the worker running
            print(f"zeroscale: cannot write worker output: {exc}", file=sys.stderr, flush=True)


def open_stream(log_path: str) -> int:
    """Open (creating it and its directory) a stream file for appending; /dev/null when that fails."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    try:
        try:
            return os.open(log_path, flags, 0o644)
        except FileNotFoundError:  # the first stream of its directory (or retention removed it)
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            return os.open(log_path, flags, 0o644)
    except OSError as exc:
        print(f"zeroscale: cannot open {log_path}: {exc}", file=sys.stderr, flush=True)
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


def recorder(fd: int, limit: int) -> LineRecorder:
    """A recorder into ``fd`` keeping at most ``limit`` bytes of output a minute (0: all of it)."""
    if limit <= 0:
        return LineRecorder(fd)
    return LineRecorder(fd, cap=OutputCap(limit), bound=StreamBound.for_limit(limit))


class _Pipe:
    """The read end of one output pipe (non-blocking) and the recorder its lines go to."""

    def __init__(
        self, log_path: str, clock: Callable[[], float], fd: int | None = None, limit: int = 0
    ) -> None:
        """``fd``: the stream file, opened already (it is owned from here on); else ``log_path`` is opened.
        ``limit``: bytes of output a minute kept (0: no limit)."""
        self.recorder = recorder(open_stream(log_path) if fd is None else fd, limit)
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._clock = clock

    def read(self) -> bool:
        """Record what is there (one read); False at EOF."""
        try:
            data = os.read(self.read_fd, _READ_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if data:
            self.recorder.feed(data, self._clock())
        return bool(data)

    def drain(self) -> bool:
        """Record everything in the pipe; False at EOF. When something else still holds the write end (a
        grandchild), the partial line is written now: its writer is gone."""
        while True:
            try:
                data = os.read(self.read_fd, _READ_SIZE)
            except BlockingIOError:
                self.recorder.flush(self._clock())
                return True
            except OSError:
                data = b""
            if not data:
                return False
            self.recorder.feed(data, self._clock())

    def close(self) -> None:
        self.recorder.close(self._clock())
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Captures:
    """Every child's output pipe and its recorder, driven by a single-threaded selector loop (the zygote).

    ``open`` before forking (the child dup2s the returned write end onto fds 1 and 2 and closes
    ``inherited()``), ``started`` after; ``read`` when a pipe is readable; ``exited`` before reporting a
    child's exit; ``flush_due`` on every turn of the loop, which waits at most ``timeout``."""

    def __init__(
        self, selector: selectors.BaseSelector, clock: Callable[[], float] = time.time, *, limit: int = 0
    ) -> None:
        self._sel = selector
        self._clock = clock
        self._limit = limit  # bytes of each child's output a minute kept (0: no limit)
        self._pipes: dict[int, _Pipe] = {}  # read end -> pipe
        self._by_pid: dict[int, int] = {}  # child pid -> read end
        self._paused: set[int] = set()  # read ends not read until retargeted (``pause``)

    def open(self, log_path: str, fd: int | None = None) -> tuple[int, int]:
        """A new pipe whose output goes to ``log_path`` (``fd``: that file, opened by the server, owned from
        here on): returns (read end, write end)."""
        pipe = _Pipe(log_path, self._clock, fd, self._limit)
        self._pipes[pipe.read_fd] = pipe
        self._sel.register(pipe.read_fd, selectors.EVENT_READ, "out")
        return pipe.read_fd, pipe.write_fd

    def retarget(self, read_fd: int, fd: int) -> None:
        """The pipe at ``read_fd`` now records into ``fd`` (owned from here on); the stream it had is closed,
        and a paused pipe is read again. A zygote's spare gets its log file this way once it has a request."""
        pipe = self._pipes[read_fd]
        pipe.recorder.close(self._clock())
        pipe.recorder = recorder(fd, self._limit)
        if read_fd in self._paused:
            self._paused.discard(read_fd)
            self._sel.register(read_fd, selectors.EVENT_READ, "out")

    def pause(self, read_fd: int) -> None:
        """Leave what comes in the pipe at ``read_fd`` there until it is retargeted (a spare given to the
        server: what it prints once the server wrote it a request is its worker's, and the zygote hears of
        that request after the spare)."""
        self._sel.unregister(read_fd)
        self._paused.add(read_fd)

    def inherited(self) -> list[int]:
        """The descriptors a new child must close: every pipe's read end and stream file."""
        return [fd for p in self._pipes.values() for fd in (p.read_fd, p.recorder.fd) if fd >= 0]

    def started(self, pid: int, read_fd: int, write_fd: int) -> None:
        os.close(write_fd)
        self._pipes[read_fd].write_fd = -1
        self._by_pid[pid] = read_fd

    def abandon(self, read_fd: int, write_fd: int) -> None:
        """The fork failed: forget the pipe."""
        self._close(read_fd)

    def read(self, fd: int) -> None:
        pipe = self._pipes.get(fd)
        if pipe is not None and not pipe.read():
            self._close(fd)

    def exited(self, pid: int) -> None:
        """The child is gone: record everything it left in its pipe (closing it at EOF)."""
        fd = self._by_pid.pop(pid, None)
        pipe = self._pipes.get(fd) if fd is not None else None
        if fd is not None and pipe is not None and not pipe.drain():
            self._close(fd)

    def timeout(self) -> float | None:
        deadlines = [d for p in self._pipes.values() if (d := p.recorder.deadline) is not None]
        return max(0.0, min(deadlines) - self._clock()) if deadlines else None

    def flush_due(self) -> None:
        now = self._clock()
        for pipe in self._pipes.values():
            deadline = pipe.recorder.deadline
            if deadline is not None and deadline <= now:
                pipe.recorder.due(now)

    def close_all(self) -> None:
        for fd, pipe in list(self._pipes.items()):
            pipe.drain()
            self._close(fd)

    def _close(self, fd: int) -> None:
        pipe = self._pipes.pop(fd, None)
        if fd in self._paused:
            self._paused.discard(fd)
        else:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(fd)
        if pipe is not None:
            pipe.close()


class LoopCapture:
    """The same capture for a process the server starts itself (not forked by a zygote), read on the asyncio
    event loop: pass ``write_fd`` as the process's stdout and stderr, call ``spawned()`` once it started (or
    ``close()`` if it did not), and ``exited()`` when it is gone, before reporting the exit, so that its last
    lines are in the file first."""

    def __init__(self, log_path: str, clock: Callable[[], float] = time.time, *, limit: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._pipe = _Pipe(log_path, clock, limit=limit)
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the wall-clock time it is due at
        self._open = True
        self._loop.add_reader(self._pipe.read_fd, self._read)

    @property
    def write_fd(self) -> int:
        return self._pipe.write_fd

    def spawned(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._pipe.write_fd)
        self._pipe.write_fd = -1

    def exited(self) -> None:
        if self._open and not self._pipe.drain():
            self.close()

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._loop.remove_reader(self._pipe.read_fd)
        if self._timer is not None:
            self._timer.cancel()
        self._pipe.close()

    def _read(self) -> None:
        if not self._pipe.read():
            self.close()
            return
        self._arm()

    def _arm(self) -> None:
        deadline = self._pipe.recorder.deadline
        if deadline is None or (self._timer is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_later(max(0.0, deadline - self._clock()), self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._open:
            self._pipe.recorder.due(self._clock())
            self._arm()

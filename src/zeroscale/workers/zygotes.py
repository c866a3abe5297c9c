"""The server's side of the zygote protocol: start a fork server per runtime (``forkserver.py``, the
zygote's side), ask it for workers, hear exits.

Each fork request carries the child's log file, opened here (``SCM_RIGHTS`` on the control socket): a
template is confined like a worker and may not open files in the log directory itself.

A zygote's spare (``forkserver.py``) waits on pipes made here (``channel``): a fork request goes straight to
it, and its ready byte comes straight back, without waking the zygote on the way (``_give_spare``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroscale.workers.capture import strip_stamps
from zeroscale.workers.environment import zygote_environment

ExitCallback = Callable[[int, int], None]
UpCallback = Callable[[int], None]


class ZygoteError(Exception):
    pass


class TemplateRefused(ZygoteError):
    """A template that would not fork: loading its model left other threads, a child process or open
    descriptors in its process (``forkserver.refuse_unless_forkable``). Another try with the same model
    would refuse again."""


# A request written to a spare's pipe at once (an empty pipe holds 64 KiB); a larger one goes to the zygote.
_DIRECT_MAX = 32 * 1024
# What of a fork request the zygote itself reads (the rest, the environment above all, only the child).
_ZYGOTE_READS = ("log_path", "sandbox")


def request_file(data: bytes) -> int:
    """A memory file holding ``data`` (a child's request), for the zygote to pass on to the child it forks
    unread. Were the zygote to parse the request itself, the environment in it (a model's ``Environment``,
    which may hold its tenant's secrets) would stay behind in the zygote's heap after it is freed, and every
    worker it forks later, of any endpoint of its runtime, would inherit that heap (measured: another
    endpoint's worker found the value in its ``[heap]`` by reading its own memory)."""
    fd = os.memfd_create("zeroscale-request", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class _Spare:
    """A zygote's child waiting for its request on a pipe of ours."""

    pid: int
    request_w: int
    ready_r: int


class Zygote:
    """A running ``python -m zeroscale.workers.forkserver RUNTIME`` and the socket that drives it."""

    def __init__(
        self,
        runtime: str,
        log_path: Path,
        on_exit: ExitCallback,
        on_up: UpCallback | None = None,
        *,
        log_limit: int = 0,
    ) -> None:
        self.runtime = runtime
        self._log_limit = log_limit  # bytes of each worker's output a minute kept in its log (0: all)
        self._log_path = log_path
        self._on_exit = on_exit
        self._on_up = on_up  # a worker it forked listens on its socket
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sending = asyncio.Lock()  # one fork request on its way at a time (``_send_with_fd``)
        self._fd_sock: socket.socket | None = None  # a duplicate of the control socket, to pass descriptors
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._seq = 0
        self._children: set[int] = set()
        self.pid = 0  # a template's process (a zygote's is its subprocess)
        # The pipes given for its next spare (id, our request end, our ready end), then the spare on them.
        self._channel: tuple[str, int, int] | None = None
        self._spare: _Spare | None = None
        self._ordering: asyncio.Future[None] | None = None
        self._retired: set[int] = set()  # spares we closed: their exits are no worker's

    @property
    def alive(self) -> bool:
        if self._writer is None:
            return False
        return self._proc is None or self._proc.returncode is None  # no process of ours: a template

    async def attach(self, path: str, timeout_s: float, gone: Callable[[], bool]) -> None:
        """Drive a template (a zygote's child that loaded one model) through the socket it listens on;
        ``gone()`` says the template process already exited (its model did not load)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, path)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if gone() or loop.time() > deadline:
                    raise ZygoteError(f"the template did not come up\n{tail(self._log_path)}") from None
                await asyncio.sleep(0.005)
                continue
            except BaseException:
                sock.close()
                raise
            with contextlib.suppress(OSError):
                os.unlink(path)  # connected: nobody else may
            reader = await self._connect(sock)
            break
        self._ready = loop.create_future()
        self._reader_task = asyncio.create_task(self._read(reader))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), max(0.1, deadline - loop.time()))
        except (TimeoutError, ZygoteError) as exc:
            await self.close()
            raise ZygoteError(f"the template did not answer: {exc or 'timed out'}") from exc

    async def start(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        env = zygote_environment(os.environ)  # never the server's secrets (``workers/environment.py``)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "zeroscale.workers.forkserver",
                self.runtime,
                str(theirs.fileno()),
                str(self._log_limit),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        theirs.close()
        reader = await self._connect(ours)
        self._ready = loop.create_future()
        self._reader_task = asyncio.create_task(self._read(reader))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except (TimeoutError, ZygoteError) as exc:
            await self.close()
            output = tail(self._log_path)
            raise ZygoteError(
                f"the {self.runtime} runtime failed to start: {exc or 'timed out'}\n{output}"
            ) from exc
        self._order_spare()

    async def _connect(self, sock: socket.socket) -> asyncio.StreamReader:
        self._fd_sock = socket.socket(fileno=os.dup(sock.fileno()))
        self._fd_sock.setblocking(False)
        reader, self._writer = await asyncio.open_unix_connection(sock=sock)
        # The writer holds only the tail of a request the socket took part of (``_send_with_fd``): drain()
        # then waits until it is all sent, not merely below a high-water mark.
        self._writer.transport.set_write_buffer_limits(high=0)
        return reader

    async def fork(self, request: dict[str, Any], log_fd: int, op: str = "fork") -> int:
        """Fork a worker (or, ``op`` "template", a template) whose output goes to ``log_fd``; its pid."""
        if not self.alive or self._writer is None:
            raise ZygoteError(f"the {self.runtime} zygote is not running")
        if op == "fork" and self._spare is not None:
            pid = await self._give_spare(request, log_fd)
            if pid:
                return pid
        self._seq += 1
        rid = str(self._seq)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        # The zygote reads only what it needs to fork; the child reads the whole request (its environment:
        # the model's, maybe a tenant's secrets) from a file of its own after the fork (``request_file``).
        head = {key: request[key] for key in _ZYGOTE_READS if key in request}
        line = json.dumps(
            {"op": op, "id": rid, "runtime": self.runtime, "log_fd": True, "request_fd": True, **head}
        )
        body = request_file(json.dumps({"op": op, "id": rid, "runtime": self.runtime, **request}).encode())
        try:
            await self._send_with_fd(line.encode() + b"\n", log_fd, body)
        except BaseException:
            self._pending.pop(rid, None)
            raise
        finally:
            os.close(body)
        return await fut

    async def _give_spare(self, request: dict[str, Any], log_fd: int) -> int:
        """Write ``request`` to the spare and hear its ready byte here; tell the zygote its log file. Its
        pid, or 0 where it cannot take it (the request too large for its pipe at once: it waits for the
        next; or it is gone)."""
        spare = self._spare
        assert spare is not None
        self._seq += 1
        line = {"op": "fork", "id": str(self._seq), "runtime": self.runtime, "log_fd": True, **request}
        data = json.dumps(line).encode()
        if len(data) > _DIRECT_MAX:
            return 0
        self._spare = None
        try:
            written = os.write(spare.request_w, data)  # an empty pipe takes it whole
        except OSError:  # it died waiting: its exit is on its way
            written = -1
        if written != len(data):  # (a short write never happens to an empty pipe)
            self._retire(spare)
            self._order_spare()
            return 0
        os.close(spare.request_w)
        loop = asyncio.get_running_loop()
        loop.add_reader(spare.ready_r, self._spare_ready, spare)
        self._children.add(spare.pid)
        took = {"op": "took", "pid": spare.pid, "log_fd": True, "log_path": request.get("log_path", "")}
        if request.get("sandbox") is not None:
            took["sandbox"] = request["sandbox"]
        await self._send_with_fd(json.dumps(took).encode() + b"\n", log_fd)
        self._order_spare()
        return spare.pid

    def _spare_ready(self, spare: _Spare) -> None:
        """The ready pipe of a spare we gave a request: a byte, its socket listens; end of file, it exited
        first (the zygote reports that)."""
        asyncio.get_running_loop().remove_reader(spare.ready_r)
        try:
            data = os.read(spare.ready_r, 1)
        except OSError:
            data = b""
        os.close(spare.ready_r)
        if data and self._on_up is not None:
            self._on_up(spare.pid)

    def _order_spare(self) -> None:
        """Give the zygote the pipes of its next spare (one at a time; the zygote forks it once requests
        pause)."""
        if self._proc is None or not self.alive or self._channel is not None or self._spare is not None:
            return
        if self._ordering is not None and not self._ordering.done():
            return
        request_r, request_w = os.pipe()
        ready_r, ready_w = os.pipe()
        os.set_blocking(request_w, False)
        os.set_blocking(ready_r, False)
        self._seq += 1
        self._channel = (str(self._seq), request_w, ready_r)
        self._ordering = asyncio.ensure_future(self._send_channel(str(self._seq), request_r, ready_w))

    async def _send_channel(self, rid: str, request_r: int, ready_w: int) -> None:
        data = json.dumps({"op": "channel", "id": rid}).encode() + b"\n"
        try:
            await self._send_with_fd(data, request_r, ready_w)
        except ZygoteError:
            self._drop_channel()
        finally:
            os.close(request_r)
            os.close(ready_w)

    def _drop_channel(self) -> None:
        if self._channel is not None:
            for fd in self._channel[1:]:
                os.close(fd)
            self._channel = None

    def _retire(self, spare: _Spare) -> None:
        """Close our ends of a spare's pipes (it reads end of file and exits, if it had not); its exit is
        not a worker's."""
        self._retired.add(spare.pid)
        for fd in (spare.request_w, spare.ready_r):
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _send_with_fd(self, data: bytes, fd: int, *more: int) -> None:
        """``data`` with ``fd`` attached, after whatever the stream writer still holds of the request before
        it: one request at a time, whole, in order (two sent while the socket is full must not interleave)."""
        async with self._sending:
            if self._writer is not None:  # with no high-water mark, drain() waits until the writer is empty
                with contextlib.suppress(OSError):  # the zygote is gone: send_fds below says so
                    await self._writer.drain()
            if self._writer is None or self._fd_sock is None:
                raise ZygoteError(f"the {self.runtime} zygote is not running")
            try:
                while True:
                    try:
                        sent = socket.send_fds(self._fd_sock, [data], [fd, *more])
                        break
                    except BlockingIOError:  # its socket buffer is full: it is busy forking
                        await self._writable(self._fd_sock)
            except OSError as exc:
                raise ZygoteError(f"the {self.runtime} zygote is not running: {exc}") from exc
            if sent < len(data):
                self._writer.write(data[sent:])

    @staticmethod
    async def _writable(sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def writable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(sock.fileno(), writable)
        try:
            await ready
        finally:
            loop.remove_writer(sock.fileno())

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                op = msg.get("op")
                if op == "ready" and self._ready and not self._ready.done():
                    self._ready.set_result(None)
                elif op == "forked":
                    pid = int(msg["pid"])
                    self._children.add(pid)
                    fut = self._pending.pop(msg["id"], None)
                    if fut and not fut.done():
                        fut.set_result(pid)
                elif op == "up" and self._on_up is not None:
                    self._on_up(int(msg["pid"]))
                elif op == "spare":
                    self._spared(str(msg["id"]), int(msg["pid"]))
                elif op == "exit":
                    pid = int(msg["pid"])
                    if self._spare is not None and pid == self._spare.pid:  # died waiting: another
                        self._retire(self._spare)
                        self._spare = None
                        self._order_spare()
                    if pid in self._retired:
                        self._retired.discard(pid)
                        continue
                    self._children.discard(pid)
                    self._on_exit(pid, int(msg["status"]))
        finally:
            err = ZygoteError(f"the {self.runtime} zygote exited")
            if self._ready and not self._ready.done():
                self._ready.set_exception(err)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            self._close_writer()
            self._drop_channel()
            if self._spare is not None:
                self._retire(self._spare)
                self._spare = None
            # The kernel kills a dead zygote's children (their parent-death signal); nobody will report it.
            for pid in sorted(self._children):
                self._on_exit(pid, -9)
            self._children.clear()

    def _spared(self, rid: str, pid: int) -> None:
        """The zygote forked a spare on the pipes ``rid``: ours to give a request."""
        if self._channel is None or self._channel[0] != rid:
            return
        _, request_w, ready_r = self._channel
        self._channel = None
        self._spare = _Spare(pid, request_w, ready_r)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fd_sock is not None:  # the last descriptor of the socket: the other side reads EOF
            self._fd_sock.close()
            self._fd_sock = None

    async def close(self) -> None:
        self._close_writer()
        if self._ordering is not None:
            self._ordering.cancel()
        self._drop_channel()
        if self._spare is not None:
            self._retire(self._spare)
            self._spare = None
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task


def _tail_bytes(path: Path, size: int = 8192) -> bytes:
    """The last ``size`` bytes of a file from a line start on (the first, cut line dropped)."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - size))
            data = f.read()
    except OSError:
        return b""
    if end > size:
        data = data[data.find(b"\n") + 1 :]
    return data


def tail(path: Path, lines: int = 20) -> str:
    """The last lines a process printed: a stream file's ``workers.capture`` records with the stamps
    dropped, or a plain log (a zygote's own) as it is."""
    text = strip_stamps(_tail_bytes(path)).decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])

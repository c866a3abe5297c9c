"""The zygote's side of the zygote protocol: a fork server for one runtime that imports the framework
once, then forks a worker per request (``zygotes.py`` is the server's side).

Runs as its own process (``python -m zeroscale.workers.forkserver RUNTIME FD [LOG_LIMIT]``; LOG_LIMIT: the
bytes of each child's output a minute kept in its log, 0 or absent for all) and speaks JSON lines over the
socket whose fd number is its second argument:

    -> {"op": "fork", "id": ..., "log_path": ..., "sandbox": {...}, "log_fd": true, "request_fd": true}
                                 two descriptors come with the line (SCM_RIGHTS): the log file (a template
                                 may not open it) and a memory file holding the whole request ("model_dir",
                                 "socket_path", "env": {...}, ...), which only the child reads, after the fork
    <- {"op": "forked", "id": ..., "pid": ...}
    <- {"op": "up", "pid": ...}          its socket listens (the worker wrote a byte on a pipe from here)
    <- {"op": "exit", "pid": ..., "status": <exit code, or -signal>}
    -> {"op": "template", "id": ..., "log_path": ..., "log_fd": true, "request_fd": true}   likewise; its
                                         request file holds "model_dir", "ctl_path", "env", ...
    -> {"op": "channel", "id": ...}     with two descriptors: the read end of a request pipe and the write
                                         end of a ready pipe, for the next spare (the server keeps the others)
    <- {"op": "spare", "id": ..., "pid": ...}   the spare forked on that channel waits for its request
    -> {"op": "took", "pid": ..., "log_fd": true, "log_path": ..., "sandbox": {...}}   the server wrote a
                                         request to that spare itself; here is its log file

The zygote never reads a request's environment (the model's ``Environment``, which may hold its tenant's
secrets): what it parsed would stay in its heap, freed but not erased, and every child forked later, of any
endpoint of its runtime, would inherit it. A spare reads its request from the server's pipe itself, and
any other child from the memory file that came with its fork request. The zygote itself starts with an
allowlist of the server's environment (``workers/environment.py``).

A template is a child that loads one model and then runs this same loop on a socket it listens on at
``ctl_path``: its children are replicas that serve the already loaded model (scale-out without a model load).

A zygote keeps one child forked ahead of the next request, a spare (named ``zs-spare`` while it waits): it
did the set-up every child does (death signal, descriptors, signals, session, output pipe), ran the
runtime's ``warm`` (its own throwaway model through the default load and predict: the pages that path
writes are copied now, not while a request waits; and the handler contract's and the container server's,
step by step until a request comes) and waits on a pipe. A cold start does not wait for fork()
(milliseconds in a parent of a hundred MB of framework) or that set-up. The spare's two pipes are the
server's (``channel``): the server writes its request straight to it and hears its ready byte itself, so
neither passes through the zygote (each hop through it cost a cold start ~0.3-0.7 ms here: a process woken
from sleep); it then tells the zygote which log file the spare's output goes to (``took``). Until then the
zygote does not read that output (the spare writes nothing before its request: its warm-up's output goes
to /dev/null). The zygote forks the next spare once requests pause and the server gave it a channel.

What forking breaks, and how it is handled here:
- threads: a template forks only while it is the one thread of its process (``thread_count``), else it
  refuses to be one (its pool's workers keep loading the model themselves);
- thread pools: the zygote starts none. BLAS/OpenMP pools are pinned to one thread through the environment
  before the framework is imported, so no pool exists at fork time (a worker serves one request at a time);
- random state: the child reseeds ``random``, numpy and torch (``runtimes.worker.reseed``; a spare before it
  waits);
- sockets and pipes: the child closes the control socket before running user code;
- output: the child's stdout and stderr are a pipe the zygote reads, turning each line into a timestamped
  record of ``log_path`` (``workers.capture``), so a crash or SIGKILL loses nothing it printed;
- orphans: the child asks the kernel for SIGKILL when the zygote dies, and the zygote asks the same of the
  server, so no worker outlives the server.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import gc
import json
import os
import select
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from zeroscale.workers import sandbox
from zeroscale.workers.capture import Captures, open_stream

if TYPE_CHECKING:
    from zeroscale.runtimes.registry import Runtime

# Set before any framework import: one thread per worker, no pools to break across fork(). ONNX Runtime's
# telemetry uploader is a thread its import starts (``runtimes/onnx.py``): off, the import starts none.
THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
    "ORT_DISABLE_TELEMETRY": "1",
}

_log_limit = 0  # bytes of a child's output a minute kept in its log (0: all); set by ``main``, kept by forks
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
SPARE_NAME = b"zs-spare"  # a spare's name (/proc/PID/comm) while it waits for a request
SPARE_AFTER_S = 0.05  # a zygote forks its next spare once no request came for this long
SPARE_RETRY_S = 1.0  # after a spare died waiting
_LANDLOCK_ABI = sandbox.abi_version()
TEMPLATE_ACCEPT_TIMEOUT_S = 60.0
# A template whose model's load left other threads, a child process or open descriptors: forking it is unsafe
EXIT_UNFORKABLE_TEMPLATE = 4


def thread_count() -> int | None:
    """The threads of this process (``/proc/self/task``; None where that cannot be read)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


# A template's replica: the read end of a pipe only its template holds the write end of. A replica runs as
# a uid of its own and its template holds no CAP_KILL, so the kernel's parent-death signal (sent with the
# dying template's credentials) is refused: the replica of a template that died (the server SIGKILLed:
# zygote, then template) would serve on, orphaned, for ever. EOF on this pipe is its parent-death signal.
_lifeline: int | None = None


def _watch_lifeline(fd: int) -> None:
    """In a replica, once confined (the thread inherits its Landlock domain and seccomp filter): wait for
    the template's end (EOF: its write end closed with it), then die at once."""

    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="zs-lifeline", daemon=True).start()


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):  # non-Linux: a no-op
        sandbox.libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _detach(
    ctl: socket.socket,
    wake_r: int,
    wake_w: int,
    zygote_pid: int,
    out_fd: int,
    inherited: list[int],
    hold_output: bool = False,
    lifeline: tuple[int, int] | None = None,
) -> int:
    """A new child's set-up before it knows what it will run: die with the zygote, drop the zygote's
    descriptors and signal handlers, a session of its own, its output into its pipe. ``hold_output`` (a
    spare): its output goes to /dev/null until its request comes; returns the pipe, kept (else -1)."""
    die_with_parent()
    if os.getppid() != zygote_pid:  # the zygote died before the death signal was armed: nobody to obey
        raise SystemExit(70)
    global _lifeline
    if lifeline is not None:  # a template's: keep the read end, never the write end
        os.close(lifeline[1])
        _lifeline = lifeline[0]
    ctl.close()
    os.close(wake_r)
    os.close(wake_w)
    for fd in inherited:  # the other children's pipes and stream files, the selector
        os.close(fd)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    output = devnull if hold_output else out_fd
    os.dup2(output, 1)
    os.dup2(output, 2)
    if not hold_output:
        os.close(out_fd)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    return out_fd if hold_output else -1


def _output_to(fd: int) -> None:
    """What the process prints from now on goes to ``fd`` (a spare's pipe, once it has its request)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _await_request(request_fd: int, warm: Callable[[Callable[[], bool]], None] | None) -> dict[str, Any]:
    """A spare waits here, named ``zs-spare``, for the request the zygote gives it (end of file: retired);
    first it warms up (``_spare_warm_up``: its output goes nowhere), step by step until a request is there."""
    name = _comm()
    _set_comm(SPARE_NAME)
    if warm is not None:
        with contextlib.suppress(Exception):  # a spare that could not warm up serves all the same
            warm(lambda: bool(select.select([request_fd], [], [], 0)[0]))
    chunks = []
    while chunk := os.read(request_fd, 65536):
        chunks.append(chunk)
    os.close(request_fd)
    if not chunks:
        raise SystemExit(0)
    _set_comm(name)
    req: dict[str, Any] = json.loads(b"".join(chunks))
    return req


def _read_request(fd: int) -> dict[str, Any]:
    """The whole request from the memory file the server wrote it to (``zygotes.request_file``)."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    os.close(fd)
    req: dict[str, Any] = json.loads(b"".join(chunks))
    return req


def _become(req: dict[str, Any], handler: Any, ready_fd: int | None) -> NoReturn:
    """The child's set-up for its request (environment, directory, sandbox), then the worker or template."""
    _set_environment(req["env"])
    os.chdir(req["model_dir"])
    # A template's groups, joined before its model's code runs: what it and every process that code starts
    # hold is counted from the first page (a group joined later counts neither what came before nor a
    # process forked meanwhile), and the server ends what is left in them with the template.
    for group in req.get("cgroups") or ():
        with open(os.path.join(group, "cgroup.procs"), "w") as procs:
            procs.write("0")
    if req.get("sandbox") is not None:  # before any of the model's code runs (a pickle is code)
        sandbox.confine(sandbox.Policy.from_dict(req["sandbox"]), _LANDLOCK_ABI)
    else:  # a spare's early network namespace and Landlock ruleset: not wanted unconfined
        sandbox.settle_net_ns(False)
        sandbox.discard_prepared()
    if _lifeline is not None:  # confined first: the watching thread is held to the same rules
        _watch_lifeline(_lifeline)
    gc.unfreeze()
    if req.get("op") == "template":
        _template(req)
    from zeroscale.runtimes.worker import run_worker

    run_worker(
        runtime=req["runtime"],
        model_dir=req["model_dir"],
        socket_path=req["socket_path"],
        handler=handler,
        ready_fd=ready_fd,
        rehearsal=bool(req.get("rehearse")),
    )


def _set_environment(wanted: dict[str, str]) -> None:
    """Make the environment exactly ``wanted``, changing only what differs: each change is a ``putenv`` or
    ``unsetenv`` (5-15 us in a fresh fork), and a spare kept only what every worker gets."""
    for key in [k for k in os.environ if k not in wanted]:
        del os.environ[key]
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _keep_common_environment() -> None:
    """A spare's environment cut to what the server gives every forked worker (``THREAD_ENV`` and
    ``PATH``, at the zygote's values): ``_set_environment`` then changes only the request's own."""
    _set_environment({k: v for k, v in os.environ.items() if k in THREAD_ENV or k == "PATH"})


def _child(
    ctl: socket.socket,
    wake_r: int,
    wake_w: int,
    zygote_pid: int,
    out_fd: int,
    inherited: list[int],
    *,
    req: dict[str, Any] | None = None,
    request_fd: int = -1,
    handler: Any = None,
    ready_fd: int | None = None,
    warm: Callable[[Callable[[], bool]], None] | None = None,
    lifeline: tuple[int, int] | None = None,
) -> NoReturn:
    """A forked child: for the request the server wrote to ``request_fd`` (a memory file; ``req`` is what
    the zygote read of it), or, a spare (``req`` None), for the request it reads from ``request_fd`` (a
    pipe) when the server gives it one."""
    code = 70
    try:
        held = _detach(
            ctl, wake_r, wake_w, zygote_pid, out_fd, inherited, hold_output=req is None, lifeline=lifeline
        )
        if req is not None:
            req = _read_request(request_fd)
        else:
            req = _await_request(request_fd, warm)
            _output_to(held)
            if req.get("op") != "fork" and ready_fd is not None:  # a template says it is up otherwise
                os.close(ready_fd)
                ready_fd = None
        _become(req, handler, ready_fd)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 3
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _comm() -> bytes:
    try:
        with open("/proc/self/comm", "rb") as f:
            return f.read().strip()
    except OSError:
        return b"python"


def _set_comm(name: bytes) -> None:
    with contextlib.suppress(OSError, AttributeError):  # non-Linux: no name
        sandbox.libc().prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)


def open_descriptors() -> set[int]:
    """This process's open file descriptors (``/proc/self/fd``, less the one that listing it used)."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if _is_open(fd)}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _children() -> list[int]:
    """This process's children (``/proc/self/task/*/children``; exited ones are reaped on the way)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
            pids += [int(pid) for pid in f.read().split()]
    return pids


def refuse_unless_forkable(before: set[int] | None = None) -> None:
    """Exit (``EXIT_UNFORKABLE_TEMPLATE``) unless this process, a template that just loaded its model, can be
    forked into replicas that each serve alone: it runs one thread, has no child, and (``before``: its
    descriptors before the load) holds no descriptor the load opened. A child has only the thread that
    called fork(): a lock another thread held, or a condition variable it waited on, stays taken in every
    replica (ONNX Runtime's telemetry thread left children hanging in exit). A file, socket or pipe the load
    left open would be shared by every replica (one offset, one connection's stream), and so would a child
    process it started. Once the model is loaded only the fork loop runs: one thread now, one at every
    fork."""
    problems = []
    threads = thread_count()
    if threads is not None and threads > 1:
        problems.append(f"{threads} threads")
    opened = sorted(open_descriptors() - before) if before is not None else []
    if opened:
        named = ", ".join(_describe(fd) for fd in opened[:3]) + (", ..." if len(opened) > 3 else "")
        problems.append(f"{len(opened)} open file descriptor{'s' if len(opened) > 1 else ''} ({named})")
    children = _children()
    if children:
        problems.append(f"{len(children)} child process{'es' if len(children) > 1 else ''}")
    if problems:
        for pid in children:  # not left running after this template: they are its model's
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        print(
            f"zeroscale: no template of this model: loading it left {' and '.join(problems)} in the process, "
            "which is not safe to fork; its workers load the model themselves",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(EXIT_UNFORKABLE_TEMPLATE)


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return str(fd)


def _template(req: dict[str, Any]) -> NoReturn:
    """Become a template: load the model once, then fork ready replicas of it for the server (scale-out
    without loading the model again). Driven like a zygote, through the socket it listens on."""
    from zeroscale.runtimes.worker import load_handler

    before = open_descriptors()
    handler = load_handler(req["runtime"], req["model_dir"])
    refuse_unless_forkable(before)
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(req["ctl_path"])
    listener.listen(1)
    listener.settimeout(TEMPLATE_ACCEPT_TIMEOUT_S)
    ctl, _ = listener.accept()
    listener.close()
    with contextlib.suppress(OSError):  # a confined template may not: the server removes it too
        os.unlink(req["ctl_path"])
    ctl.settimeout(None)
    serve(req["runtime"], ctl, handler=handler)
    raise SystemExit(0)


def _send(ctl: socket.socket, msg: dict[str, Any]) -> None:
    ctl.sendall(json.dumps(msg).encode() + b"\n")


class _ForkLoop:
    """The fork loop's state: the control socket, the children's output and ready pipes, the spare."""

    def __init__(
        self,
        ctl: socket.socket,
        handler: Any,
        spares: bool,
        warm: Callable[[Callable[[], bool]], None] | None = None,
    ) -> None:
        self.ctl = ctl
        self.handler = handler
        self.warm = warm  # what a spare runs before it waits (the runtime's)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel = selectors.DefaultSelector()
        self.sel.register(ctl, selectors.EVENT_READ, "ctl")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "chld")
        self.captures = Captures(self.sel, limit=_log_limit)
        self.readying: dict[int, int] = {}  # read end of a worker's ready pipe -> its pid, until up or gone
        self.passed: collections.deque[int] = collections.deque()  # descriptors the server sent, in order
        self.pid = os.getpid()
        self.spares = spares
        self.spare_at: float | None = time.monotonic() if spares else None  # when to fork the next one
        # The pipes the server gave for the next spare: (its id, the request pipe's read end, the ready
        # pipe's write end); and the spare forked on them, until the server says it took it: pid -> output.
        self.channel: tuple[str, int, int] | None = None
        self.offered: dict[int, int] = {}
        # A template's children get a lifeline (``_lifeline``); a zygote's need none (a zygote runs as the
        # server's user, whose parent-death signal reaches any uid), and a template must stay one thread.
        self.lifeline = os.pipe() if handler is not None else None

    def run(self) -> None:
        buf = b""
        _send(self.ctl, {"op": "ready", "pid": self.pid})
        while True:
            for key, _ in self.sel.select(self._timeout()):
                if key.data == "chld":
                    os.read(self.wake_r, 4096)
                    self._reap()
                elif key.data == "out":
                    self.captures.read(key.fd)
                elif key.data == "up":
                    self._up(key.fd)
                else:
                    data, fds, _, _ = socket.recv_fds(self.ctl, 65536, 16, socket.MSG_CMSG_CLOEXEC)
                    self.passed.extend(fds)
                    if not data:
                        self._drop_channel()
                        self.captures.close_all()
                        return
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        self._request(json.loads(line))
            self.captures.flush_due()
            if self._spare_due():
                self.spare_at = None
                self._offer()

    def _spare_due(self) -> bool:
        return (
            self.channel is not None
            and not self.offered
            and self.spare_at is not None
            and time.monotonic() >= self.spare_at
        )

    def _timeout(self) -> float | None:
        timeout = self.captures.timeout()
        if self.channel is not None and not self.offered and self.spare_at is not None:
            due = max(0.0, self.spare_at - time.monotonic())
            timeout = due if timeout is None else min(timeout, due)
        return timeout

    def _request(self, req: dict[str, Any]) -> None:
        op = req.get("op")
        if op == "channel":
            fds = [self.passed.popleft() for _ in range(min(2, len(self.passed)))]
            self._drop_channel()
            if len(fds) == 2 and self.spares:
                self.channel = (str(req["id"]), fds[0], fds[1])
            else:
                for fd in fds:
                    os.close(fd)
            return
        log_fd = self.passed.popleft() if req.get("log_fd") and self.passed else None
        request_fd = self.passed.popleft() if req.get("request_fd") and self.passed else None
        if op == "took":
            self._took(req, log_fd)
            return
        if op not in ("fork", "template") or request_fd is None:
            for passed in (log_fd, request_fd):
                if passed is not None:
                    os.close(passed)
            return
        if self.spares:
            self.spare_at = time.monotonic() + SPARE_AFTER_S  # the next spare after a quiet moment
        try:
            self._fork(req, log_fd, request_file=request_fd)
        finally:
            os.close(request_fd)  # the child's now (its request, unread here)
        if req.get("sandbox"):  # for the spares forked from now on
            sandbox.note_common(req["sandbox"])

    def _offer(self) -> None:
        """Fork a spare on the server's channel and say so; the server writes its request itself."""
        assert self.channel is not None
        rid, request_r, ready_w = self.channel
        pid = self._fork(None, None, channel=(request_r, ready_w))
        if pid is None:  # fork() failed: the channel waits for another try
            self.spare_at = time.monotonic() + SPARE_RETRY_S
            return
        self.channel = None
        _send(self.ctl, {"op": "spare", "id": rid, "pid": pid})

    def _took(self, req: dict[str, Any], log_fd: int | None) -> None:
        """The server wrote a request to the spare ``req["pid"]``: its output goes to its log file now."""
        out_r = self.offered.pop(int(req["pid"]), None)
        if out_r is None:  # it died first (its exit is reported)
            if log_fd is not None:
                os.close(log_fd)
            return
        self.captures.retarget(out_r, log_fd if log_fd is not None else open_stream(req["log_path"]))
        self.spare_at = time.monotonic() + SPARE_AFTER_S
        if req.get("sandbox"):
            sandbox.note_common(req["sandbox"])

    def _drop_channel(self) -> None:
        if self.channel is not None:
            for fd in self.channel[1:]:
                os.close(fd)
            self.channel = None

    def _fork(
        self,
        req: dict[str, Any] | None,
        log_fd: int | None,
        channel: tuple[int, int] | None = None,
        request_file: int = -1,
    ) -> int | None:
        """Fork a child for ``req`` (what the zygote reads of a request; the child reads all of it from
        ``request_file``, kept by the caller), or (``req`` None) a spare that waits for its request on
        ``channel`` (the server's request pipe's read end and ready pipe's write end; kept by the caller if
        fork() fails). Returns the spare's pid, or None (also when a spare could not be forked)."""
        log_path = req["log_path"] if req is not None else os.devnull
        out_r, out_w = self.captures.open(log_path, log_fd)
        worker = req is None or req["op"] == "fork"
        if channel is not None:
            (request_r, ready_w), ready_r = channel, -1
        else:
            request_r = -1
            ready_r, ready_w = os.pipe() if worker else (-1, -1)
        try:
            pid = os.fork()
        except OSError:
            self.captures.abandon(out_r, out_w)
            if channel is None:
                for fd in (ready_r, ready_w):
                    if fd >= 0:
                        os.close(fd)
            if req is None:
                return None  # no spare: requests fork as they come
            raise
        if pid == 0:
            # The zygote's descriptors, and those that came with requests not yet read (another child's
            # log file, and its request file: its environment)
            inherited = [*self.captures.inherited(), self.sel.fileno(), *self.readying, *self.passed]
            inherited += [fd for fd in (ready_r,) if fd >= 0]
            if self.channel is not None and channel is None:  # another spare's, not this child's
                inherited += self.channel[1:]
            _child(
                self.ctl,
                self.wake_r,
                self.wake_w,
                self.pid,
                out_w,
                inherited,
                req=req,
                request_fd=request_r if channel is not None else request_file,
                handler=self.handler,
                ready_fd=ready_w if ready_w >= 0 else None,
                warm=self.warm,
                lifeline=self.lifeline,
            )
        self.captures.started(pid, out_r, out_w)
        for fd in (ready_w, request_r):
            if fd >= 0:
                os.close(fd)
        if req is None:
            self.captures.pause(out_r)
            self.offered[pid] = out_r
            return pid
        _send(self.ctl, {"op": "forked", "id": req["id"], "pid": pid})
        if ready_r >= 0:
            self._watch_ready(ready_r, pid)
        return None

    def _watch_ready(self, ready_r: int, pid: int) -> None:
        self.readying[ready_r] = pid
        self.sel.register(ready_r, selectors.EVENT_READ, "up")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.captures.exited(pid)  # its last lines are in the file before anyone hears of the exit
            if self.offered.pop(pid, None) is not None:  # died waiting (the server drops it): another later
                self.spare_at = time.monotonic() + SPARE_RETRY_S
            _send(self.ctl, {"op": "exit", "pid": pid, "status": os.waitstatus_to_exitcode(status)})

    def _up(self, fd: int) -> None:
        """A ready pipe is readable: a byte, its worker's socket listens; end of file, it exited first."""
        pid = self.readying.pop(fd)
        try:
            data = os.read(fd, 1)
        except OSError:
            data = b""
        self.sel.unregister(fd)
        os.close(fd)
        if data:
            _send(self.ctl, {"op": "up", "pid": pid})


def serve(runtime: str, ctl: socket.socket, handler: Any = None) -> None:
    """The fork loop. A zygote (``handler`` None) imported its framework and keeps a spare forked; a template
    also holds a loaded model (``handler``), which its children serve without loading it again."""
    warm = None
    if handler is None:
        from zeroscale.runtimes.registry import RUNTIMES

        RUNTIMES[runtime].preload()
        # The worker's own modules (container, handler, codecs) too: imported once, shared by every child.
        import zeroscale.runtimes.worker  # noqa: F401

        sandbox.prime()

        gc.collect()
        gc.freeze()  # keep the imported framework's objects out of the children's GC: fewer copied pages
        warm = _spare_warm_up(RUNTIMES[runtime])
    _ForkLoop(ctl, handler, spares=handler is None, warm=warm).run()


def _spare_warm_up(spec: Runtime) -> Callable[[Callable[[], bool]], None]:
    """What a spare does before it waits, one step after another, each on its own (one that fails leaves
    its first use to the worker) and none once a request is there (``pending``): a request that comes
    meanwhile waits for the step under way, not for the rest, and its worker does only what it needs of
    them. The steps: its empty network namespace (``sandbox.prepare_net_ns``, root only), the common part
    of its Landlock ruleset (``sandbox.prepare_landlock``), the runtime's ``warm`` (its own model through
    the default hooks), the handler contract's (``handler.warm``: a user module's import, hooks and call),
    the container server's (``container.warm``: a first thread and request). Then, always, its own random
    seeds and its environment cut to what every worker gets (what a step left undone is done on the
    worker's way up, by ``sandbox.confine``, ``runtimes.worker`` and ``_set_environment``)."""
    from zeroscale.runtimes import container, handler
    from zeroscale.runtimes.worker import reseed

    steps: list[Callable[[], None]] = [
        sandbox.prepare_net_ns,
        functools.partial(sandbox.prepare_landlock, _LANDLOCK_ABI),
        *([spec.warm] if spec.warm is not None else []),
        functools.partial(handler.warm, spec.defaults),
        container.warm,
    ]

    def warm(pending: Callable[[], bool]) -> None:
        for step in steps:
            if pending():
                break
            with contextlib.suppress(Exception):
                step()
        reseed()
        _keep_common_environment()

    return warm


def main() -> None:
    os.environ.update(THREAD_ENV)
    die_with_parent()
    global _log_limit
    runtime = sys.argv[1]
    sandbox.close_descriptors(keep=int(sys.argv[2]))  # before any child of its is forked
    ctl = socket.socket(fileno=int(sys.argv[2]))
    _log_limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    # Returns when the server closes the socket; the workers follow through their death signal.
    serve(runtime, ctl)


if __name__ == "__main__":
    main()

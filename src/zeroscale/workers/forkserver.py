"""The zygote's side of the zygote protocol: a fork server for one runtime that imports the framework
once, then forks a worker per request (``zygotes.py`` is the server's side).

Runs as its own process (``python -m zeroscale.workers.forkserver RUNTIME FD``) and speaks JSON lines over the
socket whose fd number is its second argument:

    -> {"op": "fork", "id": ..., "model_dir": ..., "socket_path": ..., "log_path": ..., "env": {...},
        "log_fd": true}          the log file comes with the line (SCM_RIGHTS): a template may not open it
    <- {"op": "forked", "id": ..., "pid": ...}
    <- {"op": "up", "pid": ...}          its socket listens (the worker wrote a byte on a pipe from here)
    <- {"op": "exit", "pid": ..., "status": <exit code, or -signal>}
    -> {"op": "template", "id": ..., "model_dir": ..., "ctl_path": ..., "log_path": ..., "env": {...}}

A template is a child that loads one model and then runs this same loop on a socket it listens on at
``ctl_path``: its children are replicas that serve the already loaded model (scale-out without a model load).

What forking breaks, and how it is handled here:
- threads: a template forks only while it is the one thread of its process (``thread_count``), else it
  refuses to be one (its pool's workers keep loading the model themselves);
- thread pools: the zygote starts none. BLAS/OpenMP pools are pinned to one thread through the environment
  before the framework is imported, so no pool exists at fork time (a worker serves one request at a time);
- random state: the child reseeds ``random`` and numpy (``runtimes.worker`` does it);
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
import gc
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any, NoReturn

from zeroscale.workers import sandbox
from zeroscale.workers.capture import Captures

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

_PR_SET_PDEATHSIG = 1
_LANDLOCK_ABI = sandbox.abi_version()
TEMPLATE_ACCEPT_TIMEOUT_S = 60.0
EXIT_THREADED_TEMPLATE = 4  # loading the model left other threads running: forking this process is unsafe


def thread_count() -> int | None:
    """The threads of this process (``/proc/self/task``; None where that cannot be read)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux only; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass


def _child(
    ctl: socket.socket,
    wake_r: int,
    wake_w: int,
    req: dict[str, Any],
    zygote_pid: int,
    out_fd: int,
    inherited: list[int],
    handler: Any = None,
    ready_fd: int | None = None,
) -> NoReturn:
    code = 70
    try:
        die_with_parent()
        if os.getppid() != zygote_pid:  # the zygote died before the death signal was armed: nobody to obey
            raise SystemExit(code)
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
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["model_dir"])
        if req.get("sandbox") is not None:  # before any of the model's code runs (a pickle is code)
            sandbox.confine(sandbox.Policy.from_dict(req["sandbox"]), _LANDLOCK_ABI)
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
        )
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


def refuse_if_threaded() -> None:
    """Exit (``EXIT_THREADED_TEMPLATE``) unless this process, a template that just loaded its model, runs one
    thread. A child has only the thread that called fork(): a lock another thread held, or a condition
    variable it waited on, stays taken in every replica (ONNX Runtime's telemetry thread left children
    hanging in exit). Once the model is loaded only the fork loop runs: one thread now, one at every fork."""
    threads = thread_count()
    if threads is not None and threads > 1:
        print(
            f"zeroscale: no template of this model: loading it left {threads} threads in the process, "
            "which is not safe to fork; its workers load the model themselves",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(EXIT_THREADED_TEMPLATE)


def _template(req: dict[str, Any]) -> NoReturn:
    """Become a template: load the model once, then fork ready replicas of it for the server (scale-out
    without loading the model again). Driven like a zygote, through the socket it listens on."""
    from zeroscale.runtimes.worker import load_handler

    handler = load_handler(req["runtime"], req["model_dir"])
    refuse_if_threaded()
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


def _reap(ctl: socket.socket, captures: Captures) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        captures.exited(pid)  # its last lines are in the file before anyone hears of the exit
        _send(ctl, {"op": "exit", "pid": pid, "status": code})


def _up(ctl: socket.socket, sel: selectors.BaseSelector, fd: int, readying: dict[int, int]) -> None:
    """A worker's ready pipe is readable: a byte means its socket listens; end of file, it exited first."""
    pid = readying.pop(fd)
    try:
        data = os.read(fd, 1)
    except OSError:
        data = b""
    sel.unregister(fd)
    os.close(fd)
    if data:
        _send(ctl, {"op": "up", "pid": pid})


def serve(runtime: str, ctl: socket.socket, handler: Any = None) -> None:
    """The fork loop. A zygote (``handler`` None) imported its framework; a template also holds a loaded
    model (``handler``), which its children serve without loading it again."""
    if handler is None:
        from zeroscale.runtimes.registry import RUNTIMES

        RUNTIMES[runtime].preload()
        # The worker's own modules (container, handler, codecs) too: imported once, shared by every child.
        import zeroscale.runtimes.worker  # noqa: F401

        gc.collect()
        gc.freeze()  # keep the imported framework's objects out of the children's GC: fewer copied pages
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ, "ctl")
    sel.register(wake_r, selectors.EVENT_READ, "chld")
    captures = Captures(sel)
    readying: dict[int, int] = {}  # read end of a worker's ready pipe -> its pid, until it is up or gone
    passed: collections.deque[int] = collections.deque()  # log files the server sent, one per request
    buf = b""
    zygote_pid = os.getpid()
    _send(ctl, {"op": "ready", "pid": zygote_pid})
    while True:
        for key, _ in sel.select(captures.timeout()):
            if key.data == "chld":
                os.read(wake_r, 4096)
                _reap(ctl, captures)
                continue
            if key.data == "out":
                captures.read(key.fd)
                continue
            if key.data == "up":
                _up(ctl, sel, key.fd, readying)
                continue
            data, fds, _, _ = socket.recv_fds(ctl, 65536, 16, socket.MSG_CMSG_CLOEXEC)
            passed.extend(fds)
            if not data:
                captures.close_all()
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                log_fd = passed.popleft() if req.get("log_fd") and passed else None
                if req.get("op") not in ("fork", "template"):
                    if log_fd is not None:
                        os.close(log_fd)
                    continue
                out_r, out_w = captures.open(req["log_path"], log_fd)
                ready_r, ready_w = os.pipe() if req["op"] == "fork" else (-1, -1)
                try:
                    pid = os.fork()
                except OSError:
                    captures.abandon(out_r, out_w)
                    for fd in (ready_r, ready_w):
                        if fd >= 0:
                            os.close(fd)
                    raise
                if pid == 0:
                    inherited = [*captures.inherited(), sel.fileno(), *readying]
                    if ready_r >= 0:
                        inherited.append(ready_r)
                    ready = ready_w if ready_w >= 0 else None
                    _child(ctl, wake_r, wake_w, req, zygote_pid, out_w, inherited, handler, ready)
                captures.started(pid, out_r, out_w)
                _send(ctl, {"op": "forked", "id": req["id"], "pid": pid})
                if ready_r >= 0:
                    os.close(ready_w)
                    readying[ready_r] = pid
                    sel.register(ready_r, selectors.EVENT_READ, "up")
        captures.flush_due()


def main() -> None:
    os.environ.update(THREAD_ENV)
    die_with_parent()
    runtime = sys.argv[1]
    ctl = socket.socket(fileno=int(sys.argv[2]))
    # Returns when the server closes the socket; the workers follow through their death signal.
    serve(runtime, ctl)


if __name__ == "__main__":
    main()

"""The worker process: load one model through the handler contract, then serve it until SIGTERM.

Forked by a zygote (``workers/forkserver.py``: the runtime was preloaded before the fork, ``run_worker``
runs in the child, on its main thread; a template's replicas get its already loaded handler), or run on its
own as ``python -m zeroscale.runtimes.worker --runtime sklearn --model-dir D (--socket PATH | --port N)``.

The socket is bound only once the model is loaded, and answers ``GET /ping`` with 200 from then on: the
server's WorkerManager takes the worker as ready when its zygote reports the socket listens (``ready_fd``).
``zeroscale worker ready`` is then printed on stdout, for whoever runs the worker by hand (under a zygote it
is a line of the worker's log). A model that cannot be loaded exits 3 with the traceback as the last lines
of stderr; on SIGTERM (or SIGINT) the worker stops accepting, answers the in-flight request and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import signal
import socket
import stat
import sys
import traceback
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from zeroscale.runtimes.container import ContainerServer
from zeroscale.runtimes.handler import Handler
from zeroscale.runtimes.registry import get_runtime

READY_LINE = "zeroscale worker ready"
EXIT_LOAD_FAILED = 3
DEFAULT_PORT = 8080
DRAIN_TIMEOUT_S = 25.0  # SageMaker sends SIGKILL 30 s after SIGTERM
BACKLOG = 128


class _Terminated(BaseException):
    """SIGTERM while loading: not an error, stop quietly."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _reset_process_state() -> None:
    """Undo what a zygote may have left: its signal dispositions and wake-up fd; reseed the RNGs."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, _raise_terminated)
    reseed()


_seeded_pid = 0  # the process whose generators ``reseed`` seeded last


def reseed() -> None:
    """Seed the global generators a fork copies from its zygote or template (``random``, numpy's, torch's
    CPU generator) from the OS, once per process: every worker draws its own numbers, as a fresh process
    would. A zygote's spare calls it before it waits (numpy's costs ~1 ms in a fresh fork), so a cold start
    does not; a template's replica calls it on its way up. A framework imported later seeds itself."""
    global _seeded_pid
    if _seeded_pid == os.getpid():
        return
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.default_generator.seed()  # torch.seed() costs 3 ms more (it schedules the GPUs' too)
    _seeded_pid = os.getpid()


def bind(socket_path: str | None, port: int | None, host: str) -> socket.socket:
    """A listening socket: Unix at ``socket_path`` (a stale socket file is removed first), else TCP at
    ``host`` and ``SAGEMAKER_BIND_TO_PORT`` or ``port`` (default 8080)."""
    if socket_path:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(socket_path).st_mode):
                os.unlink(socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(socket_path)
    else:
        env_port = os.environ.get("SAGEMAKER_BIND_TO_PORT", "").strip()
        bind_port = int(env_port) if env_port else (DEFAULT_PORT if port is None else port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, bind_port))
    sock.listen(BACKLOG)
    return sock


def _exit(code: int) -> NoReturn:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def load_handler(runtime: str, model_dir: str) -> Handler:
    """The model, loaded through the handler contract with the runtime's defaults."""
    spec = get_runtime(runtime)
    return Handler.load(model_dir, spec.model_fn, defaults=spec.defaults)


def rehearse(handler: Handler, runtime: str) -> bool:
    """One request to the loaded model before any comes, its answer dropped: a sample the runtime makes from
    what the model says of its input (``Runtime.sample``: zeros of its shape) through the handler's hooks.
    What a parked replica of a template does before it says it is up (``run_worker(rehearsal=True)``): in a
    fork, a model's first request writes to pages the replica still shares with its template, copied one
    fault at a time (~900 for the reference RandomForest: its first predict 6.4 ms, the next 3.4 ms here);
    rehearsed while the replica waits for a cold start, that cold start's request finds them copied. Its
    warnings and error output go nowhere (a model that cannot answer zeros leaves its first request as it
    was). A model with user hooks is not asked a sample through them (they never expected one): the
    runtime's framework predicts zeros on the model object instead (``Runtime.exercise``), when that object
    is the framework's own through and through. True when the model answered."""
    spec = get_runtime(runtime)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            if handler.runs_user_code:
                return spec.exercise is not None and spec.exercise(handler.model)
            made = spec.sample(handler.model) if spec.sample is not None else None
            if made is None:
                return False
            status, _, _ = handler.invoke(made[0], {"content-type": made[1]})
        except Exception:
            return False
    return status == 200


def run_worker(
    *,
    runtime: str,
    model_dir: str,
    socket_path: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    handler: Handler | None = None,
    ready_fd: int | None = None,
    rehearsal: bool = False,
) -> NoReturn:
    """Load the model (unless ``handler`` is one already loaded, in a template this process was forked
    from), listen, print the ready line, serve until SIGTERM; never returns. With ``ready_fd`` (a pipe from
    the zygote) one byte written there says the socket listens: the server connects then, without polling.
    With ``rehearsal`` (a replica parked ahead of need) the template's model first answers a sample
    (``rehearse``), before the generators are reseeded."""
    try:
        if rehearsal and handler is not None:
            rehearse(handler, runtime)
        _reset_process_state()
        if handler is None:
            handler = load_handler(runtime, model_dir)
        listener = bind(socket_path, port, host)
        server = ContainerServer(listener, handler.invoke, handler.invoke_batch if handler.batches else None)

        def on_stop(signum: int, frame: FrameType | None) -> None:
            server.stop()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
    except _Terminated:
        _exit(0)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        _exit(EXIT_LOAD_FAILED)

    print(READY_LINE, flush=True)
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    try:
        server.serve_forever()
        if not server.drain(DRAIN_TIMEOUT_S):
            print("zeroscale: in-flight request did not finish before the drain timeout", file=sys.stderr)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        _exit(1)
    _exit(0)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m zeroscale.runtimes.worker", description=__doc__)
    parser.add_argument("--runtime", required=True, help="runtime name, e.g. sklearn")
    parser.add_argument("--model-dir", required=True, help="the extracted model directory")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", dest="socket_path", help="listen on this Unix socket path")
    where.add_argument("--port", type=int, help="listen on this TCP port (SAGEMAKER_BIND_TO_PORT wins)")
    parser.add_argument("--host", default="127.0.0.1", help="TCP host (default 127.0.0.1)")
    args = parser.parse_args(argv)
    run_worker(
        runtime=args.runtime,
        model_dir=args.model_dir,
        socket_path=args.socket_path,
        port=args.port,
        host=args.host,
    )


if __name__ == "__main__":
    main()

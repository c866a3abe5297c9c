"""The zygote's spare runs its runtime's ``warm`` before it waits, and serves all the same when that fails;
its worker's environment is its request's alone. The spare waits on the pipes its server gave (``channel``):
the test speaks the zygote's protocol as the server does (``zygotes.py``)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import joblib
import numpy as np
import psutil
from sklearn.linear_model import LogisticRegression

from zeroscale.workers.forkserver import SPARE_NAME, THREAD_ENV
from zeroscale.workers.zygotes import request_file

# A zygote whose runtime's warm notes that it ran (in argv[2]), sleeps argv[4] seconds, notes that it ended
# (in argv[2] + ".end"), then raises; its container warm-up, after it, notes that it ran (in argv[3]).
ZYGOTE = textwrap.dedent(
    """
    import dataclasses, os, socket, sys, time
    from zeroscale.runtimes import container, registry

    def note(path):
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\\n")

    def warm():
        note(sys.argv[2])
        print("printed by the spare's warm-up", flush=True)
        time.sleep(float(sys.argv[4]))
        note(sys.argv[2] + ".end")
        raise RuntimeError("warm-up failed")

    real_container_warm = container.warm

    def container_warm():
        real_container_warm()
        note(sys.argv[3])

    registry.RUNTIMES["sklearn"] = dataclasses.replace(registry.RUNTIMES["sklearn"], warm=warm)
    container.warm = container_warm
    from zeroscale.workers import forkserver
    forkserver.serve("sklearn", socket.socket(fileno=int(sys.argv[1])))
    """
)


def _until(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@dataclass
class _Zygote:
    proc: subprocess.Popen[bytes]
    ours: socket.socket
    reader: BinaryIO
    channel: tuple[int, int] | None = None  # our ends of the next spare's request and ready pipes

    def offer(self) -> None:
        """Give the zygote the pipes of its next spare."""
        request_r, request_w = os.pipe()
        ready_r, ready_w = os.pipe()
        line = json.dumps({"op": "channel", "id": "c"}).encode() + b"\n"
        socket.send_fds(self.ours, [line], [request_r, ready_w])
        os.close(request_r)
        os.close(ready_w)
        self.channel = (request_w, ready_r)

    def spare(self) -> int:
        """The pid of the spare forked on the channel, once the zygote says so."""
        msg = json.loads(self.reader.readline())
        assert msg["op"] == "spare" and msg["id"] == "c", msg
        return int(msg["pid"])

    def fork(
        self, tmp_path: Path, model_dir: Path, env: dict[str, str], *, took_late: bool = False
    ) -> tuple[str, int]:
        """A worker of ``model_dir`` on a socket in ``tmp_path``: its socket and pid, once it is up. With a
        channel given, written to the spare and its ready byte read here (``took_late``: the zygote hears
        of it only then); else a fork request."""
        sock, log = str(tmp_path / "w.sock"), tmp_path / "w.log"
        request = {
            "op": "fork",
            "id": "w",
            "runtime": "sklearn",
            "model_dir": str(model_dir),
            "socket_path": sock,
            "log_path": str(log),
            "env": env,
        }
        if self.channel is not None:
            (request_w, ready_r), self.channel = self.channel, None
            pid = self.spare()
            os.write(request_w, json.dumps(request).encode())
            os.close(request_w)

            def took() -> None:
                log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                line = {"op": "took", "pid": pid, "log_fd": True, "log_path": str(log)}
                socket.send_fds(self.ours, [json.dumps(line).encode() + b"\n"], [log_fd])
                os.close(log_fd)

            if not took_late:
                took()
            assert os.read(ready_r, 1) == b"1", log.read_text()
            os.close(ready_r)
            if took_late:
                took()
            return sock, pid
        # The zygote reads only the head; the child, its whole request from the file that comes with it.
        head = {"op": "fork", "id": "w", "runtime": "sklearn", "log_path": str(log), "request_fd": True}
        body = request_file(json.dumps(request).encode())
        socket.send_fds(self.ours, [json.dumps(head).encode() + b"\n"], [body])
        os.close(body)
        forked = json.loads(self.reader.readline())
        assert forked["op"] == "forked" and forked["id"] == "w"
        assert json.loads(self.reader.readline()) == {"op": "up", "pid": forked["pid"]}, log.read_text()
        return sock, int(forked["pid"])


@contextlib.contextmanager
def _zygote(
    marker: Path, env: dict[str, str] | None = None, *, slow_s: float = 0.0, spare: bool = True
) -> Iterator[_Zygote]:
    """ZYGOTE running with the zygote's thread settings (and ``env``), once it said it is ready, given the
    pipes of a spare (``spare``); its runtime's warm-up notes in ``marker`` and takes ``slow_s``, its
    container warm-up notes in ``marker.container``."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, str(theirs.fileno()), str(marker), f"{marker}.container", str(slow_s)],
        pass_fds=(theirs.fileno(),),
        env={**os.environ, **THREAD_ENV, **(env or {})},
    )
    theirs.close()
    ours.settimeout(60)
    reader = ours.makefile("rb")
    try:
        assert json.loads(reader.readline())["op"] == "ready"
        zygote = _Zygote(proc, ours, reader)
        if spare:
            zygote.offer()
        yield zygote
    finally:
        reader.close()
        ours.close()
        proc.wait(30)


def _invoke(sock: str, body: bytes) -> tuple[int, object]:
    conn = http.client.HTTPConnection("localhost", timeout=30)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(sock)
    try:
        conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_a_spare_whose_warm_up_fails_still_serves(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    x = np.random.RandomState(0).rand(40, 3)
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), model_dir / "model.joblib")
    marker = tmp_path / "warmed"
    with _zygote(marker) as zygote:

        def spare() -> int | None:
            for child in psutil.Process(zygote.proc.pid).children():
                if child.name() == SPARE_NAME.decode() and marker.exists():
                    return child.pid
            return None

        _until(lambda: spare() is not None)
        waiting = spare()
        assert marker.read_text().split() == [str(waiting)]  # it ran the warm-up, which raised
        # and the other warm-ups after it (the container's starts and joins a thread): one thread left once
        # they are done, as a spare must have (it may become a template, which forks)
        _until(lambda: Path(f"{marker}.container").exists(), timeout_s=10.0)
        _until(lambda: psutil.Process(waiting).num_threads() == 1, timeout_s=10.0)
        root = os.geteuid() == 0
        if root:  # and, before it, made its worker's empty network namespace (sandbox.prepare_net_ns)
            assert _netns(waiting) != _netns(zygote.proc.pid)
        env = {**THREAD_ENV, "PATH": os.environ.get("PATH", "")}
        sock, pid = zygote.fork(tmp_path, model_dir, env, took_late=True)
        assert pid == waiting
        if root:  # a request without a sandbox: back in the zygote's (the host's) network
            assert _netns(waiting) == _netns(zygote.proc.pid)
        assert _invoke(sock, b"[[0.9, 0.1, 0.2]]") == (200, [1])
        # What it printed once it had its request is its worker's, also before the zygote heard of it;
        # what its warm-up printed is nobody's.
        _until(lambda: "zeroscale worker ready" in (tmp_path / "w.log").read_text())
        assert "warm-up" not in (tmp_path / "w.log").read_text()


def test_a_spare_that_dies_waiting_is_reported_and_the_next_channel_gets_another(tmp_path: Path) -> None:
    with _zygote(tmp_path / "warmed") as zygote:
        first = zygote.spare()
        assert zygote.channel is not None
        for fd in zygote.channel:
            os.close(fd)
        zygote.channel = None
        os.kill(first, 9)
        assert json.loads(zygote.reader.readline()) == {"op": "exit", "pid": first, "status": -9}
        zygote.offer()
        assert zygote.spare() not in (first, 0)


def test_a_zygote_given_no_channel_forks_for_each_request(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    x = np.random.RandomState(0).rand(40, 3)
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), model_dir / "model.joblib")
    with _zygote(tmp_path / "warmed", spare=False) as zygote:
        sock, pid = zygote.fork(tmp_path, model_dir, {**THREAD_ENV, "PATH": os.environ.get("PATH", "")})
        assert _invoke(sock, b"[[0.9, 0.1, 0.2]]") == (200, [1])
        assert [c.pid for c in psutil.Process(zygote.proc.pid).children()] == [pid]  # no spare


def _in_memory(pid: int, head: bytes, tail: bytes) -> list[str]:
    """The mappings of process ``pid`` (a child of ours) where ``head + tail`` lies (never made here)."""
    found = []
    with open(f"/proc/{pid}/maps") as maps:
        lines = maps.read().splitlines()
    with open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in lines:
            parts = line.split()
            if "r" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            i = data.find(head)
            while i >= 0:
                if data[i + len(head) : i + len(head) + len(tail)] == tail:
                    found.append(parts[5] if len(parts) > 5 else "[anon]")
                    break
                i = data.find(head, i + 1)
    return found


def test_the_zygote_never_reads_a_requests_environment(tmp_path: Path) -> None:
    """A fork request's environment (a model's Environment: maybe its tenant's secrets) is read by the child
    alone: none of it is in the zygote's memory, which every later worker of every endpoint inherits. (Parsed
    by the zygote, the value stayed in its heap after the request was freed, and the next endpoint's worker
    found it in its own.)"""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    x = np.random.RandomState(0).rand(40, 3)
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), model_dir / "model.joblib")
    head, tail = b"zs-tenant-secret-", secrets.token_hex(12).encode()
    with _zygote(tmp_path / "warmed", spare=False) as zygote:
        env = {**THREAD_ENV, "PATH": os.environ.get("PATH", ""), "TENANT_TOKEN": (head + tail).decode()}
        sock, pid = zygote.fork(tmp_path, model_dir, env)
        assert _invoke(sock, b"[[0.9, 0.1, 0.2]]") == (200, [1])
        assert _in_memory(pid, head, tail)  # the worker's own environment: the scan sees what is there
        assert _in_memory(zygote.proc.pid, head, tail) == []


# Answers with its process's environment as Python sees it and as a child process inherits it (the C one).
ENV_PROBE = textwrap.dedent(
    """
    import json, os, subprocess

    def model_fn(model_dir):
        return None

    def transform_fn(model, body, content_type, accept):
        c = subprocess.run(["env", "-0"], capture_output=True, check=True).stdout.decode()
        c_env = dict(item.split("=", 1) for item in c.split("\\0") if item)
        return json.dumps({"python": dict(os.environ), "c": c_env}), "application/json"
    """
)


def test_a_workers_environment_is_its_requests_alone(tmp_path: Path) -> None:
    """The spare cut its environment to what every worker gets before it waited; the request's environment
    is then applied as a difference: the worker has exactly the request's variables, in Python and in the C
    environment a child inherits, and none of the zygote's (a server's secret must not reach a model)."""
    model_dir = tmp_path / "model"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(ENV_PROBE)
    marker = tmp_path / "warmed"
    with _zygote(marker, {"ZS_ZYGOTE_SECRET": "s3cr3t", "OMP_NUM_THREADS": "1"}) as zygote:
        _until(marker.exists)  # the spare warmed up (and cut its environment) before the request
        wanted = {**THREAD_ENV, "PATH": "/usr/bin:/bin", "ZS_MODEL_VAR": "x=1 y", "OMP_NUM_THREADS": "3"}
        sock, _ = zygote.fork(tmp_path, model_dir, wanted)
        status, seen = _invoke(sock, b"{}")
    assert status == 200 and isinstance(seen, dict)
    assert seen["c"] == seen["python"]
    assert "ZS_ZYGOTE_SECRET" not in seen["python"]
    assert {k: seen["python"].get(k) for k in wanted} == wanted
    # What the runtime adds for the model (the toolkit's variables) and nothing else.
    assert all(k.startswith(("SM_", "SAGEMAKER_")) for k in set(seen["python"]) - set(wanted))


def test_a_request_that_comes_while_the_spare_warms_up_waits_for_one_step_only(tmp_path: Path) -> None:
    """The spare checks for a request between its warm-up steps: one that comes during the runtime's
    warm-up (here 1.5 s) is served once that step ends, without the steps after it (the container's)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    x = np.random.RandomState(0).rand(40, 3)
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), model_dir / "model.joblib")
    marker = tmp_path / "warmed"
    with _zygote(marker, slow_s=1.5) as zygote:
        _until(marker.exists)  # the spare is in its runtime's warm-up
        sock, pid = zygote.fork(tmp_path, model_dir, {**THREAD_ENV, "PATH": os.environ.get("PATH", "")})
        assert marker.read_text().split()[0] == str(pid)  # the spare took it (the next spare may follow)
        assert Path(f"{marker}.end").read_text().split()[0] == str(pid)  # after the step under way
        assert _invoke(sock, b"[[0.9, 0.1, 0.2]]") == (200, [1])
        container = Path(f"{marker}.container")
        assert str(pid) not in (container.read_text().split() if container.exists() else [])  # none after it

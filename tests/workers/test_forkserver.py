"""The zygote's spare runs its runtime's ``warm`` before it waits, and serves all the same when that fails."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import psutil
from sklearn.linear_model import LogisticRegression

from zeroscale.workers.forkserver import SPARE_NAME, THREAD_ENV

# A zygote whose runtime's warm notes that it ran, then raises.
ZYGOTE = textwrap.dedent(
    """
    import dataclasses, os, socket, sys
    from zeroscale.runtimes import registry

    def warm():
        with open(sys.argv[2], "a") as f:
            f.write(f"{os.getpid()}\\n")
        raise RuntimeError("warm-up failed")

    registry.RUNTIMES["sklearn"] = dataclasses.replace(registry.RUNTIMES["sklearn"], warm=warm)
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


def test_a_spare_whose_warm_up_fails_still_serves(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    x = np.random.RandomState(0).rand(40, 3)
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), model_dir / "model.joblib")
    marker = tmp_path / "warmed"
    ours, theirs = socket.socketpair()
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, str(theirs.fileno()), str(marker)],
        pass_fds=(theirs.fileno(),),
        env={**os.environ, **THREAD_ENV},
    )
    theirs.close()
    ours.settimeout(60)
    reader = ours.makefile("rb")
    try:
        assert json.loads(reader.readline())["op"] == "ready"

        def spare() -> int | None:
            for child in psutil.Process(zygote.pid).children():
                if child.name() == SPARE_NAME.decode() and marker.exists():
                    return child.pid
            return None

        _until(lambda: spare() is not None)
        waiting = spare()
        assert marker.read_text().split() == [str(waiting)]  # it ran the warm-up, which raised
        root = os.geteuid() == 0
        if root:  # and, before it, made its worker's empty network namespace (sandbox.prepare_net_ns)
            assert _netns(waiting) != _netns(zygote.pid)
        sock = str(tmp_path / "w.sock")
        request = {
            "op": "fork",
            "id": "w",
            "runtime": "sklearn",
            "model_dir": str(model_dir),
            "socket_path": sock,
            "log_path": str(tmp_path / "w.log"),
            "env": {**THREAD_ENV, "PATH": os.environ.get("PATH", "")},
        }
        ours.sendall(json.dumps(request).encode() + b"\n")
        msg = json.loads(reader.readline())
        assert msg == {"op": "forked", "id": "w", "pid": waiting}
        assert json.loads(reader.readline()) == {"op": "up", "pid": waiting}
        if root:  # a request without a sandbox: back in the zygote's (the host's) network
            assert _netns(waiting) == _netns(zygote.pid)
        conn = http.client.HTTPConnection("localhost", timeout=30)
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.connect(sock)
        conn.request("POST", "/invocations", b"[[0.9, 0.1, 0.2]]", {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, [1])
        conn.close()
    finally:
        reader.close()
        ours.close()
        zygote.wait(30)

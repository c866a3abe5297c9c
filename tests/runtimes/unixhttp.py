"""Test helpers: an http.client connection over a Unix socket, and a worker subprocess."""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY = "zeroscale worker ready"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def start_worker(
    model_dir: Path,
    *,
    socket_path: str | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "zeroscale.runtimes.worker",
        "--runtime",
        "sklearn",
        "--model-dir",
        str(model_dir),
    ]
    if socket_path is not None:
        args += ["--socket", socket_path]
    if port is not None:
        args += ["--port", str(port)]
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else worker_env(),
    )


def wait_ready(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> None:
    """Block until the worker prints its ready line; fail with its stderr if it exits first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([proc.stdout], [], [], 0.1)
        if readable:
            line = proc.stdout.readline()
            if line.strip() == READY:
                return
            if line == "":
                break
    proc.kill()
    _, err = proc.communicate(timeout=5)
    raise AssertionError(f"worker did not become ready (rc={proc.returncode}):\n{err}")


def stop_worker(proc: subprocess.Popen[str], timeout_s: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""Bring-your-own image workers: real processes started the way SageMaker starts a container, with and
without bubblewrap mapping /opt/ml/model (the bwrap cases are skipped where bwrap cannot run)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zeroscale.errors import DeployError
from zeroscale.workers.confinement import Confinement, SandboxSettings
from zeroscale.workers.manager import WorkerHandle, WorkerManager, WorkerSpec
from zeroscale.workers.process import CONTAINER_MODEL_DIR, confined_view

SERVER = r"""
import json, os, signal, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

print("argv", sys.argv[1:], flush=True)
if os.environ.get("NEVER_READY"):
    print("warming up forever", flush=True)
    time.sleep(600)
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def bye(*_):
        print("got SIGTERM", flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, bye)

HOG = "b = bytearray(400 * 1024 * 1024); import time; time.sleep(60)"

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.reply(b"")
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body == b"spawn":
            out = {"child": subprocess.Popen(["sleep", "60"]).pid}
        elif body == b"hog":
            out = {"child": subprocess.Popen([sys.executable, "-c", HOG]).pid}
            time.sleep(30)
        else:
            model_dir = os.environ["SM_MODEL_DIR"]
            out = {
                "env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:],
                "opt_ml_model": os.path.isdir("/opt/ml/model"),
                "model": open(os.path.join(model_dir, "weights.txt")).read(),
                "pgid": os.getpgid(0), "pid": os.getpid(),
            }
        self.reply(json.dumps(out).encode())
    def reply(self, data):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), H).serve_forever()
"""


def _bwrap_usable() -> bool:
    bwrap = shutil.which("bwrap")
    return bwrap is not None and subprocess.run([bwrap, "--dev-bind", "/", "/", "true"]).returncode == 0


BWRAP = _bwrap_usable()
MODES = [
    pytest.param(False, id="plain"),
    pytest.param(True, id="bwrap", marks=pytest.mark.skipif(not BWRAP, reason="bwrap is not usable here")),
]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image" / "app"
    root.mkdir(parents=True)
    (root / "server.py").write_text(SERVER)
    return root


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    (root / "weights.txt").write_text("0.5 1.5")
    return root


@pytest.fixture(params=MODES)
def sandbox(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def manager(sandbox: bool, tmp_path: Path) -> AsyncIterator[WorkerManager]:
    m = WorkerManager(tmp_path / "run", startup_timeout_s=10, memory_poll_interval_s=0.02, sandbox=sandbox)
    await m.open()
    yield m
    await m.close()


def spec(image: Path, model_dir: Path, tmp_path: Path, memory_mb: int = 1024, **env: str) -> WorkerSpec:
    return WorkerSpec(
        runtime="byo/test",
        model_dir=str(model_dir),
        memory_mb=memory_mb,
        log_dir=tmp_path / "logs",
        env={"FROM_MODEL": "yes", **env},
        command=(sys.executable, "server.py"),
        workdir=str(image),
    )


async def ask(handle: WorkerHandle, body: bytes = b"{}") -> dict[str, object]:
    assert handle.conn is not None
    resp = await handle.conn.request(b"POST", b"/invocations", [], body)
    assert resp.status == 200, resp.body
    return dict(json.loads(resp.body))


def gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True  # a zombie its parent has not reaped yet: dead all the same
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


async def test_started_like_a_container(
    manager: WorkerManager, sandbox: bool, image: Path, model_dir: Path, tmp_path: Path
) -> None:
    handle = await manager.start(spec(image, model_dir, tmp_path))
    assert handle.port and handle.ready_s < 5
    out = await ask(handle)
    env = out["env"]
    assert isinstance(env, dict)
    assert out["argv"] == ["serve"]
    assert out["cwd"] == str(image)
    assert env["SAGEMAKER_BIND_TO_PORT"] == str(handle.port)
    low, high = (int(p) for p in env["SAGEMAKER_SAFE_PORT_RANGE"].split("-"))
    assert (low, high) == (handle.port + 1, handle.port + 10)
    assert env["FROM_MODEL"] == "yes" and env["PATH"]
    assert out["model"] == "0.5 1.5"
    assert out["opt_ml_model"] is sandbox  # /opt/ml/model is real only with bwrap (absent on the host)
    assert env["SM_MODEL_DIR"] == (CONTAINER_MODEL_DIR if sandbox else str(model_dir))
    assert out["pgid"] != os.getpgid(0)  # its own process group: the container's stand-in
    assert "OMP_NUM_THREADS" not in env  # the zygotes' settings are not the image's business


async def test_stop_sends_sigterm_and_reports_the_exit_once(
    manager: WorkerManager, image: Path, model_dir: Path, tmp_path: Path
) -> None:
    exits: list[int | None] = []
    handle = await manager.start(
        spec(image, model_dir, tmp_path), on_exit=lambda h: exits.append(h.exit_code)
    )
    await manager.stop(handle)
    assert exits == [0]
    assert "got SIGTERM" in handle.log_tail()
    assert "argv ['serve']" in handle.log_tail()
    assert manager.live == []


async def test_sigterm_ignored_means_sigkill_after_the_grace(
    manager: WorkerManager, image: Path, model_dir: Path, tmp_path: Path
) -> None:
    handle = await manager.start(spec(image, model_dir, tmp_path, IGNORE_TERM="1"))
    started = time.monotonic()
    await manager.stop(handle, grace_s=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert handle.exit_code == -9
    assert handle.death_reason() == "the worker process was killed by signal 9 (SIGKILL)"


async def test_what_the_server_started_dies_with_it(
    manager: WorkerManager, image: Path, model_dir: Path, tmp_path: Path
) -> None:
    handle = await manager.start(spec(image, model_dir, tmp_path))
    child = int(str((await ask(handle, b"spawn"))["child"]))
    assert not gone(child, 0.2)
    manager.kill(handle, "test")
    await asyncio.wait_for(handle.exited.wait(), 5)
    assert gone(child)


async def test_memory_counts_the_servers_children(
    manager: WorkerManager, image: Path, model_dir: Path, tmp_path: Path
) -> None:
    handle = await manager.start(spec(image, model_dir, tmp_path, memory_mb=200))
    assert handle.conn is not None
    request = asyncio.ensure_future(handle.conn.request(b"POST", b"/invocations", [], b"hog"))
    await asyncio.wait_for(handle.exited.wait(), 10)
    assert handle.kill_kind == "memory_killed"
    assert "more than the 200 MB of its MemorySizeInMB" in handle.death_reason()
    with pytest.raises(Exception):  # noqa: B017 - the connection just breaks
        await request


async def test_a_server_that_never_answers_ping_fails_with_its_output(
    tmp_path: Path, image: Path, model_dir: Path
) -> None:
    m = WorkerManager(tmp_path / "run", startup_timeout_s=1.5)
    await m.open()
    try:
        with pytest.raises(DeployError) as err:
            await m.start(spec(image, model_dir, tmp_path, NEVER_READY="1"))
        message = str(err.value)
        assert "Worker did not answer /ping within 1.5 seconds" in message
        assert "warming up forever" in message
        assert m.live == []
    finally:
        await m.close()


async def test_an_entrypoint_that_cannot_run(manager: WorkerManager, model_dir: Path, tmp_path: Path) -> None:
    bad = WorkerSpec(
        runtime="byo/test",
        model_dir=str(model_dir),
        memory_mb=1024,
        log_dir=tmp_path / "logs",
        command=("./no-such-program",),
        workdir=str(tmp_path),
    )
    with pytest.raises(DeployError) as err:
        await manager.start(bad)
    message = str(err.value)
    assert "Worker failed to start: the worker process exited with code" in message
    assert "no-such-program" in message  # the tail of its output says what could not run


DIES_WITH_PARENT = """
import asyncio, os, sys
from pathlib import Path
from zeroscale.workers.process import ProcessLauncher

async def main():
    launcher = ProcessLauncher(lambda pid, code: None, sandbox=sys.argv[1] == "1")
    started = await launcher.start(("sh", "-c", "sleep 60", "sh"), workdir="/", model_dir=sys.argv[2],
                                   env={}, log_path=Path(sys.argv[3]))
    await asyncio.sleep(0.3)
    print(started.pid, flush=True)
    os._exit(0)  # the server dies without stopping anything

asyncio.run(main())
"""


def test_the_process_dies_with_the_server(sandbox: bool, model_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            DIES_WITH_PARENT,
            "1" if sandbox else "0",
            str(model_dir),
            str(tmp_path / "log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    assert gone(pid), f"worker {pid} outlived its server"


VIEW_PROBE = r"""
import json, os, socket, sys
paths = json.loads(sys.argv[1])
out = {name: os.path.exists(path) for name, path in paths.items()}
with open(os.path.join(paths["scratch"], "written"), "w") as f:
    f.write("x")
with open("/opt/ml/model/weights.txt") as f:
    out["model_read"] = f.read()
own = socket.socket(socket.AF_UNIX)
own.bind(os.path.join(paths["scratch"], "own.sock"))
own.listen()
socket.socket(socket.AF_UNIX).connect(os.path.join(paths["scratch"], "own.sock"))
out["cwd"] = os.getcwd()
print(json.dumps(out))
"""


@pytest.mark.skipif(not BWRAP, reason="bwrap is not usable here")
def test_an_images_view_holds_only_what_its_policy_grants(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    image = data / "images" / "img" / "1" / "sha"
    image.mkdir(parents=True)
    (data / "zeroscale.db").write_text("secret")
    host = socket.socket(socket.AF_UNIX)  # a daemon's socket in the host's /tmp
    host.bind(str(tmp_path / "daemon.sock"))
    host.listen()
    conf = Confinement(SandboxSettings(data_dir=data), data / "workers")
    scratch = conf.scratch("w1")
    policy = conf.image_policy(str(model_dir), str(image), {}, scratch, 0)
    view = confined_view(shutil.which("bwrap") or "bwrap", policy, str(model_dir), str(image))
    paths = {
        "daemon": str(tmp_path / "daemon.sock"),
        "database": str(data / "zeroscale.db"),
        "workers": str(data / "workers"),
        "scratch": scratch,
        "image": str(image),
        "python": sys.executable,
        "passwd": "/etc/passwd",
        "shadow": "/etc/shadow",
        "run": "/run",
        "var": "/var",
        "null": "/dev/null",
        "self": "/proc/self/status",
    }
    out = subprocess.run(
        [*view, "--", sys.executable, "-I", "-c", VIEW_PROBE, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {
        "daemon": False,
        "database": False,
        "workers": True,  # the parents of its scratch directory, empty
        "scratch": True,
        "image": True,
        "python": True,
        "passwd": True,
        "shadow": False,
        "run": False,
        "var": False,
        "null": True,
        "self": True,
        "model_read": "0.5 1.5",
        "cwd": str(image),
    }
    assert (Path(scratch) / "written").read_text() == "x"
    host.close()

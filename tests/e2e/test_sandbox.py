"""A model that attacks from inside: its inference.py reads the server's secrets, writes outside its
scratch directory, calls home, signals the server, fork-bombs. Each attempt is refused by the kernel, and
a neighbouring endpoint keeps serving. (A model that allocates without bound is stopped by the memory
watchdog: tests/e2e/test_failures.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess, deploy, free_port, make_tar, wait_for
from zeroscale.workers import sandbox
from zeroscale.workers.confinement import SCRATCH_AHEAD

from .conftest import IMAGE_SERVER_END, SklearnModel, handler_model

pytestmark = pytest.mark.skipif(sandbox.abi_version() < 6, reason="needs Landlock ABI 6")

ATTACKER = r"""
import json, os, socket, time


def model_fn(model_dir):
    return None


def _try(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as exc:
        return {"ok": False, "errno": exc.errno, "error": str(exc)}


def _read(path):
    with open(path, "rb") as f:
        return len(f.read(64))


def _write(path):
    with open(path, "w") as f:
        f.write("pwned")
    return path


def _connect(port):
    s = socket.socket()
    s.settimeout(2)
    s.connect(("127.0.0.1", port))
    return "connected"


def _fork_bomb(n, sleep_s):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:  # reap the last round's
            pass
    except ChildProcessError:
        pass
    pids = []
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                time.sleep(sleep_s)
                os._exit(0)
            pids.append(pid)
    except OSError as exc:
        return {"forked": len(pids), "errno": exc.errno, "pids": pids}
    return {"forked": len(pids), "pids": pids}


def transform_fn(model, body, content_type, accept):
    req = json.loads(body)
    what, arg = req["attack"], req.get("arg")
    if what == "read":
        out = _try(lambda: _read(arg))
    elif what == "list":
        out = _try(lambda: os.listdir(arg))
    elif what == "write":
        out = _try(lambda: _write(arg))
    elif what == "scratch":
        out = _try(lambda: _write(os.path.join(os.environ["TMPDIR"], "ok.txt")))
    elif what == "tmpdir":
        out = {"ok": True, "path": os.environ["TMPDIR"]}
    elif what == "connect":
        out = _try(lambda: _connect(arg))
    elif what == "kill":
        out = _try(lambda: os.kill(arg, 0))
    elif what == "fork":
        out = _fork_bomb(*arg)
    elif what == "child_hog":  # a child allocates without bound; the parent answers at once
        pid = os.fork()
        if pid == 0:
            hog = []
            for _ in range(40):
                hog.append(bytearray(64 << 20))
                time.sleep(0.02)
            time.sleep(30)
            os._exit(0)
        out = {"pid": pid}
    elif what == "reap":  # wait for every child to exit
        reaped = 0
        try:
            while True:
                os.waitpid(-1, 0)
                reaped += 1
        except ChildProcessError:
            pass
        out = {"reaped": reaped}
    elif what == "pid":
        out = {"pid": os.getpid(), "uid": os.getuid()}
    elif what == "own":
        out = _try(lambda: _read(os.path.join(os.getcwd(), "code", "inference.py")))
    else:
        out = {"error": "unknown attack"}
    return json.dumps(out), "application/json"
"""


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(worker_max_processes=32)


@pytest.fixture(scope="module")
def endpoints(
    sm: Any, server: ServerProcess, sklearn_model: SklearnModel, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The attacker, and a neighbour whose artifact it wants."""
    url = handler_model(tmp_path_factory.mktemp("attacker"), ATTACKER)
    for name, model_url in (("attacker", url), ("neighbour", sklearn_model.url)):
        desc = deploy(sm, name, model_url)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    artifact = next(server.data_dir.glob("artifacts/**/model.joblib"))
    return {"neighbour_artifact": str(artifact)}


def attack(smr: Any, what: str, arg: object = None) -> dict[str, Any]:
    resp = smr.invoke_endpoint(
        EndpointName="attacker", ContentType="application/json", Body=json.dumps({"attack": what, "arg": arg})
    )
    result: dict[str, Any] = json.loads(resp["Body"].read())
    return result


def refused(result: dict[str, Any]) -> bool:
    return result.get("ok") is False


def test_reads_only_its_own_model(smr: Any, server: ServerProcess, endpoints: dict[str, str]) -> None:
    assert attack(smr, "own")["ok"] is True
    secrets = [
        str(server.data_dir / "zeroscale.db"),
        str(server.data_dir / "credentials") if (server.data_dir / "credentials").exists() else "/etc/shadow",
        endpoints["neighbour_artifact"],
        "/etc/shadow",
        f"/proc/{server.proc.pid if server.proc else 1}/environ",  # the server's secret key is there
        str(Path.home() / ".bash_history"),
    ]
    for path in secrets:
        result = attack(smr, "read", path)
        assert refused(result), (path, result)
    assert refused(attack(smr, "list", str(server.data_dir)))
    assert refused(attack(smr, "list", str(server.data_dir / "artifacts")))


def test_code_paths_in_its_environment_grant_nothing(
    sm: Any, smr: Any, server: ServerProcess, tmp_path: Path, endpoints: dict[str, str]
) -> None:
    """The model's Environment names its code directory and script; naming another model's extracted files
    (the artifact cache: a worker may read the code directory it names), a script outside it, or the
    installed-packages directory zeroscale sets is refused by name, and reads nothing."""
    url = handler_model(tmp_path, ATTACKER)
    cached = [p for p in (server.data_dir / "artifacts").iterdir() if p.is_dir() and len(p.name) == 64]
    assert cached  # the other endpoints' models
    cases = [
        ({"ZEROSCALE_PYTHONPATH": "/etc"}, "ZEROSCALE_PYTHONPATH is set by zeroscale"),
        ({"SAGEMAKER_SUBMIT_DIRECTORY": str(cached[0])}, "SAGEMAKER_SUBMIT_DIRECTORY="),
        ({"SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/../../../etc"}, "must be the s3:// (or file://) URL"),
        ({"SAGEMAKER_PROGRAM": f"../{cached[0].name}/model/code/inference.py"}, "no '..'"),
    ]
    for n, (env, why) in enumerate(cases):
        desc = deploy(sm, f"attacker-env-{n}", url, environment=env)
        assert desc["EndpointStatus"] == "Failed" and why in desc["FailureReason"], (env, desc)
        sm.delete_endpoint(EndpointName=f"attacker-env-{n}")
    desc = deploy(sm, "attacker-env", url, environment={"SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = smr.invoke_endpoint(
        EndpointName="attacker-env",
        ContentType="application/json",
        Body=json.dumps({"attack": "list", "arg": str(cached[0])}),
    )
    assert refused(json.loads(resp["Body"].read()))
    sm.delete_endpoint(EndpointName="attacker-env")


def test_writes_only_its_scratch_directory(
    smr: Any, server: ServerProcess, endpoints: dict[str, str]
) -> None:
    assert attack(smr, "scratch")["ok"] is True
    for path in (server.data_dir / "evil.txt", Path("/tmp") / f"zeroscale-evil-{os.getpid()}.txt"):
        assert refused(attack(smr, "write", str(path))), path
        assert not path.exists()
    # Nor the other scratch directories: the neighbour's, and those made ahead for the next workers (once
    # starts pause: the attacker's worker may have just started).
    own = Path(attack(smr, "tmpdir")["path"])

    def others() -> list[Path]:
        return [d for d in own.parent.iterdir() if d.is_dir() and d != own]

    wait_for(lambda: sum(d.name.startswith("ready-") for d in others()) >= SCRATCH_AHEAD, timeout_s=5)
    for other in others():
        assert refused(attack(smr, "write", str(other / "evil.txt"))), other
        assert not (other / "evil.txt").exists()


def test_cannot_call_home_or_signal_the_server(
    smr: Any, server: ServerProcess, endpoints: dict[str, str]
) -> None:
    result = attack(smr, "connect", server.port)
    assert refused(result), result
    assert server.proc is not None
    assert refused(attack(smr, "kill", server.proc.pid))  # not even signal 0


def test_a_child_that_allocates_without_bound_is_stopped(
    smr: Any, server: ServerProcess, endpoints: dict[str, str]
) -> None:
    """What the worker's children hold counts (the watchdog's pass over its uid, or the kernel's limit on its
    memory cgroup, which stops the child first): the worker is stopped, the child with it."""
    pid = attack(smr, "child_hog")["pid"]

    def logs() -> str:
        return "".join(p.read_text() for p in (server.data_dir / "logs" / "attacker").rglob("*.log"))

    # The kernel stops the child first (its group's limit), the worker follows within a second.
    wait_for(lambda: "more than the 1024 MB of its MemorySizeInMB" in logs(), timeout_s=20)
    wait_for(lambda: not _alive(pid), timeout_s=20)
    assert attack(smr, "own")["ok"] is True  # a new worker serves


def test_fork_bomb_is_capped_and_neighbours_serve(
    smr: Any, server: ServerProcess, endpoints: dict[str, str], sklearn_model: SklearnModel
) -> None:
    result = attack(smr, "fork", [200, 1])
    assert result["forked"] < 32 and result.get("errno") == 11, result  # EAGAIN at the cap
    rows = sklearn_model.X[:3]
    resp = smr.invoke_endpoint(
        EndpointName="neighbour", ContentType="application/json", Body=sklearn_model.json_body(rows)
    )
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(np.asarray(rows))
    assert attack(smr, "own")["ok"] is True  # the attacker itself still answers


def test_what_a_worker_leaves_behind_dies_with_it(sm: Any, smr: Any, endpoints: dict[str, str]) -> None:
    """Its orphans (anything with its uid) are killed when it goes."""
    attack(smr, "reap")  # the fork bomb's children (they sleep a second) are gone
    pids = attack(smr, "fork", [5, 60])["pids"]
    assert len(pids) == 5 and all(_alive(pid) for pid in pids)
    sm.delete_endpoint(EndpointName="attacker")
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout_s=10)


def test_workers_die_with_a_killed_server(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A new uid clears the parent-death signal; it is asked for again: nothing outlives the server."""
    other = server_factory()
    assert deploy(other.client("sagemaker"), "victim", handler_model(tmp_path, ATTACKER))[
        "EndpointStatus"
    ] == ("InService")
    resp = other.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="victim", ContentType="application/json", Body=json.dumps({"attack": "pid"})
    )
    worker = json.loads(resp["Body"].read())
    assert worker["uid"] >= 1_000_000_000  # a uid of its own
    other.stop(signal.SIGKILL)
    wait_for(lambda: not _alive(worker["pid"]), timeout_s=10)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


HOSTILE_IMAGE_SERVER = (
    r"""#!/usr/bin/env python3
import json, os, socket
from http.server import BaseHTTPRequestHandler, HTTPServer


def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as exc:
        return {"ok": False, "errno": exc.errno}


def read(path):
    with open(path, "rb") as f:
        return len(f.read(64))


def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"


def bind(port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        return "bound"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer(b"{}")

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = {
            "model": attempt(lambda: read(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"))),
            "secret": attempt(lambda: read(req["secret"])),
            "call_home": attempt(lambda: connect(req["port"])),
            "other_port": attempt(lambda: bind(req["free_port"])),
            "safe_port": attempt(lambda: bind(int(os.environ["SAGEMAKER_SAFE_PORT_RANGE"].split("-")[0]))),
            "scratch": attempt(lambda: open(os.path.join(os.environ["TMPDIR"], "x"), "w").close()),
        }
        self.answer(json.dumps(out).encode())
"""
    + IMAGE_SERVER_END
)


def test_an_image_server_is_confined_too(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path, endpoints: dict[str, str]
) -> None:
    image = tmp_path / "image"
    image.mkdir()
    (image / "serve").write_text(HOSTILE_IMAGE_SERVER)
    (image / "serve").chmod(0o755)
    (image / "manifest.json").write_text(json.dumps({"entrypoint": ["./serve"]}))
    zeroscale = Path(sys.executable).parent / "zeroscale"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    subprocess.run(
        [str(zeroscale), "images", "push", "hostile:1", str(image), "--endpoint-url", server.url],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    (tmp_path / "model.json").write_text("{}")
    url = f"file://{make_tar(tmp_path / 'model.tar.gz', {'model.json': tmp_path / 'model.json'})}"
    desc = deploy(sm, "hostile-image", url, image="hostile:1")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    body = {"secret": str(server.data_dir / "zeroscale.db"), "port": server.port, "free_port": free_port()}
    resp = smr.invoke_endpoint(
        EndpointName="hostile-image", ContentType="application/json", Body=json.dumps(body)
    )
    result = json.loads(resp["Body"].read())
    assert result["model"]["ok"] and result["scratch"]["ok"] and result["safe_port"]["ok"], result
    assert not result["secret"]["ok"] and not result["call_home"]["ok"], result
    assert not result["other_port"]["ok"], result
    sm.delete_endpoint(EndpointName="hostile-image")

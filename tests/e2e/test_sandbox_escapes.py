"""Escapes the first sandbox left open, attempted for real:

- a template (a process that loaded a model and forks replicas of it) runs the model's unpickling, which is
  code: a pickle that probes its process finds no more privilege there than in a worker;
- a model connects to Unix sockets: another worker's, a daemon's world-writable one, an abstract one, a
  datagram one. None is reached, and a neighbour keeps serving.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from zeroscale.testing import ServerProcess, deploy, make_tar, wait_for
from zeroscale.workers import sandbox, seccomp

from .conftest import SklearnModel, handler_model

pytestmark = pytest.mark.skipif(
    sandbox.abi_version() < 6 or not seccomp.probe(), reason="needs Landlock ABI 6 and seccomp filters"
)

_CAP_DAC = (1 << 1) | (1 << 2)
_CAP_SETID = (1 << 6) | (1 << 7)


class Listeners:
    """Unix sockets on the host that a model must not reach, and whether anything reached them."""

    def __init__(self, root: Path) -> None:
        self.path = str(root / "daemon.sock")
        self.dgram_path = str(root / "log.sock")
        self.abstract = f"\0zeroscale-test-{os.getpid()}"
        self.reached: list[str] = []
        self._socks: list[socket.socket] = []
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream.bind(self.path)
        os.chmod(self.path, 0o777)  # like a daemon's socket meant for any local user
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract.bind(self.abstract)
        dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dgram.bind(self.dgram_path)
        os.chmod(self.dgram_path, 0o777)
        os.chmod(root, 0o755)
        for sock, name in ((stream, "pathname"), (abstract, "abstract")):
            sock.listen(8)
            threading.Thread(target=self._accept, args=(sock, name), daemon=True).start()
        threading.Thread(target=self._receive, args=(dgram,), daemon=True).start()
        self._socks += [stream, abstract, dgram]

    def _accept(self, sock: socket.socket, name: str) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = sock.accept()
                self.reached.append(name)
                conn.close()

    def _receive(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock.recv(100)
                self.reached.append("datagram")

    def close(self) -> None:
        for sock in self._socks:
            sock.close()


@pytest.fixture(scope="module")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listeners]:
    found = Listeners(tmp_path_factory.mktemp("host-sockets"))
    yield found
    found.close()


# ---- a pickle that probes the process that loads it ----
PROBE = r"""
import ctypes, errno, json, os, pickle, socket, time

def _t(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

_libc = ctypes.CDLL(None, use_errno=True)

def _call(name, *args):
    if getattr(_libc, name)(*args) < 0:
        raise OSError(ctypes.get_errno(), name)

def _read(path):
    with open(path, "rb") as f:
        f.read(1)

def _unix(path, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_UNIX, kind)
    s.settimeout(1)
    s.connect(path)

_buf = ctypes.create_string_buffer(4096)
_host = os.uname().nodename.encode()
_status = open("/proc/self/status").read()
probe = {
    "pid": os.getpid(),
    "uid": os.getuid(),
    "capeff": [l.split()[1] for l in _status.splitlines() if l.startswith("CapEff")][0],
    "shadow": _t(lambda: _read("/etc/shadow")),
    "database": _t(lambda: _read(DB)),
    "list_data": _t(lambda: os.listdir(DATA)),
    "write_data": _t(lambda: open(os.path.join(DATA, "evil"), "w").close()),
    "kernel_log": _t(lambda: _call("klogctl", 3, _buf, 4096)),
    "hostname": _t(lambda: _call("sethostname", _host, len(_host))),
    "root": _t(lambda: os.setresuid(0, 0, 0)),
    "other_uid": _t(lambda: os.setresuid(4242, 4242, 4242)),
    "groups": _t(lambda: os.setgroups([0])),
    "unix": _t(lambda: _unix(SOCK)),
    "abstract": _t(lambda: _unix(ABSTRACT)),
}
print("ZS-PROBE " + json.dumps(probe), flush=True)


class Slow:
    # Answers like the real model, a little slowly, so that a burst of requests needs replicas.
    def __init__(self, model):
        self.model = model

    def predict(self, rows):
        time.sleep(0.3)
        return self.model.predict(rows)


model = Slow(pickle.loads(REAL))
"""


class _Evil:
    def __init__(self, expr: str) -> None:
        self.expr = expr

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, (self.expr,))


def evil_model(root: Path, server: ServerProcess, listeners: Listeners, real: Any) -> str:
    code = (
        f"DB = {str(server.data_dir / 'zeroscale.db')!r}\nDATA = {str(server.data_dir)!r}\n"
        f"SOCK = {listeners.path!r}\nABSTRACT = {listeners.abstract!r}\nREAL = {pickle.dumps(real)!r}\n"
        + PROBE
    )
    (root / "model.joblib").write_bytes(pickle.dumps(_Evil(f"(exec({code!r}, g := {{}}), g['model'])[1]")))
    return f"file://{make_tar(root / 'model.tar.gz', {'model.joblib': root / 'model.joblib'})}"


def probes(logs: Path, pattern: str) -> list[dict[str, Any]]:
    found = []
    for path in logs.glob(pattern):
        for line in path.read_text(errors="replace").splitlines():
            if "ZS-PROBE " in line:
                found.append(json.loads(line.split("ZS-PROBE ", 1)[1]))
    return found


def test_a_template_runs_the_models_code_with_no_more_privilege_than_a_worker(
    server: ServerProcess,
    sm: Any,
    smr: Any,
    sklearn_model: SklearnModel,
    listeners: Listeners,
    tmp_path: Path,
) -> None:
    url = evil_model(tmp_path, server, listeners, sklearn_model.model)
    desc = deploy(sm, "pickled", url, max_concurrency=3)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rows = sklearn_model.X[:5]
    body = sklearn_model.json_body(rows)
    want = sklearn_model.expected(np.asarray(rows))

    def invoke() -> Any:
        resp = smr.invoke_endpoint(EndpointName="pickled", Body=body, ContentType="application/json")
        return json.loads(resp["Body"].read())

    assert invoke() == want  # the first worker loaded the pickle; the template loads it beside it
    logs = server.data_dir / "logs" / "pickled" / "AllTraffic"
    wait_for(lambda: probes(logs, "template-*.log"), timeout_s=30)
    (template,) = probes(logs, "template-*.log")
    workers = probes(logs, "[0-9]*.log")
    assert workers, "the worker's probe is missing"
    worker = workers[0]

    # The template is not root: a uid of its own, and of root's capabilities only the file-access ones and
    # the right to give its replicas their uids.
    assert template["uid"] >= 1_000_000_000 and template["uid"] != worker["uid"], (template, worker)
    assert int(template["capeff"], 16) & ~(_CAP_DAC | _CAP_SETID) == 0, template
    assert int(worker["capeff"], 16) & ~_CAP_DAC == 0, worker
    # Everything the worker is refused, the template is refused too.
    attempts = [key for key in worker if key not in ("pid", "uid", "capeff")]
    assert all(worker[key] != "ok" for key in attempts), worker
    assert {key: template[key] for key in attempts} == {key: worker[key] for key in attempts}
    assert not (server.data_dir / "evil").exists()
    assert not listeners.reached

    # Scale-out forks replicas of the template: each with a uid of the template's block, none of its rights.
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda: answers.append(invoke())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [want] * 3
    proc = psutil.Process(template["pid"])
    replicas = proc.children()
    assert replicas, "no replica was forked from the template"
    for replica in replicas:
        uid = replica.uids().real
        assert template["uid"] < uid < template["uid"] + 512, (uid, template["uid"])
        status = Path(f"/proc/{replica.pid}/status").read_text()
        capeff = int(next(x.split()[1] for x in status.splitlines() if x.startswith("CapEff")), 16)
        assert capeff & ~_CAP_DAC == 0
    sm.delete_endpoint(EndpointName="pickled")


UNIX_ATTACKER = r"""
import errno, json, os, socket


def model_fn(model_dir):
    return None


def _t(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def _stream(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(path)
    s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")


def _dgram(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"forged log line", path)


def _pair(path):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.sendto(b"forged log line", path)


def transform_fn(model, body, content_type, accept):
    req = json.loads(body)
    out = {
        "pathname": _t(lambda: _stream(req["pathname"])),
        "abstract": _t(lambda: _stream(req["abstract"])),
        "datagram": _t(lambda: _dgram(req["datagram"])),
        "datagram_pair": _t(lambda: _pair(req["datagram"])),
        "workers": {p: _t(lambda p=p: _stream(p)) for p in req["workers"]},
        "own_socketpair": _t(lambda: socket.socketpair()),
    }
    return json.dumps(out), "application/json"
"""


def test_a_model_reaches_no_unix_socket(
    server: ServerProcess,
    sm: Any,
    smr: Any,
    sklearn_model: SklearnModel,
    listeners: Listeners,
    tmp_path: Path,
) -> None:
    for name, url in (
        ("unix-attacker", handler_model(tmp_path, UNIX_ATTACKER)),
        ("unix-neighbour", sklearn_model.url),
    ):
        assert deploy(sm, name, url)["EndpointStatus"] == "InService"
    rows = sklearn_model.X[:3]

    def neighbour() -> Any:
        resp = smr.invoke_endpoint(
            EndpointName="unix-neighbour", ContentType="application/json", Body=sklearn_model.json_body(rows)
        )
        return json.loads(resp["Body"].read())

    assert neighbour() == sklearn_model.expected(np.asarray(rows))
    sockets = [str(p) for p in server.data_dir.rglob("*.sock")]
    assert sockets, "the neighbour's worker socket should exist"
    req = {
        "pathname": listeners.path,
        "abstract": listeners.abstract,
        "datagram": listeners.dgram_path,
        "workers": sockets,
    }
    resp = smr.invoke_endpoint(
        EndpointName="unix-attacker", ContentType="application/json", Body=json.dumps(req)
    )
    out = json.loads(resp["Body"].read())
    assert out["own_socketpair"] == "ok", out  # a model may still talk to its own processes
    refused = {key: value for key, value in out.items() if key not in ("workers", "own_socketpair")}
    assert all(value in ("EACCES", "EPERM") for value in refused.values()), out
    assert all(value in ("EACCES", "EPERM") for value in out["workers"].values()), out
    time.sleep(0.2)
    assert not listeners.reached
    assert neighbour() == sklearn_model.expected(np.asarray(rows))
    for name in ("unix-attacker", "unix-neighbour"):
        sm.delete_endpoint(EndpointName=name)

"""Escapes the first sandbox left open, attempted for real:

- a template (a process that loaded a model and forks replicas of it) runs the model's unpickling, which is
  code: a pickle that probes its process finds no more privilege there than in a worker;
- a model connects to Unix sockets: another worker's, a daemon's world-writable one, an abstract one, a
  datagram one. None is reached, and a neighbour keeps serving;
- a bring-your-own image's server calls home over UDP (to 127.0.0.1 and outside), ICMP, MPTCP and TCP Fast
  Open, and connects to the host's Unix sockets (under /tmp, under /run, the workers'): all refused, while
  its own two processes still talk over a Unix socket of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess, deploy, make_tar, wait_for
from zeroscale.workers import sandbox, seccomp
from zeroscale.workers.sockdir import socket_dir

from .conftest import IMAGE_SERVER_END, SklearnModel, handler_model

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
    # A replica dies with its template, though the kernel's parent-death signal cannot reach it (sent with
    # the template's credentials, to another uid): else a SIGKILLed server (zygote, then template) left
    # every replica serving on, orphaned, for ever.
    proc.kill()
    _, alive = psutil.wait_procs(replicas, timeout=10)
    assert not alive, [(p.pid, p.status()) for p in alive]
    sm.delete_endpoint(EndpointName="pickled")


UID_HOPPER = r"""
import ctypes, os, signal, time

_libc = ctypes.CDLL(None, use_errno=True)


def model_fn(model_dir):
    status = open("/proc/self/status").read()
    capeff = int(next(x.split()[1] for x in status.splitlines() if x.startswith("CapEff")), 16)
    if capeff & (1 << 7):  # CAP_SETUID: this is a template, which gives its replicas the uids of its block
        uid = os.getuid()
        print(f"ZS-TEMPLATE-UID {uid}", flush=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:  # a grandchild: not the template's child, under a uid no replica has yet
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                _libc.setresuid(uid + 511, uid + 511, uid + 511)
                hoard = bytearray(64 * 1024 * 1024)
                while True:
                    time.sleep(1)
            os._exit(0)
        os.wait()
    return None


def transform_fn(model, body, content_type, accept):
    return body, "application/octet-stream"
"""


def test_a_templates_model_leaves_no_process_running_past_it(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    """An audit's model_fn, run in a template (which may change uids within its block to give its replicas
    theirs), forked a daemon twice over, moved it to the block's last uid and kept it there: it was no
    child of the template (the fork loop's check saw none), no replica (no uid was handed to it), not in the
    template's memory cgroup (joined 50 ms after the fork), and it outlived the endpoint, hoarding 3 GB on a
    1024 MB endpoint and its uid passing to the next tenant's replicas. Now the template joins its groups
    before the model's code runs, a template whose load left any process of its block running is refused
    (its workers load the model themselves), and a template's end ends every uid of its block that no
    replica holds."""
    desc = deploy(sm, "hopper", handler_model(tmp_path, UID_HOPPER), max_concurrency=3)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert smr.invoke_endpoint(EndpointName="hopper", Body=b"x")["Body"].read() == b"x"
    logs = server.data_dir / "logs" / "hopper" / "AllTraffic"

    def template_uid() -> int | None:
        for path in logs.glob("template-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if "ZS-TEMPLATE-UID " in line:
                    return int(line.split("ZS-TEMPLATE-UID ")[1])
        return None

    wait_for(lambda: template_uid() is not None, timeout_s=30)
    uid = template_uid()
    assert uid is not None

    def in_block() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if uid <= proc.info["uids"].real <= uid + 511:
                    found.append(proc)
        return found

    wait_for(lambda: not in_block(), timeout_s=10)  # the template refused, and its daemon gone with it
    refused = "".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    # refused as its load ended; or, where the daemon took its block's uid only after that check (a loaded
    # machine), ended with the template, which ends every uid of its block no replica holds
    assert (
        "loading it left 1 other process running" in refused
        or "1 process its model started ran under uids of its block that no replica has" in refused
    ), refused[-2000:]
    answers: list[bytes] = []  # the workers load the model themselves, scale-out included
    threads = [
        threading.Thread(
            target=lambda: answers.append(
                smr.invoke_endpoint(EndpointName="hopper", Body=b"y")["Body"].read()
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [b"y"] * 3
    assert not in_block()
    sm.delete_endpoint(EndpointName="hopper")


HOOKED_HOPPER = r"""
import ctypes, os, signal, sys, time

_libc = ctypes.CDLL(None, use_errno=True)
_state = {"armed": False, "busy": False}


def _hop(event, args):
    if event != "os.fork" or not _state["armed"] or _state["busy"]:
        return
    _state["busy"] = True  # at the template's next fork (a replica's): a daemon of its own, elsewhere
    uid = os.getuid()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _libc.setresuid(uid + 510, uid + 510, uid + 510)
            while True:
                time.sleep(1)
        os._exit(0)
    os.wait()
    _state["busy"] = False


def model_fn(model_dir):
    status = open("/proc/self/status").read()
    capeff = int(next(x.split()[1] for x in status.splitlines() if x.startswith("CapEff")), 16)
    if capeff & (1 << 7):  # a template: nothing runs at its load, the hook runs later, in its fork loop
        print(f"ZS-TEMPLATE-UID {os.getuid()}", flush=True)
        sys.addaudithook(_hop)
        _state["armed"] = True
    return None


def transform_fn(model, body, content_type, accept):
    time.sleep(0.3)
    return body, "application/octet-stream"
"""


def test_a_templates_model_that_starts_a_process_later_ends_the_template(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    """Code a model's load leaves behind can run in the template later (an audit hook at its next fork): a
    process it starts under a uid of the block that no replica holds ends the template within the watchdog's
    once-a-second pass, and itself with it."""
    desc = deploy(sm, "hooked", handler_model(tmp_path, HOOKED_HOPPER), max_concurrency=3)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert smr.invoke_endpoint(EndpointName="hooked", Body=b"x")["Body"].read() == b"x"
    logs = server.data_dir / "logs" / "hooked" / "AllTraffic"

    def template_text() -> str:
        return "".join(p.read_text(errors="replace") for p in logs.glob("template-*.log"))

    wait_for(lambda: "ZS-TEMPLATE-UID " in template_text(), timeout_s=30)
    uid = int(template_text().split("ZS-TEMPLATE-UID ")[1].split()[0])
    time.sleep(1.0)  # the template listens for forks once its load is done

    def invoke() -> None:  # a replica serving one dies with its template: its request is a ModelError
        with contextlib.suppress(ClientError):
            smr.invoke_endpoint(EndpointName="hooked", Body=b"y")

    threads = [threading.Thread(target=invoke) for _ in range(3)]  # scale-out: a replica's fork
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: "its model started ran under uids of its block" in template_text(), timeout_s=15)

    def in_block() -> list[int]:
        found = []
        for proc in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["uids"].real == uid + 510:
                    found.append(proc.pid)
        return found

    wait_for(lambda: not in_block(), timeout_s=10)
    assert smr.invoke_endpoint(EndpointName="hooked", Body=b"z")["Body"].read() == b"z"
    sm.delete_endpoint(EndpointName="hooked")


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
    sockets = [str(p) for p in socket_dir(server.data_dir.absolute() / "workers").glob("*.sock")]
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


# ---- a model that looks for descriptors its process was handed ----
FD_LISTER = """
import json, os


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return json.dumps(found), "application/json"
"""


def test_a_model_holds_no_descriptor_of_its_zygote_or_the_server(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    """The security review's finding: every forked worker held two descriptors open for writing on its
    zygote's log (copies of the zygote's standard streams that the event loop's process spawn left open),
    outside its sandbox and past every limit on its own output, and whatever the server was started with.
    Now it holds its standard streams, its pipes and its sockets."""
    assert deploy(sm, "fd-lister", handler_model(tmp_path, FD_LISTER))["EndpointStatus"] == "InService"
    resp = smr.invoke_endpoint(EndpointName="fd-lister", ContentType="application/json", Body=b"{}")
    held = json.loads(resp["Body"].read())
    files = {fd: target for fd, target in held.items() if target.startswith("/") and target != "/dev/null"}
    listing = [fd for fd, target in files.items() if target.startswith("/proc/")]  # the listing's own
    assert len(listing) <= 1 and not {fd: t for fd, t in files.items() if fd not in listing}, held
    sm.delete_endpoint(EndpointName="fd-lister")


# ---- a bring-your-own image's server that calls home over UDP and looks for the host's Unix sockets ----
HOSTILE_IMAGE = (
    r"""#!/usr/bin/env python3
import errno, json, os, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

STARTED_WITH = sorted(int(name) for name in os.listdir("/proc/self/fd"))  # the listing's own among them

APP = os.path.join(os.environ["TMPDIR"], "app.sock")


def app():
    # The image's second process: an app server on a Unix socket of the image's own (nginx -> gunicorn).
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(APP)
    srv.listen(8)
    while True:
        conn, _ = srv.accept()
        try:
            conn.sendall(b"app says " + conn.recv(100))
        except OSError:
            pass
        conn.close()


if os.fork() == 0:
    app()
    os._exit(0)


def _t(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def udp(family, addr):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.sendto(b"calling home", addr)


def ping():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()


def mptcp(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", port))


def fast_open(port, msg):
    with socket.socket() as s:
        s.settimeout(2)
        if msg:
            s.sendmsg([b"calling home"], [], socket.MSG_FASTOPEN, ("127.0.0.1", port))
        else:
            s.sendto(b"calling home", socket.MSG_FASTOPEN, ("127.0.0.1", port))


def unix(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(path)
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")


def unix_dgram(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"forged log line", path)


def own():
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(APP)
        s.sendall(b"hello")
        return s.recv(100).decode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer(b"{}")

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = {
            "udp_local": _t(lambda: udp(socket.AF_INET, ("127.0.0.1", req["udp_port"]))),
            "udp_outside": _t(lambda: udp(socket.AF_INET, ("192.0.2.1", 53))),
            "udp6": _t(lambda: udp(socket.AF_INET6, ("::1", req["udp_port"]))),
            "ping": _t(ping),
            "raw": _t(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()),
            "packet": _t(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM).close()),
            "mptcp": _t(lambda: mptcp(req["tcp_port"])),
            "fast_open": _t(lambda: fast_open(req["tcp_port"], False)),
            "fast_open_msg": _t(lambda: fast_open(req["tcp_port"], True)),
            "tcp": _t(lambda: socket.create_connection(("127.0.0.1", req["tcp_port"]), timeout=2).close()),
            "unix": {path: _t(lambda path=path: unix(path)) for path in req["unix"]},
            "unix_dgram": _t(lambda: unix_dgram(req["dgram"])),
            "own_app": own(),
            "own_pair": _t(lambda: [s.close() for s in socket.socketpair()]),
            "seen": [path for path in [*req["unix"], req["dgram"]] if os.path.exists(path)],
            "run": os.path.exists("/run") or os.path.exists("/var/run"),
            "started_with": STARTED_WITH,
        }
        self.answer(json.dumps(out).encode())
"""
    + IMAGE_SERVER_END
)


class Calls:
    """A UDP and a TCP listener on 127.0.0.1 (the image must reach neither), and what reached them."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        threading.Thread(target=self._receive, daemon=True).start()
        threading.Thread(target=self._accept, daemon=True).start()

    def _receive(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.reached.append(f"udp {self.udp.recv(100)!r}")

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.tcp.accept()
                self.reached.append("tcp")
                conn.close()

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def run_socket() -> Iterator[str]:
    """A daemon's socket under /run, where PostgreSQL's, Docker's and systemd's live."""
    root = Path(f"/run/zeroscale-test-{os.getpid()}")
    if not os.access("/run", os.W_OK):
        pytest.skip("/run is not writable here")
    root.mkdir(exist_ok=True)
    path = root / "daemon.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    os.chmod(path, 0o777)
    sock.listen(8)
    yield str(path)
    sock.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="the image's file system view needs bubblewrap")
def test_an_image_server_calls_no_one_over_udp_nor_a_host_unix_socket(
    server: ServerProcess,
    sm: Any,
    smr: Any,
    sklearn_model: SklearnModel,
    listeners: Listeners,
    run_socket: str,
    tmp_path: Path,
) -> None:
    image = tmp_path / "image"
    image.mkdir()
    (image / "serve").write_text(HOSTILE_IMAGE)
    (image / "serve").chmod(0o755)
    (image / "manifest.json").write_text(json.dumps({"entrypoint": ["./serve"]}))
    zeroscale = Path(sys.executable).parent / "zeroscale"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    subprocess.run(
        [str(zeroscale), "images", "push", "caller:1", str(image), "--endpoint-url", server.url],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    (tmp_path / "model.json").write_text("{}")
    url = f"file://{make_tar(tmp_path / 'model.tar.gz', {'model.json': tmp_path / 'model.json'})}"
    for name, kwargs in (("caller", {"image": "caller:1"}), ("caller-neighbour", {})):
        desc = deploy(sm, name, url if kwargs else sklearn_model.url, **kwargs)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    # a live neighbour (its model may be proven already, deployed without a worker): a request starts one
    smr.invoke_endpoint(
        EndpointName="caller-neighbour",
        Body=sklearn_model.json_body(sklearn_model.X[:1]),
        ContentType="application/json",
    )
    workers = [str(p) for p in socket_dir(server.data_dir.absolute() / "workers").glob("*.sock")]
    assert workers, "the neighbour's worker socket should exist"
    calls = Calls()
    try:
        req = {
            "udp_port": calls.udp.getsockname()[1],
            "tcp_port": calls.tcp.getsockname()[1],
            "unix": [listeners.path, run_socket, *workers],
            "dgram": listeners.dgram_path,
        }
        body = json.dumps(req)
        resp = smr.invoke_endpoint(EndpointName="caller", ContentType="application/json", Body=body)
        out = json.loads(resp["Body"].read())
        time.sleep(0.2)
        assert not calls.reached and not listeners.reached, (calls.reached, listeners.reached, out)
    finally:
        calls.close()
    # TCP only, and connect nowhere: UDP, ICMP, raw and packet sockets, MPTCP, TCP Fast Open are refused.
    for key in ("udp_local", "udp_outside", "udp6", "ping", "raw", "packet", "mptcp", "fast_open"):
        assert out[key] in ("EACCES", "EPERM"), (key, out)
    assert out["fast_open_msg"] in ("EACCES", "EPERM") and out["tcp"] == "EACCES", out
    # No host Unix socket is there to name: not under /tmp or /run, not the workers'.
    assert set(out["unix"]) == set(req["unix"])
    assert all(value in ("ENOENT", "EACCES") for value in out["unix"].values()), out
    assert out["unix_dgram"] in ("ENOENT", "EACCES"), out
    assert out["seen"] == [] and out["run"] is False, out
    # It was started with its standard streams only (nothing of the server's, no copies of them).
    assert len([fd for fd in out["started_with"] if fd > 2]) <= 1, out  # at most the listing's own
    # The image's own processes still talk over its own Unix socket.
    assert out["own_app"] == "app says hello" and out["own_pair"] == "ok", out
    for name in ("caller", "caller-neighbour"):
        sm.delete_endpoint(EndpointName=name)


# ---- an image whose environment names a library for the dynamic loader ----
PRELOADING_IMAGE = (
    r"""#!/usr/bin/env python3
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer(b"{}")

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(os.environ.get("LD_PRELOAD", "").encode())
"""
    + IMAGE_SERVER_END
)


def test_an_images_environment_reaches_its_command_only(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    """A security review's finding: an image's environment (its manifest's env, the model's Environment)
    was bwrap's and the confining shim's too, which run as root before any confinement, so an LD_PRELOAD
    ran the image's library as root on the host. The image's command has its environment; every process
    between the server and it has the server's own, and does not carry the image's in its arguments."""
    preload = "/nonexistent/zeroscale-preload-probe.so"  # the loader says it cannot, and goes on
    image = tmp_path / "image"
    image.mkdir()
    (image / "serve").write_text(PRELOADING_IMAGE)
    (image / "serve").chmod(0o755)
    manifest = {"entrypoint": ["./serve"], "env": {"LD_PRELOAD": preload}}
    (image / "manifest.json").write_text(json.dumps(manifest))
    zeroscale = Path(sys.executable).parent / "zeroscale"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    subprocess.run(
        [str(zeroscale), "images", "push", "preloading:1", str(image), "--endpoint-url", server.url],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (tmp_path / "model.json").write_text("{}")
    url = f"file://{make_tar(tmp_path / 'model.tar.gz', {'model.json': tmp_path / 'model.json'})}"
    desc = deploy(sm, "preloading", url, image="preloading:1")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = smr.invoke_endpoint(EndpointName="preloading", ContentType="application/json", Body=b"{}")
    assert resp["Body"].read() == preload.encode()  # the image's command has it
    assert server.proc is not None
    servers = [
        p
        for p in psutil.Process(server.proc.pid).children(recursive=True)
        if preload.encode() in Path(f"/proc/{p.pid}/environ").read_bytes()
    ]
    assert servers, "the image's server should hold its environment"
    confining = 0
    for found in servers:  # bwrap and the shim between the server and the command have the server's own
        for parent in found.parents():
            if parent.pid == server.proc.pid:
                break
            cmdline = parent.cmdline()
            if cmdline[0].endswith("bwrap") or cmdline[1:3] == ["-I", "-S"]:
                confining += 1
                environ = Path(f"/proc/{parent.pid}/environ").read_bytes()
                assert preload.encode() not in environ, cmdline[:4]
                # nor in its arguments, which any local user reads (an Environment holds secrets)
                assert not any(preload in arg for arg in cmdline), cmdline[:4]
    assert confining, "bwrap should stand between the server and the image's command here"
    sm.delete_endpoint(EndpointName="preloading")

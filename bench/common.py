"""What every scenario shares: models, signed and direct HTTP clients, statistics, process views.

Clock: every timestamp that is compared across processes is ``time.monotonic()`` (CLOCK_MONOTONIC on Linux,
the same clock in every process), so a worker's log line and the client's timer can be subtracted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import psutil
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from sklearn.ensemble import RandomForestClassifier

from zeroscale.testing import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    ServerProcess,
    deploy,
    free_port,
    make_tar,
    wait_final,
    wait_for,
)

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "ServerProcess",
    "deploy",
    "free_port",
    "make_tar",
    "wait_final",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
ROW = json.dumps([[0.5] * 10]).encode()  # one row of the reference model's 10 features
JSON = "application/json"
IDLE_TAG = "zeroscale:idle-timeout-s"

# The trivial model: echoes the body. It prints CLOCK_MONOTONIC timestamps on import, in model_fn and on its
# first call only (a print costs microseconds and only once per worker), so cold starts can be broken down.
ECHO_INFERENCE = """\
import time
print(f"zsbench import {time.monotonic():.6f}", flush=True)
_first = True


def model_fn(model_dir):
    now = time.monotonic()
    print(f"zsbench load {now:.6f} {now:.6f}", flush=True)
    return None


def transform_fn(model, body, content_type, accept):
    global _first
    if _first:
        _first = False
        now = time.monotonic()
        print(f"zsbench predict {now:.6f} {now:.6f}", flush=True)
    return body, content_type
"""

# The reference RandomForest behind the same default hooks as the sklearn runtime (its joblib reader and
# predict), with the same timestamps: the cold-start breakdown's probe. Its cold-start p50 is reported next
# to the plain model's so the instrumentation's own cost is visible.
PROBE_INFERENCE = """\
import os
import time
print(f"zsbench import {time.monotonic():.6f}", flush=True)
from zeroscale.runtimes import joblib_reader

_first = True


def model_fn(model_dir):
    start = time.monotonic()
    model = joblib_reader.load(os.path.join(model_dir, "model.joblib"))
    print(f"zsbench load {start:.6f} {time.monotonic():.6f}", flush=True)
    return model


def predict_fn(data, model):
    global _first
    start = time.monotonic()
    out = model.predict(data)
    if _first:
        _first = False
        print(f"zsbench predict {start:.6f} {time.monotonic():.6f}", flush=True)
    return out
"""


@dataclass(frozen=True)
class Models:
    rf_joblib: Path  # the reference model file (for the naive baseline and Ray)
    rf: Path  # model.tar.gz: model.joblib, default sklearn hooks
    probe: Path  # model.tar.gz: model.joblib + code/inference.py with timestamps
    echo: Path  # model.tar.gz: code/inference.py, transform_fn echo
    echo_dir: Path  # the echo model extracted (for the zygote experiment)
    probe_dir: Path  # the probe model extracted


def build_models(root: Path) -> Models:
    rng = np.random.RandomState(0)
    X = rng.rand(2000, 10)
    y = (X[:, 0] + X[:, 3] > 1).astype(int)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)
    rf_joblib = root / "model.joblib"
    joblib.dump(model, rf_joblib)
    echo_dir = root / "echo-model"
    (echo_dir / "code").mkdir(parents=True)
    (echo_dir / "code" / "inference.py").write_text(ECHO_INFERENCE)
    probe_dir = root / "probe-model"
    (probe_dir / "code").mkdir(parents=True)
    (probe_dir / "code" / "inference.py").write_text(PROBE_INFERENCE)
    (probe_dir / "model.joblib").write_bytes(rf_joblib.read_bytes())
    return Models(
        rf_joblib=rf_joblib,
        rf=make_tar(root / "rf.tar.gz", {"model.joblib": rf_joblib}),
        probe=make_tar(
            root / "probe.tar.gz",
            {"model.joblib": rf_joblib, "code/inference.py": PROBE_INFERENCE.encode()},
        ),
        echo=make_tar(root / "echo.tar.gz", {"code/inference.py": ECHO_INFERENCE.encode()}),
        echo_dir=echo_dir,
        probe_dir=probe_dir,
    )


# ---- statistics ----
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ---- HTTP ----
class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (a worker's ``<data-dir>/workers/<id>.sock``)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("worker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def sign(url: str, endpoint: str, body: bytes, content_type: str = JSON) -> dict[str, str]:
    """The headers a SigV4 client (botocore's signer) sends for one invocation. Valid for 15 minutes."""
    req = AWSRequest(
        "POST", f"{url}/endpoints/{endpoint}/invocations", data=body, headers={"Content-Type": content_type}
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(req)
    return dict(req.headers.items())


class SignedClient:
    """Keep-alive HTTP/1.1 to zeroscale with botocore's SigV4 signer, without boto3's per-call machinery.

    ``invoke`` returns (seconds spent signing, seconds from the first byte sent to the last byte read)."""

    def __init__(self, url: str, timeout: float = 60.0, context: ssl.SSLContext | None = None) -> None:
        """``context``: for an https ``url``, how its certificate is verified."""
        self.url = url
        host = url.split("//", 1)[1]
        self.conn = (
            http.client.HTTPSConnection(host, timeout=timeout, context=context)
            if url.startswith("https://")
            else http.client.HTTPConnection(host, timeout=timeout)
        )
        self.signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION)

    def signed_headers(self, endpoint: str, body: bytes) -> dict[str, str]:
        path = f"/endpoints/{endpoint}/invocations"
        req = AWSRequest("POST", self.url + path, data=body, headers={"Content-Type": JSON})
        self.signer.add_auth(req)
        return dict(req.headers.items())

    def send(self, endpoint: str, body: bytes, headers: dict[str, str]) -> bytes:
        self.conn.request("POST", f"/endpoints/{endpoint}/invocations", body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{endpoint}: {resp.status}: {data!r}")
        return data

    def invoke(self, endpoint: str, body: bytes) -> tuple[float, float]:
        t0 = time.perf_counter()
        headers = self.signed_headers(endpoint, body)
        t1 = time.perf_counter()
        self.send(endpoint, body, headers)
        return t1 - t0, time.perf_counter() - t1

    def close(self) -> None:
        self.conn.close()


def direct_invoke(conn: http.client.HTTPConnection, body: bytes) -> bytes:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": JSON})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"worker: {resp.status}: {data!r}")
    return data


def ping_unix(path: str) -> bool:
    try:
        conn = UnixHTTPConnection(path, timeout=2.0)
        conn.request("GET", "/ping")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


# ---- the server from outside ----
_SAMPLE = re.compile(r'^(\w+)\{endpoint_name="([^"]*)",variant_name="([^"]*)"[^}]*\} (\S+)$')


def metric(text: str, name: str, endpoint: str | None = None) -> float:
    """Sum of a series over variants (and endpoints when ``endpoint`` is None)."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name and (endpoint is None or match.group(2) == endpoint):
            total += float(match.group(4))
    return total


def plain(text: str, name: str) -> float:
    """An unlabelled sample of /metrics (the cache's series have no labels); 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def worker_sockets(data_dir: Path, endpoint: str) -> list[Path]:
    """The Unix sockets of an endpoint's live workers (worker ids from its log directory)."""
    ids = {p.stem for p in (data_dir / "logs" / endpoint).glob("*/*.log")}
    return sorted(p for p in (data_dir / "workers").glob("*.sock") if p.stem in ids and ping_unix(str(p)))


def probe_lines(data_dir: Path, endpoint: str) -> list[dict[str, float]]:
    """One record per worker log of ``endpoint`` with the probe's timestamps (import, load0, load1, ...)."""
    out = []
    for log in (data_dir / "logs" / endpoint).glob("*/*.log"):
        rec: dict[str, float] = {}
        rec = parse_probe(log.read_text(errors="replace"))
        if rec:
            out.append(rec)
    return out


def parse_probe(text: str) -> dict[str, float]:
    """The probe's ``zsbench <what> <t> [<t>]`` lines (the worker log may prefix each line with a time)."""
    rec: dict[str, float] = {}
    for line in text.splitlines():
        at = line.find("zsbench ")
        if at < 0:
            continue
        parts = line[at:].split()
        if len(parts) == 3 and parts[1] == "import":
            rec["import"] = float(parts[2])
        elif len(parts) == 4 and parts[1] in ("load", "predict"):
            rec[parts[1] + "0"], rec[parts[1] + "1"] = float(parts[2]), float(parts[3])
    return rec


def tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def not_spare(p: psutil.Process) -> bool:
    """Whether ``p`` is still there and is not a zygote's spare (``zs-spare``: forked ahead of the next cold
    start, it belongs to the runtime, not to an endpoint, and comes and goes as it is taken and replaced)."""
    try:
        return bool(p.name() != "zs-spare")
    except psutil.Error:
        return False


def counted(procs: list[psutil.Process]) -> int:
    """Processes, less the zygotes' spares (``not_spare``)."""
    return sum(not_spare(p) for p in procs)


def working(srv: ServerProcess) -> int:
    """The processes under ``srv`` (itself included) less the zygotes' spares and the warm-model cache's
    templates and parked replicas (two an entry, from /metrics): at zero, the server and its zygotes."""
    assert srv.proc is not None
    cached = 2 * int(plain(srv.metrics(), "zeroscale_warm_cache_entries"))
    return counted(tree(srv.proc.pid)) - cached


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[tuple[Path, Any]]:
    """A scratch directory and a PostgreSQL server of the tests' own (``tests/pgserver.py``) in it, for the
    scenarios of several front ends on one database; both are gone afterwards."""
    sys.path.insert(0, str(REPO / "tests"))
    from pgserver import PostgresServer  # type: ignore[import-not-found]  # tests/pgserver.py

    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # the PostgreSQL cluster belongs to the postgres user when run as root
    try:
        with PostgresServer(root / "pg") as pg:
            yield root, pg
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def server(root: Path, name: str, **flags: Any) -> Iterator[ServerProcess]:
    proc = ServerProcess(root / name, flags).start()
    try:
        yield proc
    finally:
        proc.stop()


def wait_zero(srv: ServerProcess, endpoints: list[str], timeout_s: float = 30.0) -> None:
    def zero() -> bool:
        text = srv.metrics()
        return all(metric(text, "zeroscale_workers", e) == 0 for e in endpoints)

    wait_for(zero, timeout_s=timeout_s, interval_s=0.02)


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def machine_busy_s() -> float:
    """CPU seconds all processes on this machine have used (every core), since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass
class CpuWindow:
    """CPU used during a window: by named process groups, and by everything else on the machine."""

    wall_s: float
    groups_s: dict[str, float]
    machine_s: float

    @property
    def others_cores(self) -> float:
        """Cores' worth of CPU used by processes outside the named groups (other users of the machine)."""
        return max(0.0, self.machine_s - sum(self.groups_s.values())) / self.wall_s if self.wall_s else 0.0


class CpuWatch:
    def __init__(self, groups: dict[str, list[psutil.Process]]) -> None:
        self.groups = groups
        self.t0 = time.monotonic()
        self.m0 = machine_busy_s()
        self.c0 = {name: cpu_s(procs) for name, procs in groups.items()}

    def stop(self, extra: dict[str, float] | None = None) -> CpuWindow:
        """``extra``: CPU seconds of groups measured elsewhere (e.g. a client that has exited)."""
        wall = time.monotonic() - self.t0
        groups = {name: cpu_s(procs) - self.c0[name] for name, procs in self.groups.items()}
        groups.update(extra or {})
        return CpuWindow(wall, groups, machine_busy_s() - self.m0)


IDLE_LATENCY = "/dev/cpu_dma_latency"


def can_poll_idle() -> bool:
    """Whether this process may hold idle CPUs polling (``idle_polling``): root, on a kernel with PM QoS."""
    return os.access(IDLE_LATENCY, os.W_OK)


@contextlib.contextmanager
def idle_polling(on: bool = True) -> Iterator[None]:
    """While open, no CPU enters an idle state with an exit latency above 0 us (the PM QoS request lasts
    as long as the file is open): an idle CPU polls instead of halting, so a thread woken onto it starts
    at once, and the thread that wakes it sends no interrupt. A machine's setting, for experiments: it
    spins every idle CPU while it is held."""
    if not on:
        yield
        return
    fd = os.open(IDLE_LATENCY, os.O_WRONLY)
    try:
        os.write(fd, struct.pack("i", 0))
        yield
    finally:
        os.close(fd)

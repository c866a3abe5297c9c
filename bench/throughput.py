"""Throughput: the trivial model, MaxConcurrency 2 (both workers provisioned, so both are warm), on this
2-core machine: invocations/s through zeroscale against the same two workers hit directly.

The load generator (``bench/loadgen.py``) is the same program for both: closed loop, pre-built requests.
Through zeroscale every request carries a real SigV4 signature, computed once before the run and reused:
SigV4 signatures stay valid for 15 minutes and zeroscale verifies every request in full (it recomputes the
HMAC chain and compares; it has no replay cache to exploit), so reusing one signed header set only takes the
client's signing cost out of the client, which is what a load generator must do to not be the bottleneck.
A cross-check with ``wrk`` (C, one thread, Lua adds the same pre-signed headers) is run when wrk is
installed; it cannot reach a Unix socket, so it only measures the zeroscale side.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    IDLE_LATENCY,
    REPO,
    ROW,
    CpuWatch,
    CpuWindow,
    Models,
    ServerProcess,
    can_poll_idle,
    deploy,
    free_port,
    idle_polling,
    sign,
    tree,
    wait_for,
    worker_sockets,
)

BODY = b'{"echo": 1}'
ENDPOINT = "echo-tp"
RF_ENDPOINT = "rf-tp"
# The RandomForest's MaxConcurrency and clients: one per core (issue 15's "MaxConcurrency = cores"); 2 on
# the 2-core machines the project is built on.
RF_WORKERS = max(2, os.cpu_count() or 2)


@dataclass
class Run:
    label: str
    connections: int
    rps: float
    p50_s: float
    p99_s: float
    errors: int
    cpu: CpuWindow


@dataclass
class ThroughputResult:
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)  # profile_server

    def best(self, prefix: str, connections: int | None = None) -> Run | None:
        runs = [r for r in self.runs if r.label.startswith(prefix) and connections in (None, r.connections)]
        return max(runs, key=lambda r: r.rps) if runs else None

    def median_rps(self, label: str, connections: int) -> float:
        values = sorted(r.rps for r in self.runs if r.label == label and r.connections == connections)
        return values[len(values) // 2] if values else 0.0


def deploy_tp(srv: ServerProcess, models: Models) -> None:
    sm = srv.client("sagemaker")
    deploy(sm, ENDPOINT, f"file://{models.echo}", memory_mb=1024, max_concurrency=2, provisioned=2)
    n = RF_WORKERS
    deploy(sm, RF_ENDPOINT, f"file://{models.rf}", memory_mb=1024, max_concurrency=n, provisioned=n)


def _through_request(srv: ServerProcess, endpoint: str = ENDPOINT, body: bytes = BODY) -> bytes:
    headers = sign(srv.url, endpoint, body)
    lines = [f"POST /endpoints/{endpoint}/invocations HTTP/1.1", f"Host: 127.0.0.1:{srv.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _direct_request(body: bytes = BODY) -> bytes:
    head = (
        "POST /invocations HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _loadgen(
    targets: list[str],
    request: bytes,
    connections: int,
    duration_s: float,
    tmp: Path,
    think_ms: float = 0.0,
) -> dict[str, Any]:
    req_file = tmp / "request.bin"
    req_file.write_bytes(request)
    args = [sys.executable, "-m", "bench.loadgen", "--request-file", str(req_file)]
    for target in targets:
        args += ["--target", target]
    args += ["--connections", str(connections), "--duration", str(duration_s), "--warmup", "0.5"]
    if think_ms:
        args += ["--think-ms", str(think_ms)]
    out = subprocess.run(args, cwd=REPO, check=True, capture_output=True, timeout=duration_s + 60)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _wrk(srv: ServerProcess, connections: int, duration_s: float, tmp: Path) -> tuple[dict[str, Any], float]:
    headers = sign(srv.url, ENDPOINT, BODY)
    lua = ['wrk.method = "POST"', f"wrk.body = {json.dumps(BODY.decode())}"]
    lua += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script = tmp / "signed.lua"
    script.write_text("\n".join(lua) + "\n")
    url = f"{srv.url}/endpoints/{ENDPOINT}/invocations"
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency", "-s", str(script), url]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    text = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {text}")
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)

    def lat(p: str) -> float:
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\b", text, re.M)
        if not m:
            return 0.0
        return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]

    return {
        "rps": rps,
        "errors": int(non2xx.group(1)) if non2xx else (1 if errors else 0),
        "p50_s": lat("50"),
        "p99_s": lat("99"),
    }, usage.ru_utime + usage.ru_stime


def _floor(port: int, workers: list[Path]) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bench.floor", "--port", str(port)]
    for w in workers:
        args += ["--worker", str(w)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("bench.floor did not start")


def _plain_request(port: int) -> bytes:
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


def _native_counts(srv: ServerProcess) -> dict[str, float]:
    """``zeroscale_native_requests_total`` by path (served, relayed)."""
    found = re.findall(r'^zeroscale_native_requests_total\{path="(\w+)"\} ([0-9.e+]+)$', srv.metrics(), re.M)
    return {path: float(value) for path, value in found}


def _two_workers(srv: ServerProcess, endpoint: str) -> list[Path]:
    return _workers(srv, endpoint, 2)


def _workers(srv: ServerProcess, endpoint: str, n: int) -> list[Path]:
    # the provisioned workers after CreateEndpoint's first one start in the background
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: len(worker_sockets(srv.data_dir, endpoint)) == n, timeout_s=30, interval_s=0.05)
    sockets = worker_sockets(srv.data_dir, endpoint)
    if len(sockets) != n:
        raise RuntimeError(f"{endpoint}: expected {n} warm workers, found {len(sockets)}")
    return sockets


def measure(srv: ServerProcess, duration_s: float, repeats: int, result: ThroughputResult) -> None:
    """Runs, all with the same load generator: direct and zeroscale at 2 clients (``repeats`` times,
    alternating), zeroscale at 4 clients, the floor (bench/floor.py) as a bare proxy to the same workers and
    as a no-hop app, 1-client latency runs of direct / zeroscale / floor proxy (again with idle CPUs
    polling where this process may ask for it: ``bench.common.idle_polling``), the RandomForest at
    ``RF_WORKERS`` clients (one per core) direct and via zeroscale, and wrk against zeroscale."""
    assert srv.proc is not None
    sockets = _two_workers(srv, ENDPOINT)
    server_proc = psutil.Process(srv.proc.pid)
    rest = tree(srv.proc.pid)[1:]  # zygotes and workers
    direct = [f"unix:{s}" for s in sockets]
    through = [f"tcp:127.0.0.1:{srv.port}"]
    signed = _through_request(srv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        def go(
            label: str, targets: list[str], request: bytes, conns: int, seconds: float, front: Any = None
        ) -> None:
            watch = CpuWatch({"server": front or [server_proc], "workers": rest})
            out = _loadgen(targets, request, conns, seconds, tmp)
            cpu = watch.stop({"client": float(out["cpu_s"])})
            result.runs.append(
                Run(label, conns, out["rps"], out["p50_s"], out["p99_s"], int(out["errors"]), cpu)
            )

        _loadgen(direct, _direct_request(), 2, 0.5, tmp)  # warm both paths
        _loadgen(through, signed, 2, 0.5, tmp)
        for _ in range(repeats):
            go("direct", direct, _direct_request(), 2, duration_s)
            go("zeroscale", through, signed, 2, duration_s)
        # the native data plane's port (--native-port), when the server has one: its runs after the main
        # port's, so that each holds the workers for its own runs (the plane leases idle ones)
        native = [f"tcp:127.0.0.1:{srv.flags['native_port']}"] if "native_port" in srv.flags else []
        if native:
            _loadgen(native, signed, 2, 0.5, tmp)
            for _ in range(repeats):
                go("zeroscale-native", native, signed, 2, duration_s)
        go("zeroscale", through, signed, 4, duration_s)
        if native:  # more clients than workers: the plane comes to hold both, its requests wait for them
            before = _native_counts(srv)
            go("zeroscale-native", native, signed, 4, duration_s)
            after = _native_counts(srv)
            served, relayed = (after[k] - before.get(k, 0.0) for k in ("served", "relayed"))
            result.notes.append(
                f"native port, 4 clients on 2 workers: {served:.0f} requests served by the plane, "
                f"{relayed:.0f} relayed ({served / max(1.0, served + relayed):.1%} served)"
            )
        short = max(2.0, duration_s / 2)
        floor_port, noop_port = free_port(), free_port()
        floor = _floor(floor_port, sockets)
        noop = _floor(noop_port, [])
        try:
            rest_floor = [psutil.Process(floor.pid), psutil.Process(noop.pid)]
            for label, port in (("floor-proxy", floor_port), ("floor-noop", noop_port)):
                go(label, [f"tcp:127.0.0.1:{port}"], _plain_request(port), 2, short, rest_floor)
            go("direct", direct[:1], _direct_request(), 1, short)
            go("zeroscale", through, signed, 1, short)
            if native:
                go("zeroscale-native", native, signed, 1, short)
            floor_target = [f"tcp:127.0.0.1:{floor_port}"]
            go("floor-proxy", floor_target, _plain_request(floor_port), 1, short, rest_floor)
            # The same three with idle CPUs polling (a machine's setting, for reference): what of the
            # 1-client overhead is the wake-ups of halted CPUs (docs/performance.md).
            if can_poll_idle():
                with idle_polling():
                    go("direct-polled", direct[:1], _direct_request(), 1, short)
                    go("zeroscale-polled", through, signed, 1, short)
                    go("floor-proxy-polled", floor_target, _plain_request(floor_port), 1, short, rest_floor)
            else:
                result.notes.append(f"{IDLE_LATENCY} not writable (not root): no 1-client runs polling")
        finally:
            for proc in (floor, noop):
                proc.kill()
                proc.wait()
        n = RF_WORKERS
        rf_sockets = _workers(srv, RF_ENDPOINT, n)
        go("rf-direct", [f"unix:{s}" for s in rf_sockets], _direct_request(ROW), n, short)
        go("rf-zeroscale", through, _through_request(srv, RF_ENDPOINT, ROW), n, short)
        if native:
            _loadgen(native, _through_request(srv, RF_ENDPOINT, ROW), n, 0.5, tmp)
            go("rf-zeroscale-native", native, _through_request(srv, RF_ENDPOINT, ROW), n, short)
        if shutil.which("wrk"):
            watch = CpuWatch({"server": [server_proc], "workers": rest})
            out, wrk_cpu = _wrk(srv, 2, duration_s, tmp)
            cpu = watch.stop({"client": wrk_cpu})
            result.runs.append(
                Run("zeroscale-wrk", 2, out["rps"], out["p50_s"], out["p99_s"], out["errors"], cpu)
            )
        else:
            result.notes.append("wrk not installed (apt-get install -y wrk): no wrk cross-check")


# What the server does per request, by where py-spy finds it (inclusive samples): (label, frame prefix).
PROFILE_GROUPS: tuple[tuple[str, str | tuple[str, ...]], ...] = (
    (
        "zeroscale's invocation handling, all of it (api/app.py App._runtime)",
        "App._runtime (zeroscale/api/app.py",
    ),
    ("  worker round trip (workers/client.py WorkerConnection.request)", "WorkerConnection.request ("),
    ("  pool: acquire, release, timeouts (router/pool.py VariantPool.invoke)", "VariantPool.invoke ("),
    (
        "  response to the client (api/wire.py respond -> api/direct.py, one write)",
        "respond (zeroscale/api/wire.py",
    ),
    ("  invocation record: events, metrics, metering (events.py EventBus)", "EventBus.invocation"),
    (
        "SigV4 verification (api/sigv4.py: prepare at the headers, Signed.finish with the body)",
        ("prepare (zeroscale/api/sigv4.py", "Signed.finish (zeroscale/api/sigv4.py"),
    ),
    ("metering writer thread (metering/sink.py)", "MeteringSink._run ("),
    (
        "HTTP protocol callbacks (uvicorn's httptools protocol, api/direct.py, api/guard.py)",
        ("HttpToolsProtocol.", "DirectHttpTools.", "GuardedHttpTools."),
    ),
)
_IDLE_LEAVES = ("Condition.wait (", "_worker (concurrent/futures/thread.py", "select (", "Event.wait (")


def profile_server(srv: ServerProcess, duration_s: float) -> dict[str, Any]:
    """py-spy (sampling, 200 Hz) on the server while bench/loadgen.py drives the trivial model at 2 clients.
    Shares are of the samples where some server thread was running (known idle waits dropped)."""
    assert srv.proc is not None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy not installed (pip install py-spy)"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        req = tmp / "request.bin"
        req.write_bytes(_through_request(srv))
        load = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", "--target", f"tcp:127.0.0.1:{srv.port}",
             "--request-file", str(req), "--connections", "2", "--duration", str(duration_s + 2)],
            cwd=REPO, stdout=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)
        raw = tmp / "server.raw"
        spy_run = subprocess.run(
            [spy, "record", "-p", str(srv.proc.pid), "-d", str(int(duration_s)), "-r", "200",
             "--format", "raw", "-o", str(raw)],
            capture_output=True,
        )  # fmt: skip
        out, _ = load.communicate(timeout=duration_s + 60)
        if spy_run.returncode != 0 or not raw.exists():
            return {"error": spy_run.stderr.decode(errors="replace")[-500:]}
        stacks = []
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if frames and not frames[-1].startswith(_IDLE_LEAVES):
                stacks.append((frames, int(count)))
    total = sum(n for _, n in stacks) or 1
    groups = []
    for label, prefix in PROFILE_GROUPS:
        n = sum(c for frames, c in stacks if any(f.startswith(prefix) for f in frames))
        groups.append((label, n / total))
    loop_self = sum(c for frames, c in stacks if frames[-1].startswith("Runner.run ("))
    groups.append(
        ("event loop itself: uvloop's C code, socket I/O (samples ending in Runner.run)", loop_self / total)
    )
    return {"samples": total, "groups": groups, "load": json.loads(out)}

"""Burst: 0 -> 50 concurrent clients on an idle RandomForest endpoint with MaxConcurrency 50.

The endpoint starts at zero workers. 50 clients (asyncio, one keep-alive connection each, opened when the
burst starts) are released together and each sends requests back to back for the burst's duration; the
first request of each client is the burst's first wave (all of them cold starts or queued behind one).
During the burst ``/metrics`` zeroscale_workers is sampled every 20 ms over its own connection, and the
server's process tree every 50 ms. Requests carry one pre-signed SigV4 header set (valid 15 minutes; the
server verifies each request in full) so the 50 clients cost little CPU on this 2-core machine.

The server runs with ``--queue-wait-s 60`` (nothing should be throttled while workers start) and
``--memory-budget-mb 60000``: the default budget (physical memory, 24 GB here) admits only 23 workers of
MemorySizeInMB 1024, while 50 RandomForest workers use far less than 50 GB (their resident sets are sampled).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from dataclasses import dataclass, field

import psutil

from bench.common import (
    IDLE_TAG,
    ROW,
    CpuWatch,
    CpuWindow,
    Models,
    ServerProcess,
    cpu_s,
    deploy,
    sign,
    wait_zero,
)

ENDPOINT = "burst"
CLIENTS = 50
SERVER_FLAGS = {"queue_wait_s": 60, "memory_budget_mb": 60000, "idle_timeout_s": 300}
_CONTENT_LENGTH = re.compile(rb"(?i)content-length:\s*(\d+)")


@dataclass
class BurstResult:
    first_s: list[float] = field(default_factory=list)  # each client's first request
    all_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    max_workers_metric: float = 0.0
    max_worker_procs: int = 0
    max_workers_rss_mb: float = 0.0
    worker_samples: list[tuple[float, float]] = field(default_factory=list)  # (t since start, gauge)
    cpu: CpuWindow | None = None
    client_cpu_s: float = 0.0
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def deploy_burst(srv: ServerProcess, models: Models) -> None:
    sm = srv.client("sagemaker")
    tags = [{"Key": IDLE_TAG, "Value": "2"}]
    deploy(sm, ENDPOINT, f"file://{models.rf}", memory_mb=1024, max_concurrency=CLIENTS, tags=tags)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    match = _CONTENT_LENGTH.search(head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return int(head[9:12]), body


async def _client(port: int, request: bytes, start: asyncio.Event, until: float, result: BurstResult) -> None:
    await start.wait()
    first = True
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while first or time.monotonic() < until:
            t = time.monotonic()
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            status, body = await _read_response(reader)
            elapsed = time.monotonic() - t
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != 200:
                result.errors.append(body[:200].decode(errors="replace"))
            if first:
                result.first_s.append(elapsed)
                first = False
            result.all_s.append(elapsed)
    except (OSError, asyncio.IncompleteReadError) as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.close()


async def _sample_metrics(port: int, stop: asyncio.Event, t0: float, result: BurstResult) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    prefix = f'zeroscale_workers{{endpoint_name="{ENDPOINT}"'.encode()
    request = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n"
    while not stop.is_set():
        writer.write(request)
        _, body = await _read_response(reader)
        value = sum(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines() if line.startswith(prefix))
        result.worker_samples.append((time.monotonic() - t0, value))
        result.max_workers_metric = max(result.max_workers_metric, value)
        await asyncio.sleep(0.02)
    writer.close()


def _is_template(proc: psutil.Process) -> bool:
    """A scale-out template, not a worker: it has replicas of its own, or the control socket it listens on
    (``<data-dir>/workers/template-*.ctl``; the name stays in the kernel's table after the file is gone)."""
    try:
        if proc.children():
            return True
        return any("template-" in str(c.laddr) for c in proc.net_connections(kind="unix"))
    except psutil.Error:
        return False


def _sample_procs(server_pid: int, zygote_pids: set[int], stop: threading.Event, result: BurstResult) -> None:
    server = psutil.Process(server_pid)
    while not stop.is_set():
        try:
            # Not the zygotes, nor a scale-out template.
            procs = server.children(recursive=True)
            workers = [p for p in procs if p.pid not in zygote_pids and not _is_template(p)]
            rss = 0
            for p in workers:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            result.max_worker_procs = max(result.max_worker_procs, len(workers))
            result.max_workers_rss_mb = max(result.max_workers_rss_mb, rss / 2**20)
        except psutil.Error:
            pass
        stop.wait(0.05)


async def _burst(port: int, request: bytes, duration_s: float, result: BurstResult) -> None:
    start = asyncio.Event()
    stop = asyncio.Event()
    t0 = time.monotonic()
    until = t0 + duration_s
    clients = [asyncio.create_task(_client(port, request, start, until, result)) for _ in range(CLIENTS)]
    sampler = asyncio.create_task(_sample_metrics(port, stop, t0, result))
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*clients)
    await asyncio.sleep(0.1)
    stop.set()
    await sampler


def measure(srv: ServerProcess, duration_s: float, result: BurstResult) -> None:
    assert srv.proc is not None
    wait_zero(srv, [ENDPOINT], timeout_s=60)
    server = psutil.Process(srv.proc.pid)
    zygotes = {p.pid for p in server.children()}  # at zero workers, the server's children are its zygotes
    headers = sign(srv.url, ENDPOINT, ROW)
    lines = [f"POST /endpoints/{ENDPOINT}/invocations HTTP/1.1", f"Host: 127.0.0.1:{srv.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(ROW)}", "", ""]
    request = "\r\n".join(lines).encode() + ROW
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_procs, args=(srv.proc.pid, zygotes, stop, result), daemon=True)
    sampler.start()
    me = psutil.Process()
    client0 = cpu_s([me])
    watch = CpuWatch({"server": [server]})
    t = time.monotonic()
    asyncio.run(_burst(srv.port, request, duration_s, result))
    result.duration_s = time.monotonic() - t
    result.client_cpu_s = cpu_s([me]) - client0
    stop.set()
    sampler.join()
    result.cpu = watch.stop({"client": result.client_cpu_s})

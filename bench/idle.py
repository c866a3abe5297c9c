"""Idle cost: what an endpoint at zero holds, and the server's resident set with 1,000 idle endpoints.

On a fresh server: (1) its process tree and resident sets with nothing deployed (the server and one zygote
per runtime); (2) one RandomForest endpoint with a worker (after an invocation); (3) the same endpoint after
its idle timeout (tag 0.3 s) scaled it to zero; then (4) 1,000 endpoints of the trivial model deployed with
boto3 from 16 threads (CreateModel, CreateEndpointConfig with the idle tag, CreateEndpoint; each
CreateEndpoint starts a worker and checks its /ping before InService, as designed), waited until every one is
InService and the server reports zero workers, and the server process's RSS read with psutil.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.common import (
    IDLE_TAG,
    ROW,
    Models,
    ServerProcess,
    SignedClient,
    counted,
    cpu_s,
    deploy,
    metric,
    not_spare,
    rss_mb,
    tree,
    wait_for,
)

THREADS = 16


@dataclass
class Snapshot:
    label: str
    processes: int
    pids: list[int]
    server_rss_mb: float
    tree_rss_mb: float


@dataclass
class IdleResult:
    snapshots: list[Snapshot] = field(default_factory=list)
    endpoints: int = 0
    deploy_s: float = 0.0
    settle_s: float = 0.0
    server_rss_mb: float = 0.0  # with all endpoints deployed and at zero
    server_rss_empty_mb: float = 0.0
    tree_rss_mb: float = 0.0
    processes: int = 0
    failed: list[str] = field(default_factory=list)
    idle_cpu_empty: float = 0.0  # cores' worth used by the idle server, nothing deployed
    idle_cpu_many: float = 0.0  # the same with every endpoint deployed, at zero workers


def _snapshot(srv: ServerProcess, label: str) -> Snapshot:
    assert srv.proc is not None
    procs = tree(srv.proc.pid)
    return Snapshot(
        label,
        counted(procs),
        [p.pid for p in procs if not_spare(p)],
        psutil.Process(srv.proc.pid).memory_info().rss / 2**20,
        rss_mb(procs),
    )


def _settle(srv: ServerProcess, timeout_s: float = 30.0) -> None:
    """Wait until the server's zygotes have imported their frameworks (the tree's RSS stops growing)."""
    assert srv.proc is not None
    deadline = time.monotonic() + timeout_s
    last = -1.0
    while time.monotonic() < deadline:
        procs = tree(srv.proc.pid)
        now = rss_mb(procs)
        if len(procs) > 1 and abs(now - last) < 0.5:
            return
        last = now
        time.sleep(0.3)


def measure_zero(srv: ServerProcess, models: Models, result: IdleResult) -> None:
    sm = srv.client("sagemaker")
    _settle(srv)
    result.snapshots.append(_snapshot(srv, "nothing deployed"))
    tags = [{"Key": IDLE_TAG, "Value": "0.3"}]
    deploy(sm, "idle-rf", f"file://{models.rf}", memory_mb=1024, max_concurrency=1, tags=tags)
    client = SignedClient(srv.url)
    client.invoke("idle-rf", ROW)
    result.snapshots.append(_snapshot(srv, "RandomForest endpoint, 1 worker"))
    wait_for(
        lambda: metric(srv.metrics(), "zeroscale_workers", "idle-rf") == 0, timeout_s=30, interval_s=0.05
    )
    time.sleep(0.2)
    result.snapshots.append(_snapshot(srv, "same endpoint at zero"))
    client.close()


def measure_many(srv: ServerProcess, models: Models, count: int, result: IdleResult) -> None:
    assert srv.proc is not None
    server = psutil.Process(srv.proc.pid)
    result.server_rss_empty_mb = server.memory_info().rss / 2**20
    result.idle_cpu_empty = _idle_cpu(server)
    local = threading.local()
    url = f"file://{models.echo}"
    tags = [{"Key": IDLE_TAG, "Value": "0.05"}]

    def client() -> Any:
        if not hasattr(local, "sm"):
            local.sm = srv.client("sagemaker", max_pool_connections=4)
        return local.sm

    def one(i: int) -> None:
        name = f"idle-{i:04d}"
        try:
            deploy(client(), name, url, memory_mb=1024, max_concurrency=1, tags=tags, wait=False)
        except Exception as exc:
            result.failed.append(f"{name}: {exc}")

    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(count)))
    sm = srv.client("sagemaker")

    def all_in_service() -> bool:
        statuses: dict[str, int] = {}
        for page in sm.get_paginator("list_endpoints").paginate(
            NameContains="idle-", PaginationConfig={"PageSize": 100}
        ):
            for ep in page["Endpoints"]:
                statuses[ep["EndpointStatus"]] = statuses.get(ep["EndpointStatus"], 0) + 1
        pending = statuses.get("Creating", 0)
        if not pending and statuses.get("Failed"):
            result.failed.append(f"statuses: {statuses}")
        return not pending

    wait_for(all_in_service, timeout_s=600, interval_s=0.5)
    result.deploy_s = time.monotonic() - t
    t = time.monotonic()
    wait_for(lambda: metric(srv.metrics(), "zeroscale_workers") == 0, timeout_s=120, interval_s=0.1)
    time.sleep(1.0)
    result.settle_s = time.monotonic() - t
    result.endpoints = count - len([f for f in result.failed if f.startswith("idle-")])
    procs = tree(srv.proc.pid)
    result.processes = counted(procs)
    result.server_rss_mb = server.memory_info().rss / 2**20
    result.tree_rss_mb = rss_mb(procs)
    result.idle_cpu_many = _idle_cpu(server)


def _idle_cpu(server: psutil.Process, seconds: float = 3.0) -> float:
    """Cores' worth of CPU the server uses while nothing is sent to it (its reconcile loop and timers)."""
    t0, c0 = time.monotonic(), cpu_s([server])
    time.sleep(seconds)
    return (cpu_s([server]) - c0) / (time.monotonic() - t0)

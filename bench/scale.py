"""Cost that does not grow with idle endpoints: one server, grown to each size in turn (default 10, 1,000 and
10,000 endpoints of the trivial model, each deployed and then at zero workers), measured at each size.

At each size, once every endpoint is InService and the server reports zero workers:
- server idle CPU: cores' worth the server process used while nothing was sent to it, the median of
  ``CPU_WINDOWS`` windows of ``CPU_WINDOW_S`` each, against the same server measured the same way before
  anything was deployed (so the figure is the cost of the idle endpoints, not of the server);
- the server process's resident set (psutil), and again after ``SCRAPES`` /metrics scrapes (what a Prometheus
  server scraping it leaves behind; the wait for zero workers before it scrapes too);
- DescribeEndpoint p50: boto3, ``DESCRIBES`` calls on endpoints picked at random among those deployed;
- ListEndpoints (paginated) p50: boto3, pages of ``PAGE`` (SageMaker's default MaxResults, so the smallest
  size fills a page too; ``NameContains`` the common prefix, NextToken from the previous page), ``MAX_PAGES``
  calls each timed, from the first page again when the listing ends (at the smallest size every call is a
  first page: until this, that size's p50 was one sample);
- both against a reference server holding the smallest size's endpoints all along: each call above is
  followed by the same call to it, so a size and its baseline share the same seconds of the machine (a
  size measured minutes after the smallest one drifted by tens of percent either way with the machine);
- first-invocation cold start p50: ``COLD`` endpoints that were never invoked (their CreateEndpoint warm
  worker has gone after the 0.05 s idle tag), each invoked once on a fresh keep-alive connection with a
  SigV4 signature computed before the timer starts (bench/common.py SignedClient), each followed by the
  same on one of ``COLD`` endpoints deployed on the reference server for this size just before (named
  apart from its listing's);
- deploy rate: the endpoints that grew the server to this size, CreateModel + CreateEndpointConfig +
  CreateEndpoint from ``THREADS`` boto3 clients, divided by the time until every one is InService (each
  CreateEndpoint starts one worker and waits until it is ready before InService, as designed).

Every figure but the deploy rate is compared with the smallest size's in the report (the target: flat).
"""

from __future__ import annotations

import concurrent.futures
import queue
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.common import (
    IDLE_TAG,
    ROW,
    CpuWatch,
    CpuWindow,
    Models,
    ServerProcess,
    SignedClient,
    cpu_s,
    deploy,
    wait_for,
    working,
)

THREADS = 16
PREFIX = "scale-"
COLD_PREFIX = "first-"  # the reference server's endpoints for first cold starts (outside PREFIX's listing)
DESCRIBES = 200
MAX_PAGES = 40
PAGE = 10
COLD = 15
CPU_WINDOWS = 5
CPU_WINDOW_S = 2.0
SCRAPES = 3  # /metrics scrapes before the resident set is read again


@dataclass
class SizeResult:
    endpoints: int
    deployed_now: int
    deploy_s: float
    idle_cpu: float  # cores
    idle_cpu_windows: list[float]
    rss_mb: float
    rss_scraped_mb: float  # after ``SCRAPES`` more /metrics scrapes
    describe_s: list[float]
    list_page_s: list[float]
    cold_s: list[float]
    failed: list[str] = field(default_factory=list)
    deploy_cpu: CpuWindow | None = None  # the deploy window: the server's, the clients' and the rest's CPU
    # The reference server's (the smallest size, on a server of its own), each call right after one above.
    ref_describe_s: list[float] = field(default_factory=list)
    ref_list_page_s: list[float] = field(default_factory=list)
    ref_cold_s: list[float] = field(default_factory=list)

    @property
    def deploy_rate(self) -> float:
        return self.deployed_now / self.deploy_s if self.deploy_s else float("nan")


@dataclass
class ScaleResult:
    empty_cpu: float = 0.0
    empty_cpu_windows: list[float] = field(default_factory=list)
    empty_rss_mb: float = 0.0
    sizes: list[SizeResult] = field(default_factory=list)
    ref_endpoints: int = 0  # endpoints on the reference server (the smallest size)


def deploy_cores(res: SizeResult) -> str:
    """Where the machine's CPU went while the endpoints deployed: what bounds the deploy rate."""
    cpu = res.deploy_cpu
    if cpu is None or not cpu.wall_s:
        return "deploy CPU not measured"
    server, clients = (cpu.groups_s.get(k, 0.0) / cpu.wall_s for k in ("server", "clients"))
    busy = cpu.machine_s / cpu.wall_s
    return (
        f"deploy CPU: {busy:.2f} of {psutil.cpu_count()} cores busy (server {server:.2f}, the {THREADS} "
        f"boto3 clients {clients:.2f}, the rest {cpu.others_cores:.2f}: workers, zygotes, anything else)"
    )


def idle_cpu(
    server: psutil.Process, windows: int = CPU_WINDOWS, seconds: float = CPU_WINDOW_S
) -> list[float]:
    """Cores' worth of CPU the idle server uses, one figure per window."""
    out = []
    for _ in range(windows):
        t0, c0 = time.monotonic(), cpu_s([server])
        time.sleep(seconds)
        out.append((cpu_s([server]) - c0) / (time.monotonic() - t0))
    return out


def _name(i: int, prefix: str = PREFIX) -> str:
    return f"{prefix}{i:05d}"


def deploy_range(
    srv: ServerProcess, models: Models, start: int, stop: int, failed: list[str], prefix: str = PREFIX
) -> float:
    """Deploy endpoints ``start``..``stop`` from ``THREADS`` boto3 clients; the seconds from the first call
    to every one of them out of Creating. The clients are built before the clock starts: a boto3 client
    costs about 50 ms of CPU to build, which would otherwise be timed as 16 x 50 ms of deployments."""
    url = f"file://{models.echo}"
    tags = [{"Key": IDLE_TAG, "Value": "0.05"}]
    idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for _ in range(THREADS):
        idle.put(srv.client("sagemaker", max_pool_connections=4))
    sm = srv.client("sagemaker")

    def one(i: int) -> None:
        client = idle.get()
        try:
            deploy(client, _name(i, prefix), url, memory_mb=1024, max_concurrency=1, tags=tags, wait=False)
        except Exception as exc:
            failed.append(f"{_name(i, prefix)}: {exc}")
        finally:
            idle.put(client)

    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(start, stop)))

    def none_creating() -> bool:
        # the newest endpoints first: once they are InService the older ones are too (or failed)
        for page in sm.get_paginator("list_endpoints").paginate(
            NameContains=prefix, StatusEquals="Creating", PaginationConfig={"PageSize": 100, "MaxItems": 1}
        ):
            if page["Endpoints"]:
                return False
        return True

    wait_for(none_creating, timeout_s=1800, interval_s=0.05)
    elapsed = time.monotonic() - t
    bad = sm.list_endpoints(NameContains=prefix, StatusEquals="Failed", MaxResults=10)["Endpoints"]
    failed += [f"{e['EndpointName']}: Failed" for e in bad]
    return elapsed


class _Describes:
    """DescribeEndpoint calls on endpoints picked at random among a server's ``count``, one a ``timed()``."""

    def __init__(self, sm: Any, count: int) -> None:
        self._sm, self._count, self._rng = sm, count, random.Random(count)

    def timed(self) -> float:
        name = _name(self._rng.randrange(self._count))
        t = time.perf_counter()
        self._sm.describe_endpoint(EndpointName=name)
        return time.perf_counter() - t


class _Pages:
    """ListEndpoints pages of a server's listing, one a ``timed()``: page after page, and from its first
    page again when it ends (at 10 endpoints every call is a first page: as many samples as any size)."""

    def __init__(self, sm: Any) -> None:
        self._sm, self._token = sm, ""
        sm.list_endpoints(NameContains=PREFIX, MaxResults=PAGE)  # untimed: the first call compiles the query

    def timed(self) -> float:
        kwargs: dict[str, Any] = {"NameContains": PREFIX, "MaxResults": PAGE}
        if self._token:
            kwargs["NextToken"] = self._token
        t = time.perf_counter()
        page = self._sm.list_endpoints(**kwargs)
        elapsed = time.perf_counter() - t
        self._token = page.get("NextToken", "")
        return elapsed


def _alternating(
    calls: int, one: _Describes | _Pages, ref: _Describes | _Pages
) -> tuple[list[float], list[float]]:
    """``calls`` timed calls of ``one``, each followed by one of the reference server's: both series then
    come from the same seconds of the machine, whose speed drifts by tens of percent from minute to minute
    on these VMs (a size measured minutes after the smallest one was compared with another machine)."""
    out: list[float] = []
    base: list[float] = []
    for _ in range(calls):
        out.append(one.timed())
        base.append(ref.timed())
    return out, base


def _cold(srv: ServerProcess, name: str) -> float:
    client = SignedClient(srv.url)
    try:
        headers = client.signed_headers(name, ROW)
        client.conn.connect()
        t = time.perf_counter()
        client.send(name, ROW, headers)
        return time.perf_counter() - t
    finally:
        client.close()


def _cold_alternating(
    srv: ServerProcess, names: list[str], ref: ServerProcess, ref_names: list[str]
) -> tuple[list[float], list[float]]:
    """A first cold start of each of ``names``, each followed by one on the reference server (as
    ``_alternating``: the same seconds of the machine)."""
    out: list[float] = []
    base: list[float] = []
    for name, ref_name in zip(names, ref_names, strict=True):
        out.append(_cold(srv, name))
        base.append(_cold(ref, ref_name))
    return out, base


def measure(
    srv: ServerProcess,
    models: Models,
    sizes: list[int],
    result: ScaleResult,
    ref: ServerProcess,
) -> None:
    """Grow ``srv`` to each size in turn and measure it there. ``ref``, a second server, gets the smallest
    size's endpoints at the start, and each DescribeEndpoint and ListEndpoints call on ``srv`` is followed by
    one on ``ref``: the flat-latency figures are then each size against the smallest in the same seconds."""
    assert srv.proc is not None
    server = psutil.Process(srv.proc.pid)
    sm = srv.client("sagemaker")
    assert ref.proc is not None
    ref_processes = working(ref)
    ref_failed: list[str] = []
    deploy_range(ref, models, 0, min(sizes), ref_failed)
    if ref_failed:
        raise RuntimeError(f"the reference server's endpoints failed: {ref_failed[:3]}")
    wait_for(lambda: working(ref) <= ref_processes, timeout_s=60, interval_s=0.2)
    result.ref_endpoints = min(sizes)
    ref_sm = ref.client("sagemaker")
    time.sleep(2.0)  # the zygote's imports and the server's startup work
    processes = working(srv)  # the server and its zygote(s)
    result.empty_cpu_windows = idle_cpu(server)
    result.empty_cpu = statistics.median(result.empty_cpu_windows)
    result.empty_rss_mb = server.memory_info().rss / 2**20
    deployed = ref_cold_deployed = 0
    rng = random.Random(0)
    for size in sorted(sizes):
        failed: list[str] = []
        print(f"   scale: deploying {size - deployed} endpoints (to {size})", flush=True)
        watch = CpuWatch({"server": [server], "clients": [psutil.Process()]})
        deploy_s = deploy_range(srv, models, deployed, size, failed)
        deploy_cpu = watch.stop()
        fresh = list(range(deployed, size))
        deployed = size
        # Every worker gone: the process tree is back to the server and its zygotes. (Not from /metrics: a
        # scrape renders every endpoint's series, seconds of the server's time at 10,000 endpoints.)
        wait_for(lambda: working(srv) <= processes, timeout_s=300, interval_s=0.2)
        time.sleep(1.0)
        windows = idle_cpu(server)
        rss = server.memory_info().rss / 2**20
        for _ in range(SCRAPES):  # what a Prometheus server scraping it leaves behind
            srv.metrics()
        rss_scraped = server.memory_info().rss / 2**20
        describe_s, ref_describe_s = _alternating(
            DESCRIBES, _Describes(sm, size), _Describes(ref_sm, result.ref_endpoints)
        )
        pages, ref_pages = _alternating(MAX_PAGES, _Pages(sm), _Pages(ref_sm))
        cold_names = [_name(i) for i in rng.sample(fresh, min(COLD, len(fresh)))]
        ref_cold = range(ref_cold_deployed, ref_cold_deployed + len(cold_names))
        ref_cold_deployed += len(cold_names)
        deploy_range(ref, models, ref_cold.start, ref_cold.stop, ref_failed, COLD_PREFIX)
        if ref_failed:
            raise RuntimeError(f"the reference server's endpoints failed: {ref_failed[:3]}")
        wait_for(lambda: working(ref) <= ref_processes, timeout_s=60, interval_s=0.2)
        cold_s, ref_cold_s = _cold_alternating(
            srv, cold_names, ref, [_name(i, COLD_PREFIX) for i in ref_cold]
        )
        res = SizeResult(
            size,
            len(fresh),
            deploy_s,
            statistics.median(windows),
            windows,
            rss,
            rss_scraped,
            describe_s,
            pages,
            cold_s,
            failed,
            deploy_cpu,
            ref_describe_s,
            ref_pages,
            ref_cold_s,
        )
        result.sizes.append(res)
        print(
            f"   scale {size}: deploy {res.deploy_rate:.0f}/s, idle cpu {res.idle_cpu * 100:.2f}% "
            f"(empty {result.empty_cpu * 100:.2f}%), rss {rss:.0f} MB "
            f"({rss_scraped:.0f} after {SCRAPES} scrapes), describe p50 "
            f"{statistics.median(describe_s) * 1000:.2f} ms, "
            f"list page p50 {statistics.median(pages) * 1000:.2f} ms, "
            f"(reference server, {result.ref_endpoints} endpoints, alternating: describe p50 "
            f"{statistics.median(ref_describe_s) * 1000:.2f} ms, list page p50 "
            f"{statistics.median(ref_pages) * 1000:.2f} ms), "
            f"cold p50 {statistics.median(cold_s) * 1000:.1f} ms (reference "
            f"{statistics.median(ref_cold_s) * 1000:.1f} ms), failed {len(failed)}; {deploy_cores(res)}",
            flush=True,
        )


def main() -> None:
    """python -m bench.scale [--sizes 10,1000,10000]: this scenario alone, printed (make bench reports it)."""
    import argparse
    import tempfile
    from pathlib import Path

    from bench.common import build_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zsbench-scale-") as tmp:
        root = Path(tmp)
        models = build_models(root)
        srv = ServerProcess(root / "srv", {"memory_budget_mb": 2_000_000}).start()
        ref = ServerProcess(root / "ref").start()
        try:
            measure(srv, models, [int(s) for s in args.sizes.split(",")], ScaleResult(), ref)
        finally:
            srv.stop()
            ref.stop()


if __name__ == "__main__":
    main()

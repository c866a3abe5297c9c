"""The warm-model cache: cold starts that fork a cached template, against the same cold start without one,
against a warm request, all in one run; and the cache's cap with many endpoints at zero.

Two servers, each with the reference RandomForest (default sklearn hooks, so templated) behind ``rf`` with an
idle timeout of 0.05 s:
- ``hit``: the default cache (a tenth of the memory budget): at zero, the template stays, and the next cold
  start is a fork of the loaded model;
- ``miss``: ``--warm-cache-mb 0``: at zero nothing stays, and a cold start forks the zygote and loads the
  model ("evicted from every cache" of zeroscale's: the artifact stays extracted on disk).
Each round takes, on each server: a cold request (every endpoint at zero before it, the request signed and
the connection opened before the timer starts), then a warm one right after (same client, same model).
The penalty is cold p50 minus warm p50.

The cap: a third server with ``--warm-cache-mb CAP`` deploys N endpoints, each its own copy of the model (a
distinct artifact), invokes each once, lets each go to zero, and reads the cache's bytes, entries and
evictions from /metrics, and the resident set of the server's whole process tree.
"""

from __future__ import annotations

import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    IDLE_TAG,
    ROW,
    Models,
    ServerProcess,
    SignedClient,
    counted,
    deploy,
    plain,
    rss_mb,
    tree,
    wait_zero,
)

ENDPOINT = "rf"


@dataclass
class CacheResult:
    cold_s: dict[str, list[float]] = field(default_factory=dict)  # server kind -> cold starts
    warm_s: dict[str, list[float]] = field(default_factory=dict)
    hits: float = 0.0
    misses: float = 0.0
    cap_mb: int = 0
    endpoints: int = 0
    cached_bytes: float = 0.0
    cached_entries: float = 0.0
    evictions: float = 0.0
    tree_rss_mb: float = 0.0
    processes: int = 0


def deploy_rf(srv: ServerProcess, models: Models, name: str = ENDPOINT, tar: Path | None = None) -> None:
    idle = [{"Key": IDLE_TAG, "Value": "0.05"}]
    deploy(
        srv.client("sagemaker"),
        name,
        f"file://{tar or models.rf}",
        memory_mb=1024,
        max_concurrency=1,
        tags=idle,
    )


def _cold_then_warm(srv: ServerProcess, client: SignedClient) -> tuple[float, float]:
    wait_zero(srv, [ENDPOINT])
    wait_zero(srv, [ENDPOINT])  # (a template still loading when the pool emptied is cached by now)
    time.sleep(0.05)
    headers = client.signed_headers(ENDPOINT, ROW)
    client.conn.close()
    client.conn.connect()
    t0 = time.monotonic()
    client.send(ENDPOINT, ROW, headers)
    cold = time.monotonic() - t0
    headers = client.signed_headers(ENDPOINT, ROW)
    t0 = time.monotonic()
    client.send(ENDPOINT, ROW, headers)
    return cold, time.monotonic() - t0


def measure(hit: ServerProcess, miss: ServerProcess, rounds: int, result: CacheResult) -> None:
    clients = {"hit": SignedClient(hit.url), "miss": SignedClient(miss.url)}
    servers = {"hit": hit, "miss": miss}
    for kind, srv in servers.items():  # the first cold start of each also starts the template
        _cold_then_warm(srv, clients[kind])
        time.sleep(0.5)
    hits0 = plain(hit.metrics(), "zeroscale_warm_cache_hits_total")
    misses0 = plain(miss.metrics(), "zeroscale_warm_cache_misses_total")
    for _ in range(rounds):
        for kind, srv in servers.items():  # interleaved, so both see the same machine
            cold, warm = _cold_then_warm(srv, clients[kind])
            result.cold_s.setdefault(kind, []).append(cold)
            result.warm_s.setdefault(kind, []).append(warm)
    result.hits = plain(hit.metrics(), "zeroscale_warm_cache_hits_total") - hits0
    result.misses = plain(miss.metrics(), "zeroscale_warm_cache_misses_total") - misses0
    for client in clients.values():
        client.close()


def copies(models: Models, root: Path, n: int) -> list[Path]:
    """``n`` distinct artifacts of the reference model (each with a marker file, so each has its own hash)."""
    out = []
    for i in range(n):
        path = root / f"rf-{i}.tar.gz"
        marker = root / f"copy-{i}.txt"
        marker.write_text(str(i))
        with tarfile.open(path, "w:gz") as tar:
            tar.add(models.rf_joblib, arcname="model.joblib")
            tar.add(marker, arcname="copy.txt")
        out.append(path)
    return out


def measure_cap(
    srv: ServerProcess, models: Models, root: Path, n: int, cap_mb: int, result: CacheResult
) -> None:
    client = SignedClient(srv.url)
    names = [f"cap-{i}" for i in range(n)]
    for name, tar in zip(names, copies(models, root, n), strict=True):
        deploy_rf(srv, models, name, tar)
        client.invoke(name, ROW)
    wait_zero(srv, names, timeout_s=60)
    time.sleep(1.0)  # templates still loading when their pool emptied are cached (or dropped) by now
    text = srv.metrics()
    result.cap_mb = cap_mb
    result.endpoints = n
    result.cached_bytes = plain(text, "zeroscale_warm_cache_bytes")
    result.cached_entries = plain(text, "zeroscale_warm_cache_entries")
    result.evictions = plain(text, "zeroscale_warm_cache_evictions_total")
    assert srv.proc is not None
    procs = tree(srv.proc.pid)
    result.tree_rss_mb = rss_mb(procs)
    result.processes = counted(procs)
    client.close()

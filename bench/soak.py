"""Soak: a long run at about 80% of measured capacity, with cold starts and scale-to-zero cycles mixed in.

One server, the reference RandomForest on four serverless endpoints:

- ``soak-hot`` (MaxConcurrency 2) takes the steady load. Its capacity is measured first: two closed-loop
  clients for ``--probe-s`` seconds. The soak then paces two clients at 80% of that rate in total (each
  request's start is scheduled; a late one is sent at once, never skipped).
- ``soak-cold-0..2`` (idle timeout 1 s, the ``zeroscale:idle-timeout-s`` tag) are each invoked once every
  ``--cold-every-s`` seconds by a third client, so they go to zero and cold-start again all along.

Every 10 s it samples the server's resident set, its open file descriptors and the processes under it. At
the end it waits for the cold endpoints to reach zero workers and counts the processes left. Reported:
requests and errors (target 0), cold starts, the server's RSS growth from the first sample after warm-up
(``--warmup-s``) to the last (target under 5%), file descriptors and processes at the start and the end (a
leak shows as growth beyond the warm-model cache's templates, which the cold endpoints' model may add).

    .venv/bin/python -m bench.soak                       # 30 minutes
    .venv/bin/python -m bench.soak --duration-s 120      # the short version make bench runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from bench.common import SignedClient, build_models, counted, metric, plain, tree
from zeroscale.testing import ServerProcess, deploy, wait_for

HOT = "soak-hot"
COLD = tuple(f"soak-cold-{i}" for i in range(3))
BODY = json.dumps(np.random.RandomState(1).rand(1, 10).tolist()).encode()
SAMPLE_EVERY_S = 10.0


@dataclass
class Sample:
    at_s: float
    rss_mb: float
    fds: int
    processes: int


@dataclass
class SoakResult:
    capacity_rps: float = 0.0
    target_rps: float = 0.0
    duration_s: float = 0.0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    cold_starts: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    warmup_s: float = 0.0
    processes_before: int = 0  # the server's tree once warm, before the soak
    processes_after: int = 0  # ... once the cold endpoints are back at zero after it
    # Warm-cache processes among them (by design: the cold endpoints' model, kept loaded while they are at
    # zero, within --warm-cache-mb): two per entry, the template and the replica parked beside it. A leak is
    # growth beyond them.
    cached_before: int = 0
    cached_after: int = 0

    @property
    def grew(self) -> int:
        """Processes under the server beyond the warm cache's templates, after less before."""
        return (self.processes_after - self.cached_after) - (self.processes_before - self.cached_before)

    @property
    def rss_growth(self) -> float:
        """The server's RSS growth, last sample over the first one after warm-up (0.05: 5%)."""
        first, last = self.rss_after_warmup
        return last / first - 1 if first else float("nan")

    @property
    def rss_after_warmup(self) -> tuple[float, float]:
        """The server's RSS (MB) in the first sample after warm-up and in the last one (0, 0: no samples)."""
        warm = [s for s in self.samples if s.at_s >= self.warmup_s] or self.samples
        return (warm[0].rss_mb, warm[-1].rss_mb) if warm else (0.0, 0.0)


def _sample(server: psutil.Process, started: float) -> Sample:
    procs = tree(server.pid)
    return Sample(
        at_s=time.monotonic() - started,
        rss_mb=server.memory_info().rss / 2**20,
        fds=server.num_fds(),
        processes=counted(procs) - 1,  # the server itself not counted
    )


def _probe(url: str, seconds: float) -> float:
    """Requests per second two closed-loop clients get from the hot endpoint."""
    counts = [0, 0]

    def loop(i: int) -> None:
        client = SignedClient(url)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            client.invoke(HOT, BODY)
            counts[i] += 1
        client.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


class _Load:
    """The paced hot clients and the cold-endpoint client, until ``stop``."""

    def __init__(self, url: str, rate_per_client: float, cold_every_s: float, res: SoakResult) -> None:
        self._url = url
        self._interval = 1.0 / rate_per_client
        self._cold_every_s = cold_every_s
        self._res = res
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._hot) for _ in range(2)]
        self._threads.append(threading.Thread(target=self._cold))

    def _call(self, client: SignedClient, endpoint: str) -> SignedClient:
        try:
            client.invoke(endpoint, BODY)
            with self._lock:
                self._res.requests += 1
        except Exception as exc:  # every failure is counted and reported
            with self._lock:
                self._res.requests += 1
                self._res.errors.append(f"{endpoint}: {type(exc).__name__}: {exc}"[:300])
            client.close()
            client = SignedClient(self._url)  # a broken connection is not reused
        return client

    def _hot(self) -> None:
        client = SignedClient(self._url)
        next_at = time.monotonic()
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += self._interval
            client = self._call(client, HOT)
        client.close()

    def _cold(self) -> None:
        client = SignedClient(self._url)
        while not self.stop.wait(self._cold_every_s / len(COLD)):
            endpoint = COLD[int(time.monotonic() / (self._cold_every_s / len(COLD))) % len(COLD)]
            client = self._call(client, endpoint)
        client.close()

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join()


def _cold_starts(srv: ServerProcess) -> float:
    text = srv.metrics()
    return sum(metric(text, "zeroscale_cold_starts_total", e) for e in (HOT, *COLD))


def _cold_at_zero(srv: ServerProcess) -> bool:
    text = srv.metrics()
    return all(metric(text, "zeroscale_workers", e) == 0 for e in COLD)


def run(
    root: Path,
    duration_s: float,
    *,
    probe_s: float = 10.0,
    warmup_s: float = 60.0,
    cold_every_s: float = 4.0,
    load: float = 0.8,
) -> SoakResult:
    res = SoakResult(duration_s=duration_s, warmup_s=min(warmup_s, duration_s / 2))
    root.mkdir(parents=True, exist_ok=True)
    models = build_models(root)
    srv = ServerProcess(root / "data").start()
    try:
        assert srv.proc is not None
        server = psutil.Process(srv.proc.pid)
        sm = srv.client("sagemaker")
        deploy(sm, HOT, f"file://{models.rf}", max_concurrency=2)
        idle = [{"Key": "zeroscale:idle-timeout-s", "Value": "1"}]
        for name in COLD:
            deploy(sm, name, f"file://{models.rf}", max_concurrency=1, tags=idle)
        res.capacity_rps = _probe(srv.url, probe_s)
        res.target_rps = load * res.capacity_rps
        wait_for(lambda: _cold_at_zero(srv), timeout_s=60, interval_s=0.1)
        res.processes_before = counted(tree(server.pid)) - 1
        res.cached_before = 2 * int(plain(srv.metrics(), "zeroscale_warm_cache_entries"))
        before = _cold_starts(srv)
        started = time.monotonic()
        with _Load(srv.url, res.target_rps / 2, cold_every_s, res) as running:
            while not running.stop.wait(
                max(0.0, SAMPLE_EVERY_S - (time.monotonic() - started) % SAMPLE_EVERY_S)
            ):
                res.samples.append(_sample(server, started))
                if time.monotonic() - started >= duration_s:
                    break
        res.samples.append(_sample(server, started))
        res.cold_starts = _cold_starts(srv) - before
        wait_for(lambda: _cold_at_zero(srv), timeout_s=60, interval_s=0.1)
        time.sleep(1.0)  # exits reaped
        res.processes_after = counted(tree(server.pid)) - 1
        res.cached_after = 2 * int(plain(srv.metrics(), "zeroscale_warm_cache_entries"))
    finally:
        srv.stop()
    return res


def report(res: SoakResult) -> list[str]:
    first, last = res.samples[0], res.samples[-1]
    return [
        f"capacity (2 closed-loop clients on {HOT}): {res.capacity_rps:.0f} req/s; soak at "
        f"{res.target_rps:.0f} req/s for {res.duration_s:.0f} s, cold endpoints invoked in turn",
        f"requests {res.requests}, errors {len(res.errors)} (target 0), cold starts {res.cold_starts:.0f}",
        f"server RSS {first.rss_mb:.1f} -> {last.rss_mb:.1f} MB; growth after warm-up "
        f"{100 * res.rss_growth:+.1f}% (target < 5%)",
        f"server open fds {first.fds} -> {last.fds}; processes under it once idle: "
        f"{res.processes_before} before, {res.processes_after} after (the warm cache's among them: "
        f"{res.cached_before} before, {res.cached_after} after)",
        *(f"  error: {e}" for e in res.errors[:5]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=1800.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--probe-s", type=float, default=10.0)
    parser.add_argument("--cold-every-s", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zeroscale-soak-") as tmp:
        res = run(
            Path(tmp),
            args.duration_s,
            probe_s=args.probe_s,
            warmup_s=args.warmup_s,
            cold_every_s=args.cold_every_s,
        )
    print("\n".join(report(res)))


if __name__ == "__main__":
    main()

"""What a /metrics scrape costs with 1,000 and 10,000 endpoint variants, in process.

For each size, a ``Metrics`` with that many variants (each with a pool at zero, as after its idle timeout),
every one with a cold start, its ModelSetupTime and a stopped worker, as the deploy-time check leaves it;
one in ten with invocations at random latencies; one in a hundred with provisioned concurrency and one in a
hundred multi-model. Then, in the same run:

- the baseline: prometheus_client's ``generate_latest`` over the same collectors
  (``Metrics.render_by_prometheus_client``, what ``/metrics`` printed before), on the event loop;
- ``Metrics.render`` (``metrics.text``), the median of several scrapes with 1% of the variants invoked
  between two;
- ``Metrics.stream`` on an asyncio loop, as ``GET /metrics`` sends it (copies on the loop, printed in pieces
  in a thread, each piece taken as it comes and not joined): the longest the loop went without running a
  task that sleeps 1 ms, against the baseline's on the loop.

The two texts are compared byte for byte at each size. ``python -m bench.scrape [--sizes 1000,10000]``.

``--fleet`` then does the same with the pools of a real ``router.Fleet`` (its endpoints activated without a
worker, against the router's fake worker manager from ``tests/router/fakes.py``), which brings a server's
heap of objects: what a scrape costs there, and how many of them meet a full garbage collection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metrics.load import PoolLoad
from zeroscale.metrics.registry import Metrics


def _invoke(metrics: Metrics, rng: random.Random, endpoint: str, multi: bool) -> None:
    model_s = rng.choice([0.0008, 0.003, 0.02, 0.3, rng.random()])
    hit = rng.random() < 0.8
    metrics.invocation(
        InvocationRecord(
            endpoint=endpoint,
            variant="AllTraffic",
            worker_id="w1",
            at=time.time(),
            model_s=model_s,
            total_s=model_s + 0.0002,
            bytes_in=10,
            bytes_out=3,
            status=200,
            error_code="",
            memory_mb=1024,
            setup_s=None,
            provisioned=rng.random() < 0.5,
            model_status=200,
            target_model="m.tar.gz" if multi else "",
            cache_hit=hit if multi else None,
            model_wait_s=None if hit or not multi else 0.2,
            download_s=None if hit or not multi else 0.05,
        )
    )


def build(size: int, rng: random.Random) -> tuple[Metrics, list[str]]:
    metrics = Metrics()
    names = [f"endpoint-{i:05d}" for i in range(size)]
    loads = [
        PoolLoad(n, "AllTraffic", 4, 1 if i % 100 == 1 else 0, 1024, 0, 0, 0, (), False)
        for i, n in enumerate(names)
    ]
    metrics.watch(lambda: loads)
    now = time.time()
    for i, name in enumerate(names):
        metrics.variant(VariantEvent(name, "AllTraffic", "activated", now, 1024, 4, 1 if i % 100 == 1 else 0))
        metrics.worker(WorkerEvent(name, "AllTraffic", "w1", "started", now, memory_mb=1024, setup_s=0.02))
        metrics.worker(WorkerEvent(name, "AllTraffic", "w1", "stopped", now))
        if i % 10 == 0:
            for _ in range(rng.randrange(1, 50)):
                _invoke(metrics, rng, name, multi=i % 100 == 0)
    return metrics, names


def _timed(fn: Callable[[], bytes]) -> tuple[float, bytes]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


async def _stall(scrape: Callable[[], Awaitable[object]]) -> float:
    """The longest gap between two runs of a task that sleeps 1 ms, while ``scrape`` runs."""
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    gaps.clear()
    await scrape()
    done = True
    await task
    return max(gaps) if gaps else 0.0


async def _served(metrics: Metrics) -> int:
    """A scrape taken piece by piece, as the server sends it: its size."""
    return sum([len(piece) async for piece in metrics.stream()])


def run(size: int, rounds: int) -> dict[str, float]:
    rng = random.Random(size)
    metrics, names = build(size, rng)

    def invoke_some() -> None:
        for name in rng.sample(names, max(1, size // 100)):
            _invoke(metrics, rng, name, multi=False)

    baseline_s, _ = _timed(metrics.render_by_prometheus_client)
    ours_s: list[float] = []
    for _ in range(rounds):
        elapsed, ours = _timed(metrics.render)
        ours_s.append(elapsed)
        invoke_some()
    elapsed, ours = _timed(metrics.render)
    assert ours == metrics.render_by_prometheus_client(), "the text differs from prometheus_client's"

    async def baseline() -> bytes:
        return metrics.render_by_prometheus_client()

    async def scrape() -> int:
        invoke_some()
        return await _served(metrics)

    return {
        "mb": len(ours) / 1e6,
        "baseline_s": baseline_s,
        "ours_s": statistics.median(ours_s),
        "stall_baseline_s": asyncio.run(_stall(baseline)),
        "stall_s": max(asyncio.run(_stall(scrape)) for _ in range(rounds)),
    }


async def _fleet(size: int, rounds: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from router.fakes import FakeManager, settings, spec  # type: ignore[import-not-found]  # the router's unit-test harness
    from zeroscale.events import EventBus
    from zeroscale.router.fleet import Fleet

    metrics = Metrics()
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(
            FakeManager().as_manager(),
            settings(Path(tmp), memory_budget_mb=10**9),
            metrics,
            EventBus([metrics]),
        )
        metrics.watch(fleet.pools)
        for i in range(size):
            name = f"endpoint-{i:05d}"
            await fleet.activate(name, [spec(endpoint=name, variant="AllTraffic")], warm=False)
        gc.collect()
        tracked = len(gc.get_objects())
        full: list[int] = []

        def count(phase: str, info: dict[str, Any]) -> None:
            if phase == "start" and info["generation"] == 2:
                full.append(1)

        baseline_s, _ = _timed(metrics.render_by_prometheus_client)
        gc.callbacks.append(count)
        stalls = []
        for _ in range(rounds):
            stalls.append(await _stall(lambda: _served(metrics)))
        gc.callbacks.remove(count)
        await fleet.close()
    ms = sorted(round(s * 1e3) for s in stalls)
    print(
        f"| {size:,} | {tracked:,} | {baseline_s:.2f} | {ms[len(ms) // 2]} | {ms[-1]}"
        f" | {len(full)} of {rounds} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1000,10000", help="variant counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="scrapes per size (median; the stall: max)")
    parser.add_argument("--fleet", action="store_true", help="also scrape a Fleet's real pools")
    args = parser.parse_args()
    print(
        "| variants | text MB | prometheus_client (before) s | metrics.text s | ratio"
        " | longest loop stall: before ms | now ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = run(size, args.rounds)
        print(
            f"| {size:,} | {r['mb']:.1f} | {r['baseline_s']:.2f} | {r['ours_s']:.3f}"
            f" | {r['baseline_s'] / r['ours_s']:.1f}x | {r['stall_baseline_s'] * 1e3:.0f}"
            f" | {r['stall_s'] * 1e3:.0f} |",
            flush=True,
        )
    if args.fleet:
        print()
        print(
            "| pools (Fleet) | tracked objects | prometheus_client s (on the loop)"
            " | loop stall: median ms | max ms"
            " | scrapes with a full collection |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for size in (int(s) for s in args.sizes.split(",")):
            asyncio.run(_fleet(size, 3 * args.rounds))


if __name__ == "__main__":
    main()

"""The /metrics text renderer (metrics.text) prints what prometheus_client's generate_latest prints for the
same collectors, byte for byte, scrape after scrape."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from metrics.builders import activated, model_error, pool, record, started, throttled
from zeroscale.events import WorkerEvent
from zeroscale.metrics import text
from zeroscale.metrics.load import CacheLoad, PoolLoad
from zeroscale.metrics.registry import Metrics
from zeroscale.metrics.series import LATENCY_BUCKETS


class _Extra:
    """Another module's collector on ``Metrics.registry`` (as the asynchronous queue's gauges are)."""

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily("zeroscale_extra", "Another module's gauge", labels=("endpoint_name",))
        family.add_metric(["async-ep"], 3.0)
        return [family]


def _same(metrics: Metrics) -> str:
    ours = metrics.render()
    theirs = metrics.render_by_prometheus_client()
    assert ours.decode().splitlines() == theirs.decode().splitlines()  # a readable diff when they differ
    assert ours == theirs
    families = {f.name: f for f in text_string_to_metric_families(ours.decode())}
    assert families == {f.name: f for f in text_string_to_metric_families(theirs.decode())}
    return ours.decode()


def _busy_server(rng: random.Random) -> tuple[Metrics, list[PoolLoad]]:
    """Several variants: plain, provisioned (then updated to none: its series stay shown), multi-model,
    workers started and gone for several reasons, a warm cache, cluster nodes, a failing sink."""
    metrics = Metrics()
    loads: list[PoolLoad] = []
    metrics.watch(lambda: loads)
    metrics.watch_cache(lambda: CacheLoad(1 << 30, 2, 5000, 7, 3, 1, (("ep", 3000), ("mm", 2000))))
    metrics.watch_nodes(lambda: [("node-a", 8000, 2048, 2, 4096), ("node-b", 4000, 0, 0, 0)])
    metrics.watch_sink_failures({("BrokenSink", "worker"): 2})
    metrics.registry.register(_Extra())
    metrics.variant(activated())
    metrics.variant(activated(endpoint="prov", provisioned=2))
    metrics.variant(activated(endpoint="mm", variant="Models"))
    metrics.variant(activated(endpoint="idle", variant="Quiet"))
    keys = [("ep", "AllTraffic"), ("prov", "AllTraffic"), ("mm", "Models")]
    for _ in range(300):
        endpoint, variant = rng.choice(keys)
        edge = rng.choice(LATENCY_BUCKETS)
        model_s = rng.choice([edge, edge * 1.0001, rng.random() * 0.01, rng.random() * 300])
        total_s = model_s + rng.choice([0.0, edge, rng.random() * 0.002])
        kind = rng.random()
        where = {"endpoint": endpoint, "variant": variant}
        if kind < 0.1:
            metrics.worker(started(setup_s=model_s, model="m1.tar.gz" if endpoint == "mm" else "", **where))
        elif kind < 0.15:
            reason = rng.choice(["stopped", "crashed", "memory_killed"])
            metrics.worker(WorkerEvent(endpoint, variant, "w1", reason, 0.0, unload_s=rng.random()))
        elif kind < 0.2:
            metrics.invocation(model_error(rng.choice([0, 400, 500]), **where))
        elif kind < 0.25:
            metrics.invocation(throttled(total_s=total_s, **where))
        elif endpoint == "mm":
            hit = rng.random() < 0.5
            metrics.invocation(
                record(
                    model_s=model_s,
                    total_s=total_s,
                    target_model="m1.tar.gz",
                    cache_hit=hit,
                    model_wait_s=None if hit else rng.random(),
                    download_s=None if hit else rng.random() * 0.1,
                    **where,
                )
            )
        else:
            metrics.invocation(
                record(model_s=model_s, total_s=total_s, provisioned=rng.random() < 0.5, **where)
            )
    for size in (2, 5, 3):  # dynamic batching on "ep": three predict calls of 2, 5 and 3 requests
        for i in range(size):
            metrics.invocation(record(batch_size=size, batch_first=i == 0, model_s=rng.random() * 0.01))
    metrics.variant(activated(endpoint="prov", provisioned=0))  # an update: its provisioned series stay
    loads += [
        pool(),
        pool(endpoint="prov", provisioned=2, workers=2, busy=2, rss_mb=(300.0, 0.0)),
        pool(endpoint="prov", draining=True, workers=1, busy=0, rss_mb=(120.0,)),
        pool(endpoint="mm", variant="Models", loaded_models=3),
        pool(endpoint="idle", variant="Quiet", workers=0, busy=0, rss_mb=()),
    ]
    return metrics, loads


def test_the_text_equals_prometheus_clients_for_every_family() -> None:
    metrics, _ = _busy_server(random.Random(5))
    text = _same(metrics)
    for name in (
        "zeroscale_invocations",
        "zeroscale_model_latency_seconds",
        "zeroscale_model_cache_hits",
        "zeroscale_model_loading_wait_seconds",
        "zeroscale_model_unloading_seconds",
        "zeroscale_worker_exits",
        "zeroscale_provisioned_concurrency_spillover_invocations",
        "zeroscale_batched_invocations",
        "zeroscale_workers",
        "zeroscale_loaded_models",
        "zeroscale_provisioned_concurrency_utilization_ratio",
        "zeroscale_warm_cache_endpoint_bytes",
        "zeroscale_node_reserved_mb",
        "zeroscale_event_sink_failures",
        "zeroscale_extra",
    ):  # every kind of family is there, with samples: the comparison above covers each
        assert f"\n{name}" in text, name
    assert 'zeroscale_invocations_total{endpoint_name="idle",variant_name="Quiet"} 0.0' in text
    assert 'zeroscale_node_artifact_cache_bytes{node="node-a"} 4096.0' in text
    # the batching series: only for the variant whose requests shared predict calls
    assert 'zeroscale_batched_invocations_total{endpoint_name="ep",variant_name="AllTraffic"} 10.0' in text
    assert 'zeroscale_batches_total{endpoint_name="ep",variant_name="AllTraffic"} 3.0' in text
    assert 'zeroscale_batches_total{endpoint_name="prov"' not in text


def test_changes_between_scrapes_show_in_the_next() -> None:
    rng = random.Random(11)
    metrics, loads = _busy_server(rng)
    _same(metrics)
    metrics.invocation(record(endpoint="idle", variant="Quiet"))
    metrics.worker(WorkerEvent("ep", "AllTraffic", "w9", "timed_out", 0.0))
    metrics.worker(started(endpoint="mm", variant="Models", model="m2.tar.gz"))
    loads.append(pool(endpoint="new", workers=1, busy=1))
    text = _same(metrics)
    assert 'zeroscale_invocations_total{endpoint_name="idle",variant_name="Quiet"} 1.0' in text
    assert 'reason="timed_out"' in text
    metrics.variant(activated(endpoint="idle", variant="Quiet", provisioned=1))  # an update, shown from now
    metrics.forget("ep", "AllTraffic")
    text = _same(metrics)
    assert 'zeroscale_provisioned_concurrency_invocations_total{endpoint_name="idle"' in text
    assert 'zeroscale_invocations_total{endpoint_name="ep"' not in text


def test_an_empty_server_and_label_values_that_need_escaping() -> None:
    metrics = Metrics()
    _same(metrics)  # no series: each family's HELP and TYPE only, no _created family
    odd = 'a"b\\c\nd'
    metrics.variant(activated(endpoint=odd, variant="ü"))
    metrics.worker(WorkerEvent(odd, "ü", "w1", 'odd"reason', 0.0))
    loads = [pool(endpoint=odd, variant="ü")]
    metrics.watch(lambda: loads)
    text = _same(metrics)
    assert 'endpoint_name="a\\"b\\\\c\\nd"' in text


def test_a_scrape_formats_in_a_thread_and_prints_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics, _ = _busy_server(random.Random(2))
    reference = metrics.render_by_prometheus_client()
    threads: set[int] = set()
    pieces = text.pieces

    def spied(*args: Any) -> Iterator[bytes]:  # the real printer, noting where each piece was printed
        for piece in pieces(*args):
            threads.add(threading.get_ident())
            yield piece

    monkeypatch.setattr(text, "pieces", spied)

    async def scrape_twice() -> tuple[bytes, bytes, int]:
        first = await metrics.scrape()
        metrics.invocation(record(endpoint="idle", variant="Quiet"))  # while no scrape runs
        return first, await metrics.scrape(), threading.get_ident()

    first, second, loop_thread = asyncio.run(scrape_twice())
    assert first == reference
    assert second == metrics.render_by_prometheus_client() != reference
    assert threads and loop_thread not in threads


def test_the_text_comes_in_bounded_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A family is printed a few variants at a time and handed on in pieces: the same text, byte for byte,
    whatever the cut (a multi-model family printed in some chunks of variants and not others, exits and
    provisioned counters in a few, the _created heads), and no piece much larger than the piece size."""
    metrics, _ = _busy_server(random.Random(3))
    for i in range(40):
        metrics.variant(activated(endpoint=f"more{i:02d}", provisioned=i % 3))
        if i % 7 == 0:
            metrics.worker(WorkerEvent(f"more{i:02d}", "AllTraffic", "w1", "crashed", 0.0))
    monkeypatch.setattr(text, "ROWS_AT_ONCE", 3)
    monkeypatch.setattr(text, "PIECE_CHARS", 4000)

    async def scrape() -> list[bytes]:
        return [piece async for piece in metrics.stream()]

    got = asyncio.run(scrape())
    assert b"".join(got) == metrics.render_by_prometheus_client()
    assert len(got) > 10
    assert max(map(len, got[:-1])) < 4000 + 3 * 3000  # a piece's size, and one chunk of three histograms'

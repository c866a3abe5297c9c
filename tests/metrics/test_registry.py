"""The Prometheus sink: counters and histograms from events, gauges from the pools at scrape time."""

from __future__ import annotations

import pytest

from metrics.builders import activated, model_error, pool, record, started, throttled
from metrics.promtext import value
from zeroscale.events import WorkerEvent
from zeroscale.metrics.load import PoolLoad
from zeroscale.metrics.registry import Metrics

EV = {"endpoint_name": "ep", "variant_name": "AllTraffic"}


def scrape(metrics: Metrics) -> str:
    return metrics.render().decode()


def test_series_exist_at_zero_once_a_variant_is_activated() -> None:
    metrics = Metrics()
    metrics.variant(activated())
    text = scrape(metrics)
    for name in (
        "zeroscale_invocations_total",
        "zeroscale_invocation_4xx_errors_total",
        "zeroscale_invocation_5xx_errors_total",
        "zeroscale_cold_starts_total",
        "zeroscale_model_setup_seconds_count",
        "zeroscale_model_latency_seconds_count",
        "zeroscale_overhead_latency_seconds_count",
    ):
        assert value(text, name, **EV) == 0, name
    assert value(text, "zeroscale_provisioned_concurrency_invocations_total", **EV) is None


def test_invocation_counts_and_latencies() -> None:
    metrics = Metrics()
    metrics.variant(activated(provisioned=1))
    metrics.invocation(record(provisioned=True, model_s=0.003, total_s=0.004))
    metrics.invocation(record(provisioned=False, model_s=0.003, total_s=0.004))
    metrics.invocation(model_error(500))
    metrics.invocation(model_error(400))
    metrics.invocation(model_error(0))
    metrics.invocation(throttled(total_s=0.25))
    text = scrape(metrics)
    assert value(text, "zeroscale_invocations_total", **EV) == 6
    assert value(text, "zeroscale_invocation_4xx_errors_total", **EV) == 2
    assert value(text, "zeroscale_invocation_5xx_errors_total", **EV) == 2
    assert value(text, "zeroscale_model_latency_seconds_count", **EV) == 5
    assert value(text, "zeroscale_model_latency_seconds_bucket", le="0.005", **EV) == 5
    assert value(text, "zeroscale_overhead_latency_seconds_count", **EV) == 6
    assert value(text, "zeroscale_overhead_latency_seconds_sum", **EV) == pytest.approx(0.255)
    # every invocation that reached a worker is one or the other (the model errors here: spillover)
    assert value(text, "zeroscale_provisioned_concurrency_invocations_total", **EV) == 1
    assert value(text, "zeroscale_provisioned_concurrency_spillover_invocations_total", **EV) == 4


def test_worker_starts_and_exits() -> None:
    metrics = Metrics()
    metrics.worker(started(0.04))
    metrics.worker(started(0.06, worker_id="w2"))
    metrics.worker(WorkerEvent("ep", "AllTraffic", "w1", "memory_killed", 0.0))
    metrics.worker(WorkerEvent("ep", "AllTraffic", "", "failed", 0.0, detail="no"))
    text = scrape(metrics)
    assert value(text, "zeroscale_cold_starts_total", **EV) == 2
    assert value(text, "zeroscale_model_setup_seconds_count", **EV) == 2
    assert value(text, "zeroscale_model_setup_seconds_sum", **EV) == pytest.approx(0.1)
    assert value(text, "zeroscale_worker_exits_total", reason="memory_killed", **EV) == 1
    assert value(text, "zeroscale_worker_exits_total", reason="failed", **EV) is None


def test_gauges_are_computed_from_the_pools_when_scraped() -> None:
    metrics = Metrics()
    loads: list[PoolLoad] = []
    metrics.watch(lambda: loads)
    assert value(scrape(metrics), "zeroscale_concurrent_executions", **EV) is None
    loads.append(pool(busy=3, max_concurrency=4, queued=2, provisioned=2, rss_mb=(100.0, 300.0)))
    loads.append(pool(workers=1, busy=0, draining=True, rss_mb=()))  # an update's old pool, draining
    text = scrape(metrics)
    assert value(text, "zeroscale_workers", **EV) == 3  # the sum over the variant's pools
    assert value(text, "zeroscale_concurrent_executions", **EV) == 3
    assert value(text, "zeroscale_concurrent_executions_utilization_ratio", **EV) == 0.75
    assert value(text, "zeroscale_queue_depth", **EV) == 2
    assert value(text, "zeroscale_max_concurrency", **EV) == 4
    assert value(text, "zeroscale_memory_utilization_percent", **EV) == 20.0
    assert value(text, "zeroscale_memory_utilization_max_percent", **EV) == 30.0
    assert value(text, "zeroscale_provisioned_concurrency_executions", **EV) == 2
    assert value(text, "zeroscale_provisioned_concurrency_utilization_ratio", **EV) == 1.0
    loads[0] = pool(provisioned=0, rss_mb=())
    text = scrape(metrics)
    assert value(text, "zeroscale_memory_utilization_percent", **EV) is None  # no worker sampled yet
    assert value(text, "zeroscale_provisioned_concurrency_executions", **EV) is None


def test_forget_drops_every_series_of_the_variant() -> None:
    metrics = Metrics()
    metrics.variant(activated(provisioned=1))
    metrics.invocation(record())
    metrics.worker(started())
    metrics.worker(WorkerEvent("ep", "AllTraffic", "w1", "stopped", 0.0))
    metrics.variant(activated(endpoint="keep"))
    metrics.forget("ep", "AllTraffic")
    text = scrape(metrics)
    assert 'endpoint_name="ep"' not in text
    assert value(text, "zeroscale_invocations_total", endpoint_name="keep", variant_name="AllTraffic") == 0
    metrics.invocation(record())  # a straggler after the delete starts the series again, from zero
    assert value(scrape(metrics), "zeroscale_invocations_total", **EV) == 1


def test_failed_sink_calls_are_counted_by_sink_and_event() -> None:
    metrics = Metrics()
    failures = {("BrokenSink", "worker"): 3}
    metrics.watch_sink_failures(failures)
    text = scrape(metrics)
    assert value(text, "zeroscale_event_sink_failures_total", sink="BrokenSink", event="worker") == 3


def test_compact_series_render_as_prometheus_client_counters_and_histograms_would() -> None:
    """The per-variant series live in one array each; what a scrape shows equals prometheus_client's own
    Counter and Histogram fed the same values (every sample but ``_created``)."""
    import random

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from zeroscale.metrics.series import LATENCY_BUCKETS as _LATENCY_BUCKETS

    rng = random.Random(3)
    metrics = Metrics()
    ref = CollectorRegistry()
    labels = ("endpoint_name", "variant_name")
    calls = Counter("zeroscale_invocations", "", labels, registry=ref)
    model = Histogram("zeroscale_model_latency_seconds", "", labels, buckets=_LATENCY_BUCKETS, registry=ref)
    over = Histogram("zeroscale_overhead_latency_seconds", "", labels, buckets=_LATENCY_BUCKETS, registry=ref)
    setup = Histogram("zeroscale_model_setup_seconds", "", labels, buckets=_LATENCY_BUCKETS, registry=ref)
    keys = [("ep", "A"), ("ep", "B"), ("other", "A")]
    for endpoint, variant in keys:
        metrics.variant(activated(endpoint=endpoint, variant=variant))
    for _ in range(2000):
        endpoint, variant = rng.choice(keys)
        edge = rng.choice(_LATENCY_BUCKETS)
        model_s = rng.choice([edge, edge * 1.0001, rng.random() * 0.01, rng.random() * 300])
        total_s = model_s + rng.choice([0.0, edge, rng.random() * 0.002])
        if rng.random() < 0.1:
            metrics.worker(started(setup_s=model_s, endpoint=endpoint, variant=variant))
            setup.labels(endpoint, variant).observe(model_s)
            continue
        metrics.invocation(record(endpoint=endpoint, variant=variant, model_s=model_s, total_s=total_s))
        calls.labels(endpoint, variant).inc()
        model.labels(endpoint, variant).observe(model_s)
        over.labels(endpoint, variant).observe(max(0.0, total_s - model_s))
    ours = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape(metrics).splitlines()
        if line and not line.startswith("#") and "_created" not in line
    }
    theirs = [
        line
        for line in generate_latest(ref).decode().splitlines()
        if line and not line.startswith("#") and "_created" not in line
    ]
    assert len(theirs) == 3 * 3 * (len(_LATENCY_BUCKETS) + 3) + 3  # 3 histograms and a counter, 3 keys
    for line in theirs:
        name, number = line.rsplit(" ", 1)
        assert ours[name] == float(number), name

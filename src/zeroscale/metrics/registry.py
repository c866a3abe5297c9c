"""The Prometheus series on /metrics, one registry per server (tests run several).

``Metrics`` is an event sink: invocations, worker starts and exits update counters and histograms in memory
(a dict lookup and a few increments per invocation). Gauges of what is happening now (busy workers, queue
depth, live workers, memory and concurrency utilization) are computed when scraped, from the pools' loads
(the sum over an endpoint variant's pools), so no router code touches a gauge. SageMaker's name for each
series is in ``catalog.CATALOG``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metrics.catalog import error_family
from zeroscale.metrics.load import CacheLoad, LoadSource, PoolLoad, VariantLoad, by_variant

_LABELS = ("endpoint_name", "variant_name")
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    180.0,
)


@dataclass(slots=True)
class _Series:
    """One variant's children of the labelled series the invoke path touches (labels() looked up once)."""

    invocations: Counter
    errors_4xx: Counter
    errors_5xx: Counter
    model_latency: Histogram
    overhead_latency: Histogram
    provisioned: Counter | None  # None unless the variant has provisioned concurrency
    spillover: Counter | None


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.invocations = Counter(
            "zeroscale_invocations",
            "SageMaker Invocations: requests routed to the variant",
            _LABELS,
            registry=r,
        )
        self.errors_4xx = Counter(
            "zeroscale_invocation_4xx_errors",
            "SageMaker Invocation4XXErrors: the model answered 4xx, or the request was throttled",
            _LABELS,
            registry=r,
        )
        self.errors_5xx = Counter(
            "zeroscale_invocation_5xx_errors",
            "SageMaker Invocation5XXErrors: the model answered 5xx or not at all",
            _LABELS,
            registry=r,
        )
        self.model_latency = Histogram(
            "zeroscale_model_latency_seconds",
            "SageMaker ModelLatency: request written to the worker until its response was read",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead_latency = Histogram(
            "zeroscale_overhead_latency_seconds",
            "SageMaker OverheadLatency: arrival to answer minus ModelLatency (includes cold starts)",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_setup = Histogram(
            "zeroscale_model_setup_seconds",
            "SageMaker ModelSetupTime: worker start to its first good /ping, one sample per cold start",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cold_starts = Counter(
            "zeroscale_cold_starts", "Workers started per variant", _LABELS, registry=r
        )
        self.worker_exits = Counter(
            "zeroscale_worker_exits",
            "Workers gone per variant, by reason (stopped, crashed, memory_killed, timed_out, evicted)",
            (*_LABELS, "reason"),
            registry=r,
        )
        self.provisioned_invocations = Counter(
            "zeroscale_provisioned_concurrency_invocations",
            "SageMaker ServerlessProvisionedConcurrencyInvocations: served within provisioned concurrency",
            _LABELS,
            registry=r,
        )
        self.spillover_invocations = Counter(
            "zeroscale_provisioned_concurrency_spillover_invocations",
            "SageMaker ServerlessProvisionedConcurrencySpilloverInvocations: served beyond it",
            _LABELS,
            registry=r,
        )
        self._series: dict[tuple[str, str], _Series] = {}
        self._provisioned: dict[tuple[str, str], int] = {}
        self._exit_reasons: dict[tuple[str, str], set[str]] = {}
        self._loads: LoadSource = _no_loads
        self._sink_failures: Mapping[tuple[str, str], int] = {}
        self._cache: Callable[[], CacheLoad] | None = None
        self._nodes: Callable[[], list[tuple[str, int, int, int]]] | None = None
        r.register(_LoadCollector(self))
        r.register(_SinkFailureCollector(self))
        r.register(_CacheCollector(self))
        r.register(_NodeCollector(self))

    def watch(self, loads: LoadSource) -> None:
        """Where the scrape-time gauges come from (the fleet's pools)."""
        self._loads = loads

    def current_loads(self) -> list[PoolLoad]:
        return self._loads()

    def watch_sink_failures(self, failures: Mapping[tuple[str, str], int]) -> None:
        """The event bus's count of failed sink calls, by (sink, event kind)."""
        self._sink_failures = failures

    def sink_failures(self) -> list[tuple[tuple[str, str], int]]:
        return list(self._sink_failures.items())

    def watch_cache(self, load: Callable[[], CacheLoad]) -> None:
        """Where the warm-model cache's figures come from (the fleet's cache)."""
        self._cache = load

    def cache_load(self) -> CacheLoad | None:
        return self._cache() if self._cache is not None else None

    def watch_nodes(self, nodes: Callable[[], list[tuple[str, int, int, int]]]) -> None:
        """Workers on a cluster: each node's (name, memory MB, MB reserved by workers, live workers)."""
        self._nodes = nodes

    def node_loads(self) -> list[tuple[str, int, int, int]]:
        return self._nodes() if self._nodes is not None else []

    # ---- the event sink ----
    def invocation(self, record: InvocationRecord) -> None:
        key = (record.endpoint, record.variant)
        series = self._series.get(key) or self._open(key)
        series.invocations.inc()
        family = error_family(record)
        if family == 4:
            series.errors_4xx.inc()
        elif family == 5:
            series.errors_5xx.inc()
        if record.worker_id:
            series.model_latency.observe(record.model_s)
            if series.provisioned is not None and series.spillover is not None:
                (series.provisioned if record.provisioned else series.spillover).inc()
        series.overhead_latency.observe(max(0.0, record.total_s - record.model_s))

    def worker(self, event: WorkerEvent) -> None:
        key = (event.endpoint, event.variant)
        if event.kind == "started":
            self.cold_starts.labels(*key).inc()
            if event.setup_s is not None:
                self.model_setup.labels(*key).observe(event.setup_s)
        elif event.worker_id:  # "failed" starts have no worker
            self._exit_reasons.setdefault(key, set()).add(event.kind)
            self.worker_exits.labels(*key, event.kind).inc()

    def variant(self, event: VariantEvent) -> None:
        if event.kind == "activated":
            key = (event.endpoint, event.variant)
            self._provisioned[key] = event.provisioned
            self._series.pop(key, None)
            self._open(key)
            self.cold_starts.labels(*key)
            self.model_setup.labels(*key)

    def _open(self, key: tuple[str, str]) -> _Series:
        """Create the variant's series (at zero, so rates work from the first request)."""
        provisioned = self._provisioned.get(key, 0) > 0
        series = _Series(
            self.invocations.labels(*key),
            self.errors_4xx.labels(*key),
            self.errors_5xx.labels(*key),
            self.model_latency.labels(*key),
            self.overhead_latency.labels(*key),
            self.provisioned_invocations.labels(*key) if provisioned else None,
            self.spillover_invocations.labels(*key) if provisioned else None,
        )
        self._series[key] = series
        return series

    def forget(self, endpoint: str, variant: str) -> None:
        """Drop a deleted variant's series."""
        key = (endpoint, variant)
        self._series.pop(key, None)
        self._provisioned.pop(key, None)
        for metric in (
            self.invocations,
            self.errors_4xx,
            self.errors_5xx,
            self.model_latency,
            self.overhead_latency,
            self.model_setup,
            self.cold_starts,
            self.provisioned_invocations,
            self.spillover_invocations,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(endpoint, variant)
        for reason in self._exit_reasons.pop(key, set()):
            with contextlib.suppress(KeyError):
                self.worker_exits.remove(endpoint, variant, reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# name, help; values from _gauge_values in this order
_GAUGES: tuple[tuple[str, str], ...] = (
    ("zeroscale_workers", "Live worker processes per variant (started, not yet gone)"),
    ("zeroscale_concurrent_executions", "Workers serving a request now"),
    (
        "zeroscale_concurrent_executions_utilization_ratio",
        "SageMaker ServerlessConcurrentExecutionsUtilization: busy workers / MaxConcurrency",
    ),
    ("zeroscale_queue_depth", "Requests waiting for a free worker"),
    ("zeroscale_max_concurrency", "The variant's MaxConcurrency"),
    ("zeroscale_provisioned_concurrency", "The variant's ProvisionedConcurrency"),
    (
        "zeroscale_memory_utilization_percent",
        "SageMaker MemoryUtilization: mean resident set of the live workers, percent of MemorySizeInMB",
    ),
    (
        "zeroscale_memory_utilization_max_percent",
        "The largest worker's resident set, percent of MemorySizeInMB",
    ),
    (
        "zeroscale_provisioned_concurrency_executions",
        "SageMaker ServerlessProvisionedConcurrencyExecutions: min(busy, ProvisionedConcurrency)",
    ),
    (
        "zeroscale_provisioned_concurrency_utilization_ratio",
        "SageMaker ServerlessProvisionedConcurrencyUtilization: executions / ProvisionedConcurrency",
    ),
)


def _no_loads() -> list[PoolLoad]:
    return []


def _gauge_values(v: VariantLoad) -> tuple[float | None, ...]:
    mem = v.memory_utilization
    provisioned = v.provisioned > 0
    return (
        float(v.workers),
        float(v.busy),
        v.concurrency_utilization,
        float(v.queued),
        float(v.max_concurrency),
        float(v.provisioned),
        sum(mem) / len(mem) if mem else None,
        max(mem) if mem else None,
        float(v.provisioned_executions) if provisioned else None,
        v.provisioned_utilization if provisioned else None,
    )


class _LoadCollector:
    """The gauges of what the pools are doing now, computed at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc, labels=_LABELS) for name, doc in _GAUGES]

    def collect(self) -> Iterator[Metric]:
        families = [GaugeMetricFamily(name, doc, labels=_LABELS) for name, doc in _GAUGES]
        for load in by_variant(self._metrics.current_loads()):
            labels = [load.endpoint, load.variant]
            for family, value in zip(families, _gauge_values(load), strict=True):
                if value is not None:
                    family.add_metric(labels, value)
        yield from families


class _SinkFailureCollector:
    """Failed event-sink calls (a sink's bug: the request and the other sinks went on)."""

    _NAME = "zeroscale_event_sink_failures"
    _DOC = "Event sink calls that raised, by sink and event kind (logged; nothing else was affected)"

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self._NAME, self._DOC, labels=("sink", "event"))]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._NAME, self._DOC, labels=("sink", "event"))
        for (sink, kind), count in self._metrics.sink_failures():
            family.add_metric([sink, kind], float(count))
        yield family


class _CacheCollector:
    """The warm-model cache: what it holds now, and its lookups and evictions so far."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._metrics.cache_load())

    @staticmethod
    def _families(load: CacheLoad | None) -> Iterator[Metric]:
        gauges = (
            ("zeroscale_warm_cache_entries", "Loaded-model templates kept for endpoints at zero", "entries"),
            ("zeroscale_warm_cache_bytes", "Private memory those templates hold", "bytes"),
            ("zeroscale_warm_cache_capacity_bytes", "The cache's cap (--warm-cache-mb)", "cap_bytes"),
        )
        counters = (
            ("zeroscale_warm_cache_hits", "Cold starts from zero that forked a cached template", "hits"),
            ("zeroscale_warm_cache_misses", "Cold starts from zero that loaded the model", "misses"),
            (
                "zeroscale_warm_cache_evictions",
                "Templates dropped for the cap or a worker's memory",
                "evictions",
            ),
        )
        for name, doc, attr in gauges:
            gauge = GaugeMetricFamily(name, doc)
            if load is not None:
                gauge.add_metric([], float(getattr(load, attr)))
            yield gauge
        for name, doc, attr in counters:
            counter = CounterMetricFamily(name, doc)
            if load is not None:
                counter.add_metric([], float(getattr(load, attr)))
            yield counter
        per_endpoint = GaugeMetricFamily(
            "zeroscale_warm_cache_endpoint_bytes",
            "Bytes of cached templates per endpoint",
            labels=("endpoint_name",),
        )
        for endpoint, size in load.by_endpoint if load is not None else ():
            per_endpoint.add_metric([endpoint], float(size))
        yield per_endpoint


class _NodeCollector:
    """Workers on a cluster (--ray-address): each node's workers and memory (nothing on one machine)."""

    _GAUGES = (
        ("zeroscale_node_workers", "Live workers on the cluster node", 3),
        ("zeroscale_node_memory_mb", "Memory the cluster node offers workers (its Ray memory resource)", 1),
        ("zeroscale_node_reserved_mb", "MemorySizeInMB of the workers on the cluster node", 2),
    )

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc, labels=("node",)) for name, doc, _ in self._GAUGES]

    def collect(self) -> Iterator[Metric]:
        nodes = self._metrics.node_loads()
        for name, doc, index in self._GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=("node",))
            for node in nodes:
                gauge.add_metric([node[0]], float(node[index]))
            yield gauge

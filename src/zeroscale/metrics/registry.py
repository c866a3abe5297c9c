"""The Prometheus series on /metrics, one registry per server (tests run several).

``Metrics`` is an event sink: invocations, worker starts and exits update counters and histograms in memory
(a dict lookup and a few increments per invocation). Gauges of what is happening now (busy workers, queue
depth, live workers, memory and concurrency utilization) are computed when scraped, from the pools' loads
(the sum over an endpoint variant's pools), so no router code touches a gauge. SageMaker's name for each
series is in ``catalog.CATALOG``.
"""

from __future__ import annotations

import bisect
import itertools
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.samples import Sample

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


# Where each figure lives in a variant's array of counts (see _Series).
_INVOCATIONS, _ERRORS_4XX, _ERRORS_5XX, _COLD_STARTS, _PROVISIONED, _SPILLOVER = range(6)
_BUCKETS = len(_LATENCY_BUCKETS) + 1  # the last is +Inf
_HIST = _BUCKETS + 2  # the buckets (not cumulative), then the sum, then the count
_MODEL, _OVERHEAD, _SETUP = (6 + i * _HIST for i in range(3))
_SIZE = 6 + 3 * _HIST
_UPPER = [*(str(float(b)) for b in _LATENCY_BUCKETS), "+Inf"]

# name, help; the counters first (in their index order), then the histograms
_COUNTERS: tuple[tuple[str, str, int], ...] = (
    ("zeroscale_invocations", "SageMaker Invocations: requests routed to the variant", _INVOCATIONS),
    (
        "zeroscale_invocation_4xx_errors",
        "SageMaker Invocation4XXErrors: the model answered 4xx, or the request was throttled",
        _ERRORS_4XX,
    ),
    (
        "zeroscale_invocation_5xx_errors",
        "SageMaker Invocation5XXErrors: the model answered 5xx or not at all",
        _ERRORS_5XX,
    ),
)
_HISTOGRAMS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_model_latency_seconds",
        "SageMaker ModelLatency: request written to the worker until its response was read",
        _MODEL,
    ),
    (
        "zeroscale_overhead_latency_seconds",
        "SageMaker OverheadLatency: arrival to answer minus ModelLatency (includes cold starts)",
        _OVERHEAD,
    ),
    (
        "zeroscale_model_setup_seconds",
        "SageMaker ModelSetupTime: worker start to its first good /ping, one sample per cold start",
        _SETUP,
    ),
)
_LATER_COUNTERS: tuple[tuple[str, str, int], ...] = (
    ("zeroscale_cold_starts", "Workers started per variant", _COLD_STARTS),
)
# A multi-model variant's figures (``_Series.models``: absent for the others): two counters, then histograms.
_CACHE_HITS, _CACHE_LOOKUPS = range(2)
_WAIT, _DOWNLOAD, _LOAD, _UNLOAD = (2 + i * _HIST for i in range(4))
_MODELS_SIZE = 2 + 4 * _HIST
_MODEL_COUNTERS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_model_cache_hits",
        "SageMaker ModelCacheHit: multi-model invocations whose target model was already loaded",
        _CACHE_HITS,
    ),
    (
        "zeroscale_model_cache_lookups",
        "Multi-model invocations that looked for their target model (the hit rate's denominator)",
        _CACHE_LOOKUPS,
    ),
)
_MODEL_HISTOGRAMS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_model_loading_wait_seconds",
        "SageMaker ModelLoadingWaitTime: an invocation waited for its target model's download and load",
        _WAIT,
    ),
    (
        "zeroscale_model_downloading_seconds",
        "SageMaker ModelDownloadingTime: fetching a target model's artifact",
        _DOWNLOAD,
    ),
    (
        "zeroscale_model_loading_seconds",
        "SageMaker ModelLoadingTime: a target model's worker forked and loaded",
        _LOAD,
    ),
    (
        "zeroscale_model_unloading_seconds",
        "SageMaker ModelUnloadingTime: a target model's worker asked to stop until it exited",
        _UNLOAD,
    ),
)
_PROVISIONED_COUNTERS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_provisioned_concurrency_invocations",
        "SageMaker ServerlessProvisionedConcurrencyInvocations: served within provisioned concurrency",
        _PROVISIONED,
    ),
    (
        "zeroscale_provisioned_concurrency_spillover_invocations",
        "SageMaker ServerlessProvisionedConcurrencySpilloverInvocations: served beyond it",
        _SPILLOVER,
    ),
)
_EXITS = (
    "zeroscale_worker_exits",
    "Workers gone per variant, by reason (stopped, crashed, memory_killed, timed_out, evicted)",
)


@dataclass(slots=True)
class _Series:
    """One variant's counters and histograms in one array of floats (about 600 bytes, against some 10 KB as
    prometheus_client children with a lock per value: a server with 10,000 endpoints holds 10,000 of
    these). Updated on the event loop only; rendered at scrape time by ``_SeriesCollector``."""

    counts: array[float]
    created: float
    provisioned: bool  # the variant has provisioned concurrency: count provisioned and spillover invocations
    exits: dict[str, tuple[float, float]]  # reason -> (count, created)
    shown: bool  # the provisioned and spillover series are rendered (the variant had provisioned concurrency)
    models: array[float] | None = None  # a multi-model variant's figures, from its first one on

    def observe(self, at: int, seconds: float) -> None:
        _observe(self.counts, at, seconds)

    def model_figures(self) -> array[float]:
        if self.models is None:
            self.models = array("d", bytes(8 * _MODELS_SIZE))
        return self.models


def _observe(counts: array[float], at: int, seconds: float) -> None:
    counts[at + bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
    counts[at + _BUCKETS] += seconds
    counts[at + _BUCKETS + 1] += 1


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._series: dict[tuple[str, str], _Series] = {}
        self._provisioned: dict[tuple[str, str], int] = {}
        self._loads: LoadSource = _no_loads
        self._sink_failures: Mapping[tuple[str, str], int] = {}
        self._cache: Callable[[], CacheLoad] | None = None
        self._nodes: Callable[[], list[tuple[str, int, int, int]]] | None = None
        r.register(_SeriesCollector(self))
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
        counts = series.counts
        counts[_INVOCATIONS] += 1
        family = error_family(record)
        if family == 4:
            counts[_ERRORS_4XX] += 1
        elif family == 5:
            counts[_ERRORS_5XX] += 1
        if record.worker_id:
            series.observe(_MODEL, record.model_s)
            if series.provisioned:
                counts[_PROVISIONED if record.provisioned else _SPILLOVER] += 1
        series.observe(_OVERHEAD, max(0.0, record.total_s - record.model_s))
        if record.cache_hit is not None:  # a multi-model invocation
            models = series.model_figures()
            models[_CACHE_LOOKUPS] += 1
            if record.cache_hit:
                models[_CACHE_HITS] += 1
            if record.model_wait_s is not None:
                _observe(models, _WAIT, record.model_wait_s)
            if record.download_s is not None:
                _observe(models, _DOWNLOAD, record.download_s)

    def worker(self, event: WorkerEvent) -> None:
        key = (event.endpoint, event.variant)
        series = self._series.get(key) or self._open(key)
        if event.kind == "started":
            series.counts[_COLD_STARTS] += 1
            if event.setup_s is not None:
                series.observe(_SETUP, event.setup_s)
                if event.model:  # a multi-model worker loaded its target model
                    _observe(series.model_figures(), _LOAD, event.setup_s)
        elif event.worker_id:  # "failed" starts have no worker
            count, created = series.exits.get(event.kind, (0.0, time.time()))
            series.exits[event.kind] = (count + 1, created)
        if event.unload_s is not None:
            _observe(series.model_figures(), _UNLOAD, event.unload_s)

    def variant(self, event: VariantEvent) -> None:
        if event.kind == "activated":
            key = (event.endpoint, event.variant)
            self._provisioned[key] = event.provisioned
            old = self._series.get(key)
            series = self._open(key)
            if old is not None:  # an update: the counts go on; provisioned series, once shown, stay
                series.counts, series.created, series.exits = old.counts, old.created, old.exits
                series.models = old.models
                series.shown = series.provisioned or old.shown

    def _open(self, key: tuple[str, str]) -> _Series:
        """Create the variant's series (at zero, so rates work from the first request)."""
        provisioned = self._provisioned.get(key, 0) > 0
        series = _Series(array("d", bytes(8 * _SIZE)), time.time(), provisioned, {}, provisioned)
        self._series[key] = series
        return series

    def forget(self, endpoint: str, variant: str) -> None:
        """Drop a deleted variant's series."""
        key = (endpoint, variant)
        self._series.pop(key, None)
        self._provisioned.pop(key, None)

    def series(self) -> list[tuple[tuple[str, str], _Series]]:
        return list(self._series.items())

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
    ("zeroscale_loaded_models", "SageMaker LoadedModelCount: a multi-model variant's loaded target models"),
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
        float(v.loaded_models) if v.loaded_models is not None else None,
    )


class _SeriesCollector:
    """The per-variant counters and histograms, in the order and with the names prometheus_client gave
    them when each was its own Counter or Histogram (``_total`` and ``_created``; ``_bucket``, ``_count``,
    ``_sum`` and ``_created``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        every = self._metrics.series()
        for name, doc, at in _COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=_LABELS)
            for key, series in every:
                counter.add_metric(key, series.counts[at], created=series.created)
            yield counter
        for name, doc, at in _HISTOGRAMS:
            hist = HistogramMetricFamily(name, doc, labels=_LABELS)
            for key, series in every:
                _add_histogram(hist, name, key, series.counts, at, series.created)
            yield hist
        modelled = [
            (key, series.created, series.models) for key, series in every if series.models is not None
        ]
        for name, doc, at in _MODEL_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=_LABELS)
            for key, created, models in modelled:
                counter.add_metric(key, models[at], created=created)
            yield counter
        for name, doc, at in _MODEL_HISTOGRAMS:
            hist = HistogramMetricFamily(name, doc, labels=_LABELS)
            for key, created, models in modelled:
                _add_histogram(hist, name, key, models, at, created)
            yield hist
        for name, doc, at in _LATER_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=_LABELS)
            for key, series in every:
                counter.add_metric(key, series.counts[at], created=series.created)
            yield counter
        exits = CounterMetricFamily(*_EXITS, labels=(*_LABELS, "reason"))
        for key, series in every:
            for reason, (count, created) in series.exits.items():
                exits.add_metric((*key, reason), count, created=created)
        yield exits
        for name, doc, at in _PROVISIONED_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=_LABELS)
            for key, series in every:
                if series.shown:
                    counter.add_metric(key, series.counts[at], created=series.created)
            yield counter


def _add_histogram(
    hist: HistogramMetricFamily,
    name: str,
    key: tuple[str, str],
    counts: array[float],
    at: int,
    created: float,
) -> None:
    buckets = list(zip(_UPPER, itertools.accumulate(counts[at : at + _BUCKETS]), strict=True))
    hist.add_metric(key, buckets, counts[at + _BUCKETS])
    hist.samples.append(Sample(f"{name}_created", dict(zip(_LABELS, key, strict=True)), created))


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

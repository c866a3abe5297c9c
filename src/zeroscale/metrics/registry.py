"""The Prometheus series on /metrics, one registry per server (tests run several).

``Metrics`` is an event sink: invocations, worker starts and exits update counters and histograms in memory
(a dict lookup and a few increments per invocation). Gauges of what is happening now (busy workers, queue
depth, live workers, memory and concurrency utilization) are computed when scraped, from the pools' loads
(the sum over an endpoint variant's pools), so no router code touches a gauge. SageMaker's name for each
series is in ``catalog.CATALOG``.

A scrape (``Metrics.scrape``) copies the figures on the event loop a chunk at a time and formats them in a
thread with ``metrics.text``; the prometheus_client collectors below print the same text, and are what it
is compared with (``Metrics.render_by_prometheus_client``, ``tests/metrics/test_text.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.samples import Sample

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metrics import text
from zeroscale.metrics.catalog import error_family
from zeroscale.metrics.load import CacheLoad, PoolLoad, PoolSource, by_variant
from zeroscale.metrics.series import (
    BATCH_COUNTERS,
    BATCHED,
    BATCHES,
    BUCKETS,
    CACHE_HITS,
    CACHE_LOOKUPS,
    COLD_STARTS,
    COUNTERS,
    DOWNLOAD,
    ERRORS_4XX,
    ERRORS_5XX,
    EXITS,
    GAUGES,
    HISTOGRAMS,
    INVOCATIONS,
    LABELS,
    LATER_COUNTERS,
    LOAD,
    MODEL,
    MODEL_COUNTERS,
    MODEL_HISTOGRAMS,
    OVERHEAD,
    PROVISIONED,
    PROVISIONED_COUNTERS,
    SETUP,
    SIZE,
    SPILLOVER,
    UNLOAD,
    UPPER,
    WAIT,
    Series,
    add_observation,
    gauge_values,
)

CHUNK = 1000  # series copied, or pools' loads read, between two yields to the event loop during a scrape


class _Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _Chain:
    """Collectors one after the other, as one collector (for ``generate_latest``)."""

    def __init__(self, *collectors: _Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # other modules' collectors (rendered after Metrics' own)
        self._series: dict[tuple[str, str], Series] = {}
        self._provisioned: dict[tuple[str, str], int] = {}
        self._pools: PoolSource = _no_loads
        self._sink_failures: Mapping[tuple[str, str], int] = {}
        self._cache: Callable[[], CacheLoad] | None = None
        self._nodes: Callable[[], list[tuple[str, int, int, int, int]]] | None = None
        # Other modules' series of a variant, dropped with its own (``forget``)
        self._forgetters: list[Callable[[str, str], None]] = []
        self._small = _Chain(_SinkFailureCollector(self), _CacheCollector(self), _NodeCollector(self))
        # The thread that prints the scrapes (started at the first): always the same one, so the memory a
        # scrape's pieces take and give back stays with one thread's allocator (with the default pool's
        # threads each kept its own: 10,000 endpoints' four scrapes left the server 72 MB larger, not 31).
        self._printer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zeroscale-metrics")

    def watch(self, pools: PoolSource) -> None:
        """Where the scrape-time gauges come from: the fleet's pools (or their loads)."""
        self._pools = pools

    def current_loads(self) -> list[PoolLoad]:
        return [pool.load() for pool in self._pools()]

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

    def watch_nodes(self, nodes: Callable[[], list[tuple[str, int, int, int, int]]]) -> None:
        """Workers on a cluster: each node's (name, memory MB, MB reserved by workers, live workers, bytes in
        its artifact cache)."""
        self._nodes = nodes

    def node_loads(self) -> list[tuple[str, int, int, int, int]]:
        return self._nodes() if self._nodes is not None else []

    # ---- the event sink ----
    def invocation(self, record: InvocationRecord) -> None:
        key = (record.endpoint, record.variant)
        series = self._series.get(key) or self._open(key)
        counts = series.counts
        counts[INVOCATIONS] += 1
        family = error_family(record)
        if family == 4:
            counts[ERRORS_4XX] += 1
        elif family == 5:
            counts[ERRORS_5XX] += 1
        if record.worker_id:
            series.observe(MODEL, record.model_s)
            if series.provisioned:
                counts[PROVISIONED if record.provisioned else SPILLOVER] += 1
        series.observe(OVERHEAD, max(0.0, record.total_s - record.model_s))
        if record.batch_size > 1:
            counts[BATCHED] += 1
            if record.batch_first:
                counts[BATCHES] += 1
        if record.cache_hit is not None:  # a multi-model invocation
            models = series.model_figures()
            models[CACHE_LOOKUPS] += 1
            if record.cache_hit:
                models[CACHE_HITS] += 1
            if record.model_wait_s is not None:
                add_observation(models, WAIT, record.model_wait_s)
            if record.download_s is not None:
                add_observation(models, DOWNLOAD, record.download_s)

    def worker(self, event: WorkerEvent) -> None:
        key = (event.endpoint, event.variant)
        series = self._series.get(key) or self._open(key)
        if event.kind == "started":
            series.counts[COLD_STARTS] += 1
            if event.setup_s is not None:
                series.observe(SETUP, event.setup_s)
                if event.model:  # a multi-model worker loaded its target model
                    add_observation(series.model_figures(), LOAD, event.setup_s)
        elif event.worker_id:  # "failed" starts have no worker
            count, created = series.exits.get(event.kind, (0.0, time.time()))
            series.exits[event.kind] = (count + 1, created)
        if event.unload_s is not None:
            add_observation(series.model_figures(), UNLOAD, event.unload_s)

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

    def _open(self, key: tuple[str, str]) -> Series:
        """Create the variant's series (at zero, so rates work from the first request)."""
        provisioned = self._provisioned.get(key, 0) > 0
        series = Series(array("d", bytes(8 * SIZE)), time.time(), provisioned, {}, provisioned)
        self._series[key] = series
        return series

    def forget(self, endpoint: str, variant: str) -> None:
        """Drop a deleted variant's series, and other modules' (``on_forget``)."""
        key = (endpoint, variant)
        self._series.pop(key, None)
        self._provisioned.pop(key, None)
        for forget in self._forgetters:
            forget(endpoint, variant)

    def on_forget(self, forget: Callable[[str, str], None]) -> None:
        """``forget(endpoint, variant)`` drops the series a collector in ``registry`` keeps of a variant, when
        the variant's own go (it was deleted, or replaced by an update without it)."""
        self._forgetters.append(forget)

    def series(self) -> list[tuple[tuple[str, str], Series]]:
        return list(self._series.items())

    # ---- the scrape ----
    def render(self) -> bytes:
        """The Prometheus text of every series, all in this thread (the server scrapes with ``scrape``)."""
        rows = [text.snapshot(key, series) for key, series in self._series.items()]
        return text.render(rows, [text.load_row(pool.load()) for pool in self._pools()], self._rest())

    async def scrape(self) -> bytes:
        """The whole text of ``stream``."""
        return b"".join([piece async for piece in self.stream()])

    async def stream(self) -> AsyncIterator[bytes]:
        """The Prometheus text of every series, in pieces (``text.pieces``: what a scrape holds at once does
        not grow with the endpoints), without holding up the event loop for long: the series' figures and
        the pools' loads are read on the loop, ``CHUNK`` at a time with a yield between, and each piece is
        printed in the printer thread. Each variant's figures are consistent (one copy); as with any scrape,
        those read later may count invocations served meanwhile."""
        every = self.series()
        rows: list[text.Snapshot] = []
        for start in range(0, len(every), CHUNK):
            await asyncio.sleep(0)
            rows += [text.snapshot(key, series) for key, series in every[start : start + CHUNK]]
        pools = self._pools()
        loads: list[text.LoadRow] = []
        for start in range(0, len(pools), CHUNK):
            await asyncio.sleep(0)
            loads += [text.load_row(pool.load()) for pool in pools[start : start + CHUNK]]
        pieces = text.pieces(rows, loads, self._rest())
        loop = asyncio.get_running_loop()
        while (piece := await loop.run_in_executor(self._printer, next, pieces, None)) is not None:
            yield piece

    def _rest(self) -> bytes:
        """The small families (sink failures, the warm cache, cluster nodes), then others' collectors."""
        return generate_latest(_Chain(self._small, self.registry))

    def render_by_prometheus_client(self) -> bytes:
        """The same text through prometheus_client's collectors and ``generate_latest``: the reference the
        tests and ``bench/scrape.py`` compare ``render`` with."""
        own = _Chain(_SeriesCollector(self), _LoadCollector(self), self._small)
        return generate_latest(_Chain(own, self.registry))


def _no_loads() -> list[PoolLoad]:
    return []


class _SeriesCollector:
    """The per-variant counters and histograms, in the order and with the names prometheus_client gave them
    when each was its own Counter or Histogram (``_total`` and ``_created``; ``_bucket``, ``_count``,
    ``_sum`` and ``_created``). The server prints the same text with ``metrics.text``, at a fraction of the
    cost; this is the reference it is compared with (``Metrics.render_by_prometheus_client``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        every = self._metrics.series()
        for name, doc, at in COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=LABELS)
            for key, series in every:
                counter.add_metric(key, series.counts[at], created=series.created)
            yield counter
        for name, doc, at in HISTOGRAMS:
            hist = HistogramMetricFamily(name, doc, labels=LABELS)
            for key, series in every:
                _add_histogram(hist, name, key, series.counts, at, series.created)
            yield hist
        modelled = [
            (key, series.created, series.models) for key, series in every if series.models is not None
        ]
        for name, doc, at in MODEL_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=LABELS)
            for key, created, models in modelled:
                counter.add_metric(key, models[at], created=created)
            yield counter
        for name, doc, at in MODEL_HISTOGRAMS:
            hist = HistogramMetricFamily(name, doc, labels=LABELS)
            for key, created, models in modelled:
                _add_histogram(hist, name, key, models, at, created)
            yield hist
        for name, doc, at in LATER_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=LABELS)
            for key, series in every:
                counter.add_metric(key, series.counts[at], created=series.created)
            yield counter
        exits = CounterMetricFamily(*EXITS, labels=(*LABELS, "reason"))
        for key, series in every:
            for reason, (count, created) in series.exits.items():
                exits.add_metric((*key, reason), count, created=created)
        yield exits
        for name, doc, at in PROVISIONED_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=LABELS)
            for key, series in every:
                if series.shown:
                    counter.add_metric(key, series.counts[at], created=series.created)
            yield counter
        for name, doc, at in BATCH_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=LABELS)
            for key, series in every:
                if series.counts[BATCHED]:
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
    buckets = list(zip(UPPER, itertools.accumulate(counts[at : at + BUCKETS]), strict=True))
    hist.add_metric(key, buckets, counts[at + BUCKETS])
    hist.samples.append(Sample(f"{name}_created", dict(zip(LABELS, key, strict=True)), created))


class _LoadCollector:
    """The gauges of what the pools are doing now, computed at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc, labels=LABELS) for name, doc in GAUGES]

    def collect(self) -> Iterator[Metric]:
        families = [GaugeMetricFamily(name, doc, labels=LABELS) for name, doc in GAUGES]
        for load in by_variant(self._metrics.current_loads()):
            labels = [load.endpoint, load.variant]
            for family, value in zip(families, gauge_values(load), strict=True):
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


Scalars = tuple[tuple[str, str, str], ...]  # (metric name, help text, attribute of the figures)


def scalar_families(figures: object | None, gauges: Scalars, counters: Scalars) -> Iterator[Metric]:
    """One unlabelled gauge or counter per (name, help, attribute) of ``figures`` (families without a sample
    when None: what ``describe`` shows)."""
    for kind, specs in ((GaugeMetricFamily, gauges), (CounterMetricFamily, counters)):
        for name, doc, attr in specs:
            family = kind(name, doc)
            if figures is not None:
                family.add_metric([], float(getattr(figures, attr)))
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
        yield from scalar_families(load, gauges, counters)
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

    GAUGES = (
        ("zeroscale_node_workers", "Live workers on the cluster node", 3),
        ("zeroscale_node_memory_mb", "Memory the cluster node offers workers (its Ray memory resource)", 1),
        ("zeroscale_node_reserved_mb", "MemorySizeInMB of the workers on the cluster node", 2),
        ("zeroscale_node_artifact_cache_bytes", "Bytes of extracted models in the cluster node's cache", 4),
    )

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc, labels=("node",)) for name, doc, _ in self.GAUGES]

    def collect(self) -> Iterator[Metric]:
        nodes = self._metrics.node_loads()
        for name, doc, index in self.GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=("node",))
            for node in nodes:
                gauge.add_metric([node[0]], float(node[index]))
            yield gauge

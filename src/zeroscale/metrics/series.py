"""How ``Metrics`` keeps each endpoint variant's counters and histograms: one array of floats per variant
(``Series``), the position of each figure in it, and each Prometheus family's name and help. Shared by the
prometheus_client collectors (``registry``) and the text renderer (``text``)."""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass

from zeroscale.metrics.load import VariantLoad

LABELS = ("endpoint_name", "variant_name")
LATENCY_BUCKETS = (
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


# Where each figure lives in a variant's array of counts (see Series).
INVOCATIONS, ERRORS_4XX, ERRORS_5XX, COLD_STARTS, PROVISIONED, SPILLOVER = range(6)
BUCKETS = len(LATENCY_BUCKETS) + 1  # the last is +Inf
HIST = BUCKETS + 2  # the buckets (not cumulative), then the sum, then the count
MODEL, OVERHEAD, SETUP = (6 + i * HIST for i in range(3))
BATCHED, BATCHES = 6 + 3 * HIST, 7 + 3 * HIST  # dynamic batching: requests in shared calls, those calls
SIZE = 8 + 3 * HIST
UPPER = [*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"]

# name, help; the counters first (in their index order), then the histograms
COUNTERS: tuple[tuple[str, str, int], ...] = (
    ("zeroscale_invocations", "SageMaker Invocations: requests routed to the variant", INVOCATIONS),
    (
        "zeroscale_invocation_4xx_errors",
        "SageMaker Invocation4XXErrors: the model answered 4xx, or the request was throttled",
        ERRORS_4XX,
    ),
    (
        "zeroscale_invocation_5xx_errors",
        "SageMaker Invocation5XXErrors: the model answered 5xx or not at all",
        ERRORS_5XX,
    ),
)
HISTOGRAMS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_model_latency_seconds",
        "SageMaker ModelLatency: request written to the worker until its response was read",
        MODEL,
    ),
    (
        "zeroscale_overhead_latency_seconds",
        "SageMaker OverheadLatency: arrival to answer minus ModelLatency (includes cold starts)",
        OVERHEAD,
    ),
    (
        "zeroscale_model_setup_seconds",
        "SageMaker ModelSetupTime: worker start to its first good /ping, one sample per cold start",
        SETUP,
    ),
)
LATER_COUNTERS: tuple[tuple[str, str, int], ...] = (
    ("zeroscale_cold_starts", "Workers started per variant", COLD_STARTS),
)
# A multi-model variant's figures (``Series.models``: absent for the others): two counters, then histograms.
CACHE_HITS, CACHE_LOOKUPS = range(2)
WAIT, DOWNLOAD, LOAD, UNLOAD = (2 + i * HIST for i in range(4))
MODELS_SIZE = 2 + 4 * HIST
MODEL_COUNTERS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_model_cache_hits",
        "SageMaker ModelCacheHit: multi-model invocations whose target model was already loaded",
        CACHE_HITS,
    ),
    (
        "zeroscale_model_cache_lookups",
        "Multi-model invocations that looked for their target model (the hit rate's denominator)",
        CACHE_LOOKUPS,
    ),
)
MODEL_HISTOGRAMS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_model_loading_wait_seconds",
        "SageMaker ModelLoadingWaitTime: an invocation waited for its target model's download and load",
        WAIT,
    ),
    (
        "zeroscale_model_downloading_seconds",
        "SageMaker ModelDownloadingTime: fetching a target model's artifact",
        DOWNLOAD,
    ),
    (
        "zeroscale_model_loading_seconds",
        "SageMaker ModelLoadingTime: a target model's worker forked and loaded",
        LOAD,
    ),
    (
        "zeroscale_model_unloading_seconds",
        "SageMaker ModelUnloadingTime: a target model's worker asked to stop until it exited",
        UNLOAD,
    ),
)
PROVISIONED_COUNTERS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_provisioned_concurrency_invocations",
        "SageMaker ServerlessProvisionedConcurrencyInvocations: served within provisioned concurrency",
        PROVISIONED,
    ),
    (
        "zeroscale_provisioned_concurrency_spillover_invocations",
        "SageMaker ServerlessProvisionedConcurrencySpilloverInvocations: served beyond it",
        SPILLOVER,
    ),
)
# Shown for a variant once one of its requests shared a predict call (a model with dynamic batching).
BATCH_COUNTERS: tuple[tuple[str, str, int], ...] = (
    (
        "zeroscale_batched_invocations",
        "Dynamic batching: invocations answered from one predict call with other requests",
        BATCHED,
    ),
    (
        "zeroscale_batches",
        "Dynamic batching: predict calls that answered more than one request (batched / batches: the mean "
        "batch size)",
        BATCHES,
    ),
)
EXITS = (
    "zeroscale_worker_exits",
    "Workers gone per variant, by reason (stopped, crashed, memory_killed, disk_killed, timed_out, evicted)",
)


@dataclass(slots=True)
class Series:
    """One variant's counters and histograms in one array of floats (about 600 bytes, against some 10 KB as
    prometheus_client children with a lock per value: a server with 10,000 endpoints holds 10,000 of
    these). Updated on the event loop only; a scrape copies it there (``text.snapshot``) and formats the
    copy in a thread (``text.render``)."""

    counts: array[float]
    created: float
    provisioned: bool  # the variant has provisioned concurrency: count provisioned and spillover invocations
    exits: dict[str, tuple[float, float]]  # reason -> (count, created)
    shown: bool  # the provisioned and spillover series are rendered (the variant had provisioned concurrency)
    models: array[float] | None = None  # a multi-model variant's figures, from its first one on

    def observe(self, at: int, seconds: float) -> None:
        add_observation(self.counts, at, seconds)

    def model_figures(self) -> array[float]:
        if self.models is None:
            self.models = array("d", bytes(8 * MODELS_SIZE))
        return self.models


def add_observation(counts: array[float], at: int, seconds: float) -> None:
    counts[at + bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
    counts[at + BUCKETS] += seconds
    counts[at + BUCKETS + 1] += 1


# The gauges computed from the pools' loads at scrape time: name, help; values from gauge_values in this order
GAUGES: tuple[tuple[str, str], ...] = (
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


def gauge_values(v: VariantLoad) -> tuple[float | None, ...]:
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

"""SageMaker's serverless metric set (CloudWatch namespace ``AWS/SageMaker``, dimensions EndpointName and
VariantName, one-minute periods): each metric's name, unit, and the Prometheus series that carries it.

The one rule that needs a decision is how errors are counted. SageMaker documents Invocation4XXErrors and
Invocation5XXErrors as "InvokeEndpoint requests where the *model* returned a 4xx (5xx) HTTP response code",
and sends 1 or 0 for every invocation. So a ModelError (the client sees 424) is counted by the status the
container answered: a model that raised answers 500 and counts under 5XX; a model that rejected its input
(415, 400, ...) counts under 4XX. A container that gave no answer at all (timed out, crashed, killed for
memory) counts under 5XX. Errors zeroscale answers itself once a variant is chosen count by the status the
client got: ThrottlingException (429) under 4XX, an internal failure (5xx) under 5XX.
"""

from __future__ import annotations

from dataclasses import dataclass

from zeroscale.events import InvocationRecord

INVOCATIONS = "Invocations"
INVOCATION_4XX_ERRORS = "Invocation4XXErrors"
INVOCATION_5XX_ERRORS = "Invocation5XXErrors"
MODEL_LATENCY = "ModelLatency"
OVERHEAD_LATENCY = "OverheadLatency"
MODEL_SETUP_TIME = "ModelSetupTime"
MEMORY_UTILIZATION = "MemoryUtilization"
CONCURRENT_EXECUTIONS_UTILIZATION = "ServerlessConcurrentExecutionsUtilization"
PROVISIONED_EXECUTIONS = "ServerlessProvisionedConcurrencyExecutions"
PROVISIONED_UTILIZATION = "ServerlessProvisionedConcurrencyUtilization"
PROVISIONED_INVOCATIONS = "ServerlessProvisionedConcurrencyInvocations"
SPILLOVER_INVOCATIONS = "ServerlessProvisionedConcurrencySpilloverInvocations"
# Asynchronous inference, per endpoint (SageMaker's only dimension for them is EndpointName; the history
# keeps them under the variant ENDPOINT_WIDE):
BACKLOG_SIZE = "ApproximateBacklogSize"
BACKLOG_SIZE_PER_INSTANCE = "ApproximateBacklogSizePerInstance"
AGE_OF_OLDEST_REQUEST = "ApproximateAgeOfOldestRequest"
HAS_BACKLOG_WITHOUT_CAPACITY = "HasBacklogWithoutCapacity"
ENDPOINT_WIDE = ""
ENDPOINT_WIDE_METRICS = frozenset(
    {BACKLOG_SIZE, BACKLOG_SIZE_PER_INSTANCE, AGE_OF_OLDEST_REQUEST, HAS_BACKLOG_WITHOUT_CAPACITY}
)


def dimension_names(metric: str) -> frozenset[str]:
    """The dimensions CloudWatch names a SageMaker metric by: EndpointName alone for the asynchronous
    backlog's, EndpointName and VariantName for the rest."""
    if metric in ENDPOINT_WIDE_METRICS:
        return frozenset({"EndpointName"})
    return frozenset({"EndpointName", "VariantName"})


# multi-model endpoints
MODEL_LOADING_WAIT_TIME = "ModelLoadingWaitTime"
MODEL_DOWNLOADING_TIME = "ModelDownloadingTime"
MODEL_LOADING_TIME = "ModelLoadingTime"
MODEL_UNLOADING_TIME = "ModelUnloadingTime"
MODEL_CACHE_HIT = "ModelCacheHit"
LOADED_MODEL_COUNT = "LoadedModelCount"
# zeroscale's own, beside SageMaker's:
WORKERS = "Workers"
QUEUE_DEPTH = "QueueDepth"

MICROSECONDS = 1_000_000.0


@dataclass(frozen=True)
class MetricInfo:
    name: str  # SageMaker's CloudWatch name (or zeroscale's own, when ``sagemaker`` is False)
    unit: str  # CloudWatch unit of the one-minute history
    prometheus: str  # the series on /metrics
    statistic: str  # the statistic `zeroscale metrics` shows in its summary table
    description: str
    sagemaker: bool = True


CATALOG: tuple[MetricInfo, ...] = (
    MetricInfo(
        INVOCATIONS,
        "None",
        "zeroscale_invocations_total",
        "Sum",
        "InvokeEndpoint requests routed to the variant, whatever their outcome.",
    ),
    MetricInfo(
        INVOCATION_4XX_ERRORS,
        "None",
        "zeroscale_invocation_4xx_errors_total",
        "Sum",
        "1 per invocation the model answered 4xx (or zeroscale throttled), else 0.",
    ),
    MetricInfo(
        INVOCATION_5XX_ERRORS,
        "None",
        "zeroscale_invocation_5xx_errors_total",
        "Sum",
        "1 per invocation the model answered 5xx or not at all, else 0.",
    ),
    MetricInfo(
        MODEL_LATENCY,
        "Microseconds",
        "zeroscale_model_latency_seconds",
        "Average",
        "Request written to the worker until its response was read.",
    ),
    MetricInfo(
        OVERHEAD_LATENCY,
        "Microseconds",
        "zeroscale_overhead_latency_seconds",
        "Average",
        "Arrival to answer minus ModelLatency: queueing, cold start, signing, routing.",
    ),
    MetricInfo(
        MODEL_SETUP_TIME,
        "Microseconds",
        "zeroscale_model_setup_seconds",
        "Average",
        "One sample per worker start (cold start): fork until the first good /ping.",
    ),
    MetricInfo(
        MEMORY_UTILIZATION,
        "Percent",
        "zeroscale_memory_utilization_percent",
        "Maximum",
        "A worker's resident set as a percentage of MemorySizeInMB (one sample per live worker).",
    ),
    MetricInfo(
        CONCURRENT_EXECUTIONS_UTILIZATION,
        "None",
        "zeroscale_concurrent_executions_utilization_ratio",
        "Maximum",
        "Busy workers divided by MaxConcurrency.",
    ),
    MetricInfo(
        PROVISIONED_EXECUTIONS,
        "None",
        "zeroscale_provisioned_concurrency_executions",
        "Maximum",
        "Concurrent executions served within ProvisionedConcurrency: min(busy, provisioned).",
    ),
    MetricInfo(
        PROVISIONED_UTILIZATION,
        "None",
        "zeroscale_provisioned_concurrency_utilization_ratio",
        "Maximum",
        "ServerlessProvisionedConcurrencyExecutions divided by ProvisionedConcurrency.",
    ),
    MetricInfo(
        PROVISIONED_INVOCATIONS,
        "None",
        "zeroscale_provisioned_concurrency_invocations_total",
        "Sum",
        "Invocations a worker within the provisioned concurrency served.",
    ),
    MetricInfo(
        SPILLOVER_INVOCATIONS,
        "None",
        "zeroscale_provisioned_concurrency_spillover_invocations_total",
        "Sum",
        "Invocations of a provisioned variant served beyond its provisioned concurrency.",
    ),
    MetricInfo(
        BACKLOG_SIZE,
        "Count",
        "zeroscale_approximate_backlog_size",
        "Maximum",
        "Asynchronous requests queued or being processed (per endpoint).",
    ),
    MetricInfo(
        BACKLOG_SIZE_PER_INSTANCE,
        "Count",
        "zeroscale_approximate_backlog_size_per_instance",
        "Maximum",
        "ApproximateBacklogSize divided by the endpoint's live workers (the backlog itself at zero workers).",
    ),
    MetricInfo(
        AGE_OF_OLDEST_REQUEST,
        "Seconds",
        "zeroscale_approximate_age_of_oldest_request_seconds",
        "Maximum",
        "Age of the oldest queued asynchronous request (per endpoint).",
    ),
    MetricInfo(
        HAS_BACKLOG_WITHOUT_CAPACITY,
        "Count",
        "zeroscale_has_backlog_without_capacity",
        "Maximum",
        "1 when asynchronous requests wait and the endpoint has no worker, else 0.",
    ),
    MetricInfo(
        MODEL_LOADING_WAIT_TIME,
        "Microseconds",
        "zeroscale_model_loading_wait_seconds",
        "Average",
        "Multi-model: how long an invocation waited for its target model to be downloaded and loaded.",
    ),
    MetricInfo(
        MODEL_DOWNLOADING_TIME,
        "Microseconds",
        "zeroscale_model_downloading_seconds",
        "Average",
        "Multi-model: fetching a target model's artifact (from the artifact cache if fetched before).",
    ),
    MetricInfo(
        MODEL_LOADING_TIME,
        "Microseconds",
        "zeroscale_model_loading_seconds",
        "Average",
        "Multi-model: loading a target model into a worker (a fork of the runtime's zygote plus the load).",
    ),
    MetricInfo(
        MODEL_UNLOADING_TIME,
        "Microseconds",
        "zeroscale_model_unloading_seconds",
        "Average",
        "Multi-model: unloading a target model (its worker asked to stop until it exited).",
    ),
    MetricInfo(
        MODEL_CACHE_HIT,
        "None",
        "zeroscale_model_cache_hits_total",
        "Average",
        "Multi-model: 1 per invocation whose target model was already loaded, else 0 (Average: hit rate).",
    ),
    MetricInfo(
        LOADED_MODEL_COUNT,
        "None",
        "zeroscale_loaded_models",
        "Maximum",
        "Multi-model: target models loaded in the variant's workers.",
    ),
    MetricInfo(
        WORKERS,
        "Count",
        "zeroscale_workers",
        "Maximum",
        "Live worker processes of the variant.",
        sagemaker=False,
    ),
    MetricInfo(
        QUEUE_DEPTH,
        "Count",
        "zeroscale_queue_depth",
        "Maximum",
        "Requests waiting for a free worker.",
        sagemaker=False,
    ),
)
BY_NAME: dict[str, MetricInfo] = {m.name: m for m in CATALOG}


def error_family(record: InvocationRecord) -> int:
    """4 or 5 when the invocation counts under Invocation4XXErrors or Invocation5XXErrors, else 0."""
    if record.status < 400:
        return 0
    if record.error_code in ("ModelError", "ModelStreamError"):
        return 4 if 400 <= record.model_status < 500 else 5
    return 4 if record.status < 500 else 5

"""``zeroscale``: the command-line entry point."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from zeroscale import __version__
from zeroscale.api.proxies import TrustedProxies
from zeroscale.cli.async_commands import async_group
from zeroscale.cli.audit import audit
from zeroscale.cli.client import client_commands
from zeroscale.cli.image_commands import images
from zeroscale.cli.logs import logs
from zeroscale.cli.metrics import metrics
from zeroscale.cli.package import package
from zeroscale.cli.registry import registry_group
from zeroscale.cli.transform_commands import transform_group
from zeroscale.cli.usage import check_price_table, usage
from zeroscale.cli.workers import workers
from zeroscale.config import (
    DEFAULT_ARTIFACT_CACHE_MB,
    DEFAULT_ASYNC_MAX_QUEUED_TOTAL,
    DEFAULT_IMAGES_MAX_MB,
    DEFAULT_IMAGES_MAX_PER_USER,
    DEFAULT_LOG_MAX_MB,
    DEFAULT_MAX_EXTRACTED_MB,
    DEFAULT_RAY_NODE_IMAGES_MB,
    DEFAULT_WORKER_DISK_MB,
    DEFAULT_WORKER_LOG_MB_PER_MINUTE,
    MB,
    HttpLimits,
    Settings,
)

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="zeroscale")
def cli() -> None:
    """zeroscale: serverless machine-learning inference you run yourself, wire-compatible with SageMaker.

    Start the server with `zeroscale serve`, then deploy and invoke models with the commands below,
    the AWS CLI, or boto3 pointed at the server's URL.
    """


def _opt(name: str, env: str, **kw: Any) -> Callable[[F], F]:
    """An option that can also come from environment variable ``env`` (shown in --help)."""
    return click.option(name, envvar=env, show_envvar=True, show_default=True, **kw)


def _advertise_url(value: str | None) -> str | None:
    if value is None:
        return None
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/") or url.query:
        raise click.BadParameter(f"{value!r} is not http(s)://HOST[:PORT]", param_hint="--advertise-url")
    return value.rstrip("/")


@cli.command()
@_opt("--host", "ZEROSCALE_HOST", default="127.0.0.1", help="Interface to listen on.")
@_opt(
    "--port",
    "ZEROSCALE_PORT",
    default=8080,
    type=click.IntRange(0, 65535),
    help="Port for the API, runtime and /metrics (0: any free port; the banner says which).",
)
@_opt(
    "--native-port",
    "ZEROSCALE_NATIVE_PORT",
    default=None,
    type=click.IntRange(0, 65535),
    help="Also serve SageMaker's runtime (InvokeEndpoint and its kin) on this port through the native data "
    "plane, which answers warm invocations without the Python server (docs/dataplane.md; point a "
    "sagemaker-runtime client's endpoint_url here; 0: any free port, the banner says which). Plain HTTP "
    "only: not with --tls-cert.",
)
@_opt(
    "--data-dir",
    "ZEROSCALE_DATA_DIR",
    default=".zeroscale",
    type=click.Path(path_type=Path),
    help="Where state, artifacts, logs and generated credentials live.",
)
@_opt(
    "--database-url",
    "ZEROSCALE_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL (default: SQLite in the data directory), e.g. postgresql+psycopg://...",
)
@_opt("--region", "ZEROSCALE_REGION", default="us-east-1", help="Region used in ARNs.")
@_opt("--account-id", "ZEROSCALE_ACCOUNT_ID", default="000000000000", help="Account id used in ARNs.")
@_opt(
    "--idle-timeout-s",
    "ZEROSCALE_IDLE_TIMEOUT_S",
    default=300.0,
    type=float,
    help="Seconds an idle worker lives before scale-in (per endpoint: tag zeroscale:idle-timeout-s).",
)
@_opt(
    "--queue-wait-s",
    "ZEROSCALE_QUEUE_WAIT_S",
    default=10.0,
    type=float,
    help="Seconds a request waits for a free worker at MaxConcurrency before ThrottlingException.",
)
@_opt(
    "--payload-limit-mb",
    "ZEROSCALE_PAYLOAD_LIMIT_MB",
    default=6.0,
    type=float,
    help="Largest request body, and largest model answer, of InvokeEndpoint.",
)
@_opt(
    "--serverless-payload-limit-mb",
    "ZEROSCALE_SERVERLESS_PAYLOAD_LIMIT_MB",
    default=4.0,
    type=float,
    help="Largest request body a serverless variant takes (SageMaker's 4 MB; real-time: --payload-limit-mb).",
)
@_opt(
    "--invocation-timeout-s",
    "ZEROSCALE_INVOCATION_TIMEOUT_S",
    default=60.0,
    type=float,
    help="Seconds a model has to answer one invocation.",
)
@_opt(
    "--startup-timeout-s",
    "ZEROSCALE_STARTUP_TIMEOUT_S",
    default=180.0,
    type=float,
    help="Seconds a new worker has to answer /ping (SageMaker allows 180) before its endpoint fails.",
)
@_opt(
    "--model-load-wait-s",
    "ZEROSCALE_MODEL_LOAD_WAIT_S",
    default=60.0,
    type=float,
    help="Seconds an invocation of a multi-model endpoint waits for its target model to load before it "
    "answers ModelNotReadyException (the load goes on; botocore retries).",
)
@_opt(
    "--memory-budget-mb",
    "ZEROSCALE_MEMORY_BUDGET_MB",
    default=None,
    type=int,
    help="Sum of worker MemorySizeInMB allowed on this host (default: physical memory; with --ray-address "
    "the sum of the nodes' Ray memory resources instead).",
)
@_opt(
    "--s3-endpoint-url",
    "ZEROSCALE_S3_ENDPOINT_URL",
    default=None,
    help="S3-compatible endpoint for s3:// model data (credentials from the standard AWS chain).",
)
@_opt(
    "--max-extracted-mb",
    "ZEROSCALE_MAX_EXTRACTED_MB",
    default=DEFAULT_MAX_EXTRACTED_MB,
    type=click.IntRange(min=1),
    help="MB one model's artifact may extract to (its files on disk; SageMaker Serverless gives a container "
    "5 GB of disk); a larger one fails its endpoint and leaves nothing in the artifact cache.",
)
@_opt(
    "--images-max-mb",
    "ZEROSCALE_IMAGES_MAX_MB",
    default=DEFAULT_IMAGES_MAX_MB,
    type=click.IntRange(min=0),
    help="MB every pushed image together may hold on disk (versions a running endpoint still uses "
    "included); a push past it is refused, naming it (0: no limit). `zeroscale images delete` frees room.",
)
@_opt(
    "--images-max-mb-per-user",
    "ZEROSCALE_IMAGES_MAX_MB_PER_USER",
    default=None,
    type=click.IntRange(min=0),
    help="MB the images one IAM user pushed may hold (the current push of each tag the user pushed last), so "
    "that one tenant cannot fill --images-max-mb for the others; a push past it is refused, naming it "
    "(default: a quarter of --images-max-mb; the admin's are not counted; 0: no limit). `zeroscale images "
    "delete` frees the user's room.",
)
@_opt(
    "--images-max-per-user",
    "ZEROSCALE_IMAGES_MAX_PER_USER",
    default=DEFAULT_IMAGES_MAX_PER_USER,
    type=click.IntRange(min=0),
    help="Image tags one IAM user's pushes may name (each a row, and its files, on every front end); a push "
    "of one more is refused, naming it (the admin's are not counted; 0: no limit).",
)
@_opt(
    "--artifact-cache-mb",
    "ZEROSCALE_ARTIFACT_CACHE_MB",
    default=DEFAULT_ARTIFACT_CACHE_MB,
    type=click.IntRange(min=0),
    help="MB of extracted model artifacts kept on disk; past it, those no endpoint, cached template or "
    "deployment uses are deleted, least recently used first (0: keep only those in use).",
)
@_opt(
    "--requirements-cache-mb",
    "ZEROSCALE_REQUIREMENTS_CACHE_MB",
    default=DEFAULT_ARTIFACT_CACHE_MB,
    type=click.IntRange(min=0),
    help="MB of models' installed requirements (code/requirements.txt) kept on disk; past it, those no "
    "endpoint, cached template or deployment uses are deleted, least recently used first (0: keep only "
    "those in use).",
)
@_opt(
    "--metrics-retention-hours",
    "ZEROSCALE_METRICS_RETENTION_HOURS",
    default=24.0,
    type=float,
    help="Hours of one-minute metrics history kept in the database (`zeroscale metrics`); 0 keeps it all.",
)
@_opt(
    "--autoscaling-period-s",
    "ZEROSCALE_AUTOSCALING_PERIOD_S",
    default=60.0,
    type=float,
    help="Seconds per evaluation period of Application Auto Scaling policies (CloudWatch's: 60).",
)
@_opt(
    "--log-retention-hours",
    "ZEROSCALE_LOG_RETENTION_HOURS",
    default=72.0,
    type=click.FloatRange(min=0),
    help="Delete endpoint log streams not written for this many hours (0 keeps them forever).",
)
@_opt(
    "--log-max-mb",
    "ZEROSCALE_LOG_MAX_MB",
    default=DEFAULT_LOG_MAX_MB,
    type=click.IntRange(min=0),
    help="MB of endpoint logs kept on disk in all; past it, the least recently written streams are deleted "
    "(a live worker's excepted), looked at every 10 minutes or sooner as live workers could fill it (0: no "
    "cap).",
)
@_opt(
    "--audit-retention-days",
    "ZEROSCALE_AUDIT_RETENTION_DAYS",
    default=90.0,
    type=click.FloatRange(min=0),
    help="Days of the audit trail kept in the database (CloudTrail's event history keeps 90; 0 keeps it "
    "all).",
)
@_opt(
    "--max-resources",
    "ZEROSCALE_MAX_RESOURCES",
    default=20_000,
    type=click.IntRange(min=0),
    help="The most models, endpoint configs, endpoints, model package groups, model packages, topics, "
    "subscriptions, CloudWatch alarms and scalable targets, each (as an account's quotas); past it a Create "
    "answers ResourceLimitExceeded (or its service's own code) (0: no limit).",
)
@_opt(
    "--max-resources-per-user",
    "ZEROSCALE_MAX_RESOURCES_PER_USER",
    default=2_000,
    type=click.IntRange(min=0),
    help="The most models, endpoint configs, endpoints, model package groups, model packages, topics, "
    "subscriptions, CloudWatch alarms and scalable targets one IAM user may have created, each, so that one "
    "tenant cannot use up --max-resources for the others (the admin's are not counted; 0: no limit).",
)
@_opt(
    "--max-resource-mb-per-user",
    "ZEROSCALE_MAX_RESOURCE_MB_PER_USER",
    default=100,
    type=click.IntRange(min=0),
    help="The most megabytes of documents (models, endpoint configs, endpoints, model packages, jobs, "
    "topics ...) one IAM user's resources may hold together, as created, so that one tenant cannot fill the "
    "database with its count of the largest documents a request carries (the admin's are not counted; 0: "
    "no limit).",
)
@_opt(
    "--max-transform-jobs",
    "ZEROSCALE_MAX_TRANSFORM_JOBS",
    default=20,
    type=click.IntRange(min=0),
    help="The most transform jobs in progress (or stopping) at once; past it CreateTransformJob answers "
    "ResourceLimitExceeded until one ends (0: no limit).",
)
@_opt(
    "--max-transform-jobs-per-user",
    "ZEROSCALE_MAX_TRANSFORM_JOBS_PER_USER",
    default=10,
    type=click.IntRange(min=0),
    help="The most transform jobs one IAM user may have in progress at once, so that one tenant cannot hold "
    "all of --max-transform-jobs (the admin's are not counted; 0: no limit).",
)
@_opt(
    "--max-warm-mb-per-user",
    "ZEROSCALE_MAX_WARM_MB_PER_USER",
    default=None,
    type=click.IntRange(min=0),
    help="The most memory one IAM user's endpoints may keep warm: real-time instances x their memory plus "
    "ProvisionedConcurrency x MemorySizeInMB, so that one tenant cannot reserve the host (default: half the "
    "memory budget; the admin's are not counted; 0: no limit).",
)
@_opt(
    "--async-retention-days",
    "ZEROSCALE_ASYNC_RETENTION_DAYS",
    default=7.0,
    type=click.FloatRange(min=0),
    help="Days a finished asynchronous request's record is kept (`zeroscale async`, the console; its output "
    "in S3 is the caller's); 0 keeps them all.",
)
@_opt(
    "--transform-retention-days",
    "ZEROSCALE_TRANSFORM_RETENTION_DAYS",
    default=90.0,
    type=click.FloatRange(min=0),
    help="Days a finished (Completed, Failed or Stopped) transform job is kept after it ended; then "
    "DescribeTransformJob answers ResourceNotFound and ListTransformJobs "
    "omits it (SageMaker has no DeleteTransformJob); 0 keeps them all.",
)
@_opt(
    "--async-max-queued",
    "ZEROSCALE_ASYNC_MAX_QUEUED",
    default=10_000,
    type=click.IntRange(min=0),
    help="Asynchronous requests one endpoint may have waiting; past it, InvokeEndpointAsync answers "
    "ServiceUnavailable (0: no limit).",
)
@_opt(
    "--async-max-queued-per-user",
    "ZEROSCALE_ASYNC_MAX_QUEUED_PER_USER",
    default=10_000,
    type=click.IntRange(min=0),
    help="Asynchronous requests one IAM user may have waiting over all endpoints (each holds a row, and an "
    "inline input, in the database); past it, its InvokeEndpointAsync answers ServiceUnavailable (the "
    "admin's are not counted; 0: no limit).",
)
@_opt(
    "--async-max-queued-total",
    "ZEROSCALE_ASYNC_MAX_QUEUED_TOTAL",
    default=DEFAULT_ASYNC_MAX_QUEUED_TOTAL,
    type=click.IntRange(min=0),
    help="Asynchronous requests the server may have waiting, every user's and the admin's together, over "
    "all endpoints (checked exactly across front ends); past it, InvokeEndpointAsync answers "
    "ServiceUnavailable until some have run (0: no limit).",
)
@_opt(
    "--api-rate-per-key",
    "ZEROSCALE_API_RATE_PER_KEY",
    default=50.0,
    type=click.FloatRange(min=0),
    help="Control-plane calls a second each IAM user's access key may make (this front end's; the admin's "
    "key is never throttled); past it, ThrottlingException, which boto3 retries (0: no limit).",
)
@_opt(
    "--api-burst-per-key",
    "ZEROSCALE_API_BURST_PER_KEY",
    default=100,
    type=click.IntRange(min=1),
    help="Control-plane calls an access key may make at once before --api-rate-per-key applies.",
)
@_opt(
    "--metering/--no-metering",
    "ZEROSCALE_METERING",
    default=True,
    help="Record usage of every invocation and provisioned concurrency (`zeroscale usage`).",
)
@_opt(
    "--price-table",
    "ZEROSCALE_PRICE_TABLE",
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    callback=check_price_table,
    help="JSON file of prices that override the defaults (see README, Usage and cost).",
)
@_opt(
    "--warm-cache-mb",
    "ZEROSCALE_WARM_CACHE_MB",
    default=None,
    type=click.IntRange(min=0),
    help="MB of loaded models kept for endpoints at zero, so their next cold start is a fork of the "
    "loaded model (default: a tenth of the memory budget; 0: none).",
)
@_opt(
    "--max-starting-workers",
    "ZEROSCALE_MAX_STARTING_WORKERS",
    default=None,
    type=click.IntRange(min=0),
    help="Workers of one variant starting at once, at most; more start as these come up (default: this "
    "machine's cores; 0: no limit). A burst's first workers then come up sooner and serve the queue.",
)
@_opt(
    "--frontend-ttl-s",
    "ZEROSCALE_FRONTEND_TTL_S",
    default=5.0,
    type=click.FloatRange(min=0.5),
    help="Front ends sharing a database: seconds without a heartbeat before the others take over a front "
    "end's concurrency share and unfinished deployments.",
)
@_opt(
    "--sync-interval-s",
    "ZEROSCALE_SYNC_INTERVAL_S",
    default=0.5,
    type=click.FloatRange(min=0.05),
    help="Front ends sharing a database: how often each looks for the others' changes (one-row read).",
)
@_opt(
    "--worker-outbound/--no-worker-outbound",
    "ZEROSCALE_WORKER_OUTBOUND",
    default=False,
    help="Let model workers open network connections (default: they reach nothing but their own socket).",
)
@_opt(
    "--worker-cgroups/--no-worker-cgroups",
    "ZEROSCALE_WORKER_CGROUPS",
    default=True,
    help="Put each model worker in a memory cgroup the kernel holds to its MemorySizeInMB, where the host "
    "lets the server make them (cgroup v1's memory controller, as root); the banner says whether it does.",
)
@_opt(
    "--worker-max-processes",
    "ZEROSCALE_WORKER_MAX_PROCESSES",
    default=64,
    type=click.IntRange(min=8),
    help="Processes and threads per model worker (an image's server gets at least 256).",
)
@_opt(
    "--worker-max-open-files",
    "ZEROSCALE_WORKER_MAX_OPEN_FILES",
    default=1024,
    type=click.IntRange(min=64),
    help="Open files per model worker process.",
)
@_opt(
    "--worker-disk-mb",
    "ZEROSCALE_WORKER_DISK_MB",
    default=DEFAULT_WORKER_DISK_MB,
    type=click.IntRange(min=0),
    help="MB a worker may write to its scratch directory (TMPDIR): a larger file fails to write (EFBIG), "
    "more in all stops the worker within a second (0: no limit).",
)
@_opt(
    "--worker-writable-paths",
    "ZEROSCALE_WORKER_WRITABLE_PATHS",
    default="",
    help="Directories (separated by ':') every model worker may also write, e.g. a shared cache; never "
    "one holding the data directory.",
)
@_opt(
    "--worker-log-mb-per-minute",
    "ZEROSCALE_WORKER_LOG_MB_PER_MINUTE",
    default=float(DEFAULT_WORKER_LOG_MB_PER_MINUTE),
    type=click.FloatRange(min=0),
    help="MB of one worker's output (stdout and stderr) a minute kept in its log stream; past it, what it "
    "prints until the minute ends is dropped and a [zeroscale] line says how much (0: no limit).",
)
@_opt(
    "--header-timeout-s",
    "ZEROSCALE_HEADER_TIMEOUT_S",
    default=10.0,
    type=click.FloatRange(min=0.1),
    help="Seconds a client has to send a request's line and headers (then 408 and the connection closes).",
)
@_opt(
    "--body-timeout-s",
    "ZEROSCALE_BODY_TIMEOUT_S",
    default=60.0,
    type=click.FloatRange(min=0.1),
    help="Seconds a client has to send a request's body once its headers are in, and to read an answer.",
)
@_opt(
    "--max-header-kb",
    "ZEROSCALE_MAX_HEADER_KB",
    default=64,
    type=click.IntRange(min=4),
    help="Largest request head (line and headers) in KB; larger is 431.",
)
@_opt(
    "--max-connections",
    "ZEROSCALE_MAX_CONNECTIONS",
    default=4096,
    type=click.IntRange(min=8),
    help="Open client connections at once (and below the open-files limit); past it, 503 and close.",
)
@_opt(
    "--max-connections-per-client",
    "ZEROSCALE_MAX_CONNECTIONS_PER_CLIENT",
    default=512,
    type=click.IntRange(min=1),
    help="Open connections from one client address; past it, 503 and close.",
)
@_opt(
    "--iam-key-file",
    "ZEROSCALE_IAM_KEY_FILE",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key sealing IAM users' secret access keys in the database (32 bytes, made here on first use; "
    "default <data-dir>/iam.key). Front ends sharing a database need the same one.",
)
@_opt(
    "--metrics-token-file",
    "ZEROSCALE_METRICS_TOKEN_FILE",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding a token GET /metrics then needs as 'Authorization: Bearer <token>' (Prometheus: "
    "authorization.credentials_file). Default: /metrics is unsigned, and any client that reaches the port "
    "reads every endpoint's name and traffic.",
)
@_opt(
    "--advertise-url",
    "ZEROSCALE_ADVERTISE_URL",
    default=None,
    callback=lambda ctx, param, value: _advertise_url(value),
    help="Front ends sharing a database: the URL the others reach this one at (its workers' logs and list, "
    "its images, autoscaling samples and 10-s metrics, invocations forwarded or spilled to it) "
    "(default: http(s)://<--host>:<--port>, with 127.0.0.1 for a wildcard --host: give it when the front "
    "ends are on several machines).",
)
@_opt(
    "--allowed-host",
    "ZEROSCALE_ALLOWED_HOSTS",
    multiple=True,
    callback=lambda ctx, param, value: _allowed_hosts(value),
    help="A Host name, beyond localhost, the machine's hostname, --host, --advertise-url's and any IP "
    "address, that requests without a signature (/metrics, /ping, the console) may name: the DNS name "
    "of the machine or of a proxy in front of it (repeat it for several; in the environment, separated by "
    "spaces; '*' answers any Host). Other "
    "names are answered 421, a guard against DNS rebinding; SigV4-signed API calls pass by any name.",
)
@_opt(
    "--trusted-proxy",
    "ZEROSCALE_TRUSTED_PROXIES",
    multiple=True,
    callback=lambda ctx, param, value: _trusted_proxies(value),
    help="A reverse proxy's address or network (10.0.0.5, 10.0.0.0/8) whose X-Forwarded-For and "
    "X-Forwarded-Proto are believed: the client's address for the audit trail and the console's throttle, "
    "its scheme for the console's cookie and same-origin check; its connections are not held to "
    "--max-connections-per-client (repeat it for several; in the environment, separated by spaces). "
    "Without it those headers are ignored.",
)
@_opt(
    "--tls-cert",
    "ZEROSCALE_TLS_CERT",
    default=None,
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    help="Serve HTTPS with this certificate chain (PEM); needs --tls-key.",
)
@_opt(
    "--tls-key",
    "ZEROSCALE_TLS_KEY",
    default=None,
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    help="The private key (PEM) of --tls-cert.",
)
@_opt(
    "--ray-address",
    "ZEROSCALE_RAY_ADDRESS",
    default=None,
    help="Run workers on the nodes of this Ray cluster (its head's HOST:PORT) instead of this machine: a "
    "zeroscale agent on each node forks them (docs/cluster.md).",
)
@_opt(
    "--ray-node-dir",
    "ZEROSCALE_RAY_NODE_DIR",
    default=None,
    type=click.Path(path_type=Path, file_okay=False),
    help="With --ray-address: the directory on each node for its artifact cache, workers' sockets and "
    "output, under DIR/<node id>/ (default: zeroscale-nodes in the temporary directory, e.g. /tmp).",
)
@_opt(
    "--ray-node-timeout-s",
    "ZEROSCALE_RAY_NODE_TIMEOUT_S",
    default=10.0,
    type=click.FloatRange(min=1),
    help="With --ray-address: seconds a node may not answer before it counts as lost and its workers are "
    "started on the other nodes.",
)
@_opt(
    "--ray-node-images-mb",
    "ZEROSCALE_RAY_NODE_IMAGES_MB",
    default=DEFAULT_RAY_NODE_IMAGES_MB,
    type=click.IntRange(min=0),
    help="With --ray-address: MB the bring-your-own images unpacked on a node may take there (every front "
    "end's together); past it, those no worker uses go, least recently used first, and an image that does "
    "not fit beside those in use is refused on that node (another node is tried) (0: no cap; unused images "
    "still go after an hour).",
)
@_opt(
    "--ray-temp-dir",
    "ZEROSCALE_RAY_TEMP_DIR",
    default=None,
    type=click.Path(path_type=Path, file_okay=False),
    help="With --ray-address, on a machine that runs more than one Ray node: attach to the node started "
    "with this --temp-dir (ray start), rather than to the head's, so that a restarted head (GCS in Redis) "
    "does not end this front end's Ray job (docs/cluster.md, Head recovery).",
)
@_opt(
    "--log-level",
    "ZEROSCALE_LOG_LEVEL",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="The least severe messages the server logs (on stderr).",
)
def serve(
    host: str,
    port: int,
    native_port: int | None,
    data_dir: Path,
    database_url: str | None,
    region: str,
    account_id: str,
    idle_timeout_s: float,
    queue_wait_s: float,
    payload_limit_mb: float,
    serverless_payload_limit_mb: float,
    invocation_timeout_s: float,
    startup_timeout_s: float,
    model_load_wait_s: float,
    memory_budget_mb: int | None,
    s3_endpoint_url: str | None,
    max_extracted_mb: int,
    artifact_cache_mb: int,
    requirements_cache_mb: int,
    metrics_retention_hours: float,
    autoscaling_period_s: float,
    log_retention_hours: float,
    log_max_mb: int,
    audit_retention_days: float,
    images_max_mb: int,
    images_max_mb_per_user: int | None,
    images_max_per_user: int,
    async_retention_days: float,
    transform_retention_days: float,
    max_resources: int,
    max_resources_per_user: int,
    max_resource_mb_per_user: int,
    max_transform_jobs: int,
    max_transform_jobs_per_user: int,
    max_warm_mb_per_user: int | None,
    async_max_queued: int,
    async_max_queued_per_user: int,
    async_max_queued_total: int,
    api_rate_per_key: float,
    api_burst_per_key: int,
    metering: bool,
    price_table: Path | None,
    warm_cache_mb: int | None,
    max_starting_workers: int | None,
    frontend_ttl_s: float,
    sync_interval_s: float,
    worker_outbound: bool,
    worker_cgroups: bool,
    worker_max_processes: int,
    worker_max_open_files: int,
    worker_disk_mb: int,
    worker_writable_paths: str,
    worker_log_mb_per_minute: float,
    header_timeout_s: float,
    body_timeout_s: float,
    max_header_kb: int,
    max_connections: int,
    max_connections_per_client: int,
    iam_key_file: Path | None,
    metrics_token_file: Path | None,
    advertise_url: str | None,
    allowed_host: tuple[str, ...],
    trusted_proxy: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    ray_address: str | None,
    ray_node_dir: Path | None,
    ray_node_timeout_s: float,
    ray_node_images_mb: int,
    ray_temp_dir: Path | None,
    log_level: str,
) -> None:
    """Run the zeroscale server (control plane, runtime and /metrics on one port).

    Admin credentials come from ZEROSCALE_ACCESS_KEY_ID / ZEROSCALE_SECRET_ACCESS_KEY, or are generated on
    first start into DATA_DIR/credentials.
    """
    import os

    from zeroscale.server import StartupError
    from zeroscale.server import serve as run_server

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    _check_data_dir(data_dir)
    if database_url:
        _check_database_url(database_url)

    settings = Settings(
        host=host,
        port=port,
        native_port=native_port,
        data_dir=data_dir,
        database_url=database_url,
        access_key_id=os.environ.get("ZEROSCALE_ACCESS_KEY_ID") or None,
        secret_access_key=os.environ.get("ZEROSCALE_SECRET_ACCESS_KEY") or None,
        region=region,
        account_id=account_id,
        idle_timeout_s=idle_timeout_s,
        queue_wait_s=queue_wait_s,
        payload_limit_bytes=int(payload_limit_mb * 1024 * 1024),
        serverless_payload_limit_bytes=int(serverless_payload_limit_mb * 1024 * 1024),
        invocation_timeout_s=invocation_timeout_s,
        startup_timeout_s=startup_timeout_s,
        model_load_wait_s=model_load_wait_s,
        s3_endpoint_url=s3_endpoint_url,
        max_extracted_bytes=max_extracted_mb * MB,
        images_max_bytes=images_max_mb * MB,
        images_max_bytes_per_user=None if images_max_mb_per_user is None else images_max_mb_per_user * MB,
        images_max_per_user=images_max_per_user,
        artifact_cache_bytes=artifact_cache_mb * MB,
        requirements_cache_bytes=requirements_cache_mb * MB,
        metrics_retention_hours=metrics_retention_hours,
        autoscaling_period_s=autoscaling_period_s,
        log_retention_hours=log_retention_hours,
        log_max_bytes=log_max_mb * MB,
        audit_retention_days=audit_retention_days,
        async_retention_days=async_retention_days,
        transform_retention_days=transform_retention_days,
        max_resources=max_resources,
        max_resources_per_user=max_resources_per_user,
        max_resource_mb_per_user=max_resource_mb_per_user,
        max_transform_jobs=max_transform_jobs,
        max_transform_jobs_per_user=max_transform_jobs_per_user,
        max_warm_mb_per_user=max_warm_mb_per_user,
        async_max_queued=async_max_queued,
        async_max_queued_per_user=async_max_queued_per_user,
        async_max_queued_total=async_max_queued_total,
        api_rate_per_key=api_rate_per_key,
        api_burst_per_key=api_burst_per_key,
        metering=metering,
        price_table=price_table,
        warm_cache_mb=warm_cache_mb,
        max_starting=max_starting_workers,
        frontend_ttl_s=frontend_ttl_s,
        sync_interval_s=sync_interval_s,
        worker_outbound=worker_outbound,
        worker_cgroups=worker_cgroups,
        worker_max_processes=worker_max_processes,
        worker_max_open_files=worker_max_open_files,
        worker_disk_bytes=worker_disk_mb * MB,
        worker_writable_paths=tuple(Path(p) for p in worker_writable_paths.split(":") if p),
        worker_log_bytes_per_minute=int(worker_log_mb_per_minute * MB),
        http=HttpLimits(
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            max_header_bytes=max_header_kb * 1024,
            max_connections=max_connections,
            max_connections_per_client=max_connections_per_client,
        ),
        tls_cert=tls_cert,
        tls_key=tls_key,
        iam_key_file=iam_key_file,
        metrics_token_file=metrics_token_file,
        advertise_url=advertise_url,
        allowed_hosts=allowed_host,
        trusted_proxies=trusted_proxy,
        ray_address=ray_address or None,
        ray_node_timeout_s=ray_node_timeout_s,
        ray_node_images_bytes=ray_node_images_mb * MB,
        ray_temp_dir=ray_temp_dir,
        log_level=log_level,
    )
    if ray_node_dir is not None:
        settings = settings.replace(ray_node_dir=ray_node_dir)
    if memory_budget_mb is not None:
        settings = settings.replace(memory_budget_mb=memory_budget_mb)
    try:
        run_server(settings)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


def _allowed_hosts(values: tuple[str, ...]) -> tuple[str, ...]:
    """--allowed-host's names: a bare host name (no scheme, port or path), or '*'."""
    for value in values:
        name = value.strip()
        if name != "*" and (not name or any(c in name for c in "/:@ ") or not name.isascii()):
            raise click.BadParameter(
                f"{value!r} is not a host name (give the name alone, e.g. zeroscale.example.com, or '*')",
                param_hint="--allowed-host",
            )
    return tuple(v.strip() for v in values)


def _trusted_proxies(values: tuple[str, ...]) -> tuple[str, ...]:
    """--trusted-proxy's addresses or networks, each checked."""
    try:
        TrustedProxies.of(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--trusted-proxy") from None
    return tuple(v.strip() for v in values)


def _check_data_dir(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise click.BadParameter(f"{data_dir} is not a directory", param_hint="--data-dir")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(
            f"--data-dir {data_dir}: cannot create it: {exc.strerror or exc}"
        ) from None


def _check_database_url(url: str) -> None:
    """A usage error for a --database-url SQLAlchemy cannot read; one line naming the fix for a database
    whose driver is not installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from zeroscale.store.upsert import DIALECTS

    example = "e.g. postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise click.BadParameter(
            f"{url!r} is not a SQLAlchemy database URL ({example})", param_hint="--database-url"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() not in DIALECTS:  # SQLAlchemy knows more, zeroscale's SQL only these two
        raise click.BadParameter(
            f"{shown}: zeroscale stores its state in SQLite or PostgreSQL, not {parsed.get_backend_name()} "
            f"({example})",
            param_hint="--database-url",
        )
    try:
        dialect = parsed.get_dialect()
    except ArgumentError:  # NoSuchModuleError: no such database or driver in SQLAlchemy
        raise click.BadParameter(
            f"{shown}: SQLAlchemy knows no database {parsed.drivername!r} ({example})",
            param_hint="--database-url",
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        missing = exc.name or str(exc)
        if parsed.get_backend_name() == "postgresql":
            raise click.ClickException(
                f"--database-url {shown}: its driver {missing} is not installed. Install PostgreSQL support "
                "with pip install 'zeroscale[postgres]' and write the URL as postgresql+psycopg://..."
            ) from None
        raise click.ClickException(
            f"--database-url {shown}: its driver {missing} is not installed."
        ) from None


for command in client_commands:
    cli.add_command(command)
cli.add_command(metrics)
cli.add_command(package)
cli.add_command(usage)
cli.add_command(audit)
cli.add_command(images)
cli.add_command(async_group)
cli.add_command(transform_group)
cli.add_command(logs)
cli.add_command(workers)
cli.add_command(registry_group)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

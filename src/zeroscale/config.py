"""One frozen Settings object, built once at the edge (the CLI) and passed down.

Nothing below the CLI reads the environment for configuration: it receives a Settings.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024
DEFAULT_MAX_EXTRACTED_MB = 5 * 1024
DEFAULT_IMAGES_MAX_MB = 20 * 1024
DEFAULT_IMAGES_MAX_PER_USER = 200
DEFAULT_RAY_NODE_IMAGES_MB = 20 * 1024
DEFAULT_ARTIFACT_CACHE_MB = 20 * 1024
DEFAULT_LOG_MAX_MB = 10 * 1024
DEFAULT_WORKER_DISK_MB = 5 * 1024
DEFAULT_WORKER_LOG_MB_PER_MINUTE = 10
DEFAULT_ASYNC_MAX_QUEUED_TOTAL = 50_000


def _default_memory_budget_mb() -> int:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
        return int(pages * page_size // MB)
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 8192


@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of the HTTP server (api/guard.py)."""

    header_timeout_s: float = 10.0  # to deliver a request's line and headers
    body_timeout_s: float = 60.0  # to deliver its body once the headers are in (and to read an answer)
    max_header_bytes: int = 64 * 1024
    max_connections: int = 4096  # open at once (also kept under the open-files limit at start)
    max_connections_per_client: int = 512  # from one client address


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path(".zeroscale"))
    # Admin credentials; None means "generate on first start and write to data_dir/credentials".
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"
    account_id: str = "000000000000"
    # SQLAlchemy URL; None means SQLite inside data_dir.
    database_url: str | None = None
    idle_timeout_s: float = 300.0
    queue_wait_s: float = 10.0
    max_queue_per_variant: int = 1000
    # InvokeEndpoint's largest request body and model answer (SageMaker's 6 MB), and a serverless
    # variant's largest request body (SageMaker's 4 MB).
    payload_limit_bytes: int = 6 * MB
    serverless_payload_limit_bytes: int = 4 * MB
    # The largest async input read from S3 (SageMaker's limit: 1 GB).
    async_payload_limit_bytes: int = 1024 * MB
    invocation_timeout_s: float = 60.0
    startup_timeout_s: float = 180.0
    # A multi-model endpoint's target model still loading after this long answers ModelNotReadyException.
    model_load_wait_s: float = 60.0
    memory_budget_mb: int = field(default_factory=_default_memory_budget_mb)
    # The warm-model cache: MB of loaded-model templates kept for pools at zero (None: a tenth of the
    # memory budget; 0: none, scale to zero leaves no process behind).
    warm_cache_mb: int | None = None
    # A variant's workers starting at once, at most (None: this machine's cores; 0: no limit). Starts are
    # CPU-bound: a burst's first workers come up sooner, and serve the queue, when not all start together.
    max_starting: int | None = None
    s3_endpoint_url: str | None = None
    # Artifact extraction limits, per artifact (what one model's files may take on disk: SageMaker Serverless
    # gives a container 5 GB of disk in all). A failed extraction leaves nothing behind.
    max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_MB * MB
    max_extracted_files: int = 100_000
    # What every pushed image together may hold on disk (0: no limit).
    images_max_bytes: int = DEFAULT_IMAGES_MAX_MB * MB
    # What the current pushes of the tags one IAM user pushed may hold (the admin's are not counted; None: a
    # quarter of images_max_bytes; 0: no limit), and how many tags they may be (0: no limit).
    images_max_bytes_per_user: int | None = None
    images_max_per_user: int = DEFAULT_IMAGES_MAX_PER_USER
    # The artifact cache's extracted models kept on disk: past this, those nothing uses (no endpoint's pool,
    # no cached template, no deployment under way) are deleted, least recently used first (0: only those in
    # use are kept).
    artifact_cache_bytes: int = DEFAULT_ARTIFACT_CACHE_MB * MB
    # The same for the models' installed requirements (code/requirements.txt, <data-dir>/pyenvs).
    requirements_cache_bytes: int = DEFAULT_ARTIFACT_CACHE_MB * MB
    reconcile_interval_s: float = 0.5
    # Several front ends on one database: how often each looks for changes made by the others, and how long
    # one may miss its heartbeat (every ttl/5) before the others take over its share and its transitions.
    sync_interval_s: float = 0.5
    frontend_ttl_s: float = 5.0
    memory_poll_interval_s: float = 0.05
    log_level: str = "info"
    # Log streams not written for this long are deleted (0 keeps them forever).
    log_retention_hours: float = 72.0
    # Past this many bytes of logs in all, the least recently written streams are deleted, live workers'
    # excepted (0: no cap).
    log_max_bytes: int = DEFAULT_LOG_MAX_MB * MB
    # The audit trail's rows kept in the database (CloudTrail's event history keeps 90 days; 0: all).
    audit_retention_days: float = 90.0
    # Finished asynchronous requests' rows kept this long after they finished (0: all), and the requests
    # one endpoint may have waiting (0: no limit).
    async_retention_days: float = 7.0
    # Finished (Completed, Failed, Stopped) transform jobs' records kept this long after they ended (0: all):
    # SageMaker has no DeleteTransformJob, so nothing else bounds them.
    transform_retention_days: float = 90.0
    # The most models, endpoint configs, endpoints, model package groups, model packages, topics and
    # subscriptions, each (an account's quotas; 0: no limit).
    max_resources: int = 20_000
    # The most of each of those one IAM user may hold (the admin's are not counted; 0: no limit): one tenant
    # cannot use up the account's quota for the others.
    max_resources_per_user: int = 2_000
    # The most megabytes of documents one IAM user's resources may hold together, as created (0: no limit).
    max_resource_mb_per_user: int = 100
    # Transform jobs in progress (or stopping) at once: the account's, and one IAM user's (0: no limit).
    max_transform_jobs: int = 20
    max_transform_jobs_per_user: int = 10
    # The most memory one IAM user's endpoints may keep warm (instances, ProvisionedConcurrency); None: half
    # the memory budget; 0: no limit.
    max_warm_mb_per_user: int | None = None
    async_max_queued: int = 10_000
    # Asynchronous requests one IAM user may have waiting over all endpoints (the admin's are not counted;
    # 0: no limit): each holds a row, and an inline input up to 128,000 bytes, in the database.
    async_max_queued_per_user: int = 10_000
    # Asynchronous requests waiting on the server, everyone's together (the admin's included; 0: no limit):
    # many users, each under its own bound, cannot grow the queue without end.
    async_max_queued_total: int = DEFAULT_ASYNC_MAX_QUEUED_TOTAL
    # Control-plane calls a second each access key but the admin's may make, and at once (0: no limit).
    api_rate_per_key: float = 50.0
    api_burst_per_key: int = 100
    # One-minute metrics history kept in the database (zeroscale metrics, GET /zeroscale/v1/metrics).
    metrics_retention_hours: float = 24.0
    # Application Auto Scaling: seconds per evaluation period of a scaling policy (CloudWatch's: 60).
    autoscaling_period_s: float = 60.0
    # CloudWatch alarms: how often the leader looks for alarms whose period ended (and samples the gauges).
    alarm_interval_s: float = 1.0
    # Usage metering (zeroscale usage, GET /zeroscale/v1/usage) and the price table that overrides defaults.
    metering: bool = True
    price_table: Path | None = None
    # Worker sandbox (workers/confinement.py): outbound network access, tasks and open files per worker.
    worker_outbound: bool = False
    # A memory cgroup per worker and template, where the host lets the server make them (workers/cgroups.py).
    worker_cgroups: bool = True
    worker_max_processes: int = 64
    worker_max_open_files: int = 1024
    # What one worker (or template) may write to its scratch directory, TMPDIR (SageMaker Serverless gives a
    # container 5 GB of disk); 0: no limit.
    worker_disk_bytes: int = DEFAULT_WORKER_DISK_MB * MB
    # Directories every worker may also write (a shared cache, a test's side channel); never one holding
    # the data directory.
    worker_writable_paths: tuple[Path, ...] = ()
    # Bytes of one worker's output (stdout and stderr) a minute kept in its log stream; past them, its
    # output is dropped until the minute ends and a [zeroscale] line counts it (0: no limit).
    worker_log_bytes_per_minute: int = DEFAULT_WORKER_LOG_MB_PER_MINUTE * MB
    http: HttpLimits = field(default_factory=HttpLimits)
    # HTTPS: the server's certificate chain and private key (PEM files); None serves plain HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The key sealing IAM users' secret access keys in the database (32 bytes; made on first use): every
    # front end on one database needs the same. None: <data-dir>/iam.key.
    iam_key_file: Path | None = None
    # A file holding the bearer token GET /metrics needs (Prometheus' ``authorization.credentials_file``);
    # None: /metrics is unsigned, as Prometheus scrapes by default.
    metrics_token_file: Path | None = None
    # Where the other front ends on the database reach this one (its workers' logs); None: public_url.
    advertise_url: str | None = None
    # Host names, beyond localhost, the machine's hostname, --host and --advertise-url's (and any IP
    # address), for which requests without a signature (/metrics, /ping, the console) are answered: names
    # of the machine or of a proxy in front of it; "*" answers any (api/hosts.py: DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    # Reverse proxies (addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto are believed
    # (api/proxies.py); none: every client is its connection's peer.
    trusted_proxies: tuple[str, ...] = ()
    # SageMaker's runtime also on this port, served by the native data plane (docs/dataplane.md); None: not.
    native_port: int | None = None
    # Workers on a Ray cluster (docs/cluster.md): the cluster's address (None: workers on this machine), and
    # the directory each node keeps its artifacts, workers' sockets and output in (under <dir>/<node id>/).
    ray_address: str | None = None
    ray_node_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "zeroscale-nodes")
    # Seconds a node's agent may leave a poll unanswered before the node counts as lost (its workers are
    # re-placed on the others).
    ray_node_timeout_s: float = 10.0
    # What a node's unpacked bring-your-own images may take on its disk, every front end's together (0: no
    # cap): past it, those no worker uses go, least recently used first, and an image that does not fit
    # beside those in use is refused on that node.
    ray_node_images_bytes: int = DEFAULT_RAY_NODE_IMAGES_MB * MB
    # The temp directory (``ray start --temp-dir``) of the Ray node on this machine the front end attaches to
    # as a driver; None: Ray's choice (the head's, when this machine runs it). See "Head recovery".
    ray_temp_dir: Path | None = None

    @property
    def warm_cache_cap_mb(self) -> int:
        if self.warm_cache_mb is not None:
            return max(0, self.warm_cache_mb)
        return self.memory_budget_mb // 10

    @property
    def warm_mb_per_user(self) -> int:
        if self.max_warm_mb_per_user is not None:
            return max(0, self.max_warm_mb_per_user)
        return self.memory_budget_mb // 2

    @property
    def images_bytes_per_user(self) -> int:
        if self.images_max_bytes_per_user is not None:
            return max(0, self.images_max_bytes_per_user)
        return self.images_max_bytes // 4

    @property
    def max_starting_workers(self) -> int:
        if self.max_starting is not None:
            return max(0, self.max_starting)
        return os.cpu_count() or 2

    @property
    def public_url(self) -> str:
        """Where subscribers reach this server (SubscribeURL, UnsubscribeURL)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def peer_url(self) -> str:
        """Where the other front ends sharing the database reach this one."""
        return self.advertise_url or self.public_url

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'zeroscale.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def pyenvs_dir(self) -> Path:
        """Per-model Python packages installed from code/requirements.txt."""
        return self.data_dir / "pyenvs"

    @property
    def workers_dir(self) -> Path:
        return self.data_dir / "workers"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials"

    @property
    def iam_key_path(self) -> Path:
        return self.iam_key_file or self.data_dir / "iam.key"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

"""The composition root: build every part from one Settings and serve them on one port with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import gc
import json
import logging
import os
import resource
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from zeroscale.api import guard
from zeroscale.api.app import App, AppParts
from zeroscale.api.async_invoke import AsyncInvokeApi
from zeroscale.api.control import ControlPlane
from zeroscale.api.forward import Forwarder
from zeroscale.api.forward_counts import PeerInvocations
from zeroscale.api.hosts import AllowedHosts
from zeroscale.api.iam_query import IamQueryService
from zeroscale.api.image_rest import ImagesApi
from zeroscale.api.invoke import InvokeApi, PayloadLimits
from zeroscale.api.jsonrpc import JsonService
from zeroscale.api.peer import PeerRoute
from zeroscale.api.proxies import TrustedProxies
from zeroscale.api.query import QueryService
from zeroscale.api.shapes import ServiceShapes
from zeroscale.api.stream_invoke import StreamInvokeApi
from zeroscale.api.throttle import KeyRates
from zeroscale.api.transform_rest import TransformApi
from zeroscale.api.workers_rest import WorkersApi
from zeroscale.artifacts import ArtifactCache
from zeroscale.artifacts.gauges import ShelfCollector
from zeroscale.artifacts.pyenv import PythonEnvs
from zeroscale.asyncinf.gauges import BacklogCollector, BacklogSampler
from zeroscale.asyncinf.queue import QueueBounds, RequestQueue
from zeroscale.asyncinf.s3io import S3Io
from zeroscale.asyncinf.service import AsyncInference
from zeroscale.audit.trail import AuditApi, AuditTrail
from zeroscale.autoscaling.policy import IN_POINTS
from zeroscale.autoscaling.samples import Samples
from zeroscale.autoscaling.service import PERIODS_OP, AutoScaling
from zeroscale.autoscaling.targets import TARGET, Targets
from zeroscale.autoscaling.targets import LimitExceeded as ScalingLimitExceeded
from zeroscale.background import Background
from zeroscale.batch.runner import TransformRunner
from zeroscale.cloudwatch.alarms import AlarmStore
from zeroscale.cloudwatch.data import RECENT_SERIES_OP, MetricData
from zeroscale.cloudwatch.recent import RecentMetrics
from zeroscale.cloudwatch.service import CloudWatch
from zeroscale.config import HttpLimits, Settings
from zeroscale.console import Backend, Console
from zeroscale.console.sessions import Sessions
from zeroscale.control.arns import Arns
from zeroscale.control.cluster import Cluster, frontend_id
from zeroscale.control.deploy import Deployer
from zeroscale.control.endpoint_configs import EndpointConfigs
from zeroscale.control.endpoints import Endpoints
from zeroscale.control.guarded import Guard
from zeroscale.control.model_packages import ModelPackages
from zeroscale.control.models import Models
from zeroscale.control.transform_jobs import KIND as JOB_KIND
from zeroscale.control.transform_jobs import RUNNING as JOB_RUNNING
from zeroscale.control.transform_jobs import TransformJobs
from zeroscale.credentials import AdminCredentials, load_or_create
from zeroscale.dataplane.counts import NativeRequests
from zeroscale.dataplane.lender import Limits
from zeroscale.dataplane.runtime import NativeRuntime
from zeroscale.dataplane.runtime import available as native_available
from zeroscale.errors import SubscriptionLimitExceeded, TopicLimitExceeded
from zeroscale.events import EventBus
from zeroscale.hostidle import idle_line
from zeroscale.iam.authz import Authorizer, caller_id
from zeroscale.iam.secrets import KeyMismatch, SecretBox
from zeroscale.iam.store import IamStore
from zeroscale.images import ImageRegistry
from zeroscale.images.quota import ImageQuota
from zeroscale.images.sharing import FILES as IMAGE_FILES
from zeroscale.images.sharing import SharedImages
from zeroscale.images.tags import TagLedger
from zeroscale.logs import Logs
from zeroscale.metering.ledger import Ledger
from zeroscale.metering.rest import UsageApi
from zeroscale.metering.service import Metering
from zeroscale.metrics.recorder import HistoryRecorder
from zeroscale.metrics.registry import Metrics
from zeroscale.metrics.rest import MetricsApi
from zeroscale.metrics.service import MetricsHistory
from zeroscale.metrics.store import MinuteStore
from zeroscale.peers import KEY_LABEL as PEER_KEY_LABEL
from zeroscale.peers import PeerClient, tls_context
from zeroscale.progname import command_name
from zeroscale.router.fleet import Fleet
from zeroscale.router.multimodel import TargetFiles
from zeroscale.router.spec import RouterSettings
from zeroscale.store.db import Limit, SizeLimit, Store
from zeroscale.store.frontends import Frontends
from zeroscale.topics.delivery import Deliverer
from zeroscale.topics.service import SUBSCRIPTION, TOPIC, Topics
from zeroscale.types import SERVERLESS_MEMORY_SIZES_MB
from zeroscale.workers.cgroups import MemoryGroups, Unavailable, memory_line
from zeroscale.workers.confinement import Confinement, SandboxSettings
from zeroscale.workers.manager import WorkerManager
from zeroscale.workers.ray_workers import RayWorkers

log = logging.getLogger("zeroscale")
R = TypeVar("R", bound=InvokeApi)
PREWARMED_RUNTIMES = ("sklearn",)
# An instance variant's workers count as running while their metering interval was seen this recently (each
# live front end marks its own every second; a dead one's are left out).
RUNNING_SEEN_S = 30.0
# Shapes whose botocore pattern zeroscale widens: ModelDataUrl (shape "Url") may be file:// or a local path.
WIDENED_SHAPES = frozenset({"Url"})


@dataclass
class Server:
    settings: Settings
    credentials: AdminCredentials
    app: App
    sandbox: list[str]  # what the worker sandbox enforces here, and loudly what it cannot
    native: NativeRuntime | None = None  # the runtime's port served by the native data plane (--native-port)


# The SageMaker resources a caller creates and may delete, each kind held to --max-resources (an account's
# quotas): what one key could otherwise grow without end in the database, each endpoint in the server's
# memory. (Transform jobs cannot be deleted: only those running are counted; finished ones are deleted
# after --transform-retention-days.)
_QUOTA_KINDS = {
    "model": "models",
    "endpoint-config": "endpoint configs",
    "endpoint": "endpoints",
    "model-package-group": "model package groups",
    "model-package": "model packages",
}


def _quotas(most: int, flag: str = "zeroscale serve --max-resources") -> dict[str, Limit]:
    if most <= 0:
        return {}
    quotas = {kind: Limit(most, what, flag) for kind, what in _QUOTA_KINDS.items()}
    quotas[TOPIC] = Limit(most, "topics", flag, TopicLimitExceeded)  # SNS's own codes
    quotas[SUBSCRIPTION] = Limit(most, "subscriptions", flag, SubscriptionLimitExceeded)
    # a target outlives its endpoint (as on AWS) and is looked at every period: endpoints deleted and made
    # under new names would otherwise leave targets without end
    quotas[TARGET] = Limit(most, "scalable targets", flag, ScalingLimitExceeded)
    return quotas


def _job_quota(most: int, flag: str) -> dict[str, Limit]:
    """Transform jobs running at once (a caller cannot delete one: finished ones go after their retention)."""
    if most <= 0:
        return {}
    what = "concurrent transform jobs"
    flag = f"zeroscale serve --max-transform-jobs{flag}"
    return {JOB_KIND: Limit(most, what, flag, statuses=JOB_RUNNING, free="stop one or wait for one to end")}


def _workers_up(fleet: Fleet, ledger: Ledger, endpoint: str) -> dict[str, int]:
    """The always-warm workers of each variant of ``endpoint`` up now, as metered: this front end's from its
    fleet (no wait for the ledger's next write), the other live front ends' from the ledger."""
    up = fleet.provisioned_up(endpoint)
    for variant, workers in ledger.running(endpoint, time.time() - RUNNING_SEEN_S, others=True).items():
        up[variant] = up.get(variant, 0) + workers
    return up


def build(settings: Settings) -> Server:
    # Workers run in their model directory: every path handed to them must be absolute.
    settings = settings.replace(data_dir=settings.data_dir.resolve())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    creds = load_or_create(settings.credentials_file, settings.access_key_id, settings.secret_access_key)
    store = Store(
        settings.db_url,
        limits={**_quotas(settings.max_resources), **_job_quota(settings.max_transform_jobs, "")},
        # each IAM user's, counted by the user id a request is authorized for
        user_limits={
            **_quotas(settings.max_resources_per_user, "zeroscale serve --max-resources-per-user"),
            **_job_quota(settings.max_transform_jobs_per_user, "-per-user"),
        },
        user_size=SizeLimit(
            settings.max_resource_mb_per_user * 1024 * 1024, "zeroscale serve --max-resource-mb-per-user"
        )
        if settings.max_resource_mb_per_user
        else None,
        creator=caller_id,
    )
    arns = Arns(settings.region, settings.account_id)
    metrics = Metrics()
    events = EventBus()
    confinement = Confinement(
        SandboxSettings(
            settings.data_dir,
            outbound=settings.worker_outbound,
            max_processes=settings.worker_max_processes,
            max_open_files=settings.worker_max_open_files,
            writable=settings.worker_writable_paths,
            max_disk_bytes=settings.worker_disk_bytes,
        ),
        settings.workers_dir,
    )
    groups = None if settings.ray_address else MemoryGroups.open(enabled=settings.worker_cgroups)
    announced = confinement.announce() + ([memory_line(groups)] if groups is not None else [])
    announced += [idle] if (idle := idle_line()) is not None else []
    for line in announced:
        (log.warning if line.startswith("WARNING") else log.info)("%s", line)
    manager = _workers(settings, confinement, groups)
    artifacts = ArtifactCache(
        settings.artifacts_dir,
        s3_endpoint_url=settings.s3_endpoint_url,
        max_extracted_bytes=settings.max_extracted_bytes,
        max_extracted_files=settings.max_extracted_files,
        capacity_bytes=settings.artifact_cache_bytes,
        protected=(settings.data_dir,),  # no file:// model reads the server's own files
    )
    pyenvs = PythonEnvs(
        settings.pyenvs_dir, capacity_bytes=settings.requirements_cache_bytes, holds=artifacts.holds
    )
    packages = ModelPackages(store, arns)
    try:
        key = settings.iam_key_path
        secret_box = SecretBox.load_or_create(key)
        iam = IamStore(settings.db_url, secret_box, key_path=f"--iam-key-file {key}")
    except (KeyMismatch, ValueError) as exc:  # ValueError: a file that is not 32 bytes
        raise StartupError(str(exc)) from None
    authz = Authorizer(
        iam,
        creds.access_key_id,
        creds.secret_access_key,
        settings.region,
        settings.account_id,
        s3_endpoint_url=settings.s3_endpoint_url,
        package_containers=lambda name: list(
            packages.resolve(name).doc["InferenceSpecification"]["Containers"]
        ),
    )

    def fetch_as(url: str, creator: tuple[str, str]) -> Path:
        """A multi-model variant's target model, read with its model's creator's rights."""
        return artifacts.prepare(url, reads=authz.local_reads(creator), archive_only=True)

    fleet = Fleet(
        manager,
        RouterSettings(
            logs_dir=settings.logs_dir,
            region=settings.region,
            account_id=settings.account_id,
            queue_wait_s=settings.queue_wait_s,
            max_queue=settings.max_queue_per_variant,
            invocation_timeout_s=settings.invocation_timeout_s,
            startup_timeout_s=settings.startup_timeout_s,
            memory_budget_mb=settings.memory_budget_mb,
            warm_cache_mb=settings.warm_cache_cap_mb,
            max_starting=settings.max_starting_workers,
            model_load_wait_s=settings.model_load_wait_s,
        ),
        metrics,
        events,
        targets=TargetFiles(fetch=fetch_as, keep=artifacts.keep),
    )
    metrics.watch(fleet.pools)
    metrics.watch_sink_failures(events.failures)
    metrics.watch_cache(fleet.cache.load)
    metrics.registry.register(
        ShelfCollector(
            "zeroscale_artifact_cache", "Extracted model artifacts", "--artifact-cache-mb", artifacts.load
        )
    )
    metrics.registry.register(
        ShelfCollector(
            "zeroscale_requirements_cache",
            "Installed requirements environments",
            "--requirements-cache-mb",
            pyenvs.load,
        )
    )
    if isinstance(manager, RayWorkers):
        metrics.watch_nodes(manager.nodes)
        manager.on_capacity = fleet.set_memory_budget
    history = MetricsHistory(
        HistoryRecorder(),
        MinuteStore(settings.db_url),
        fleet.active_loads,  # a variant at zero samples nothing: the pools at zero are not visited
        retention_s=settings.metrics_retention_hours * 3600,
    )
    events.add(metrics)
    events.add(history.recorder)
    ident = frontend_id(settings.data_dir)  # this front end among those sharing the database
    cluster = Cluster(
        store,
        Frontends(settings.db_url, ttl_s=settings.frontend_ttl_s),
        fleet,
        ident,
        settings.peer_url,
        interval_s=settings.sync_interval_s,
    )
    fleet.current_share = cluster.current
    peer_key = secret_box.derive(PEER_KEY_LABEL)  # every front end on a database holds the same IAM key
    peer_client = PeerClient(peer_key, ident, cluster.peers, ssl_context=tls_context(settings.tls_cert))
    logs = Logs(
        settings.logs_dir,
        region=settings.region,
        account_id=settings.account_id,
        retention_hours=settings.log_retention_hours,
        max_bytes=settings.log_max_bytes,
        stream_bytes_per_minute=settings.worker_log_bytes_per_minute,
        ident=ident,
        peers=peer_client,
    )
    events.add(logs.sink)
    metering = Metering.open(
        settings.db_url,
        price_table=settings.price_table,
        enabled=settings.metering,
        frontend=ident,
        journal_dir=settings.data_dir / "metering",
    )
    metering.attach(events)
    models = Models(store, arns, packages=packages, local_reads=authz.local_reads)
    configs = EndpointConfigs(store, arns, models)
    images = ImageRegistry(
        settings.images_dir,
        max_bytes=settings.max_extracted_bytes,
        max_files=settings.max_extracted_files,
        max_total_bytes=settings.images_max_bytes,
    )
    # every front end's images, copied here when a deployment needs one pushed to another
    shared_images = SharedImages(
        images,
        TagLedger(store, time.time),
        peer_client,
        max_archive_bytes=settings.max_extracted_bytes,
        quota=ImageQuota(settings.images_bytes_per_user, settings.images_max_per_user),
    )
    deployer = Deployer(
        models,
        artifacts,
        settings.idle_timeout_s,
        pyenvs,
        images=shared_images,
        reads_for=authz.local_reads,
    )
    recent = RecentMetrics(fleet.active_loads)  # as the one-minute history: a variant at zero samples nothing
    events.add(recent)
    cloudwatch = CloudWatch(
        AlarmStore(
            settings.db_url,
            most=settings.max_resources,
            most_per_user=settings.max_resources_per_user,
            creator=caller_id,
        ),
        MetricData(history, recent, others=peer_client.ask),
        region=settings.region,
        account_id=settings.account_id,
        interval_s=settings.alarm_interval_s,
        leader=cluster.leads,
        spell=lambda name: (store.get("endpoint", name) or _Named(name)).name,
    )
    guard = Guard(fleet, cloudwatch)
    cloudwatch.listeners.append(guard.poke)  # a deployment watching an alarm hears its change at once
    endpoints = Endpoints(
        store,
        arns,
        models,
        configs,
        deployer,
        fleet,
        frontend=cluster.id,
        limit=cluster.limit,
        guard=guard,
        creator=caller_id,
        warm_mb_per_user=settings.warm_mb_per_user,
        running=partial(_workers_up, fleet, metering.ledger) if settings.metering else None,
    )
    s3 = S3Io(settings.s3_endpoint_url)
    transforms = TransformJobs(
        store,
        arns,
        models,
        TransformRunner(
            fleet, deployer, s3, settings.data_dir / "transform", object_reads=authz.object_reads
        ),
        frontend=cluster.id,
        live=cluster.live,
        retention_s=settings.transform_retention_days * 86400,
    )
    asynchronous = AsyncInference(
        RequestQueue(
            settings.db_url,
            frontend=cluster.id,
            retention_s=settings.async_retention_days * 86400,
            bounds=QueueBounds(
                per_endpoint=settings.async_max_queued,
                per_user=settings.async_max_queued_per_user,
                total=settings.async_max_queued_total,
            ),
        ),
        fleet,
        endpoints,
        s3,
        events,
        region=settings.region,
        account_id=settings.account_id,
        payload_limit_bytes=settings.async_payload_limit_bytes,
        scratch_dir=settings.data_dir / "async",
        creator=caller_id,
        may=authz.s3_may,
    )
    endpoints.listeners.append(asynchronous.refresh)
    autoscaling_samples = Samples(fleet.active_loads, settings.autoscaling_period_s, IN_POINTS, time.time)
    events.add(autoscaling_samples)
    autoscaling = AutoScaling(
        Targets(store),
        endpoints,
        autoscaling_samples,
        region=settings.region,
        account_id=settings.account_id,
        leads=cluster.leads,
        others=peer_client.ask,
    )
    topics = Topics(
        store,
        region=settings.region,
        account_id=settings.account_id,
        public_url=settings.public_url,
        deliverer=Deliverer(),
    )
    asynchronous.notifier = topics
    cloudwatch.actions["arn:aws:sns:"] = _TopicAction(topics)
    cloudwatch.actions["arn:aws:autoscaling:"] = _StepScalingAction(autoscaling)
    metrics.registry.register(BacklogCollector(asynchronous.backlog, fleet.loads))
    history.gauges.append(BacklogSampler(asynchronous.backlog, fleet.loads))
    autoscaling_samples.gauges.append(BacklogSampler(asynchronous.backlog, fleet.loads))
    async_api = AsyncInvokeApi(asynchronous, authz.check_endpoint)
    audit = AuditTrail(settings.db_url, authz, retention_s=settings.audit_retention_days * 86400)
    # the console's sign-ins, in the database: every front end on it knows them
    sessions = Sessions(authz.lookup_secret, settings.db_url)
    iam.key_ended.append(sessions.end_for_key)
    throttle = _throttle(settings, creds.access_key_id)  # one bucket per key, boto3's calls and the console's
    background = Background("startup")

    def sync(live: set[str]) -> None:
        """Another front end wrote, or the front ends changed: serve what the store says, and take over what
        a dead one left (endpoint transitions, asynchronous requests it was running, transform jobs)."""
        endpoints.sync(live)
        asynchronous.sync(live)
        transforms.sync(live)

    native: NativeRuntime | None = None  # made with the app, below

    async def startup() -> None:
        audit.start()
        await manager.open()
        background.spawn(manager.prewarm(PREWARMED_RUNTIMES))
        await history.start()
        await logs.start()
        metering.start()  # before resume: it closes intervals a crash left open, then meters new ones
        await fleet.start(settings.reconcile_interval_s)
        await cluster.start(sync)  # registers this front end: the shares count it from now on
        await asyncio.to_thread(shared_images.reconcile)  # tags deleted while it was down: forgotten
        # What this front end left unfinished before a restart is taken over now; a live one's is not.
        others = cluster.live() - {cluster.id}
        await endpoints.resume(live=others)
        await asynchronous.start(live=others)  # after resume: queued requests need their endpoints' routes
        await transforms.resume(live=others)
        await autoscaling.start()  # after resume: it reads the endpoints' instance counts
        await cloudwatch.start()
        # after resume: what the endpoints use is routed by now
        artifacts.in_use = pyenvs.in_use = fleet.model_dirs
        artifacts.on_evicted = fleet.artifacts_evicted
        images.in_use = fleet.image_dirs
        background.spawn(_keep_trimmed(artifacts, pyenvs))
        background.spawn(_keep_iam_current(iam, settings.sync_interval_s))
        background.spawn(transforms.keep_pruned())  # finished jobs past --transform-retention-days
        background.spawn(asyncio.to_thread(images.collect))  # versions pushed over before a restart
        if native is not None:  # after resume: the endpoints it serves are routed
            native.start()
        _settle_heap()

    async def shutdown() -> None:
        if native is not None:  # first: the workers it holds go back to their pools before they drain
            await native.stop()
        await background.cancel()  # a prewarm still starting its zygote
        await cluster.close()  # leaves: the others take over its share now
        await autoscaling.close()
        await cloudwatch.close()
        await asynchronous.close()  # requests it was running stay Running: they run again at the next start
        await topics.deliverer.close()
        await transforms.close()  # InProgress jobs stay InProgress: they resume at the next start
        await endpoints.close()
        await fleet.close()
        await asyncio.to_thread(metering.close)  # after the fleet: its last records and deactivations
        await history.close()
        await logs.close()
        await manager.close()
        store.close()
        await asyncio.to_thread(audit.close)
        sessions.close()
        iam.close()
        peer_client.close()

    workers_api = WorkersApi(fleet, socket.gethostname(), cluster.id, others=peer_client.ask)
    limits = PayloadLimits(settings.serverless_payload_limit_bytes, answer=settings.payload_limit_bytes)
    # an invocation or a response stream this front end holds no share of goes to one that holds one
    wait_s = settings.queue_wait_s + settings.startup_timeout_s + settings.invocation_timeout_s + 5
    forwarder = Forwarder(peer_client, cluster.holders, timeout_s=wait_s)
    metrics.registry.register(PeerInvocations(forwarder.counts))
    metrics.on_forget(forwarder.forget)

    def runtime_api(kind: type[R]) -> R:
        """InvokeEndpoint's, or InvokeEndpointWithResponseStream's: on the same footing."""
        return kind(
            fleet,
            settings.account_id,
            events,
            asynchronous.is_async,
            on_miss=endpoints.catch_up,
            unavailable=cluster.unavailable if cluster.can_fence else None,
            limits=limits,
            forwarder=forwarder,
        )

    parts = AppParts(
        json_services=[
            JsonService(
                ServiceShapes("sagemaker", skip_patterns=WIDENED_SHAPES),
                metering.track_creates(
                    ControlPlane(models, configs, endpoints, store, transforms, packages).operations()
                ),
            ),
            JsonService(ServiceShapes("logs"), logs.operations),
            JsonService(ServiceShapes("application-autoscaling"), autoscaling.operations()),
            JsonService(ServiceShapes("cloudwatch"), cloudwatch.operations()),
        ],
        runtime=runtime_api(InvokeApi),
        async_runtime=async_api,
        stream_runtime=runtime_api(StreamInvokeApi),
        query=QueryService(topics),
        metrics=metrics,
        lookup_secret=authz.lookup_secret,
        payload_limit_bytes=settings.payload_limit_bytes,
        startup=startup,
        shutdown=shutdown,
        region=settings.region,
        authorize=authz.authorize,
        query_service=IamQueryService(iam, authz),
        audit=audit.record,
        throttle=throttle,
        peer=PeerRoute(
            peer_key,
            {
                **logs.peer_ops,
                **shared_images.peer_ops(),
                "workers.list": workers_api.listed,
                PERIODS_OP: autoscaling.periods,
                RECENT_SERIES_OP: recent.peer_query_series,
            },
            files={IMAGE_FILES: shared_images.archive_file},
            ident=cluster.id,
        ),
        rest_routes={
            "metrics": MetricsApi(history).handle,
            "usage": UsageApi(metering),
            "images": ImagesApi(shared_images).handle,
            "workers": workers_api.handle,
            "async": async_api.status,
            "transform": TransformApi(transforms).handle,
            "audit": AuditApi(audit),
        },
        metrics_authorization=_metrics_authorization(settings.metrics_token_file),
        hosts=_allowed_hosts(settings),
        proxies=_trusted_proxies(settings),
    )
    # The web console calls these same operation tables, routes and runtime for a signed-in session.
    parts.console = Console(
        Backend(
            json_services=parts.json_services,
            rest_routes=parts.rest_routes,
            invoke=parts.runtime.invoke,
            invoke_async=async_api.invoke,
            lookup_secret=authz.lookup_secret,  # the admin's key, or an IAM user's active one
            authorize=authz.authorize,
            throttle=throttle,
            audit=audit.record,
            loads=fleet.loads,
            payload_limit_bytes=settings.payload_limit_bytes,
            region=settings.region,
            memory_sizes_mb=SERVERLESS_MEMORY_SIZES_MB,
        ),
        sessions,
    )
    app = App(parts)
    if settings.native_port is not None:
        native = NativeRuntime(
            app,
            parts.runtime,
            fleet,
            authz,
            events,
            Limits(
                timeout_s=settings.invocation_timeout_s,
                max_answer=settings.payload_limit_bytes,
                serverless_request=settings.serverless_payload_limit_bytes,
                request=settings.payload_limit_bytes,
                queue_wait_s=settings.queue_wait_s,
                max_queue=settings.max_queue_per_variant,
            ),
            region=settings.region,
            main_port=settings.port,
            is_async=asynchronous.is_async,
            unavailable=cluster.unavailable if cluster.can_fence else None,
            journal=metering.native_journal,
            http=_within_open_files(settings.http),
        )
        metrics.registry.register(NativeRequests(native.counts, native.lent))
        metering.collectors.append(native.collect)
    return Server(settings, creds, app, announced, native)


@dataclass(frozen=True)
class _Named:
    name: str


class _TopicAction:
    """An alarm action on an SNS-style topic: the alarm's notification, published as JSON."""

    repeats = False

    def __init__(self, topics: Topics) -> None:
        self._topics = topics

    def check(self, arn: str) -> None:
        self._topics.subscriptions(arn)  # TopicNotFound unless it exists

    def run(self, arn: str, message: dict[str, Any], breach: float | None, partial: bool) -> None:
        # As CloudWatch's: ALARM: "name" in US East (N. Virginia) (SNS subjects are at most 100 characters)
        subject = f'{message["NewStateValue"]}: "{message["AlarmName"]}" in {message["Region"]}'
        self._topics.publish(arn, json.dumps(message), subject=subject[:100])


class _StepScalingAction:
    """An alarm action naming a step scaling policy's ARN: the policy scales by the alarm's breach (0 when
    the alarm was put in ALARM by hand, without data), never down on a partial view (``AutoScaling.step``)."""

    repeats = True

    def __init__(self, autoscaling: AutoScaling) -> None:
        self._autoscaling = autoscaling
        self._background = Background("step scaling")

    def check(self, arn: str) -> None:
        self._autoscaling.step_policy(arn)

    def run(self, arn: str, message: dict[str, Any], breach: float | None, partial: bool) -> None:
        self.check(arn)  # a policy deleted since: the alarm's history says the action failed, and why
        above = str(message["Trigger"]["ComparisonOperator"]).startswith("Greater")
        self._background.spawn(
            self._autoscaling.step(
                arn, breach or 0.0, str(message["AlarmName"]), above=above, partial=partial
            )
        )


def _throttle(settings: Settings, admin_key_id: str) -> Callable[[str, str], None] | None:
    """Each access key's control-plane calls held to ``--api-rate-per-key`` (the admin's excepted)."""
    if settings.api_rate_per_key <= 0:
        return None
    rates = KeyRates(settings.api_rate_per_key, settings.api_burst_per_key, exempt={admin_key_id})

    def throttle(key: str, code: str) -> None:
        rates.check(key, time.monotonic(), code=code)

    return throttle


def _workers(
    settings: Settings, confinement: Confinement, groups: MemoryGroups | Unavailable | None
) -> WorkerManager | RayWorkers:
    """This machine's workers, or the Ray cluster's nodes' (``--ray-address``: each confines its own)."""
    if settings.ray_address:
        return RayWorkers(
            settings.ray_address,
            node_root=str(settings.ray_node_dir),
            node_timeout_s=settings.ray_node_timeout_s,
            temp_dir=str(settings.ray_temp_dir) if settings.ray_temp_dir else None,
            startup_timeout_s=settings.startup_timeout_s,
            memory_poll_interval_s=settings.memory_poll_interval_s,
            s3_endpoint_url=settings.s3_endpoint_url,
            max_extracted_bytes=settings.max_extracted_bytes,
            max_extracted_files=settings.max_extracted_files,
            outbound=settings.worker_outbound,
            max_processes=settings.worker_max_processes,
            max_open_files=settings.worker_max_open_files,
            max_disk_bytes=settings.worker_disk_bytes,
            writable=tuple(str(p) for p in settings.worker_writable_paths),
            log_limit=settings.worker_log_bytes_per_minute,
            cgroups=settings.worker_cgroups,
            artifact_cache_bytes=settings.artifact_cache_bytes,
            requirements_cache_bytes=settings.requirements_cache_bytes,
            images_root=settings.images_dir,
            node_images_bytes=settings.ray_node_images_bytes,
        )
    return WorkerManager(
        settings.workers_dir,
        startup_timeout_s=settings.startup_timeout_s,
        memory_poll_interval_s=settings.memory_poll_interval_s,
        confinement=confinement,
        log_limit=settings.worker_log_bytes_per_minute,
        memory_groups=groups if isinstance(groups, MemoryGroups) else None,
    )


def _trusted_proxies(settings: Settings) -> TrustedProxies | None:
    return TrustedProxies.of(settings.trusted_proxies) if settings.trusted_proxies else None


def _allowed_hosts(settings: Settings) -> AllowedHosts:
    """The names requests without a signature may give as their Host: --allowed-host's, the machine's
    hostname, --host and --advertise-url's host (SNS's confirmation links name public_url's), localhost;
    any IP address passes too (api/hosts.py)."""
    names = [*settings.allowed_hosts, socket.gethostname(), settings.host]
    for url in (settings.advertise_url, settings.public_url):
        if url:
            names.append(urllib.parse.urlsplit(url).hostname or "")
    return AllowedHosts.of(names)


def _metrics_authorization(path: Path | None) -> bytes | None:
    """The Authorization header GET /metrics needs: ``Bearer`` and the one token ``path`` holds (surrounding
    blanks and a final newline aside, as Prometheus reads a credentials file); None without a file."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"--metrics-token-file {path}: cannot read it: {exc}") from None
    if not token or not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
        raise StartupError(
            f"--metrics-token-file {path}: it must hold one token, printable ASCII without spaces "
            "(e.g. openssl rand -hex 32 > FILE)."
        )
    return b"Bearer " + token.encode()


class StartupError(Exception):
    """A start-up failure of the user's settings (a database that cannot be reached, a port in use): one
    line for the user, no traceback."""


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The port first: a port in use fails before anything is built or announced, and --port 0 is the free
    # port the system chose, in the banner and in every URL the server gives out.
    sock = _bind(settings.host, settings.port)
    settings = settings.replace(port=int(sock.getsockname()[1]))
    native_sock = _native_socket(settings)
    if native_sock is not None:
        settings = settings.replace(native_port=int(native_sock.getsockname()[1]))
    _own_data_dir(settings)
    try:
        server = build(settings)
    except DBAPIError as exc:  # e.g. the database is down, or refuses the URL's user or password
        flag = "--database-url" if settings.database_url else "--data-dir"
        shown = make_url(settings.db_url).render_as_string(hide_password=True)
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        raise StartupError(f"{flag}: cannot use the database {shown}: {reason}") from None
    except OSError as exc:  # its files: a full or read-only file system
        raise _unwritable(settings, exc) from None
    if server.native is not None:
        server.native.sock = native_sock
    config = uvicorn.Config(
        server.app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guard.protocol(
            _within_open_files(settings.http),
            direct=server.app.direct_route(),
            trusted=_trusted_proxies(settings),
        ),
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        lifespan="on",
        # The client address is the connection's peer: an X-Forwarded-For header, which any local process
        # can send, names no audited source (and no middleware layer runs per request); where the operator
        # names a trusted proxy, App believes its headers (api/proxies.py), and invocations never read them.
        proxy_headers=False,
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
    )
    _announce(server)
    # uvicorn shuts down gracefully on SIGINT, then raises it again; its KeyboardInterrupt is that clean
    # shutdown's end (exit 0), not an abort (click's "Aborted!", exit 1).
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


_DATA_DIR_LOCK = "serve.lock"
_held: list[int] = []  # the lock's descriptor, open for the life of the process


def _own_data_dir(settings: Settings) -> None:
    """One server per data directory (its credentials, artifacts, workers' sockets, logs and, by default,
    its SQLite database are its own; several front ends each have one): a second is refused by name. The
    lock is an ``flock``, so a killed server's goes with it."""
    path = settings.data_dir / _DATA_DIR_LOCK
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _unwritable(settings, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise StartupError(
            f"--data-dir {settings.data_dir} is in use by another zeroscale serve (pid {owner}): stop it, or "
            "give this one a --data-dir of its own (several front ends: see docs/frontends.md)."
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise _unwritable(settings, exc) from None
    _held.append(fd)


def _unwritable(settings: Settings, exc: OSError) -> StartupError:
    where = f" ({exc.filename})" if exc.filename else ""
    return StartupError(
        f"--data-dir {settings.data_dir}: cannot write there{where}: {exc.strerror or exc}. It must be a "
        "directory this user may write, on a file system with free space."
    )


def _native_socket(settings: Settings) -> socket.socket | None:
    """--native-port's socket, bound and listening, or None without it."""
    if settings.native_port is None:
        return None
    if settings.tls_cert is not None:
        raise StartupError(
            "--native-port serves plain HTTP, and --tls-cert is given: serve the runtime over TLS on the "
            "main port (leave out --native-port), or put a TLS-terminating proxy in front of the native port."
        )
    why = native_available()
    if why is not None:
        raise StartupError(f"--native-port: {why}.")
    return _bind(settings.host, settings.native_port, "--native-port")


def _bind(host: str, port: int, flag: str = "--port") -> socket.socket:
    """The server's socket, bound (uvicorn listens on it); StartupError naming the flag when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening from now: a client that acts on the banner, printed before start-up's work (restoring
        # the endpoints), waits in the backlog for it instead of being refused
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if isinstance(exc, socket.gaierror):
            raise StartupError(f"--host {host}: {exc.strerror or exc}") from None
        reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc.strerror or exc}"
        raise StartupError(
            f"{flag} {port}: {host}:{port} {reason}; choose another port with {flag}"
            + (" (ZEROSCALE_PORT, or make run PORT=...)" if flag == "--port" else "")
            + (" (ZEROSCALE_NATIVE_PORT, or make run NATIVE_PORT=...)" if flag == "--native-port" else "")
        ) from None
    return sock


# The cyclic garbage collector, once the server has started: what it built (services, shapes, restored
# endpoints) lives as long as the process, so it is frozen out of every later collection (at most what was
# restored and deleted later is never collected, if it holds a cycle); and a first generation of 20,000
# allocations, not 700, runs the collector less often under load (a request allocates a few hundred
# objects, and reference counting frees nearly all of them). About 5% of the server's CPU per invocation in
# one A/B run (trivial model, 2 clients).
GC_THRESHOLDS = (20_000, 20, 20)
# How often the artifact cache is looked at for unused artifacts past its capacity (each new artifact trims
# it at once; this catches those a deleted endpoint or an ended job left unused).
ARTIFACT_TRIM_INTERVAL_S = 60.0


async def _keep_trimmed(*caches: ArtifactCache | PythonEnvs) -> None:
    """Trim the artifact cache and the requirements environments at start (a restart with a lower capacity)
    and then every interval; a pass costs nothing while a cache fits."""
    while True:
        for cache in caches:
            if cache.over_capacity():
                try:
                    await asyncio.to_thread(cache.trim)
                except Exception:  # the next pass tries again; this loop must not end
                    log.exception("%s: trimming failed", cache.root)
        await asyncio.sleep(ARTIFACT_TRIM_INTERVAL_S)


async def _keep_iam_current(iam: IamStore, interval_s: float) -> None:
    """Another front end's IAM writes (a user, a key deleted or deactivated, a policy) reach this one's
    mirror within an interval. A database that is away is said once, and its return once."""
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(iam.refresh)
        except Exception:  # the next pass tries again; the mirror serves as it was meanwhile
            if not failing:
                log.exception(
                    "IAM: reading users and keys from the database failed; serving the last ones read"
                )
            failing = True
            continue
        if failing:
            log.info("IAM: users and keys are read from the database again")
        failing = False


def _settle_heap() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _within_open_files(limits: HttpLimits) -> HttpLimits:
    """Raise the soft open-files limit to the hard one, and keep the connection cap below it (with room for
    the database, workers' sockets, logs): past the cap a client gets 503, never an accept() failure."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return limits
    room = max(64, int(soft) - 1024)
    return dataclasses.replace(limits, max_connections=min(limits.max_connections, room))


def _announce(server: Server) -> None:
    s = server.settings
    url = f"{s.scheme}://{s.host}:{s.port}"
    path = server.credentials.path
    creds = (
        f"  admin credentials: {path}\n  use them: export AWS_SHARED_CREDENTIALS_FILE={path.resolve()}"
        f" AWS_DEFAULT_REGION={s.region}\n"
        if path is not None
        else "  admin credentials: from ZEROSCALE_ACCESS_KEY_ID / ZEROSCALE_SECRET_ACCESS_KEY\n"
    )
    guarded = "  (a Bearer token: --metrics-token-file)" if s.metrics_token_file else ""
    cmd = command_name()
    print(
        f"zeroscale listening on {url}  (data in {s.data_dir})\n{creds}"
        f"  deploy:  {cmd} deploy --name demo --model model.joblib --image sklearn --endpoint-url {url}\n"
        f"  invoke:  {cmd} invoke demo --body '[[1,2,3,4]]' --endpoint-url {url}\n"
        f"  boto3:   boto3.client('sagemaker-runtime', endpoint_url='{url}').invoke_endpoint(...)\n"
        + (
            f"  runtime, native data plane: {s.scheme}://{s.host}:{s.native_port}  (sagemaker-runtime's "
            "endpoint_url)\n"
            if s.native_port is not None
            else ""
        )
        + f"  metrics: {url}/metrics{guarded}\n"
        f"  console: {url}/console  (sign in with the admin credentials)\n  " + "\n  ".join(server.sandbox),
        flush=True,
    )

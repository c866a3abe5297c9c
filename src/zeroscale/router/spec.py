"""What the router needs to know about a variant and about itself (plain values, no wire keys), and what
it needs of the workers layer (``Workers``: the local WorkerManager today, a cluster's tomorrow)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from zeroscale.runtimes.batching import BatchSettings
from zeroscale.runtimes.usercode import PYTHONPATH, SUBMIT_DIRECTORY
from zeroscale.types import log_group_name
from zeroscale.workers.client import Body, WorkerResponse
from zeroscale.workers.manager import WorkerHandle, WorkerSpec
from zeroscale.workers.stream import WorkerStream
from zeroscale.workers.zygotes import Zygote


class Workers(Protocol):
    """Every call the router makes into the infrastructure that runs workers."""

    def new_worker_id(self) -> str: ...

    async def prewarm(self, runtimes: tuple[str, ...]) -> None: ...

    async def start(
        self,
        spec: WorkerSpec,
        *,
        worker_id: str | None = None,
        on_exit: Callable[[WorkerHandle], None] | None = None,
        template: Zygote | None = None,
    ) -> WorkerHandle: ...

    async def start_template(self, spec: WorkerSpec) -> Zygote: ...

    def template_bytes(self, template: Zygote) -> int:
        """The template's private memory (what keeping it costs), in bytes."""
        ...

    async def park(self, spec: WorkerSpec, template: Zygote) -> int:
        """Fork a replica of ``template`` ahead of need, ready but given no request, for the next ``start``
        from it with ``spec``; what keeping the template and that replica costs, in bytes."""
        ...

    async def stop(self, handle: WorkerHandle, *, grace_s: float | None = None) -> None: ...

    def kill(self, handle: WorkerHandle, reason: str, kind: str = "killed") -> None: ...

    async def request(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Body,
        timeout_s: float | None = None,
        max_answer: int | None = None,
    ) -> WorkerResponse:
        """``timeout_s``: TimeoutError when the whole answer is not in by then (None: no limit here).
        ``max_answer``: AnswerTooLarge when the answer's body is larger (None: no limit)."""
        ...

    async def stream(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> WorkerStream:
        """One request whose answer is read as it comes (InvokeEndpointWithResponseStream)."""
        ...


# Environment variables whose value is a directory from a cache the workers read (see ``directories``).
DIRECTORY_ENV = (SUBMIT_DIRECTORY, PYTHONPATH)


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a model with several (an inference pipeline, or Direct): what its workers run."""

    hostname: str  # its ContainerHostname (given, or container-<n>)
    runtime: str
    image: str
    model_dir: str
    env: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    workdir: str = ""


@dataclass(frozen=True)
class PoolSpec:
    endpoint: str
    variant: str
    runtime: str
    image: str
    model_dir: str
    memory_mb: int
    max_concurrency: int
    provisioned: int
    idle_timeout_s: float
    weight: float = 1.0
    env: Mapping[str, str] = field(default_factory=dict)
    # A bring-your-own image: its entrypoint and working directory (empty for a built-in runtime).
    command: tuple[str, ...] = ()
    workdir: str = ""
    # A real-time variant: its instances, each this many always-warm workers (0 for a serverless variant).
    instance_count: int = 0
    workers_per_instance: int = 0
    # A shadow variant: the share of the production traffic copied to it (0: a production variant).
    shadow_sampling: float = 0.0
    # A model with several containers: each runs in a pool of its own (router/pipeline.py), invoked in
    # order (``Serial``, an inference pipeline) or one by the request's target hostname (``Direct``). The
    # fields above describe the first; ``container`` names the one a container's pool runs (empty for the
    # variant's spec, and for a model with one container).
    containers: tuple[ContainerSpec, ...] = ()
    execution: str = ""
    container: str = ""
    # A multi-model variant (Mode=MultiModel): the ModelDataUrl prefix its target models are under, and
    # whether loaded models are kept (MultiModelConfig.ModelCacheSetting Enabled) or unloaded after use.
    multi_model: str = ""
    model_cache: bool = True
    # One model of a multi-model variant: its target name and what one of its workers costs in the
    # variant's memory (0: memory_mb, a single-model worker holds the whole MemorySizeInMB).
    target_model: str = ""
    slot_mb: int = 0
    # Dynamic batching (the model's ZEROSCALE_MAX_BATCH_SIZE, checked at deploy): None, one request per call.
    batching: BatchSettings | None = None
    # The IAM user who created the model, (name, user id) (("", ""): the admin): a multi-model variant's
    # target models on the server's disk are read with that user's rights.
    read_as: tuple[str, str] = ("", "")

    @property
    def real_time(self) -> bool:
        return self.workers_per_instance > 0

    def directories(self) -> list[str]:
        """The directories its workers read: its model's, each container's, the SDK's code directory
        (``SAGEMAKER_SUBMIT_DIRECTORY``) and the installed requirements (``ZEROSCALE_PYTHONPATH``) where
        they name one; the artifact cache and the requirements environments keep them while it runs."""
        envs = (self.env, *(c.env for c in self.containers))
        named = [env[name] for env in envs for name in DIRECTORY_ENV if name in env]
        return [self.model_dir, *(c.model_dir for c in self.containers), *named]

    def proof_key(self) -> tuple[object, ...] | None:
        """What decides whether a worker of this spec starts and answers /ping: its runtime or image, model
        directory (content-addressed), environment and memory. None for the specs whose deploy-time check is
        always run (real-time instances, provisioned concurrency, multi-model variants, pipelines): their
        workers start at once anyway, or their check proves more than the model."""
        if (
            self.real_time
            or self.provisioned
            or self.multi_model
            or self.target_model
            or self.containers
            or self.container
        ):
            return None
        return (
            self.runtime,
            self.image,
            self.model_dir,
            tuple(sorted(self.env.items())),
            self.command,
            self.workdir,
            self.memory_mb,
        )


@dataclass(frozen=True)
class RouterSettings:
    logs_dir: Path
    region: str
    account_id: str
    queue_wait_s: float = 10.0
    max_queue: int = 1000
    invocation_timeout_s: float = 60.0
    startup_timeout_s: float = 180.0
    memory_budget_mb: int = 8192
    warm_cache_mb: int = 0  # templates of pools at zero kept for the next cold start (0: none)
    max_starting: int = 0  # a pool's workers starting at once, at most (0: no limit; scaler/policy.py)
    # A multi-model target still loading after this long answers ModelNotReadyException (loading goes on).
    model_load_wait_s: float = 60.0

    def log_group(self, endpoint: str) -> str:
        return log_group_name(endpoint)

    def log_stream_arn(self, endpoint: str, variant: str, worker_id: str) -> str:
        return (
            f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{self.log_group(endpoint)}"
            f":log-stream:{variant}/{worker_id}"
        )

    def log_dir(self, endpoint: str, variant: str) -> Path:
        return self.logs_dir / endpoint.lower() / variant

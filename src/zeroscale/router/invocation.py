"""One invocation as the router carries it: the request for a worker, and what the router notes of it as it
goes (its worker, the model's time, a cold start it waited for, a multi-model target) for the records that
metering, metrics and logs hear once it is answered."""

from __future__ import annotations

from dataclasses import dataclass

from zeroscale.events import InvocationRecord
from zeroscale.router.spec import PoolSpec
from zeroscale.workers.client import Body


@dataclass(slots=True)
class Invocation:
    body: Body  # bytes, or a FilePayload streamed from and to files (async requests)
    headers: list[tuple[bytes, bytes]]  # forwarded to the worker as they are (Content-Type, Accept, ...)
    # Filled in by the pool as the request goes, for metering and metrics (also when it fails):
    worker_id: str = ""
    model_s: float = 0.0
    setup_s: float | None = None  # the cold start this request waited for
    provisioned: bool = False
    model_status: int = 0  # the status the worker answered, once it did
    # Seconds the worker has to answer; None: the server's invocation timeout (an async request sets its
    # own, up to 3600 s).
    timeout_s: float | None = None
    # The largest answer body taken from the worker (InvokeEndpoint's 6 MB); None: no limit here (an
    # async request's answer goes to a file, a batch's records to S3).
    max_answer: int | None = None
    # The container contract's other requests (batch transform's GET /execution-parameters) go the same way.
    method: bytes = b"POST"
    path: bytes = b"/invocations"
    # The ContainerHostname a request targets (X-Amzn-SageMaker-Target-Container-Hostname): Direct mode.
    container: str | None = None
    # A multi-model endpoint's target (X-Amzn-SageMaker-Target-Model), and what its pool reports of it.
    target_model: str = ""
    cache_hit: bool | None = None
    model_wait_s: float | None = None
    download_s: float | None = None
    # Requests that shared this one's predict call (router/batching.py): 1 unless batched.
    batch_size: int = 1
    batch_first: bool = False  # the first of them
    # Seconds it waited for a worker before it reached the pool (in the native data plane, for one of the
    # workers lent to it): the pool's queue wait counts them.
    queued_s: float = 0.0

    def record(
        self, spec: PoolSpec, *, at: float, total_s: float, status: int, code: str, bytes_out: int
    ) -> InvocationRecord:
        """What metering, metrics and logs hear of this invocation once it was answered (or failed)."""
        return InvocationRecord(
            endpoint=spec.endpoint,
            variant=spec.variant,
            worker_id=self.worker_id,
            at=at,
            model_s=self.model_s,
            total_s=total_s,
            bytes_in=len(self.body),
            bytes_out=bytes_out,
            status=status,
            error_code=code,
            memory_mb=spec.memory_mb,
            setup_s=self.setup_s,
            provisioned=self.provisioned,
            model_status=self.model_status,
            target_model=self.target_model,
            cache_hit=self.cache_hit,
            model_wait_s=self.model_wait_s,
            download_s=self.download_s,
            batch_size=self.batch_size,
            batch_first=self.batch_first,
        )

"""What happened, as plain records: the router, the fleet and the workers emit them; metering, metrics and
logs consume them. Emitting is a method call per sink and sinks must not block (append, count, or hand
off to their own writer), so the invoke path pays next to nothing for observability."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Protocol, cast

from zeroscale.errors import UsageNotRecorded

log = logging.getLogger("zeroscale.events")


@dataclass(frozen=True, slots=True)
class InvocationRecord:
    """One finished invocation of a known endpoint and variant."""

    endpoint: str
    variant: str
    worker_id: str  # "" when no worker was reached (throttled, validation error)
    at: float  # wall-clock time the answer was sent (epoch seconds)
    model_s: float  # the worker's processing time as the router saw it (request written -> response read)
    total_s: float  # from the request's arrival to the answer
    bytes_in: int
    bytes_out: int
    status: int  # HTTP status sent to the client
    error_code: str  # "" on success, else the AWS error code (ModelError, ThrottlingException, ...)
    memory_mb: int
    setup_s: float | None  # the cold start this request waited for, if any
    provisioned: bool  # served by a worker within the variant's provisioned concurrency
    model_status: int = 0  # the HTTP status the container answered; 0 when it gave none (or was not reached)
    # A multi-model endpoint's invocation: its target model was loaded when it came (ModelCacheHit), else
    # how long it waited for the download and load (ModelLoadingWaitTime) and the download it caused.
    target_model: str = ""
    cache_hit: bool | None = None
    model_wait_s: float | None = None
    download_s: float | None = None
    # Requests that shared this one's predict call (dynamic batching): each is billed its share of model_s.
    batch_size: int = 1
    batch_first: bool = False  # the first request of its batch (the batch is counted once, by this one)

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.total_s - self.model_s - (self.setup_s or 0.0))


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """A worker's life: kind is started | stopped | crashed | memory_killed | disk_killed | timed_out |
    evicted | failed."""

    endpoint: str
    variant: str
    worker_id: str
    kind: str
    at: float
    detail: str = ""
    memory_mb: int = 0
    setup_s: float | None = None
    model: str = ""  # the target model the worker holds (a multi-model endpoint's), else ""
    unload_s: float | None = None  # a model's worker the pool stopped: stop asked -> exited


@dataclass(frozen=True, slots=True)
class VariantEvent:
    """A variant's configuration went live (activated) or away (deactivated): updates, deletes, restarts; or
    the number of its provisioned workers up changed for long (provisioned: fewer than its
    ProvisionedConcurrency, the host's memory holding the rest, or all of them again)."""

    endpoint: str
    variant: str
    kind: str  # activated | deactivated
    at: float
    memory_mb: int = 0
    max_concurrency: int = 0
    provisioned: int = 0  # kind "provisioned": the provisioned workers up now (what is billed from ``at``)
    wanted: int = 0  # kind "provisioned": the variant's ProvisionedConcurrency


class Sink(Protocol):
    def invocation(self, record: InvocationRecord) -> None: ...

    def worker(self, event: WorkerEvent) -> None: ...

    def variant(self, event: VariantEvent) -> None: ...


class BeforeAnswer(Sink, Protocol):
    """A sink whose ``before_answer`` is true (metering)."""

    def invocation_before_answer(self, record: InvocationRecord) -> None:
        """The invocation, durable before its answer goes out, else UsageNotRecorded (nothing of it kept)."""
        ...

    def invocation_journaled(self, record: InvocationRecord, position: tuple[int, int]) -> None:
        """An invocation the native data plane answered, durable already: its own journal holds it up to
        ``position``."""
        ...


class EventBus:
    """Fans events out to every sink. A failing sink is a bug in that sink; it never fails a request, never
    reaches the worker's exit reader and never stops the other sinks: the failure is logged (its first
    occurrences, then one in every thousand) and counted in ``failures`` (on /metrics).

    A sink whose ``before_answer`` attribute is true (metering: its journal) must have an invocation before
    the client's answer is sent; the invoke path hands the others theirs right after the answer is written
    (``invocation_before_answer``, ``invocation_after_answer``), so that metrics, logs and autoscaling samples
    are off the answer's path. ``invocation`` hands it to every sink at once."""

    def __init__(self, sinks: list[Sink] | None = None) -> None:
        self.sinks: list[Sink] = []
        self._before: list[BeforeAnswer] = []
        self._after: list[Sink] = []
        self._names: dict[int, str] = {}
        self.failures: Counter[tuple[str, str]] = Counter()  # (sink, event kind) -> failed calls
        for sink in sinks or []:
            self.add(sink)

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)
        if getattr(sink, "before_answer", False):
            self._before.append(cast(BeforeAnswer, sink))
        else:
            self._after.append(sink)
        self._names[id(sink)] = type(sink).__name__

    def invocation(self, record: InvocationRecord) -> None:
        self._each("invocation", record)

    def invocation_before_answer(self, record: InvocationRecord) -> None:
        """Raises UsageNotRecorded when a sink that must hold the invocation before its answer cannot (the
        other sinks of the kind have it anyway); a sink's other failures are only counted."""
        refused: UsageNotRecorded | None = None
        for sink in self._before:
            try:
                sink.invocation_before_answer(record)
            except UsageNotRecorded as exc:
                refused = refused or exc
            except Exception:
                self._failed(sink, "invocation")
        if refused is not None:
            raise refused

    def invocation_after_answer(self, record: InvocationRecord) -> None:
        self._each("invocation", record, self._after)

    def invocation_journaled(self, record: InvocationRecord, position: tuple[int, int]) -> None:
        """An invocation the native data plane answered after journaling it itself (``position``: where its
        journal holds it, for metering to fold from); the other sinks take it as after an answer."""
        for sink in self._before:
            try:
                sink.invocation_journaled(record, position)
            except Exception:
                self._failed(sink, "invocation")
        self._each("invocation", record, self._after)

    def worker(self, event: WorkerEvent) -> None:
        self._each("worker", event)

    def variant(self, event: VariantEvent) -> None:
        self._each("variant", event)

    def _each(
        self,
        kind: str,
        event: InvocationRecord | WorkerEvent | VariantEvent,
        sinks: list[Sink] | None = None,
    ) -> None:
        for sink in self.sinks if sinks is None else sinks:
            try:
                getattr(sink, kind)(event)
            except Exception:
                self._failed(sink, kind)

    def _failed(self, sink: Sink, kind: str) -> None:
        key = (self._names.get(id(sink), type(sink).__name__), kind)
        self.failures[key] += 1
        count = self.failures[key]
        if count <= 10 or count % 1000 == 0:
            log.exception("event sink %s failed on a %s event (%d so far)", key[0], kind, count)

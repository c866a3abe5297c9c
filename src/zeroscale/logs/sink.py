"""Platform events as readable lines in the log streams: an ``events.Sink``.

Worker events go to the worker's own stream ``<variant>/<worker-id>``, next to what it printed (a worker
that failed to start has no id yet: that goes to ``<variant>/platform``, as do variant events). Every line
starts with ``[zeroscale]``. Invocations are not logged: the invoke path pays nothing here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.logs.store import PLATFORM_STREAM, LogStore

log = logging.getLogger("zeroscale.logs")
PREFIX = "[zeroscale] "


def worker_lines(ev: WorkerEvent) -> list[str]:
    who = f"Worker {ev.worker_id}" if ev.worker_id else "A worker"
    detail = ev.detail.strip()
    kind = ev.kind
    if kind == "started":
        setup = f"{ev.setup_s * 1000:.0f} ms" if ev.setup_s is not None else "unknown time"
        where = f" on node {detail}" if detail else ""  # a cluster's node (--ray-address)
        text = f"{who} started{where}: cold start took {setup} (MemorySizeInMB {ev.memory_mb})."
    elif kind == "stopped":
        text = f"{who} stopped (scale-in after its idle timeout, or drained by an update or delete)."
    elif kind == "evicted":
        text = (
            f"{who} was evicted: its memory went to a worker starting elsewhere (another endpoint, another "
            "variant, or this variant's other configuration during an update; --memory-budget-mb)."
        )
    elif kind == "memory_killed":
        text = f"{who} was killed for memory: {detail}"
    elif kind == "disk_killed":
        text = f"{who} was killed for disk: {detail}"
    elif kind == "timed_out":
        text = f"{who} was killed: an invocation timed out. {detail}"
    elif kind == "crashed":
        text = f"{who} crashed: {detail}"
    elif kind == "failed":
        text = f"{who} failed to start: {detail}"
    else:
        text = f"{who} {kind}: {detail}"
    return [PREFIX + line for line in text.rstrip().splitlines()]


def variant_lines(ev: VariantEvent) -> list[str]:
    if ev.kind == "activated":
        text = (
            f"Variant {ev.variant} activated: MemorySizeInMB {ev.memory_mb}, MaxConcurrency "
            f"{ev.max_concurrency}, ProvisionedConcurrency {ev.provisioned}."
        )
    elif ev.kind == "provisioned" and ev.provisioned < ev.wanted:
        text = (
            f"Variant {ev.variant}: {ev.provisioned} of its ProvisionedConcurrency {ev.wanted} workers are "
            "up (this host's memory budget holds the rest); what is up is what is billed."
        )
    elif ev.kind == "provisioned":
        text = f"Variant {ev.variant}: all {ev.wanted} of its provisioned workers are up."
    elif ev.kind == "deactivated":
        text = f"Variant {ev.variant} deactivated: replaced by an update, or the endpoint is being deleted."
    else:
        text = f"Variant {ev.variant} {ev.kind}."
    return [PREFIX + text]


class LogSink:
    """Writes platform events into the log store and knows which worker streams are live (retention keeps
    them). Each event is one small append; a failure is logged, never raised."""

    def __init__(self, store: LogStore) -> None:
        self._store = store
        self._live: dict[tuple[str, str, str], Path] = {}

    def live_streams(self) -> frozenset[Path]:
        return frozenset(self._live.values())

    def invocation(self, record: InvocationRecord) -> None:
        pass

    def worker(self, event: WorkerEvent) -> None:
        key = (event.endpoint.lower(), event.variant, event.worker_id)
        if event.kind == "started" and event.worker_id:
            path = self._store.stream_path(event.endpoint, f"{event.variant}/{event.worker_id}")
            if path is not None:
                self._live[key] = path
        elif event.kind != "started":
            self._live.pop(key, None)
        stream = f"{event.variant}/{event.worker_id or PLATFORM_STREAM}"
        self._write(event.endpoint, stream, event.at, worker_lines(event))

    def variant(self, event: VariantEvent) -> None:
        self._write(event.endpoint, f"{event.variant}/{PLATFORM_STREAM}", event.at, variant_lines(event))

    def _write(self, endpoint: str, stream: str, at: float, lines: list[str]) -> None:
        try:
            self._store.remember(endpoint)
            self._store.append(endpoint, stream, int(at * 1000), lines)
        except OSError as exc:
            log.warning("cannot write the %s log stream of %s: %s", stream, endpoint, exc)

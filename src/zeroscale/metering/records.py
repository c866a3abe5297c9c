"""What metering stores, as plain values: one row per invocation and one per provisioned interval.

Pricing and reports work on these; only ``ledger.py`` knows how they are kept."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One finished invocation as billed: ``billed_ms`` is the worker's processing time rounded up to the
    millisecond; ``setup_s`` (the cold start it waited for) is recorded and shown, not billed."""

    endpoint: str
    variant: str
    worker_id: str  # "" when no worker was reached (throttled): no duration and no data are billed
    started_at: float  # epoch seconds the request arrived
    at: float  # epoch seconds the answer was sent; the moment the usage "happened" for reports
    model_s: float
    billed_ms: int
    memory_mb: int
    bytes_in: int
    bytes_out: int
    setup_s: float | None
    status: int
    error_code: str
    provisioned: bool  # served within provisioned concurrency: not on-demand, so no free tier
    id: int = 0  # ledger order (ties on ``at``)


@dataclass(frozen=True, slots=True)
class ProvisionedInterval:
    """``concurrency`` workers of ``memory_mb`` kept warm from ``started_at`` to ``ended_at`` (None: still
    provisioned; ``seen_at`` is the last moment a running server confirmed it)."""

    endpoint: str
    variant: str
    memory_mb: int
    concurrency: int
    started_at: float
    ended_at: float | None
    seen_at: float
    id: int = 0

"""Plain usage records for the metering unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from zeroscale.metering.pricing import billed_ms
from zeroscale.metering.records import ProvisionedInterval, UsageRecord


def t(text: str) -> float:
    """An ISO UTC time as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def usage(
    at: float,
    model_s: float,
    *,
    endpoint: str = "ep",
    variant: str = "AllTraffic",
    memory_mb: int = 1024,
    bytes_in: int = 0,
    bytes_out: int = 0,
    status: int = 200,
    error_code: str = "",
    provisioned: bool = False,
    setup_s: float | None = None,
    worker_id: str = "w1",
    id: int = 0,
) -> UsageRecord:
    return UsageRecord(
        endpoint=endpoint,
        variant=variant,
        worker_id=worker_id,
        started_at=at - model_s,
        at=at,
        model_s=model_s,
        billed_ms=billed_ms(model_s) if worker_id else 0,
        memory_mb=memory_mb,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        setup_s=setup_s,
        status=status,
        error_code=error_code,
        provisioned=provisioned,
        id=id,
    )


def interval(
    start: float,
    end: float | None,
    *,
    endpoint: str = "ep",
    variant: str = "AllTraffic",
    memory_mb: int = 1024,
    concurrency: int = 1,
) -> ProvisionedInterval:
    return ProvisionedInterval(endpoint, variant, memory_mb, concurrency, start, end, end or start)

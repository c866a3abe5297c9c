"""Events and loads as the router emits them, with defaults a test overrides by keyword."""

from __future__ import annotations

from typing import Any

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metrics.load import PoolLoad

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def record(**kw: Any) -> InvocationRecord:
    values: dict[str, Any] = {
        "endpoint": "ep",
        "variant": "AllTraffic",
        "worker_id": "w1",
        "at": T0 + 1,
        "model_s": 0.004,
        "total_s": 0.005,
        "bytes_in": 10,
        "bytes_out": 3,
        "status": 200,
        "error_code": "",
        "memory_mb": 1024,
        "setup_s": None,
        "provisioned": False,
        "model_status": 200,
    }
    values.update(kw)
    return InvocationRecord(**values)


def model_error(container_status: int, **kw: Any) -> InvocationRecord:
    return record(status=424, error_code="ModelError", model_status=container_status, **kw)


def throttled(**kw: Any) -> InvocationRecord:
    return record(
        status=429, error_code="ThrottlingException", worker_id="", model_s=0.0, model_status=0, **kw
    )


def started(setup_s: float = 0.05, **kw: Any) -> WorkerEvent:
    values: dict[str, Any] = {
        "endpoint": "ep",
        "variant": "AllTraffic",
        "worker_id": "w1",
        "kind": "started",
        "at": T0 + 1,
        "memory_mb": 1024,
        "setup_s": setup_s,
    }
    values.update(kw)
    return WorkerEvent(**values)


def activated(provisioned: int = 0, max_concurrency: int = 4, **kw: Any) -> VariantEvent:
    values: dict[str, Any] = {
        "endpoint": "ep",
        "variant": "AllTraffic",
        "kind": "activated",
        "at": T0,
        "memory_mb": 1024,
        "max_concurrency": max_concurrency,
        "provisioned": provisioned,
    }
    values.update(kw)
    return VariantEvent(**values)


def pool(**kw: Any) -> PoolLoad:
    values: dict[str, Any] = {
        "endpoint": "ep",
        "variant": "AllTraffic",
        "max_concurrency": 4,
        "provisioned": 0,
        "memory_mb": 1000,
        "workers": 2,
        "busy": 1,
        "queued": 0,
        "rss_mb": (100.0, 250.0),
        "draining": False,
    }
    values.update(kw)
    return PoolLoad(**values)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

"""The Prometheus series zeroscale exposes on /metrics. One registry per server (tests run several)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LABELS = ("endpoint_name", "variant_name")
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    60.0,
)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.workers = Gauge(
            "zeroscale_workers", "Live worker processes per variant", _LABELS, registry=self.registry
        )
        self.invocations = Counter(
            "zeroscale_invocations",
            "Invocations per variant and outcome",
            (*_LABELS, "outcome"),
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "zeroscale_cold_starts", "Workers started per variant", _LABELS, registry=self.registry
        )
        self.model_latency = Histogram(
            "zeroscale_model_latency_seconds",
            "Time the worker took to answer",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_setup = Histogram(
            "zeroscale_model_setup_seconds",
            "Worker start to first successful /ping",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def forget(self, endpoint: str, variant: str) -> None:
        """Drop a deleted variant's series."""
        for metric in (self.workers, self.cold_starts, self.model_latency, self.model_setup):
            with contextlib.suppress(KeyError):
                metric.remove(endpoint, variant)

    def render(self) -> bytes:
        return generate_latest(self.registry)

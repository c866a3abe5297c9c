"""What the router needs to know about a variant and about itself: plain values, no wire keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


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

    def log_group(self, endpoint: str) -> str:
        return f"/aws/sagemaker/Endpoints/{endpoint}"

    def log_stream_arn(self, endpoint: str, variant: str, worker_id: str) -> str:
        return (
            f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{self.log_group(endpoint)}"
            f":log-stream:{variant}/{worker_id}"
        )

    def log_dir(self, endpoint: str, variant: str) -> Path:
        return self.logs_dir / endpoint.lower() / variant

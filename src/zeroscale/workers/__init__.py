"""The ONLY code that starts and stops worker processes: forked from a per-runtime zygote."""

from zeroscale.workers.manager import WorkerHandle, WorkerManager, WorkerSpec

__all__ = ["WorkerHandle", "WorkerManager", "WorkerSpec"]

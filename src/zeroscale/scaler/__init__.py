"""The autoscaler as a pure policy: how many workers each variant wants now. No I/O, an injected clock."""

from zeroscale.scaler.policy import Decision, IdleWorker, PoolSnapshot, decide

__all__ = ["Decision", "IdleWorker", "PoolSnapshot", "decide"]

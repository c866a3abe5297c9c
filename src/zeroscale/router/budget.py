"""The host memory budget: the sum of live workers' MemorySizeInMB stays within it."""

from __future__ import annotations

from collections.abc import Callable


class MemoryBudget:
    def __init__(self, total_mb: int, evict: Callable[[int, object], int]) -> None:
        """``evict(deficit_mb, requester)`` stops idle workers of other pools and returns the MB it freed
        (the memory comes back through ``release`` once those processes are gone)."""
        self.total_mb = total_mb
        self.used_mb = 0
        self._evicting_mb = 0
        self.starting_mb = 0  # reserved by workers still starting: idle (so evictable) once they are up
        self._evict = evict
        self.on_release: Callable[[], None] | None = None

    @property
    def evicting_mb(self) -> int:
        """MB asked of evictions whose workers have not exited yet."""
        return self._evicting_mb

    def reserve(self, mb: int, requester: object) -> bool:
        if self.used_mb + mb <= self.total_mb:
            self.used_mb += mb
            return True
        deficit = self.used_mb + mb - self.total_mb - self._evicting_mb
        if deficit > 0:
            self._evicting_mb += self._evict(deficit, requester)
        return False

    def release(self, mb: int, *, evicted: bool = False) -> None:
        self.used_mb = max(0, self.used_mb - mb)
        if evicted:
            self._evicting_mb = max(0, self._evicting_mb - mb)
        if self.on_release is not None:
            self.on_release()

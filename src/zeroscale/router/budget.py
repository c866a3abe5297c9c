"""The host memory budget: the sum of live workers' MemorySizeInMB stays within it.

A reservation is taken before a worker starts and given back once its process is gone. Three figures, all
in MB and all changed only by the methods below:
- ``used_mb``: every reservation (starting, live or stopping workers);
- ``starting_mb``: the part held by workers still starting (idle, so evictable, once they are up);
- ``evicting_mb``: what evictions were asked to free and has not come back yet.
"""

from __future__ import annotations

from collections.abc import Callable


class MemoryBudget:
    def __init__(self, total_mb: int, evict: Callable[[int, object], object]) -> None:
        """``evict(deficit_mb, requester)`` asks idle workers of other pools to stop; each one it asks is
        reported with ``evicting(mb)``, and its memory comes back with ``release(mb, evicted=True)`` once
        its process is gone."""
        self.total_mb = total_mb
        self._used_mb = 0
        self._starting_mb = 0
        self._evicting_mb = 0
        self._evict = evict
        self.on_release: Callable[[], None] | None = None

    @property
    def used_mb(self) -> int:
        return self._used_mb

    @property
    def starting_mb(self) -> int:
        return self._starting_mb

    @property
    def evicting_mb(self) -> int:
        """MB asked of evictions whose workers have not exited yet."""
        return self._evicting_mb

    @property
    def settling(self) -> bool:
        """Memory is on its way back (evictions in flight) or about to become evictable (starts)."""
        return self._evicting_mb > 0 or self._starting_mb > 0

    def reserve(self, mb: int, requester: object, *, starting: bool = False) -> bool:
        """Take ``mb`` if it fits; otherwise ask for evictions of the deficit not already on its way back.
        What an eviction gives back at once (a warm-cache entry) is taken now; otherwise return False (the
        caller tries again once memory is released)."""
        if self.reserve_if_free(mb, starting=starting):
            return True
        deficit = self._used_mb + mb - self.total_mb - self._evicting_mb
        if deficit > 0:
            self._evict(deficit, requester)
            return self.reserve_if_free(mb, starting=starting)
        return False

    def reserve_if_free(self, mb: int, *, starting: bool = False) -> bool:
        """Take ``mb`` only if it fits now, evicting nothing."""
        if self._used_mb + mb > self.total_mb:
            return False
        self._used_mb += mb
        if starting:
            self._starting_mb += mb
        return True

    def evicting(self, mb: int) -> None:
        """A worker holding ``mb`` was asked to stop so that others get its memory."""
        self._evicting_mb += mb

    def started(self, mb: int) -> None:
        """A starting worker's reservation now belongs to a live worker."""
        self._starting_mb = max(0, self._starting_mb - mb)

    def release(self, mb: int, *, starting: bool = False, evicted: bool = False, notify: bool = True) -> None:
        """Give back a reservation: of a worker that never came up (``starting``), or of a gone one
        (``evicted`` when an eviction stopped it). ``notify=False`` when the caller is inside ``reserve``
        (a warm-cache entry dropped for it), so waiting pools are not rescaled from within."""
        self._used_mb = max(0, self._used_mb - mb)
        if starting:
            self._starting_mb = max(0, self._starting_mb - mb)
        if evicted:
            self._evicting_mb = max(0, self._evicting_mb - mb)
        if notify and self.on_release is not None:
            self.on_release()


class NestedBudget(MemoryBudget):
    """A budget inside the host's: a multi-model variant's memory (MemorySizeInMB, or its instances'),
    shared by its loaded models. Every reservation is taken from both, so the host's figures still add up
    over every worker; ``evict`` frees room inside this budget (the variant unloads its least recently used
    models), the host's own callback frees room elsewhere. (Only ``reserve`` takes memory here: this
    budget's ``reserve_if_free`` is its own part of that.)"""

    def __init__(self, total_mb: int, evict: Callable[[int, object], object], host: MemoryBudget) -> None:
        super().__init__(total_mb, evict)
        self._host = host

    def reserve(self, mb: int, requester: object, *, starting: bool = False) -> bool:
        if not super().reserve(mb, requester, starting=starting):
            return False
        if self._host.reserve(mb, requester, starting=starting):
            return True
        super().release(mb, starting=starting, notify=False)
        return False

    def evicting(self, mb: int) -> None:
        super().evicting(mb)
        self._host.evicting(mb)

    def started(self, mb: int) -> None:
        super().started(mb)
        self._host.started(mb)

    def release(self, mb: int, *, starting: bool = False, evicted: bool = False, notify: bool = True) -> None:
        super().release(mb, starting=starting, evicted=evicted, notify=notify)
        self._host.release(mb, starting=starting, evicted=evicted, notify=notify)

"""The host memory budget: the sum of live workers' MemorySizeInMB stays within it.

A reservation is taken before a worker starts and given back once its process is gone. Three figures, all
in MB and all changed only by the methods below:
- ``used_mb``: every reservation (starting, live or stopping workers);
- ``starting_mb``: the part held by workers still starting (idle, so evictable, once they are up);
- ``evicting_mb``: what evictions were asked to free and has not come back yet.

Shared fairly when it runs short: each requester's (a pool's; a multi-model variant's models together,
through its ``NestedBudget``) reservations are counted, and a requester that could not get memory is
*wanting* until it gets some, says it no longer needs it (``satisfied``), or
``WANT_STALE_S`` passes. While another requester wants, one holding more than its fair share (the total
over the requesters holding or wanting memory) gets no more, and ``should_yield`` tells it to give back a
worker as a request ends instead of handing it to its own next request: one endpoint kept busy with long
requests cannot hold the whole host while others' cold starts are throttled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WANT_STALE_S = 30.0  # a want not renewed (by a failed reservation) for this long is forgotten


class MemoryBudget:
    def __init__(
        self,
        total_mb: int,
        evict: Callable[[int, object], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``evict(deficit_mb, requester)`` asks idle workers of other pools to stop; each one it asks is
        reported with ``evicting(mb)``, and its memory comes back with ``release(mb, evicted=True)`` once
        its process is gone."""
        self.total_mb = total_mb
        self._used_mb = 0
        self._starting_mb = 0
        self._evicting_mb = 0
        self._evict = evict
        self._clock = clock
        self._held: dict[object, int] = {}  # requester -> MB its reservations hold
        self._wanting: dict[object, float] = {}  # requester -> when a reservation of its last failed
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

    def reserve(self, mb: int, requester: object, *, starting: bool = False, share_as: object = None) -> bool:
        """Take ``mb`` for ``requester`` if it fits; otherwise ask for evictions of the deficit not already
        on its way back (of pools other than ``requester``). What an eviction gives back at once (a
        warm-cache entry) is taken now; otherwise return False (the caller tries again once memory is
        released), and the requester is wanting. A requester past its fair share while another wants gets
        nothing (module docstring). ``share_as``: whose share the memory counts in, when not the
        requester's own (a multi-model variant's, for each of its models)."""
        key = requester if share_as is None else share_as
        if self._over_share(key, mb):
            self._wanting[key] = self._clock()
            return False
        if self.reserve_if_free(mb, starting=starting) or self._evict_for(mb, requester, starting):
            self._held[key] = self._held.get(key, 0) + mb
            self._wanting.pop(key, None)
            return True
        self._wanting[key] = self._clock()
        return False

    def _evict_for(self, mb: int, requester: object, starting: bool) -> bool:
        deficit = self._used_mb + mb - self.total_mb - self._evicting_mb
        if deficit > 0:
            self._evict(deficit, requester)
            return self.reserve_if_free(mb, starting=starting)
        return False

    # ---- fair shares ----
    def satisfied(self, requester: object) -> None:
        """``requester`` needs no more memory now (no request of its waits for a worker)."""
        self._wanting.pop(requester, None)

    def should_yield(self, requester: object) -> bool:
        """Another requester wants memory and ``requester`` holds more than its fair share: it should give
        back a worker rather than keep it for its own next request."""
        share = self._share(requester)
        return share is not None and self._held.get(requester, 0) > share

    def _over_share(self, requester: object, mb: int) -> bool:
        """Past its share with ``mb`` more (a requester holding nothing may always have one worker)."""
        held = self._held.get(requester, 0)
        if not held:
            return False
        share = self._share(requester)
        return share is not None and held + mb > share

    def _share(self, requester: object) -> float | None:
        """The fair share of the budget while another requester wants memory; None while none does."""
        if not self._wanting:
            return None
        now = self._clock()
        self._wanting = {r: at for r, at in self._wanting.items() if now - at < WANT_STALE_S}
        if not any(r is not requester for r in self._wanting):
            return None
        sharing = {r for r, held in self._held.items() if held > 0} | set(self._wanting) | {requester}
        return self.total_mb / len(sharing)

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

    def release(
        self,
        mb: int,
        *,
        starting: bool = False,
        evicted: bool = False,
        notify: bool = True,
        owner: object = None,
    ) -> None:
        """Give back a reservation (``owner``'s: the requester that reserved it): of a worker that never came
        up (``starting``), or of a gone one (``evicted`` when an eviction stopped it). ``notify=False`` when
        the caller is inside ``reserve`` (a warm-cache entry dropped for it), so waiting pools are not
        rescaled from within."""
        if owner is not None:
            left = self._held.get(owner, 0) - mb
            if left > 0:
                self._held[owner] = left
            else:
                self._held.pop(owner, None)
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

    def __init__(
        self, total_mb: int, evict: Callable[[int, object], object], host: MemoryBudget, variant: object
    ) -> None:
        """``variant``: whose share of the host the models' memory counts in (one requester for the host's
        fair shares however many models it loads; the host still evicts for the model's own pool)."""
        super().__init__(total_mb, evict, host._clock)
        self._host = host
        self._variant = variant
        self._host_wants: set[object] = set()  # models whose last host reservation failed

    def reserve(self, mb: int, requester: object, *, starting: bool = False, share_as: object = None) -> bool:
        if not super().reserve(mb, requester, starting=starting):
            return False
        if self._host.reserve(mb, requester, starting=starting, share_as=self._variant):
            self._host_wants.discard(requester)
            return True
        self._host_wants.add(requester)
        super().release(mb, starting=starting, notify=False, owner=requester)
        return False

    def satisfied(self, requester: object) -> None:
        super().satisfied(requester)
        self._host_wants.discard(requester)
        if not self._host_wants:  # no model of the variant wants host memory now
            self._host.satisfied(self._variant)

    def should_yield(self, requester: object) -> bool:
        return self._host.should_yield(self._variant)

    def _share(self, requester: object) -> float | None:
        return None  # inside a variant its models share by unloading the least recently used instead

    def evicting(self, mb: int) -> None:
        super().evicting(mb)
        self._host.evicting(mb)

    def started(self, mb: int) -> None:
        super().started(mb)
        self._host.started(mb)

    def release(
        self,
        mb: int,
        *,
        starting: bool = False,
        evicted: bool = False,
        notify: bool = True,
        owner: object = None,
    ) -> None:
        super().release(mb, starting=starting, evicted=evicted, notify=notify, owner=owner)
        host_owner = self._variant if owner is not None else None
        self._host.release(mb, starting=starting, evicted=evicted, notify=notify, owner=host_owner)

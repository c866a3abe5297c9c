"""Several front ends on one database (see docs/frontends.md).

Each front end:
- heartbeats its row in ``frontends`` (store/frontends.py); the live ones, oldest first, are the members;
- polls the store's revision (one row, bumped by every write of any front end) and, when it or the members
  changed, calls the control plane's ``sync``: activate what another front end deployed, deactivate what
  it deleted, take over the transitions of front ends that died;
- serves each variant with its share of MaxConcurrency and ProvisionedConcurrency:
  ``share(total, rank, members)``, the remainder going to the oldest members, so the shares of the live
  members add up to the total and a front end that joins takes only ``total // members`` while the
  others shrink.

- fences itself when it cannot heartbeat: after ``FENCE_AFTER`` of the time-to-live without a successful
  heartbeat its shares drop to zero (idle workers stop at once), before the others consider it dead and
  grow theirs; the next successful heartbeat lifts the fence.

With one front end (the embedded default) the share is the whole and sync finds nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from zeroscale.peers import Peer
from zeroscale.router.fleet import Fleet
from zeroscale.router.spec import PoolSpec
from zeroscale.store.db import DatabaseUnavailable, Store
from zeroscale.store.frontends import Frontends

log = logging.getLogger("zeroscale.cluster")
T = TypeVar("T")
HEARTBEATS_PER_TTL = 5
FENCE_AFTER = 0.6  # of the time-to-live: two heartbeats missed, well before the others act


def share(total: int, rank: int, members: int) -> int:
    """Member ``rank``'s (0: the oldest) part of ``total`` split over ``members``; the parts add up."""
    if members <= 1:
        return total
    return total // members + (1 if rank < total % members else 0)


def frontend_id(data_dir: Path) -> str:
    """This front end's identity, kept in its data directory (a restart is the same front end)."""
    path = data_dir / "frontend-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        ident = uuid.uuid4().hex[:16]
        path.write_text(ident + "\n")
        return ident


class Cluster:
    def __init__(
        self,
        store: Store,
        frontends: Frontends,
        fleet: Fleet,
        ident: str,
        address: str,
        *,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = ident
        self._store = store
        self._frontends = frontends
        self._fleet = fleet
        self._address = address
        self._interval_s = interval_s
        self._ttl_s = frontends.ttl_s
        self._heartbeat_s = frontends.ttl_s / HEARTBEATS_PER_TTL
        self._clock = clock
        self._beat_ok = clock()  # the last successful heartbeat
        self.fenced = False
        self.members: list[str] = [ident]  # live front ends, oldest first
        self._addresses: dict[str, str] = {}  # live front ends' URLs (frontends.address), by id
        self._pids: dict[str, int] = {}  # and their processes (frontends.pid): the run a call is for
        self._full: dict[tuple[str, str], tuple[int, int]] = {}  # (endpoint, variant) -> (max, provisioned)
        self._tasks: list[asyncio.Task[None]] = []
        self._sync: Callable[[set[str]], object] = lambda live: None
        self._failing = False
        # Its own thread for the database: a heartbeat must never queue behind the shared executor's work
        # (deploys extracting models, async and batch S3 transfers), or a busy front end would fence itself.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zeroscale-cluster")

    # ---- shares ----
    def _rank(self) -> tuple[int, int]:
        if self.id in self.members:
            return self.members.index(self.id), len(self.members)
        return len(self.members), len(self.members) + 1

    def _shares(self, max_concurrency: int, provisioned: int) -> tuple[int, int]:
        if self.fenced:
            return 0, 0
        rank, n = self._rank()
        mine = share(max_concurrency, rank, n)
        return mine, min(mine, share(provisioned, rank, n))

    def limit(self, specs: list[PoolSpec]) -> list[PoolSpec]:
        """``specs`` with this front end's share of each variant's concurrency."""
        out = []
        for spec in specs:
            key = (spec.endpoint.lower(), spec.variant)
            self._full[key] = (spec.max_concurrency, spec.provisioned)
            mine, floor = self._shares(spec.max_concurrency, spec.provisioned)
            out.append(dataclasses.replace(spec, max_concurrency=mine, provisioned=floor))
        return out

    def current(self, spec: PoolSpec) -> PoolSpec:
        """``spec`` (a pool's, already limited) with this front end's share as it is now: the fleet asks when
        it routes new pools, which may have been built while the members were others (a deploy warms its
        pools first, and a reshare meanwhile reaches only the pools already routed)."""
        full = self._full.get((spec.endpoint.lower(), spec.variant))
        if full is None:
            return spec
        mine, floor = self._shares(*full)
        if (mine, floor) == (spec.max_concurrency, spec.provisioned):
            return spec
        return dataclasses.replace(spec, max_concurrency=mine, provisioned=floor)

    def _reshare(self) -> None:
        """Every routed variant gets the current share (the members or the fence changed); a pool still
        being built takes it when the fleet routes it (``current``). Entries are replaced by the next
        ``limit`` of the same variant, never dropped."""
        for key, (total, provisioned) in list(self._full.items()):
            self._fleet.resize(*key, *self._shares(total, provisioned))

    @property
    def can_fence(self) -> bool:
        """Only on a networked database: an SQLite file stalls (a long lock), it does not partition."""
        return self._frontends.networked

    def unavailable(self) -> str | None:
        """Why this front end serves no invocation now (it fenced itself), or None."""
        if not self.fenced:
            return None
        return (
            f"This zeroscale front end ({self.id}) cannot reach its database; it serves no request until it "
            "can, so that the other front ends may use its share of every endpoint's MaxConcurrency. "
            "Retry: another front end may serve it."
        )

    def live(self) -> set[str]:
        return set(self.members)

    def peers(self) -> list[Peer]:
        """The other live front ends and where they serve (a row written before front ends advertised a
        URL holds host:port)."""
        return [
            Peer(ident, address if "://" in address else f"http://{address}", self._pids.get(ident, 0))
            for ident, address in self._addresses.items()
            if ident != self.id
        ]

    def holders(self, endpoint: str, variant: str) -> list[Peer]:
        """The other live front ends that hold a share of the variant's MaxConcurrency (where an invocation
        this one holds no share of is sent)."""
        full = self._full.get((endpoint.lower(), variant))
        if full is None or self.fenced:
            return []
        members = self.members
        holding = {m for rank, m in enumerate(members) if share(full[0], rank, len(members)) > 0}
        return [peer for peer in self.peers() if peer.id in holding]

    def leads(self) -> bool:
        """Whether this front end is the leader: the oldest live one (what one front end alone must do,
        such as evaluating alarms, it does)."""
        return not self.fenced and bool(self.members) and self.members[0] == self.id

    # ---- the loop ----
    async def start(self, sync: Callable[[set[str]], object]) -> None:
        """Register now (so the first shares count this front end), then poll in the background."""
        self._sync = sync
        await self._beat()
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._watch())]

    async def _beat(self) -> bool:
        """Heartbeat and read the members; True when they (or the fence) changed."""
        await self._call(self._frontends.beat, self.id, self._address, os.getpid())
        self._beat_ok = self._clock()
        live = await self._call(self._frontends.live)
        self._addresses = {f.id: f.address for f in live}
        self._pids = {f.id: f.pid for f in live}
        members = [f.id for f in live]
        if members == self.members and not self.fenced:
            return False
        if self.fenced:
            log.warning("heartbeat written again: serving this front end's shares")
        self.fenced = False
        log.info("front ends: %s (this one: %s)", ", ".join(members), self.id)
        self.members = members
        self._reshare()
        return True

    def check_fence(self) -> None:
        """Drop every share to zero when the heartbeat has failed for too long (see the module's doc)."""
        silent_s = self._clock() - self._beat_ok
        if not self.can_fence:
            return
        if not self.fenced and silent_s > FENCE_AFTER * self._ttl_s:
            log.error("no heartbeat for %.1f s: serving no share until the database answers again", silent_s)
            self.fenced = True
            self._reshare()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s / 2)
            self.check_fence()

    async def _run(self) -> None:
        revision: int | None = None
        own_seen = 0
        beat_at = polled_at = self._clock()
        # The heartbeat keeps its own pace whatever the sync interval (a slow poll must not look dead).
        tick_s = min(self._interval_s, self._heartbeat_s)
        while True:
            await asyncio.sleep(tick_s)
            try:
                changed = False
                if self._clock() - beat_at >= self._heartbeat_s:
                    beat_at = self._clock()
                    changed = await self._beat()
                if not changed and self._clock() - polled_at < self._interval_s:
                    continue
                polled_at = self._clock()
                now, own = await self._call(self._store.revision_and_own_writes)
                # Only what another front end wrote needs a sync (it reads every endpoint): this front end's
                # own writes (a burst of deploys) are already served.
                others = revision is None or now - revision != own - own_seen
                if (now != revision and others) or changed:
                    self._sync(self.live())
                revision, own_seen = now, own
                if self._failing:
                    log.warning("database reachable again")
                    self._failing = False
            except (SQLAlchemyError, DatabaseUnavailable) as exc:
                if not self._failing:
                    log.error("database unreachable, serving what is known: %s", exc)
                    self._failing = True
            except Exception:
                log.exception("front-end sync failed")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(SQLAlchemyError):
            await self._call(self._frontends.leave, self.id)
        self._db.shutdown(wait=False)
        self._frontends.close()

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

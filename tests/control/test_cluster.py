"""Concurrency shares: the live front ends' parts add up to the whole, the oldest take the remainder, and a
front end that joins never takes more than ``total // members`` (so, with the others still at their old
shares, an endpoint never reaches twice its MaxConcurrency)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy.exc import OperationalError

from router.fakes import FakeClock, FakeManager, settings
from router.fakes import spec as router_spec
from zeroscale.control.cluster import Cluster, share
from zeroscale.events import EventBus
from zeroscale.metrics.registry import Metrics
from zeroscale.router.fleet import Fleet
from zeroscale.router.spec import PoolSpec
from zeroscale.store.frontends import Frontend


@pytest.mark.parametrize("total", [1, 2, 3, 5, 7, 200])
@pytest.mark.parametrize("members", [1, 2, 3, 4])
def test_shares_add_up_and_a_newcomer_takes_the_floor(total: int, members: int) -> None:
    parts = [share(total, rank, members) for rank in range(members)]
    assert sum(parts) == total
    assert parts == sorted(parts, reverse=True)  # the remainder goes to the oldest
    assert max(parts) - min(parts) <= 1
    # Members 0..n-2 held shares of the whole among n-1; the newest (rank n-1) joins:
    before = [share(total, rank, members - 1) for rank in range(members - 1)] if members > 1 else [0]
    assert sum(before) + parts[-1] < 2 * total


def test_one_front_end_serves_everything() -> None:
    assert share(7, 0, 1) == 7


class FakeFrontends:
    ttl_s = 5.0
    networked = True

    def __init__(self) -> None:
        self.members = ["old", "me"]
        self.down = False

    def beat(self, ident: str, address: str, pid: int) -> None:
        if self.down:
            raise OperationalError("SELECT", {}, Exception("database down"))

    def live(self) -> list[Frontend]:
        return [Frontend(i, "", 0, 0.0, 0.0) for i in self.members]


class FakeFleet:
    def __init__(self) -> None:
        self.sizes: dict[tuple[str, str], tuple[int, int]] = {}

    def route(self, endpoint: str) -> object:
        return object()

    def resize(self, endpoint: str, variant: str, max_concurrency: int, provisioned: int) -> None:
        self.sizes[(endpoint, variant)] = (max_concurrency, provisioned)


def spec(max_concurrency: int, provisioned: int = 0) -> PoolSpec:
    return PoolSpec("ep", "v", "sklearn", "img", "/m", 1024, max_concurrency, provisioned, 60.0)


async def test_shares_follow_the_members_and_a_silent_front_end_fences_itself() -> None:
    now = [0.0]
    frontends, fleet = FakeFrontends(), FakeFleet()
    cluster = Cluster(cast(Any, None), cast(Any, frontends), cast(Any, fleet), "me", "", clock=lambda: now[0])
    await cluster._beat()
    (limited,) = cluster.limit([spec(5, provisioned=3)])
    assert (limited.max_concurrency, limited.provisioned) == (2, 1)  # the newer of two: 5 // 2, 3 // 2
    frontends.members = ["me"]  # the old one died
    assert await cluster._beat()
    assert fleet.sizes[("ep", "v")] == (5, 3)
    frontends.down = True
    now[0] += 0.5 * frontends.ttl_s
    cluster.check_fence()
    assert not cluster.fenced
    now[0] += 0.2 * frontends.ttl_s  # 0.7 of the time-to-live without a heartbeat: before others act
    cluster.check_fence()
    assert cluster.fenced and fleet.sizes[("ep", "v")] == (0, 0)
    assert cluster.limit([spec(5, provisioned=3)])[0].max_concurrency == 0
    frontends.down = False
    assert await cluster._beat()
    assert not cluster.fenced and fleet.sizes[("ep", "v")] == (5, 3)


async def test_a_heartbeat_does_not_wait_for_the_shared_executor() -> None:
    """Deploys, S3 transfers and batch jobs fill the loop's default executor with long blocking work; the
    heartbeat has its own thread, or a busy front end would miss heartbeats and fence itself."""
    loop = asyncio.get_running_loop()
    shared = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(shared)
    release = threading.Event()
    busy = loop.run_in_executor(None, release.wait, 30.0)  # the shared executor's only thread, taken
    frontends = FakeFrontends()
    frontends.members = ["me"]
    cluster = Cluster(cast(Any, None), cast(Any, frontends), cast(Any, FakeFleet()), "other", "")
    try:
        assert await asyncio.wait_for(cluster._beat(), timeout=5.0)
        assert cluster.members == ["me"]
    finally:
        release.set()
        await busy
        cluster._db.shutdown(wait=True)


async def test_pools_routed_after_the_members_changed_take_the_share_of_now(tmp_path: Path) -> None:
    """A deploy limits its specs, then warms its pools before routing them; a front end that leaves
    meanwhile reshares only the pools already routed (the old deployment's). The new pools take the share of
    the moment they are routed, not the one they were built with."""
    frontends = FakeFrontends()
    frontends.members = ["old", "me", "third"]
    fleet = Fleet(FakeManager().as_manager(), settings(tmp_path), Metrics(), EventBus([]), FakeClock())
    cluster = Cluster(cast(Any, None), cast(Any, frontends), fleet, "me", "")
    fleet.current_share = cluster.current
    try:
        await cluster._beat()
        await fleet.activate("ep", cluster.limit([router_spec(max_concurrency=4)]))  # the old deployment
        (new,) = cluster.limit([router_spec(max_concurrency=4, memory_mb=2048)])  # an update, of three
        assert new.max_concurrency == 1
        frontends.members = ["old", "me"]  # the third leaves while the update warms its pool
        assert await cluster._beat()  # reshares the routed (old) pool only
        await fleet.activate("ep", [new])
        route = fleet.route("ep")
        assert route is not None and [p.spec.max_concurrency for p in route.pools] == [2]  # half of 4
    finally:
        await fleet.close()
        cluster._db.shutdown(wait=True)

"""The Fleet as a unit: routing tables, activation (warm, swap, drain the old pools), deletion and
eviction across endpoints, against the fake manager."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from metrics.promtext import value
from zeroscale.errors import DeployError, RuntimeValidationError
from zeroscale.events import EventBus
from zeroscale.metrics.registry import Metrics
from zeroscale.router.fleet import PROVISIONED_SHORT_S, Fleet
from zeroscale.router.invocation import Invocation

from .fakes import FakeClock, FakeManager, Recorder, settings, spec


class Harness:
    def __init__(self, tmp: Path, budget_mb: int = 8192) -> None:
        self.manager = FakeManager()
        self.recorder = Recorder()
        self.clock = FakeClock()
        self.metrics = Metrics()
        self.events = EventBus([self.recorder, self.metrics])
        self.fleet = Fleet(
            self.manager.as_manager(),
            settings(tmp, memory_budget_mb=budget_mb),
            self.metrics,
            self.events,
            self.clock,
        )
        self.metrics.watch(self.fleet.pools)  # as the server does

    async def invoke(self, endpoint: str, target: str | None = None) -> Invocation:
        route = self.fleet.route(endpoint)
        assert route is not None
        inv = Invocation(b"{}", [])
        await route.choose(target).invoke(inv)
        return inv


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    await harness.fleet.close()


async def test_activate_warms_one_worker_per_variant_and_routes_case_insensitively(h: Harness) -> None:
    await h.fleet.activate("Demo", [spec(endpoint="Demo", variant="A"), spec(endpoint="Demo", variant="B")])
    assert len(h.manager.live) == 2
    route = h.fleet.route("demo")
    assert route is not None and [p.spec.variant for p in route.pools] == ["A", "B"]
    assert [(e.variant, e.kind) for e in h.recorder.variants] == [("A", "activated"), ("B", "activated")]


async def test_weights_split_traffic_and_the_target_variant_overrides_them(h: Harness) -> None:
    specs = [spec(variant="A", weight=3.0), spec(variant="B", weight=1.0), spec(variant="Off", weight=0.0)]
    await h.fleet.activate("ep", specs)
    route = h.fleet.route("ep")
    assert route is not None
    random.seed(7)
    picks = [route.choose().spec.variant for _ in range(4000)]
    assert 0.70 < picks.count("A") / len(picks) < 0.80
    assert "Off" not in picks
    assert route.choose("Off").spec.variant == "Off"
    with pytest.raises(RuntimeValidationError, match="Variant Nope not found for endpoint ep"):
        route.choose("Nope")


@pytest.mark.parametrize(
    ("weights", "only"),
    [
        ((5e-324, 0.0), "A"),  # a denormal sum: a pick could round up to the total
        ((3.4e38, 3.4e38, 0.0), None),  # the largest floats the API takes
        ((0.1, 0.2, 0.7, 0.0), None),  # sums that round below the total
        ((0.0, 0.0, 1.0), "C"),
    ],
)
async def test_every_pick_lands_on_a_variant_with_weight_whatever_the_weights(
    h: Harness, weights: tuple[float, ...], only: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = "ABCD"[: len(weights)]
    await h.fleet.activate("ep", [spec(variant=n, weight=w) for n, w in zip(names, weights, strict=True)])
    route = h.fleet.route("ep")
    assert route is not None
    weighted = {n for n, w in zip(names, weights, strict=True) if w > 0}
    for pick in (0.0, 0.5, 1.0 - 2**-53):  # the least, a middle and the largest random() returns
        monkeypatch.setattr(random, "random", lambda pick=pick: pick)
        assert route.choose().spec.variant in weighted
    monkeypatch.undo()
    picks = {route.choose().spec.variant for _ in range(200)}
    assert picks <= weighted and (only is None or picks == {only})


async def test_a_failed_warm_start_leaves_the_current_route_serving(h: Harness) -> None:
    await h.fleet.activate("ep", [spec(variant="Old")])
    h.manager.start_errors.append("the new model does not load")
    with pytest.raises(DeployError, match="the new model does not load"):
        await h.fleet.activate("ep", [spec(variant="New", model_dir="/nonexistent/new-model")])
    route = h.fleet.route("ep")
    assert route is not None and [p.spec.variant for p in route.pools] == ["Old"]
    assert (await h.invoke("ep")).worker_id == "w1"
    assert h.fleet.budget.used_mb == 1024  # the failed pool holds nothing


async def test_an_update_swaps_at_once_and_drains_the_old_pool_after_its_requests(h: Harness) -> None:
    await h.fleet.activate("ep", [spec(variant="V1")])
    h.manager.hold_requests = True
    in_flight = asyncio.ensure_future(h.invoke("ep"))
    await asyncio.sleep(0)
    await h.fleet.activate("ep", [spec(variant="V2", memory_mb=2048)])
    route = h.fleet.route("ep")
    assert route is not None and [p.spec.variant for p in route.pools] == ["V2"]
    assert len(h.fleet.pools()) == 2  # the old pool drains beside the new one
    h.manager.answer()
    assert (await in_flight).worker_id == "w1"  # answered by the old variant
    for _ in range(20):
        await asyncio.sleep(0)
    assert [p.spec.variant for p in h.fleet.pools()] == ["V2"]
    assert ("w1", "stopped") in h.recorder.kinds()
    assert h.fleet.budget.used_mb == 2048
    text = h.metrics.render().decode()
    assert value(text, "zeroscale_invocations_total", endpoint_name="ep", variant_name="V1") is None
    assert value(text, "zeroscale_workers", endpoint_name="ep", variant_name="V2") == 1


def _counted(scale: Callable[[], None], visits: list[str], name: str) -> Callable[[], None]:
    def counted() -> None:
        visits.append(name)
        scale()

    return counted


async def test_only_pools_that_are_not_quiet_are_visited_and_sampled(h: Harness) -> None:
    """A pool at zero leaves the loop's set once seen quiet; a request brings it back, the idle timeout
    takes it to zero again through the loop, and the samplers' loads follow the same set."""
    for i in range(50):
        await h.fleet.activate(f"ep{i}", [spec(endpoint=f"ep{i}", idle_timeout_s=1.0)])
    h.clock.advance(2.0)
    await h.fleet.start(interval_s=0.01)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not h.manager.live and not h.fleet._active:
            break
    assert not h.manager.live and not h.fleet._active  # every deploy-time worker scaled in, none visited
    assert h.fleet.active_loads() == [] and len(h.fleet.loads()) == 50
    visits: list[str] = []
    for pool in h.fleet.pools():
        pool.scale = _counted(pool.scale, visits, pool.spec.endpoint)  # type: ignore[method-assign]
    await asyncio.sleep(0.05)
    assert visits == []  # the loop waits for a pool to wake up; it does not tick over pools at zero
    await h.invoke("ep7")
    assert [(load.endpoint, load.workers) for load in h.fleet.active_loads()] == [("ep7", 1)]
    h.clock.advance(2.0)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not h.manager.live:
            break
    assert not h.manager.live  # scaled in by the loop
    assert set(visits) == {"ep7"}
    assert h.fleet.active_loads() == []


async def test_deactivate_stops_everything_and_forgets_the_series(h: Harness) -> None:
    await h.fleet.activate("ep", [spec(provisioned=2, max_concurrency=2)])
    await asyncio.sleep(0)
    assert len(h.manager.live) == 2
    await h.fleet.deactivate("ep")
    assert h.fleet.route("ep") is None and not h.manager.live and h.fleet.budget.used_mb == 0
    assert 'endpoint_name="ep"' not in h.metrics.render().decode()


async def test_a_cold_start_evicts_the_longest_idle_worker_of_another_endpoint(tmp_path: Path) -> None:
    h = Harness(tmp_path, budget_mb=2048)
    try:
        await h.fleet.activate("old", [spec(endpoint="old", model_dir="/m/old")])
        h.clock.advance(5.0)
        # the whole budget in use, all idle (models of their own: each deploy starts a worker)
        await h.fleet.activate("recent", [spec(endpoint="recent", model_dir="/m/recent")])
        await h.fleet.activate("new", [spec(endpoint="new", model_dir="/m/new")])  # waits for an eviction
        assert ("w1", "evicted") in h.recorder.kinds() and len(h.manager.live) == 2
        assert h.fleet.budget.evicting_mb == 0 and h.fleet.budget.used_mb == 2048
    finally:
        await h.fleet.close()


async def test_the_reconcile_loop_leaves_pools_at_zero_alone_and_keeps_floors(h: Harness) -> None:
    await h.fleet.activate("zero", [spec(endpoint="zero", idle_timeout_s=0.0)])
    await h.fleet.activate("floor", [spec(endpoint="floor", provisioned=1)])
    await asyncio.sleep(0)
    zero, floor = (h.fleet.route(n).pools[0] for n in ("zero", "floor"))  # type: ignore[union-attr]
    await asyncio.sleep(0)
    assert zero.live == 0 and zero.quiet  # its deploy-time worker was scaled in at once
    calls: list[str] = []
    zero.scale = lambda: calls.append("scale")  # type: ignore[method-assign]
    await h.fleet.start(interval_s=0.01)
    await asyncio.sleep(0.1)
    assert calls == []  # skipped on every tick
    assert not floor.quiet and floor.live == 1
    h.manager.crash(floor.slots()[0].worker_id)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if floor.live == 1:
            break
    assert floor.live == 1  # the floor is restored by the loop


async def test_provisioned_workers_the_memory_cannot_give_are_not_metered(tmp_path: Path) -> None:
    """ProvisionedConcurrency 3 where the host's memory gives 2 workers: once that lasted
    PROVISIONED_SHORT_S, the metering hears 2 (what is billed is what runs); all 3 again once memory
    comes back."""
    h = Harness(tmp_path, budget_mb=2048)
    try:
        await h.fleet.activate("pc", [spec(endpoint="pc", provisioned=3, max_concurrency=3)])
        await h.fleet.start(interval_s=0.01)
        await asyncio.sleep(0.05)
        (pool,) = h.fleet.route("pc").pools  # type: ignore[union-attr]
        assert pool.ready == 2
        told = [(e.kind, e.provisioned) for e in h.recorder.variants]
        assert told == [("activated", 3)]  # a short dip is no change
        h.clock.advance(PROVISIONED_SHORT_S + 1)
        await asyncio.sleep(0.05)
        told = [(e.kind, e.provisioned, e.wanted) for e in h.recorder.variants]
        assert told[1:] == [("provisioned", 2, 3)]
        h.fleet.budget.total_mb = 4096  # room again: the third starts, and is metered at once
        h.fleet.budget.on_release()  # type: ignore[misc]
        for _ in range(50):
            await asyncio.sleep(0.01)
            if len(h.recorder.variants) == 3:
                break
        assert [(e.kind, e.provisioned) for e in h.recorder.variants][2:] == [("provisioned", 3)]
    finally:
        await h.fleet.close()


async def test_a_staged_fleet_takes_its_share_then_all_or_nothing(h: Harness) -> None:
    await h.fleet.activate("ep", [spec(variant="A", model_dir="/blue"), spec(variant="B", model_dir="/blue")])
    with pytest.raises(DeployError, match="not routed"):
        await h.fleet.stage("other", [spec(variant="A")])
    await h.fleet.stage("ep", [spec(variant="A", model_dir="/green"), spec(variant="B", model_dir="/green")])
    route = h.fleet.route("ep")
    assert route is not None and route.canary is not None
    assert all(route.choose().spec.model_dir == "/blue" for _ in range(200))  # no share yet
    assert len(h.fleet.pools()) == 4  # both fleets, for the gauges and the budget
    h.fleet.shift("ep", 0.25)
    route = h.fleet.route("ep")
    assert route is not None
    random.seed(3)
    picks = [route.choose("B") for _ in range(4000)]
    assert {p.spec.variant for p in picks} == {"B"}  # the target variant, in whichever fleet
    assert 0.2 < sum(p.spec.model_dir == "/green" for p in picks) / len(picks) < 0.3
    drains = h.fleet.rollback("ep")
    route = h.fleet.route("ep")
    assert route is not None and route.canary is None
    assert all(route.choose().spec.model_dir == "/blue" for _ in range(200))
    await asyncio.wait(drains)
    assert len(h.fleet.pools()) == 2
    with pytest.raises(DeployError, match="no staged fleet"):
        h.fleet.promote("ep")
    await h.fleet.stage("ep", [spec(variant="A", model_dir="/green")])
    await asyncio.wait(h.fleet.promote("ep"))
    route = h.fleet.route("ep")
    assert route is not None and [p.spec.model_dir for p in route.pools] == ["/green"]
    assert len(h.fleet.pools()) == 1


# ---- the deploy-time check, once per model proven on this host ----
async def test_a_model_proven_on_this_host_is_not_checked_again_at_deploy(h: Harness) -> None:
    await h.fleet.activate("first", [spec(endpoint="first")])
    assert len(h.manager.starts) == 1  # the deploy-time check: one worker, /ping answered
    await h.fleet.activate("second", [spec(endpoint="second", variant="Other", max_concurrency=1)])
    assert len(h.manager.starts) == 1  # same runtime, model, environment and memory: known to start
    await asyncio.sleep(0)
    assert h.manager.prewarmed[-1] == ("sklearn",)  # its zygote is kept ready all the same
    route = h.fleet.route("second")
    assert route is not None and route.pools[0].live == 0
    assert (await h.invoke("second")).worker_id == "w2"  # the first request cold-starts it


@pytest.mark.parametrize(
    "changed",
    [
        {"model_dir": "/nonexistent/other-model"},
        {"env": {"SAGEMAKER_PROGRAM": "other.py"}},
        {"memory_mb": 2048},
        {"runtime": "xgboost", "image": "xgboost"},
        {"provisioned": 1},  # a provisioned or real-time variant is always checked
        {"instance_count": 1, "workers_per_instance": 1},
    ],
)
async def test_anything_that_decides_whether_a_worker_starts_is_checked_again(
    h: Harness, changed: dict[str, object]
) -> None:
    await h.fleet.activate("first", [spec(endpoint="first")])
    h.manager.start_errors.append("this one does not start")
    with pytest.raises(DeployError, match="this one does not start"):
        await h.fleet.activate("second", [spec(endpoint="second", **changed)])
    assert h.fleet.route("second") is None


async def test_a_failed_check_proves_nothing(h: Harness) -> None:
    h.manager.start_errors.append("the model does not load")
    with pytest.raises(DeployError):
        await h.fleet.activate("first", [spec(endpoint="first")])
    h.manager.start_errors.append("still does not load")
    with pytest.raises(DeployError, match="still does not load"):
        await h.fleet.activate("again", [spec(endpoint="again")])


async def test_an_update_warms_its_new_pools_even_for_a_proven_model(h: Harness) -> None:
    await h.fleet.activate("ep", [spec(variant="V1")])
    await h.fleet.activate("ep", [spec(variant="V2")])  # the same model: it takes the traffic at once
    assert len(h.manager.starts) == 2
    route = h.fleet.route("ep")
    assert route is not None and route.pools[0].live == 1

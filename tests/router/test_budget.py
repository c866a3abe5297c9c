"""MemoryBudget accounting: reserve, release, and eviction through a fake ``evict`` callback."""

from __future__ import annotations

import pytest

from zeroscale.router.budget import WANT_STALE_S, MemoryBudget, NestedBudget


class FakeEvictor:
    """Stands in for Fleet._evict: frees idle workers of ``mb`` each, from a fixed number available."""

    def __init__(self, idle_workers: int = 0, mb: int = 1024) -> None:
        self.idle_workers = idle_workers
        self.mb = mb
        self.calls: list[tuple[int, object]] = []
        self.budget: MemoryBudget | None = None

    def __call__(self, deficit_mb: int, requester: object) -> int:
        self.calls.append((deficit_mb, requester))
        freed = 0
        while freed < deficit_mb and self.idle_workers:
            self.idle_workers -= 1
            freed += self.mb
            assert self.budget is not None
            self.budget.evicting(self.mb)  # as the pool's state machine reports each worker it stops
        return freed


def budget_with(total_mb: int, evict: FakeEvictor) -> MemoryBudget:
    evict.budget = MemoryBudget(total_mb, evict)
    return evict.budget


REQ = object()  # a requesting pool


def test_reserve_within_budget() -> None:
    evict = FakeEvictor()
    budget = budget_with(4096, evict)
    assert budget.reserve(1024, REQ)
    assert budget.reserve(2048, REQ)
    assert budget.used_mb == 3072
    assert budget.reserve(1024, REQ)  # exactly full is allowed
    assert budget.used_mb == 4096
    assert evict.calls == []


def test_reserve_over_budget_fails_and_asks_for_the_deficit() -> None:
    evict = FakeEvictor()
    budget = budget_with(2048, evict)
    assert budget.reserve(1536, REQ)
    assert not budget.reserve(1024, REQ)
    assert budget.used_mb == 1536  # a failed reserve takes nothing
    assert evict.calls == [(512, REQ)]


def test_a_worker_bigger_than_the_whole_budget_never_fits() -> None:
    evict = FakeEvictor(idle_workers=10)
    budget = budget_with(2048, evict)
    assert not budget.reserve(4096, REQ)
    assert budget.used_mb == 0


def test_release_returns_memory_and_notifies() -> None:
    notified: list[int] = []
    budget = budget_with(2048, FakeEvictor())
    budget.on_release = lambda: notified.append(budget.used_mb)
    assert budget.reserve(2048, REQ)
    assert not budget.reserve(1024, REQ)
    budget.release(1024)
    assert budget.used_mb == 1024
    assert notified == [1024]  # called after the accounting changed
    assert budget.reserve(1024, REQ)
    assert budget.used_mb == 2048


def test_release_never_goes_below_zero() -> None:
    budget = budget_with(1024, FakeEvictor())
    budget.release(512)
    assert budget.used_mb == 0
    assert budget.reserve(1024, REQ)


def test_eviction_in_flight_is_not_asked_for_twice() -> None:
    evict = FakeEvictor(idle_workers=2, mb=1024)
    budget = budget_with(2048, evict)
    assert budget.reserve(1024, REQ) and budget.reserve(1024, REQ)  # two idle 1024 MB workers of others
    big = object()
    assert not budget.reserve(2048, big)
    assert evict.calls == [(2048, big)]
    # The evicted processes have not exited yet: asking again must not evict more.
    assert not budget.reserve(2048, big)
    assert evict.calls == [(2048, big)]
    budget.release(1024, evicted=True)
    assert not budget.reserve(2048, big)  # one still exiting
    assert evict.calls == [(2048, big)]
    budget.release(1024, evicted=True)
    assert budget.used_mb == 0
    assert budget.reserve(2048, big)
    assert budget.used_mb == 2048


def test_partial_eviction_asks_for_the_rest_next_time() -> None:
    evict = FakeEvictor(idle_workers=1, mb=1024)
    budget = budget_with(3072, evict)
    assert budget.reserve(1024, REQ)  # idle, evictable
    assert budget.reserve(2048, REQ)  # busy, not evictable
    assert not budget.reserve(3072, REQ)
    assert evict.calls == [(3072, REQ)]
    assert not budget.reserve(3072, REQ)  # 1024 is on its way back: only 2048 more is asked for
    assert evict.calls[-1] == (2048, REQ)


def test_nothing_evictable_asks_again_on_each_try() -> None:
    evict = FakeEvictor(idle_workers=0)
    budget = budget_with(1024, evict)
    assert budget.reserve(1024, REQ)
    assert not budget.reserve(1024, REQ)
    assert not budget.reserve(1024, REQ)
    assert evict.calls == [(1024, REQ), (1024, REQ)]
    budget.release(1024)
    assert budget.reserve(1024, REQ)


def test_plain_release_does_not_cancel_an_eviction_in_flight() -> None:
    evict = FakeEvictor(idle_workers=1, mb=1024)
    budget = budget_with(2048, evict)
    assert budget.reserve(1024, REQ)  # busy
    assert budget.reserve(1024, REQ)  # idle, evictable
    assert not budget.reserve(2048, REQ)
    assert evict.calls == [(2048, REQ)]
    budget.release(1024)  # the busy one exits by itself
    assert not budget.reserve(2048, REQ)  # the evicted 1024 MB is still in use
    assert len(evict.calls) == 1  # and already on its way back
    budget.release(1024, evicted=True)
    assert budget.reserve(2048, REQ)


@pytest.mark.parametrize(
    ("total", "sizes", "fits"),
    [
        (2048, [1024, 1024], [True, True]),
        (2048, [1024, 1024, 1024], [True, True, False]),
        (3072, [2048, 2048, 1024], [True, False, True]),
        (6144, [6144, 1], [True, False]),
    ],
)
def test_sum_of_reservations_stays_within_total(total: int, sizes: list[int], fits: list[bool]) -> None:
    budget = budget_with(total, FakeEvictor())
    assert [budget.reserve(mb, REQ) for mb in sizes] == fits
    assert budget.used_mb == sum(mb for mb, ok in zip(sizes, fits, strict=True) if ok)
    assert budget.used_mb <= total


def test_a_pool_past_its_share_gets_no_more_and_yields_while_another_wants() -> None:
    """Four 1 GB workers' worth: A takes all four (nobody else wants); B cannot get one (nothing idle to
    evict) and wants; from then A is past its share (2 GB of 4 between two) and should give one back as a
    request ends, and gets none of what comes back; B gets it. Once B is satisfied, or its want is stale,
    A may grow again."""
    now = [0.0]
    a, b = object(), object()
    budget = MemoryBudget(4096, lambda deficit, requester: 0, clock=lambda: now[0])
    for _ in range(4):
        assert budget.reserve(1024, a)
    assert not budget.should_yield(a)  # nobody else wants
    assert not budget.reserve(1024, b)  # full, nothing to evict: B wants
    assert budget.should_yield(a) and not budget.should_yield(b)
    budget.release(1024, owner=a)  # A yields one worker
    assert not budget.reserve(1024, a)  # past its share with it: refused, and A wants too
    assert budget.reserve(1024, b)  # B's comes first
    budget.release(1024, owner=a)
    assert budget.reserve(1024, b)  # up to its share
    assert not budget.should_yield(a) and not budget.should_yield(b)  # 2 GB each: their shares
    assert not budget.reserve(1024, b)  # past it (A wants): refused
    budget.release(1024, owner=b)
    budget.satisfied(b)
    assert budget.reserve(1024, a)  # B wants no more: A may take what is free
    assert budget.used_mb == 4096


def test_a_want_is_forgotten_once_stale_and_one_worker_is_always_allowed() -> None:
    now = [0.0]
    a, b, c = object(), object(), object()
    budget = MemoryBudget(3072, lambda deficit, requester: 0, clock=lambda: now[0])
    assert budget.reserve(2048, a)
    assert not budget.reserve(2048, b)  # does not fit: B wants
    assert budget.should_yield(a)  # 2 GB of a 1.5 GB share
    now[0] += WANT_STALE_S
    assert not budget.should_yield(a)  # B never asked again: forgotten
    assert not budget.reserve(2048, b)
    budget.release(2048, owner=a)
    assert budget.reserve(2048, c)  # C holds nothing: its first worker is never past a share
    assert budget.reserve(1024, a)  # A holds nothing now either


def test_a_multi_model_variants_models_share_one_fair_share_of_the_host() -> None:
    """The models of a multi-model variant reserve through its NestedBudget: for the host's fair shares
    they are one requester (the variant), however many are loaded. So a variant with three models and a
    pool that wants split the host in two halves, not four ways (as three requesters and one)."""
    host = MemoryBudget(4096, lambda deficit, requester: 0)
    variant, other = object(), object()
    nested = NestedBudget(4096, lambda deficit, requester: 0, host, variant)
    models = [object() for _ in range(4)]
    for model in models[:3]:
        assert nested.reserve(1024, model)
    assert host.reserve(1024, other)
    assert not host.reserve(1024, other)  # full: the other pool wants
    assert nested.should_yield(models[0])  # the variant holds 3 GB of its 2 GB share
    assert not host.should_yield(other)  # 1 GB of its 2 GB
    assert not nested.reserve(1024, models[3])  # past the variant's share: a fourth model waits
    assert nested.used_mb == 3072 and host.used_mb == 4096
    nested.release(1024, owner=models[0])  # a model unloaded: its GB goes back to the host, as the variant's
    assert host.reserve(1024, other)  # the other pool's share is 2 GB: it gets it
    assert not nested.should_yield(models[1])  # 2 GB each: their shares
    nested.satisfied(models[3])  # the model that waited no longer does: the variant wants nothing
    host.release(1024, owner=other)
    host.satisfied(other)
    assert nested.reserve(1024, models[3])  # nobody else wants: the variant may take what is free

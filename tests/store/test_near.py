"""The near-a-bound policy (``store/near.py``): when a write must count what a bound holds exactly."""

from __future__ import annotations

from zeroscale.store.near import NearBound


class Counter:
    """The exact count a caller would read, and how often it was read."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.value


def write(near: NearBound, counter: Counter, bound: int, key: str = "k") -> bool:
    """One more written (and committed) under ``key``: whether it was to be counted exactly."""
    counter.value += 1
    exact = near.near(key, bound, counter)
    near.added(key)
    return exact


def test_far_from_the_bound_the_count_is_read_once_then_every_256_writes() -> None:
    near, counter = NearBound(clock=lambda: 0.0), Counter(0)
    assert not any(write(near, counter, 10_000) for _ in range(600))
    assert counter.reads == 3  # the first write's, the 257th's, the 513th's


def test_near_the_bound_means_within_a_tenth_or_four_recounts_of_writes() -> None:
    assert NearBound().near("k", 50_000, lambda: 45_000)  # a tenth: 5,000
    assert not NearBound().near("k", 50_000, lambda: 44_999)
    assert NearBound().near("k", 2_000, lambda: 976)  # four recounts' worth: 1,024
    assert not NearBound().near("k", 2_000, lambda: 975)
    assert NearBound().near("k", 2, lambda: 1)  # a small bound is always near: counted at every write


def test_other_writers_are_seen_at_the_next_recount_by_writes_or_by_time() -> None:
    now = [0.0]
    near, counter = NearBound(clock=lambda: now[0]), Counter(0)
    assert not write(near, counter, 10_000)
    counter.value += 9_000  # other front ends' writes: not in this one's estimate yet
    assert not write(near, counter, 10_000)
    now[0] += NearBound.RECOUNT_S
    assert write(near, counter, 10_000)  # counted again a second on: near now
    assert counter.reads == 2


def test_removes_lower_the_estimate_and_keys_are_apart() -> None:
    near, counter = NearBound(clock=lambda: 0.0), Counter(8_999)
    assert write(near, counter, 10_000)  # 9,000: near
    for _ in range(200):
        near.removed("k")
    assert not near.near("k", 10_000, counter)  # about 8,801: far
    assert not near.near("other", 10_000, Counter(0))

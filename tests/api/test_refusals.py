"""The spill-over's memory of refusals (``api/refusals.py``), on a clock the test moves."""

from __future__ import annotations

from zeroscale.api.refusals import Refusals

B = ("fe-b", "ep", "AllTraffic")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_refusal_closes_the_peer_for_a_moment_only() -> None:
    clock = Clock()
    refusals = Refusals(clock, first_s=0.05, most_s=1.0)
    assert refusals.open(B)
    refusals.refused(B)
    assert not refusals.open(B)
    assert refusals.open(("fe-c", "ep", "AllTraffic"))  # another peer
    assert refusals.open(("fe-b", "ep", "Other"))  # another variant of the same peer
    clock.now += 0.049
    assert not refusals.open(B)
    clock.now += 0.001
    assert refusals.open(B)


def test_refusals_in_a_row_double_the_hold_up_to_the_most() -> None:
    clock = Clock()  # holds in powers of two: exact on the float clock
    refusals = Refusals(clock, first_s=1 / 16, most_s=1.0)
    for hold in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 1.0):
        refusals.refused(B)
        clock.now += hold - 1 / 1024
        assert not refusals.open(B)
        clock.now += 1 / 1024
        assert refusals.open(B)


def test_an_acceptance_or_a_long_quiet_starts_again_from_the_first_hold() -> None:
    clock = Clock()
    refusals = Refusals(clock, first_s=0.05, most_s=1.0)
    for _ in range(3):
        refusals.refused(B)
        clock.now += 0.5
    refusals.accepted(B)
    assert refusals.open(B)
    refusals.refused(B)
    clock.now += 0.05
    assert refusals.open(B)  # the first hold again
    refusals.refused(B)  # a second in a row: 0.1
    clock.now += 0.1 + 1.0  # then quiet for longer than the most
    refusals.refused(B)
    clock.now += 0.05
    assert refusals.open(B)


def test_stale_refusals_are_forgotten() -> None:
    clock = Clock()
    refusals = Refusals(clock, first_s=0.05, most_s=1.0)
    for i in range(100):
        refusals.refused((f"fe-{i}", "ep", "AllTraffic"))
    clock.now += 2.0
    refusals.refused(B)
    assert len(refusals._closed) == 1

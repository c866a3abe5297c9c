"""The refused-before-known requests the audit trail records one by one: at most so many a minute, the rest
counted once the minute is over (a fake clock)."""

from __future__ import annotations

from zeroscale.audit.budget import RefusalBudget


def test_past_the_budget_requests_are_counted_and_the_count_comes_once_when_the_minute_is_over() -> None:
    budget = RefusalBudget(per_minute=3, window_s=60)
    assert [budget.admit(100.0 + i) for i in range(5)] == [True, True, True, False, False]
    assert budget.ended(159.0) == []  # the minute is not over
    assert budget.ended(160.0) == [(160.0, 2)]
    assert budget.ended(161.0) == []  # once
    assert [budget.admit(200.0 + i) for i in range(4)] == [True, True, True, False]
    # a request of the next minute closes the one before: its count is kept for ``ended``
    assert budget.admit(260.0) is True
    assert budget.ended(261.0) == [(260.0, 1)]
    assert budget.ended(1000.0) == []  # the minute from 260 recorded all it saw


def test_a_minute_that_recorded_everything_counts_nothing() -> None:
    budget = RefusalBudget(per_minute=3, window_s=60)
    assert budget.admit(0.0) and budget.admit(1.0)
    assert budget.ended(100.0) == []

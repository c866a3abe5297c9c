"""Concurrency shares: the live front ends' parts add up to the whole, the oldest take the remainder, and a
front end that joins never takes more than ``total // members`` (so, with the others still at their old
shares, an endpoint never reaches twice its MaxConcurrency)."""

from __future__ import annotations

import pytest

from zeroscale.control.cluster import share


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

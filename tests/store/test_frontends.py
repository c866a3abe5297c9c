"""Front-end membership on the database's clock: live while the heartbeat is fresh, oldest member first, a
front end that comes back after it was considered dead joins anew."""

from __future__ import annotations

import time

from zeroscale.store.frontends import Frontends


def test_membership(db_url: str) -> None:
    members = Frontends(db_url, ttl_s=0.5)
    members.beat("b", "127.0.0.1:2", 2)
    time.sleep(0.01)  # SQLite's clock has millisecond steps: the same millisecond would be a tie (then by id)
    members.beat("a", "127.0.0.1:1", 1)
    assert [f.id for f in members.live()] == ["b", "a"]  # by joining order, not by id
    joined = members.live()[0].joined_at
    time.sleep(0.6)
    members.beat("a", "127.0.0.1:1", 1)
    assert [f.id for f in members.live()] == ["a"]  # b missed its heartbeat
    members.beat("b", "127.0.0.1:2", 2)  # back after it was considered dead: the newest member now
    assert [f.id for f in members.live()] == ["a", "b"]
    assert members.live()[1].joined_at > joined
    members.leave("a")
    assert [f.id for f in members.live()] == ["b"]
    members.close()

"""Schema upgrades in place: a database written by the release before versioned migrations (no
``schema_migrations``, ``resources`` without ``owner``) opens with every row kept, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, inspect, text

from zeroscale.asyncinf.queue import RequestQueue
from zeroscale.metering.ledger import Ledger
from zeroscale.metrics.store import MinuteStore
from zeroscale.store import Store
from zeroscale.store.migrations import applied

# The shape of ``resources`` as the first release created it.
OLD_RESOURCES = """
CREATE TABLE resources (
    kind VARCHAR(64) NOT NULL, key VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL,
    arn VARCHAR(2048) NOT NULL, created_at FLOAT NOT NULL, modified_at FLOAT NOT NULL,
    status VARCHAR(64), doc JSON NOT NULL, PRIMARY KEY (kind, key)
)
"""
OLD_PROVISIONED = """
CREATE TABLE usage_provisioned (
    id INTEGER NOT NULL PRIMARY KEY, endpoint VARCHAR(255) NOT NULL, variant VARCHAR(255) NOT NULL,
    memory_mb INTEGER NOT NULL, concurrency INTEGER NOT NULL, started_at FLOAT NOT NULL, ended_at FLOAT,
    seen_at FLOAT NOT NULL
)
"""
# ``async_requests`` before its expiry index (stop 35's release).
OLD_ASYNC = """
CREATE TABLE async_requests (
    id INTEGER NOT NULL PRIMARY KEY, inference_id VARCHAR(64) NOT NULL, endpoint VARCHAR(255) NOT NULL,
    endpoint_name VARCHAR(255) NOT NULL, status VARCHAR(16) NOT NULL, input_location VARCHAR(1024) NOT NULL,
    content_type VARCHAR(1024), accept VARCHAR(1024), custom_attributes VARCHAR(1024),
    output_location VARCHAR(1024) NOT NULL, failure_location VARCHAR(1024) NOT NULL, ttl_s INTEGER NOT NULL,
    timeout_s INTEGER NOT NULL, created_at FLOAT NOT NULL, started_at FLOAT, finished_at FLOAT,
    attempts INTEGER NOT NULL, failure_reason TEXT
)
"""


def test_an_old_database_upgrades_in_place(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(OLD_RESOURCES))
        conn.execute(text(OLD_PROVISIONED))
        conn.execute(text("INSERT INTO usage_provisioned VALUES (1, 'ep', 'v', 1024, 1, 10.0, NULL, 12.0)"))
        conn.execute(
            text(
                "INSERT INTO resources VALUES ('endpoint', 'ep', 'Ep', 'arn:ep', 1.0, 2.0, 'InService', :doc)"
            ),
            {"doc": json.dumps({"EndpointConfigName": "cfg"})},
        )
    store = Store(db_url)
    try:
        rec = store.get("endpoint", "EP")
        assert rec is not None
        assert (rec.name, rec.status, rec.doc, rec.owner, rec.creator) == (
            "Ep",
            "InService",
            {"EndpointConfigName": "cfg"},
            None,
            None,  # made before creators were kept: no user's quota counts it
        )
        before = store.revision()
        rec.owner = "front-1"
        store.update(rec)
        assert store.get("endpoint", "ep").owner == "front-1"  # type: ignore[union-attr]
        assert store.revision() == before + 1
    finally:
        store.close()
    ledger = Ledger(db_url, frontend="front-1")
    (interval,) = ledger.intervals()
    assert (interval.started_at, interval.ended_at, interval.seen_at) == (10.0, None, 12.0)
    assert ledger.close_dangling() == 1  # left open by the server before the upgrade: ends when last seen
    assert ledger.intervals()[0].ended_at == 12.0
    ledger.close()
    MinuteStore(db_url).close()
    steps = applied(engine)
    assert {
        "resources:1:add resources.owner",
        "resources:3:add resources.creator",
        "resources:6:add resources.size",
        "usage:1:add usage_provisioned.frontend",
        "usage:2:index usage_provisioned.ix_usage_provisioned_endpoint",
    } <= set(steps)
    assert "ix_usage_provisioned_endpoint" in {
        i["name"] for i in inspect(engine).get_indexes("usage_provisioned")
    }
    tables = set(inspect(engine).get_table_names())
    assert {
        "resources",
        "store_revision",
        "usage_invocations",
        "usage_provisioned",
        "metric_minutes",
    } <= tables
    # Opening again runs nothing twice.
    Store(db_url).close()
    assert applied(engine) == steps
    engine.dispose()


def test_a_fresh_database_ends_up_with_the_same_steps(db_url: str) -> None:
    Store(db_url).close()
    engine = create_engine(db_url)
    assert applied(engine) == [
        "resources:1:add resources.owner",
        "resources:2:index resources.resources_kind_created",
        "resources:3:add resources.creator",
        "resources:4:index resources.resources_kind_creator",
        "resources:5:index resources.resources_kind_status_creator",
        "resources:6:add resources.size",
        "resources:7:index resources.resources_creator_size",
    ]
    assert {"owner", "creator", "size"} <= {c["name"] for c in inspect(engine).get_columns("resources")}
    indexes = {i["name"] for i in inspect(engine).get_indexes("resources")}
    assert {"resources_kind_created", "resources_kind_creator", "resources_creator_size"} <= indexes
    engine.dispose()


def test_queued_async_requests_of_an_old_database_expire(db_url: str) -> None:
    """Requests queued before the expiry column existed get their expiry time from created_at + ttl_s, so
    the sweep finds them."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(OLD_ASYNC))
        for n, created in ((1, 100.0), (2, 5000.0)):
            conn.execute(
                text(
                    "INSERT INTO async_requests VALUES (:n, :id, 'ep', 'Ep', 'Queued', 's3://b/in', NULL, "
                    "NULL, NULL, 's3://b/o', 's3://b/f', 60, 900, :created, NULL, NULL, 0, NULL)"
                ),
                {"n": n, "id": f"id-{n}", "created": created},
            )
    queue = RequestQueue(db_url)
    try:
        assert [r.inference_id for r in queue.claim_expired(now=1000.0, limit=10)] == ["id-1"]
        assert queue.claim_expired(now=1000.0, limit=10) == []  # claimed once
    finally:
        queue.close()
    assert "async:2:fill async_requests.expires_at" in applied(engine)
    assert "ix_async_requests_expiry" in {i["name"] for i in inspect(engine).get_indexes("async_requests")}
    engine.dispose()

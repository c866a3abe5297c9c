"""The durable queue of asynchronous inference requests: one row per request in ``async_requests``, on the
store's database (SQLite or PostgreSQL through ``store/engine.py``).

A request is committed as Queued before InvokeEndpointAsync answers 202. The dispatcher claims it (Running),
then marks it Completed or Failed; one whose RequestTTLSeconds ran out while it waited is claimed by the
expiry sweep instead (``claim_expired``, on an index of the queued ones by expiry time) and failed. A server
that stops or dies with requests Running puts them back to Queued when it starts again
(``requeue_running``), so every accepted request finishes at least once. Several front ends on one
database: each Running row names the front end that runs it (``frontend``); a front end that starts again
puts back its own and those of front ends no longer alive, never a live one's. A finished request's row is
deleted once the retention has passed since it finished (``prune``; ``--async-retention-days``).

Bounds (``QueueBounds``: ``--async-max-queued``, ``--async-max-queued-per-user``,
``--async-max-queued-total``) are checked in the transaction that inserts the request, after the insert and
under the locks of what they count (``store/locks.py``), so front ends enqueueing at once never pass one
together: a request past a bound is rolled back and ``enqueue`` raises ``QueueFull``. A bound is counted
so only near it (``store/near.py``): far from it an enqueue takes no lock and reads no index (1.6 ms at
40,000 queued on SQLite, against 0.35 ms for the whole enqueue), and a front end keeps an estimate instead.

A request may carry its input inline (InvokeEndpointAsync's Body, at most 128,000 bytes) instead of an
InputLocation: it is kept in the row (``body``) until the request finishes, and read only by the claim that
runs it; listings and lookups leave it out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    RowMapping,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from zeroscale.store.engine import make_engine
from zeroscale.store.locks import lock_counted
from zeroscale.store.migrations import Step, add_column, add_index, upgrade
from zeroscale.store.near import NearBound

QUEUED, RUNNING, COMPLETED, FAILED = "Queued", "Running", "Completed", "Failed"
PRUNE_BATCH = 5000  # rows deleted per transaction: a long prune never holds the database for long
_COUNTED = "async_requests"  # the kind store/locks.py locks while a bound is counted

metadata = MetaData()

requests = Table(
    "async_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("inference_id", String(64), nullable=False),
    Column("endpoint", String(255), nullable=False),  # lower-cased endpoint name
    Column("endpoint_name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input_location", String(1024), nullable=False),
    Column("content_type", String(1024), nullable=True),
    Column("accept", String(1024), nullable=True),
    Column("custom_attributes", String(1024), nullable=True),
    Column("output_location", String(1024), nullable=False),
    Column("failure_location", String(1024), nullable=False),
    Column("ttl_s", Integer, nullable=False),
    Column("timeout_s", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("started_at", Double, nullable=True),
    Column("finished_at", Double, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("failure_reason", Text, nullable=True),
    Column("expires_at", Double, nullable=True),  # created_at + ttl_s (NULL only before STEPS[1] ran)
    Column("frontend", String(64), nullable=True),  # the front end that claimed it last
    Column("body", LargeBinary, nullable=True),  # an inline input, until the request finishes
    Column("creator", String(128), nullable=True),  # the IAM user id that sent it (None: the admin)
    Index("ix_async_requests_queue", "endpoint", "status", "id"),
    Index("ix_async_requests_inference_id", "inference_id"),
    Index("ix_async_requests_expiry", "status", "expires_at"),
    Index("ix_async_requests_finished", "finished_at"),
)


def _fill_expires_at(conn: Connection) -> None:
    conn.execute(
        update(requests)
        .where(requests.c.expires_at.is_(None))
        .values(expires_at=requests.c.created_at + requests.c.ttl_s)
    )


STEPS: list[Step] = [
    add_column("async_requests", Column("expires_at", Double, nullable=True)),
    Step("fill async_requests.expires_at", _fill_expires_at),
    add_index("async_requests", "ix_async_requests_expiry", ("status", "expires_at")),
    add_column("async_requests", Column("frontend", String(64), nullable=True)),
    add_index("async_requests", "ix_async_requests_finished", ("finished_at",)),
    add_column("async_requests", Column("body", LargeBinary, nullable=True)),
    add_column("async_requests", Column("creator", String(128), nullable=True)),
    # a user's Queued requests, counted at each of its requests (``--async-max-queued-per-user``)
    add_index("async_requests", "ix_async_requests_creator", ("creator", "status")),
]
# every column but the inline input: what lookups and listings read
_DESCRIBED = [c for c in requests.c if c.name != "body"]


@dataclass
class AsyncRequest:
    id: int
    inference_id: str
    endpoint_name: str
    status: str
    input_location: str
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    output_location: str
    failure_location: str
    ttl_s: int
    timeout_s: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    failure_reason: str | None = None
    body: bytes | None = None  # an inline input (InvokeEndpointAsync's Body) in place of input_location
    creator: str | None = None  # the IAM user id that sent it (None: the admin)

    @property
    def expires_at(self) -> float:
        return self.created_at + self.ttl_s


@dataclass(frozen=True)
class QueueBounds:
    """Queued requests at most (0: no bound): one endpoint's, one IAM user's over all endpoints (the
    admin's, sent with no creator, are not counted), and everyone's together."""

    per_endpoint: int = 0
    per_user: int = 0
    total: int = 0


Scope = Literal["endpoint", "user", "total"]


@dataclass(frozen=True)
class _Bound:
    scope: Scope
    bound: int
    lock: tuple[str, str]  # what ``lock_counted`` locks while it is counted
    rows: ColumnElement[bool]  # the requests it counts (those Queued)


class QueueFull(Exception):
    """A request would take a scope's Queued requests past its bound (nothing was written)."""

    def __init__(self, scope: Scope, bound: int) -> None:
        super().__init__(f"{bound} asynchronous requests queued ({scope})")
        self.scope = scope
        self.bound = bound


@dataclass(frozen=True)
class Backlog:
    endpoint_name: str
    queued: int
    running: int
    oldest_queued_at: float | None


def _request(row: RowMapping) -> AsyncRequest:
    return AsyncRequest(
        id=int(row["id"]),
        inference_id=row["inference_id"],
        endpoint_name=row["endpoint_name"],
        status=row["status"],
        input_location=row["input_location"],
        content_type=row["content_type"],
        accept=row["accept"],
        custom_attributes=row["custom_attributes"],
        output_location=row["output_location"],
        failure_location=row["failure_location"],
        ttl_s=int(row["ttl_s"]),
        timeout_s=int(row["timeout_s"]),
        created_at=float(row["created_at"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=int(row["attempts"]),
        failure_reason=row["failure_reason"],
        body=row.get("body"),
        creator=row.get("creator"),
    )


class RequestQueue:
    """Thread-safe; every call is one transaction (the dispatcher calls it from worker threads)."""

    def __init__(
        self,
        url: str,
        frontend: str | None = None,
        retention_s: float = 0.0,
        bounds: QueueBounds | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``retention_s``: finished requests are deleted this long after they finished (0 keeps them);
        ``clock``: when the bounds' estimates are counted again (``store/near.py``)."""
        self._frontend = frontend  # written on each claim
        self._bounds = bounds or QueueBounds()
        self._retention_s = retention_s
        self._next_prune = 0.0
        self._engine = make_engine(url)
        self._lock = threading.RLock()
        self._near = NearBound(clock)
        upgrade(self._engine, "async", metadata, STEPS)

    def enqueue(self, req: AsyncRequest) -> AsyncRequest:
        """Commit a new Queued request; returns it with its row id. QueueFull when it would take a bound's
        Queued requests past it (then nothing is written)."""
        values: dict[str, Any] = {
            "inference_id": req.inference_id,
            "endpoint": req.endpoint_name.lower(),
            "endpoint_name": req.endpoint_name,
            "status": QUEUED,
            "input_location": req.input_location,
            "content_type": req.content_type,
            "accept": req.accept,
            "custom_attributes": req.custom_attributes,
            "output_location": req.output_location,
            "failure_location": req.failure_location,
            "ttl_s": req.ttl_s,
            "timeout_s": req.timeout_s,
            "created_at": req.created_at,
            "expires_at": req.expires_at,
            "attempts": 0,
            "body": req.body,
            "creator": req.creator,
        }
        bounded = self._bounded(req)
        with self._lock:
            with self._engine.begin() as conn:
                result = conn.execute(insert(requests).values(**values))
                key = result.inserted_primary_key
                # counted after the write (store/locks.py), and only near a bound; each raising: the insert
                # is rolled back
                near = [b for b in bounded if self._near.near(b.lock, b.bound, _counter(conn, b))]
                if near:
                    lock_counted(conn, [b.lock for b in near])
                    for b in near:
                        if _more_than(conn, b.rows & (requests.c.status == QUEUED), b.bound):
                            raise QueueFull(b.scope, b.bound)
            for b in bounded:
                self._near.added(b.lock)
        req.id = int(key[0]) if key else 0
        req.status = QUEUED
        return req

    def claim(self, endpoint: str, now: float) -> AsyncRequest | None:
        """The oldest Queued request of ``endpoint``, now Running (one more attempt); None when none waits."""
        query = (
            select(requests)
            .where((requests.c.endpoint == endpoint.lower()) & (requests.c.status == QUEUED))
            .order_by(requests.c.id)
            .limit(1)
        )
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            # Still Queued: of front ends sharing the database that read the same row, one claims it.
            claimed = conn.execute(
                update(requests)
                .where((requests.c.id == row["id"]) & (requests.c.status == QUEUED))
                .values(
                    status=RUNNING, started_at=now, attempts=requests.c.attempts + 1, frontend=self._frontend
                )
            )
            if not claimed.rowcount:
                return None
        req = _request(row)
        req.status, req.started_at, req.attempts = RUNNING, now, req.attempts + 1
        return req

    def claim_expired(self, now: float, limit: int) -> list[AsyncRequest]:
        """Up to ``limit`` Queued requests (of any endpoint) whose time-to-live ran out by ``now``, soonest
        expired first, now Running (so that one front end fails each); [] when none has."""
        query = (
            select(*_DESCRIBED)
            .where((requests.c.status == QUEUED) & (requests.c.expires_at < now))
            .order_by(requests.c.expires_at)
            .limit(limit)
        )
        claimed: list[AsyncRequest] = []
        with self._lock, self._engine.begin() as conn:
            for row in conn.execute(query).mappings().all():
                won = conn.execute(
                    update(requests)
                    .where((requests.c.id == row["id"]) & (requests.c.status == QUEUED))
                    .values(status=RUNNING, started_at=now, frontend=self._frontend)
                )
                if won.rowcount:
                    req = _request(row)
                    req.status, req.started_at = RUNNING, now
                    claimed.append(req)
        return claimed

    def requeue(self, req: AsyncRequest, *, count_attempt: bool = False) -> None:
        """Put a Running request back (no capacity now); the attempt does not count unless asked."""
        attempts = req.attempts if count_attempt else max(0, req.attempts - 1)
        with self._lock, self._engine.begin() as conn:
            conn.execute(
                update(requests)
                .where(requests.c.id == req.id)
                .values(status=QUEUED, started_at=None, attempts=attempts)
            )

    def finish(
        self,
        req: AsyncRequest,
        status: str,
        now: float,
        reason: str | None = None,
        attempts: int | None = None,
    ) -> None:
        """``attempts``: the times it ran, where the claim that ends it did not run it."""
        req.status, req.finished_at, req.failure_reason = status, now, reason
        values: dict[str, object] = {
            "status": status,
            "finished_at": now,
            "failure_reason": reason,
            "body": None,
        }
        if attempts is not None:
            req.attempts = values["attempts"] = attempts
        with self._lock, self._engine.begin() as conn:
            conn.execute(update(requests).where(requests.c.id == req.id).values(**values))

    def requeue_running(self, live: Collection[str] = ()) -> int:
        """Requests left Running by a front end not in ``live`` (this one's, at its start: not in it) go
        back to Queued: they run again."""
        where = requests.c.status == RUNNING
        if live:
            where = where & (requests.c.frontend.is_(None) | requests.c.frontend.not_in(list(live)))
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(
                update(requests).where(where).values(status=QUEUED, started_at=None, frontend=None)
            )
        return int(result.rowcount or 0)

    def _bounded(self, req: AsyncRequest) -> list[_Bound]:
        """The bounds ``req`` counts against."""
        bounds, endpoint = self._bounds, req.endpoint_name.lower()
        found: list[_Bound] = []
        if bounds.per_endpoint:
            lock = (f"{_COUNTED}.endpoint", endpoint)
            found.append(_Bound("endpoint", bounds.per_endpoint, lock, requests.c.endpoint == endpoint))
        if bounds.per_user and req.creator:
            lock = (_COUNTED, req.creator)
            found.append(_Bound("user", bounds.per_user, lock, requests.c.creator == req.creator))
        if bounds.total:
            found.append(_Bound("total", bounds.total, (_COUNTED, ""), true()))
        return found

    def prune_due(self, now: float) -> bool:
        return self._retention_s > 0 and now >= self._next_prune

    def prune(self, now: float) -> int:
        """Delete the requests that finished longer than the retention ago (at most every tenth of it, or
        every hour, in batches); how many."""
        if not self.prune_due(now):
            return 0
        self._next_prune = now + min(3600.0, self._retention_s / 10)
        old = select(requests.c.id).where(requests.c.finished_at < now - self._retention_s).limit(PRUNE_BATCH)
        gone = 0
        while True:
            with self._lock, self._engine.begin() as conn:
                batch = int(conn.execute(delete(requests).where(requests.c.id.in_(old))).rowcount or 0)
            gone += batch
            if batch < PRUNE_BATCH:
                return gone

    def find(self, inference_id: str) -> AsyncRequest | None:
        """The latest request with this InferenceId."""
        found = self.matching(inference_id)
        return found[0] if found else None

    def matching(self, inference_id: str, endpoint: str | None = None, limit: int = 1) -> list[AsyncRequest]:
        """The latest requests with this InferenceId (of ``endpoint``, when given), at most ``limit``,
        newest first. An InferenceId is the caller's to choose: requests of several endpoints may share
        one."""
        query = select(*_DESCRIBED).where(requests.c.inference_id == inference_id)
        if endpoint is not None:
            query = query.where(requests.c.endpoint == endpoint.lower())
        query = query.order_by(requests.c.id.desc()).limit(limit)
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_request(row) for row in rows]

    def recent(self, endpoint: str, limit: int) -> list[AsyncRequest]:
        """The endpoint's latest ``limit`` requests, newest first (any status)."""
        query = (
            select(*_DESCRIBED)
            .where(requests.c.endpoint == endpoint.lower())
            .order_by(requests.c.id.desc())
            .limit(limit)
        )
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_request(row) for row in rows]

    def backlog(self) -> list[Backlog]:
        """Queued and Running requests per endpoint, with the creation time of the oldest Queued one."""
        active = requests.c.status.in_((QUEUED, RUNNING))
        query = (
            select(
                requests.c.endpoint_name,
                requests.c.status,
                func.count(),
                func.min(requests.c.created_at),
            )
            .where(active)
            .group_by(requests.c.endpoint_name, requests.c.status)
        )
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query).all()
        by_endpoint: dict[str, dict[str, Any]] = {}
        for name, status, count, oldest in rows:
            entry = by_endpoint.setdefault(name, {QUEUED: 0, RUNNING: 0, "oldest": None})
            entry[status] = int(count)
            if status == QUEUED:
                entry["oldest"] = float(oldest)
        return [Backlog(name, e[QUEUED], e[RUNNING], e["oldest"]) for name, e in sorted(by_endpoint.items())]

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()


def _counter(conn: Connection, bound: _Bound) -> Callable[[], int]:
    """How many requests are Queued under ``bound`` now, in ``conn``'s transaction (for ``NearBound``)."""
    queued = bound.rows & (requests.c.status == QUEUED)
    return lambda: int(conn.execute(select(func.count()).where(queued)).scalar_one())


def _more_than(conn: Connection, where: ColumnElement[bool], count: int) -> bool:
    """Whether more than ``count`` rows match ``where`` (an index read no further than that)."""
    return conn.execute(select(requests.c.id).where(where).offset(count).limit(1)).first() is not None

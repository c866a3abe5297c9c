"""Resource state in one SQL table through SQLAlchemy Core (SQLite by default, PostgreSQL unchanged).

Every resource is one row of ``resources``: its kind, its name as the user spelled it (unique per kind,
case-insensitively, through ``key = lower(name)``), its ARN, times, status, wire-shaped document, the
front end running its current transition (``owner``, endpoints only), and the IAM user who created it
(``creator``, a user id; none for the admin's), which per-user quotas count, with its document's size as
created (``size``).

The change feed: every write also bumps the one row of ``store_revision`` in the same transaction, so other
front ends on the same database learn that something changed by reading one integer (``revision()``).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Double,
    Integer,
    MetaData,
    RowMapping,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from zeroscale.errors import ResourceLimitExceeded, ZeroscaleError
from zeroscale.store.engine import make_engine, shares_one_connection
from zeroscale.store.locks import lock_counted
from zeroscale.store.migrations import Step, add_column, add_index, upgrade
from zeroscale.store.near import NearBound

metadata = MetaData()

resources = Table(
    "resources",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("arn", String(2048), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("modified_at", Double, nullable=False),
    Column("status", String(64), nullable=True),
    Column("doc", JSON, nullable=False),
    Column("owner", String(64), nullable=True),
    Column("creator", String(128), nullable=True),
    # the bytes of its document as created, when an IAM user created it under ``user_size`` (else 0)
    Column("size", Integer, nullable=False, server_default="0"),
)

# The tags of a resource once AddTags or DeleteTags changed them (until then, the Tags its create call gave,
# in its doc): a row of its own, so that a tag change never races a deployment rewriting the resource's doc.
resource_tags = Table(
    "resource_tags",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("tags", JSON, nullable=False),
    Column("version", Integer, nullable=False),
)

store_revision = Table(
    "store_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)

# Never edit a released step: append (see store/migrations.py).
STEPS: list[Step] = [
    add_column("resources", Column("owner", String(64), nullable=True)),
    # List* by creation time (the default order) walks this index and stops at the page's end.
    add_index("resources", "resources_kind_created", ("kind", "created_at", "key")),
    add_column("resources", Column("creator", String(128), nullable=True)),
    # a user's records of a kind, counted at each of its creates when per-user quotas are set
    add_index("resources", "resources_kind_creator", ("kind", "creator")),
    # the records of a kind in some statuses (transform jobs in progress), the account's and a user's,
    # counted at each create of that kind
    add_index("resources", "resources_kind_status_creator", ("kind", "status", "creator")),
    # the bytes of a user's documents, summed at each of its creates when that quota is set
    add_column("resources", Column("size", Integer, nullable=False), default_sql="0"),
    add_index("resources", "resources_creator_size", ("creator", "size")),
]


@dataclass
class Record:
    kind: str  # "model" | "endpoint-config" | "endpoint" | ...
    name: str  # as the user spelled it
    arn: str
    created_at: float
    modified_at: float
    status: str | None
    doc: dict[str, Any]  # the resource's wire-shaped document
    owner: str | None = None  # the front end running the resource's current transition
    creator: str | None = None  # the IAM user id that created it (None: the admin); set by ``Store.insert``


@dataclass(frozen=True)
class PageQuery:
    """One List* page: filters (None: not given), the sort key, the keyset cursor (the sort key of the last
    record of the previous page) and how many records to return."""

    sort_by: str  # "CreationTime" (created_at, key) | "Status" (status or "", key) | "Name" (key)
    descending: bool
    limit: int
    after: tuple[Any, ...] | None = None
    name_contains: str | None = None
    status: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    modified_after: float | None = None
    modified_before: float | None = None
    documents: bool = True  # False: the records come without their documents (``doc`` empty)


def _after(columns: list[Any], cursor: list[Any], descending: bool) -> Any:
    """Rows strictly after ``cursor`` in the (lexicographic) order of ``columns``: one row-value comparison,
    which SQLite and PostgreSQL answer with a range seek on an index of those columns. (Its equivalent as an
    OR of ANDs made SQLite walk the index from its start: page N read the N - 1 pages before it again.)"""
    if len(columns) == 1:
        return columns[0] < cursor[0] if descending else columns[0] > cursor[0]
    row, at = tuple_(*columns), tuple_(*cursor)
    return row < at if descending else row > at


class AlreadyExists(Exception):
    """A record of that kind and (case-insensitive) name is already stored."""


class DatabaseUnavailable(ZeroscaleError):
    """The database cannot be reached (answered as 503 ServiceUnavailable)."""

    code = "ServiceUnavailable"
    status = 503


# The statements of the hot calls (every API call reads or writes a record), built once: a statement
# built per call costs more than the SQLite query it runs (expression objects, their cache key). Parameters
# are bound by name at execution.
_ONE = (resources.c.kind == bindparam("b_kind")) & (resources.c.key == bindparam("b_key"))
_GET = select(resources).where(_ONE)
_INSERT = insert(resources)
_SIZE = "*size"  # what the documents' size quota locks (for each user), as a kind
_UPDATE = update(resources).where(_ONE)
_UPDATE_IF = update(resources).where(_ONE & (resources.c.status == bindparam("b_status")))
_DELETE = delete(resources).where(_ONE)
_TAGS_ONE = (resource_tags.c.kind == bindparam("b_kind")) & (resource_tags.c.key == bindparam("b_key"))
_TAGS_GET = select(resource_tags.c.tags, resource_tags.c.version).where(_TAGS_ONE)
_TAGS_DELETE = delete(resource_tags).where(_TAGS_ONE)
_BUMP = update(store_revision).where(store_revision.c.id == 1).values(value=store_revision.c.value + 1)
_REVISION = select(store_revision.c.value).where(store_revision.c.id == 1)


def _one(kind: str, name: str) -> dict[str, str]:
    return {"b_kind": kind, "b_key": name.lower()}


# The most records one of ``prune``'s transactions deletes (a long delete would hold SQLite's write lock).
PRUNE_BATCH = 500

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def database_failure(exc: BaseException) -> DatabaseUnavailable | None:
    """What a call that failed in the database answers (503, the driver's reason: down, locked, its disk
    full), where the store's own calls (``_reachable``) did not say it first; None for any other failure."""
    return _unreachable(exc) if isinstance(exc, OperationalError) else None


def _unreachable(exc: OperationalError) -> DatabaseUnavailable:
    reason = str(exc.orig or exc).strip().splitlines()[0]
    return DatabaseUnavailable(f"The database is unreachable ({reason}); retry later.")


def _reachable(method: Callable[P, R]) -> Callable[P, R]:
    """A lost connection or a database that is down becomes DatabaseUnavailable, with the driver's reason."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OperationalError as exc:
            raise _unreachable(exc) from exc

    return call


def _record(row: RowMapping) -> Record:
    return Record(
        kind=row["kind"],
        name=row["name"],
        arn=row["arn"],
        created_at=float(row["created_at"]),
        modified_at=float(row["modified_at"]),
        status=row["status"],
        doc=dict(row["doc"]) if "doc" in row else {},
        owner=row["owner"],
        creator=row["creator"],
    )


def _values(rec: Record) -> dict[str, Any]:
    """A record's columns as an update writes them: its creator is written once, by the insert."""
    return {
        "kind": rec.kind,
        "key": rec.name.lower(),
        "name": rec.name,
        "arn": rec.arn,
        "created_at": rec.created_at,
        "modified_at": rec.modified_at,
        "status": rec.status,
        "doc": rec.doc,
        "owner": rec.owner,
    }


@dataclass(frozen=True)
class Limit:
    """The most records of one kind, and what the refusal calls them (SageMaker's quota wording)."""

    most: int
    what: str  # "endpoints"
    flag: str  # how an operator raises it
    error: type[ZeroscaleError] = ResourceLimitExceeded  # the service's own (SNS: TopicLimitExceeded)
    # Only the records in these statuses count (transform jobs in progress): counted exactly at each insert
    statuses: tuple[str, ...] = ()
    free: str = "delete some"  # what a user does to make room


@dataclass(frozen=True)
class SizeLimit:
    """The most bytes of documents one IAM user's records may hold, all kinds together (a count alone lets a
    user store its count of the largest documents a request can carry: 2,000 models of 1 MB)."""

    most: int
    flag: str  # how an operator raises it


def _size(doc: Mapping[str, Any]) -> int:
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def _check_size(
    conn: Connection, creator: str, added: int, limit: SizeLimit, error: type[ZeroscaleError]
) -> None:
    """``error`` when the IAM user ``creator``'s documents hold more than ``limit.most`` bytes, the one of
    ``added`` bytes just inserted included."""
    held = int(
        conn.execute(select(func.sum(resources.c.size)).where(resources.c.creator == creator)).scalar() or 0
    )
    if held <= limit.most:
        return
    mb = 1024 * 1024
    raise error(
        f"The service limit 'Size of resource documents per IAM user' is {limit.most / mb:.0f} MB, with "
        f"current utilization of {(held - added) / mb:.1f} MB and a request delta of {added / 1024:.0f} KB: "
        f"delete some, or have the operator raise it ({limit.flag})."
    )


def _kind_count(conn: Connection, kind: str) -> Callable[[], int]:
    """How many records of ``kind`` there are, in ``conn``'s transaction (for ``NearBound``)."""
    return lambda: int(conn.execute(select(func.count()).where(resources.c.kind == kind)).scalar_one())


def _check_limit(conn: Connection, kind: str, limit: Limit, creator: str | None = None) -> None:
    """``limit.error`` when ``kind`` has more than ``limit.most`` records (those of the IAM user ``creator``,
    when given), the one just inserted included (the kind's index read no further than that)."""
    where = resources.c.kind == kind
    if limit.statuses:
        where &= resources.c.status.in_(limit.statuses)
    if creator is not None:
        where &= resources.c.creator == creator
    if conn.execute(select(resources.c.key).where(where).offset(limit.most).limit(1)).first() is None:
        return
    quota, remedy = (
        (f"The account-level service limit 'Number of {limit.what}'", "raise it")
        if creator is None
        else (f"The service limit 'Number of {limit.what} per IAM user'", "have the operator raise it")
    )
    raise limit.error(
        f"{quota} is {limit.most} {limit.what}, with current utilization of {limit.most} {limit.what} and a "
        f"request delta of 1 {limit.what}: {limit.free}, or {remedy} ({limit.flag})."
    )


class Reads:
    """Reads inside a write's transaction, for a ``Quota``'s check: they see this write, and every one
    committed before the quota's lock was taken (under it, no other write of what it counts commits)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, kind: str, name: str) -> Record | None:
        row = self._conn.execute(_GET, _one(kind, name)).mappings().first()
        return None if row is None else _record(row)

    def created_by(self, kind: str, creator: str, statuses: Collection[str] | None = None) -> list[Record]:
        """The records of ``kind`` the IAM user ``creator`` created (with one of ``statuses``, when given)."""
        where = (resources.c.kind == kind) & (resources.c.creator == creator)
        if statuses is not None:
            where &= resources.c.status.in_(list(statuses))
        return [_record(row) for row in self._conn.execute(select(resources).where(where)).mappings()]


@dataclass(frozen=True)
class Quota:
    """A bound on an IAM user's records that a count cannot say (the memory its endpoints keep warm), which
    an insert or update must keep: ``check`` runs in the write's transaction, after the write, under the
    lock of (``kind``, ``creator``) that the user's count limit of that kind takes too, and raises the
    quota's error to refuse (the write is rolled back). The store knows nothing of what it computes."""

    kind: str
    creator: str
    check: Callable[[Reads], None]


class Store:
    """Thread-safe CRUD over ``resources``; every write is its own transaction, every read one statement on
    a connection held for reads (``_read``)."""

    def __init__(
        self,
        url: str,
        limits: Mapping[str, Limit] | None = None,
        *,
        user_limits: Mapping[str, Limit] | None = None,
        user_size: SizeLimit | None = None,
        creator: Callable[[], str] | None = None,
    ) -> None:
        """``limits``: the most records of a kind (a kind not named has none), as an account's quotas.
        ``user_limits``: the most records of a kind one IAM user may hold; ``creator``: the IAM user id a
        record being inserted is made for ("" for the admin, whom they do not bound), asked at each insert
        (the request's, in the server); ``user_size``: the most bytes of documents one IAM user's records may
        hold, as created."""
        self._engine = make_engine(url)
        self._lock = threading.RLock()
        # The connection every read outside a write runs on, held (see _read); None until the first
        self._reader: Connection | None = None
        self._hold_reader = not shares_one_connection(self._engine)
        self._own_writes = 0
        self._limits = dict(limits or {})
        self._user_limits = dict(user_limits or {})
        self._user_size = user_size
        self._creator = creator
        self._counts = NearBound()  # far from a kind's limit, an insert counts nothing (store/near.py)
        upgrade(self._engine, "resources", metadata, STEPS)
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(store_revision).values(id=1, value=0))
        except IntegrityError:
            pass  # there already

    def _read(self, run: Callable[[Connection], T]) -> T:
        """``run`` on the held read connection, under the lock. It is in autocommit: each statement sees
        every write committed before it, and no snapshot is held between reads. Held, a read takes no
        connection from the pool and gives it back (PostgreSQL: no ping and no rollback, one round trip
        instead of three; SQLite: 29-31 instead of 45 us). A connection the database dropped is replaced once,
        at once, as the pool's ping would have; any other error closes it too, and is raised. An in-memory
        SQLite database (one connection, the writes' too) is read on a connection from the pool each time."""
        if not self._hold_reader:
            with self._lock, self._engine.connect() as shared:
                return run(shared)
        with self._lock:
            for retry in (False, True):
                conn = self._reader
                if conn is None:
                    conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                    self._reader = conn
                try:
                    return run(conn)
                except DBAPIError as exc:
                    self._reader = None
                    conn.close()
                    if retry or not exc.connection_invalidated:
                        raise
            raise AssertionError("unreachable")

    def _bump(self, conn: Connection) -> None:
        conn.execute(_BUMP)
        self._own_writes += 1  # under the lock; a write rolled back after this only causes one extra sync

    @_reachable
    def revision_and_own_writes(self) -> tuple[int, int]:
        """The revision and how many writes this object has made, read together under its lock (so the
        revision includes every one of them): when both grew by the same amount since the last look, every
        change was this front end's own and there is nothing to learn from the others."""
        with self._lock:
            return self.revision(), self._own_writes

    @_reachable
    def revision(self) -> int:
        """A number that changes with every write of any front end (cheap: one row)."""
        return self._read(lambda conn: int(conn.execute(_REVISION).scalar_one()))

    def _where(self, kind: str, name: str) -> Any:
        return (resources.c.kind == kind) & (resources.c.key == name.lower())

    @_reachable
    def insert(self, rec: Record, *, quota: Quota | None = None, caller: bool = True) -> None:
        """Store a new record; raises AlreadyExists when (kind, lower(name)) is taken, ResourceLimitExceeded
        when its kind has as many records as its limit allows, or its creator as many as a user's limit,
        or ``quota``'s error. The record's ``creator`` is set (``creator``) unless given, or unless the
        record is no act of the request's caller (``caller`` False: it stays as given, None the admin's)."""
        limit = self._limits.get(rec.kind)
        if rec.creator is None and caller and self._creator is not None:
            rec.creator = self._creator() or None
        user_limit = self._user_limits.get(rec.kind)
        size_limit = self._user_size if rec.creator else None
        size = _size(rec.doc) if size_limit is not None else 0
        with self._lock:
            try:
                with self._engine.begin() as conn:
                    # Counted after the write: a name taken is AlreadyExists, whatever the count, and on
                    # SQLite the write's lock is what makes the count exact (store/locks.py).
                    conn.execute(_INSERT, {**_values(rec), "creator": rec.creator, "size": size})
                    # What is counted now: the kind's records in statuses always (statuses change), all of
                    # them only near its limit; a user's, for a user's record.
                    account = limit is not None and bool(
                        limit.statuses or self._counts.near(rec.kind, limit.most, _kind_count(conn, rec.kind))
                    )
                    user = user_limit is not None and bool(rec.creator)
                    counted = [(rec.kind, "")] if account else []
                    if user:
                        counted.append((rec.kind, rec.creator or ""))
                    if quota is not None:
                        counted.append((quota.kind, quota.creator))
                    if size_limit is not None:
                        counted.append((_SIZE, rec.creator or ""))
                    if counted:  # no lock and no count far from every limit (the common insert)
                        lock_counted(conn, counted)
                    if account and limit is not None:  # each raises: the insert is rolled back
                        _check_limit(conn, rec.kind, limit)
                    if user and user_limit is not None:
                        _check_limit(conn, rec.kind, user_limit, rec.creator)
                    if size_limit is not None and rec.creator:
                        error = user_limit.error if user_limit is not None else ResourceLimitExceeded
                        _check_size(conn, rec.creator, size, size_limit, error)
                    if quota is not None:
                        quota.check(Reads(conn))
                    conn.execute(_TAGS_DELETE, _one(rec.kind, rec.name))  # a namesake's, if any were left
                    self._bump(conn)
            except IntegrityError as exc:
                raise AlreadyExists(f"{rec.kind} {rec.name!r} already exists") from exc
            if limit is not None and not limit.statuses:
                self._counts.added(rec.kind)

    @_reachable
    def get(self, kind: str, name: str) -> Record | None:
        row = self._read(lambda conn: conn.execute(_GET, _one(kind, name)).mappings().first())
        return None if row is None else _record(row)

    @_reachable
    def update(
        self,
        rec: Record,
        *,
        if_status: str | None = None,
        quota: Quota | None = None,
        with_creator: bool = False,
    ) -> bool:
        """Replace every field of the record with the same (kind, lower(name)) but its creator (with
        ``with_creator``, that too: ``rec.creator``, None for the admin: a record another user's act now
        stands for, an image tag pushed again); a no-op when it is gone, or with ``if_status`` when its stored
        status is another (compare-and-set: of front ends changing the same record at once, one wins). True
        when it was written; ``quota``'s error when it would break it (nothing written)."""
        params = {**_values(rec), **_one(rec.kind, rec.name)}
        if with_creator:
            params["creator"] = rec.creator
        if if_status is not None:
            params["b_status"] = if_status
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(_UPDATE if if_status is None else _UPDATE_IF, params)
            if result.rowcount:
                if quota is not None:  # after the write, for the same reasons as insert's
                    lock_counted(conn, [(quota.kind, quota.creator)])
                    quota.check(Reads(conn))
                self._bump(conn)
        return bool(result.rowcount)

    @_reachable
    def claim(self, kind: str, name: str, owner: str, previous: str | None) -> Record | None:
        """Make ``owner`` the owner of a record still owned by ``previous`` (compare-and-set, so of front
        ends taking over from a dead one exactly one wins); the record claimed, or None."""
        was = resources.c.owner.is_(None) if previous is None else resources.c.owner == previous
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(update(resources).where(self._where(kind, name) & was).values(owner=owner))
            if not result.rowcount:
                return None
            self._bump(conn)
            row = conn.execute(_GET, _one(kind, name)).mappings().first()
        return None if row is None else _record(row)

    @_reachable
    def delete(self, kind: str, name: str) -> bool:
        """Remove a record; True when one was removed."""
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(_DELETE, _one(kind, name))
            conn.execute(_TAGS_DELETE, _one(kind, name))
            if result.rowcount:
                self._bump(conn)
                self._counts.removed(kind)
        return bool(result.rowcount)

    @_reachable
    def prune(self, kind: str, statuses: Collection[str], before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete the records of ``kind`` in one of ``statuses`` last written before ``before`` (finished
        transform jobs past their retention), their tags with them, in transactions of at most ``batch``
        records; how many. Front ends on one database may prune at once: each delete names the status and the
        time again, so a record another front end deleted first, or one written since, is left alone."""
        c = resources.c
        where = (c.kind == kind) & c.status.in_(list(statuses)) & (c.modified_at < before)
        old = select(c.key).where(where).limit(batch)
        gone = 0
        while True:
            with self._lock, self._engine.begin() as conn:
                keys = list(
                    conn.execute(delete(resources).where(where & c.key.in_(old)).returning(c.key)).scalars()
                )
                if keys:
                    tags = resource_tags.c
                    conn.execute(delete(resource_tags).where((tags.kind == kind) & tags.key.in_(keys)))
                    self._bump(conn)
                    for _ in keys:
                        self._counts.removed(kind)
            gone += len(keys)
            if len(keys) < batch:
                return gone

    @_reachable
    def tags(self, kind: str, name: str) -> tuple[list[dict[str, str]], int] | None:
        """A resource's tags as AddTags and DeleteTags left them, with their version; None when neither
        ever changed them (its create call's Tags stand)."""
        row = self._read(lambda conn: conn.execute(_TAGS_GET, _one(kind, name)).first())
        return None if row is None else (list(row[0]), int(row[1]))

    @_reachable
    def set_tags(self, kind: str, name: str, tags: list[dict[str, str]], version: int | None) -> bool:
        """Write a resource's tags if they are still at ``version`` (None: never changed), compare-and-set:
        of two changes made at once, one is written and the other gets False (read again, retry)."""
        key = _one(kind, name)
        with self._lock:
            try:
                with self._engine.begin() as conn:
                    if version is None:
                        conn.execute(
                            insert(resource_tags).values(kind=kind, key=key["b_key"], tags=tags, version=1)
                        )
                        return True
                    result = conn.execute(
                        update(resource_tags)
                        .where(_TAGS_ONE & (resource_tags.c.version == version))
                        .values(tags=tags, version=version + 1),
                        key,
                    )
                    return bool(result.rowcount)
            except IntegrityError:
                return False

    @_reachable
    def page(self, kind: str, query: PageQuery) -> list[Record]:
        """Up to ``query.limit`` records of a kind, filtered, sorted and after the cursor in the database (a
        List* page costs the same with ten records or ten thousand). Orders strings by code point, as
        Python does, on every database."""
        c = resources.c
        where = c.kind == kind
        if query.name_contains is not None:
            where = where & c.key.contains(query.name_contains.lower(), autoescape=True)
        if query.status is not None:
            where = where & (c.status == query.status)
        if query.created_after is not None:  # "greater than or equal to", as SageMaker documents it
            where = where & (c.created_at >= query.created_after)
        if query.modified_after is not None:
            where = where & (c.modified_at > query.modified_after)
        for column, bound in (
            (c.created_at, query.created_before),
            (c.modified_at, query.modified_before),
        ):
            if bound is not None:
                where = where & (column < bound)
        binary = self._engine.dialect.name == "postgresql"  # SQLite compares bytes already
        key: Any = c.key.collate("C") if binary else c.key
        status: Any = func.coalesce(c.status, "")
        if binary:
            status = status.collate("C")
        orders: dict[str, list[Any]] = {"CreationTime": [c.created_at, key], "Status": [status, key]}
        columns = orders.get(query.sort_by, [key])
        if query.after is not None:
            where = where & _after(columns, list(query.after), query.descending)
        order = [col.desc() if query.descending else col.asc() for col in columns]
        # A page whose summaries need no document reads none (an audit's 100 models of 500 KB each cost
        # 220 ms a page, and held the server's memory)
        selected = resources.c if query.documents else [c for c in resources.c if c.name != "doc"]
        statement = select(*selected).where(where).order_by(*order).limit(query.limit)
        rows = self._read(lambda conn: conn.execute(statement).mappings().all())
        return [_record(row) for row in rows]

    @_reachable
    def having(self, kind: str, key_prefix: str, member: str, value: str) -> list[Record]:
        """The records of a kind whose name starts with ``key_prefix`` (any case) and whose document's
        top-level ``member`` is the string ``value``, oldest first. Compared in the database: no other
        record's document is read (CreateModelPackage's ClientToken among a group's versions, each up to
        0.5 MB, read and parsed all of them on the event loop)."""
        c = resources.c
        query = (
            select(resources)
            .where(
                (c.kind == kind)
                & c.key.startswith(key_prefix.lower(), autoescape=True)
                & (c.doc[member].as_string() == value)
            )
            .order_by(c.created_at, c.key)
        )
        rows = self._read(lambda conn: conn.execute(query).mappings().all())
        return [_record(row) for row in rows]

    @_reachable
    def list(self, kind: str, statuses: Collection[str] | None = None) -> list[Record]:
        """Every record of a kind (with one of ``statuses``, when given), oldest first."""
        query = select(resources).where(resources.c.kind == kind)
        if statuses is not None:
            query = query.where(resources.c.status.in_(list(statuses)))
        ordered = query.order_by(resources.c.created_at, resources.c.key)
        rows = self._read(lambda conn: conn.execute(ordered).mappings().all())
        return [_record(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._engine.dispose()

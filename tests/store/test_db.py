from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from pgserver import PostgresServer
from zeroscale.errors import ResourceLimitExceeded, TopicLimitExceeded
from zeroscale.store import AlreadyExists, Record, Store
from zeroscale.store.db import Limit, PageQuery, SizeLimit
from zeroscale.store.engine import make_engine


def rec(name: str, kind: str = "model", t: float = 1.0, status: str | None = None) -> Record:
    return Record(
        kind=kind,
        name=name,
        arn=f"arn:aws:sagemaker:us-east-1:000000000000:{kind}/{name.lower()}",
        created_at=t,
        modified_at=t,
        status=status,
        doc={"Name": name, "Nested": {"List": [1, 2.5, "x"], "Flag": True}},
    )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def test_insert_get_roundtrip(store: Store) -> None:
    r = rec("MyModel", t=1700000000.123456, status="InService")
    store.insert(r)
    assert store.get("model", "MyModel") == r
    assert store.get("endpoint", "MyModel") is None
    assert store.get("model", "other") is None


@pytest.mark.parametrize("lookup", ["MyModel", "mymodel", "MYMODEL", "mYmOdEl"])
def test_get_is_case_insensitive_and_keeps_spelling(store: Store, lookup: str) -> None:
    store.insert(rec("MyModel"))
    got = store.get("model", lookup)
    assert got is not None and got.name == "MyModel"


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        (("model", "abc"), ("model", "abc"), True),
        (("model", "abc"), ("model", "ABC"), True),
        (("model", "Abc"), ("model", "aBC"), True),
        (("model", "abc"), ("endpoint", "abc"), False),
        (("model", "abc"), ("model", "abcd"), False),
    ],
)
def test_unique_per_kind_case_insensitively(
    store: Store, first: tuple[str, str], second: tuple[str, str], clash: bool
) -> None:
    store.insert(rec(first[1], kind=first[0]))
    if clash:
        with pytest.raises(AlreadyExists):
            store.insert(rec(second[1], kind=second[0]))
    else:
        store.insert(rec(second[1], kind=second[0]))
        assert store.get(second[0], second[1]) is not None


def test_update_replaces_everything(store: Store) -> None:
    store.insert(rec("ep", kind="endpoint", status="Creating"))
    new = Record("endpoint", "EP", "arn:new", 1.0, 9.0, "InService", {"EndpointStatus": "InService"})
    store.update(new)
    assert store.get("endpoint", "ep") == new


def test_update_of_missing_record_is_a_noop(store: Store) -> None:
    store.update(rec("ghost"))
    assert store.get("model", "ghost") is None


def test_delete(store: Store) -> None:
    store.insert(rec("m1"))
    assert store.delete("model", "M1") is True
    assert store.get("model", "m1") is None
    assert store.delete("model", "m1") is False


def test_list_by_kind_oldest_first(store: Store) -> None:
    store.insert(rec("b", t=2.0))
    store.insert(rec("a", t=3.0))
    store.insert(rec("c", t=1.0))
    store.insert(rec("x", kind="endpoint-config"))
    assert [r.name for r in store.list("model")] == ["c", "b", "a"]
    assert [r.name for r in store.list("endpoint-config")] == ["x"]
    assert store.list("endpoint") == []


def test_persists_across_instances(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'state.db'}"
    first = Store(url)
    first.insert(rec("Keep", status="InService"))
    first.insert(rec("Gone"))
    first.delete("model", "gone")
    first.close()
    second = Store(url)
    try:
        assert second.list("model") == [rec("Keep", status="InService")]
        with pytest.raises(AlreadyExists):
            second.insert(rec("KEEP"))
    finally:
        second.close()


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'zeroscale.db'}")
    store.insert(rec("m"))
    assert (tmp_path / "zeroscale.db-wal").exists()
    store.close()


def test_in_memory_url_shares_one_database() -> None:
    s = Store("sqlite://")
    s.insert(rec("m"))
    assert s.get("model", "m") is not None
    s.close()


def test_concurrent_use_from_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                name = f"m-{i}-{j}"
                store.insert(rec(name, t=float(j)))
                got = store.get("model", name)
                assert got is not None
                got.status = "done"
                store.update(got)
            with pytest.raises(AlreadyExists):
                store.insert(rec("m-0-0"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    records = store.list("model")
    assert len(records) == 160
    assert all(r.status == "done" for r in records)


def test_update_if_status_is_a_compare_and_set(store: Store) -> None:
    store.insert(rec("ep", kind="endpoint", status="InService"))
    first = rec("ep", kind="endpoint", status="Updating")
    assert store.update(first, if_status="InService")
    second = rec("ep", kind="endpoint", status="Updating")
    second.owner = "another front end"
    assert not store.update(second, if_status="InService")  # it read InService too, but lost
    assert store.get("endpoint", "ep").owner is None  # type: ignore[union-attr]


def test_own_writes_tell_this_front_end_apart_from_the_others(store: Store, tmp_path: Path) -> None:
    """Both numbers grow together for this object's writes; another object's (another front end's) writes
    grow only the revision, also when interleaved with this one's."""
    other = Store(store._engine.url.render_as_string(hide_password=False))
    try:
        r0, own0 = store.revision_and_own_writes()
        store.insert(rec("a"))
        store.update(rec("a", t=2.0))
        r1, own1 = store.revision_and_own_writes()
        assert r1 - r0 == own1 - own0 == 2
        other.insert(rec("b"))
        store.delete("model", "a")
        r2, own2 = store.revision_and_own_writes()
        assert (r2 - r1, own2 - own1) == (2, 1)  # one of the two changes was not ours
        assert not store.delete("model", "a")  # nothing written: neither number moves
        assert store.revision_and_own_writes() == (r2, own2)
    finally:
        other.close()


def test_reads_see_every_write_committed_before_them(db_url: str) -> None:
    """A store reads on a connection it holds: each read sees what another front end (another store on the
    same database) committed since the last, and holds nothing back from the writes."""
    reader, writer = Store(db_url), Store(db_url)
    try:
        assert reader.get("model", "m") is None
        revision = reader.revision()
        writer.insert(rec("m", status="Creating"))
        assert reader.get("model", "m") == rec("m", status="Creating")
        assert reader.revision() > revision
        writer.update(rec("m", status="InService"))
        assert reader.get("model", "m") == rec("m", status="InService")
        assert [r.status for r in reader.list("model")] == ["InService"]
        reader.update(rec("m", status="Failed"))  # the reader's own writes, beside its held connection
        assert writer.get("model", "m") == rec("m", status="Failed")
        writer.delete("model", "m")
        assert reader.get("model", "m") is None
        assert reader.page("model", PageQuery("Name", False, 10)) == []
    finally:
        reader.close()
        writer.close()


def test_a_read_connection_the_database_dropped_is_replaced(postgres: PostgresServer) -> None:
    """PostgreSQL ends the connection a store holds for its reads (a restart, an idle timeout, an operator's
    pg_terminate_backend): the next read reconnects and answers, no error."""
    url = postgres.create_database()
    store = Store(url)
    try:
        store.insert(rec("m"))
        assert store.get("model", "m") == rec("m")
        admin = make_engine(url)
        with admin.connect() as conn:
            ended = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        admin.dispose()
        assert ended >= 1  # the held one among them
        assert store.get("model", "m") == rec("m")
        assert store.tags("model", "m") is None
    finally:
        store.close()


def test_a_deep_page_costs_the_database_what_the_first_page_does(tmp_path: Path) -> None:
    """A List* page after a cursor is a range seek on the (kind, created_at, key) index: SQLite's virtual
    machine runs about as many instructions for the last page of 2,000 endpoints as for the first. (With the
    cursor written as an OR of ANDs it walked the index from its start: ~100x more for the last page.)"""
    store = Store(f"sqlite:///{tmp_path / 'zeroscale.db'}")
    for i in range(2000):  # two endpoints per creation time: the cursor's key breaks the ties
        store.insert(rec(f"ep-{i:05d}", kind="endpoint", t=1000.0 + i // 2))
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0  # go on

    @event.listens_for(store._engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        conn.connection.dbapi_connection.set_progress_handler(step, 10)

    def cost(sort_by: str, after: tuple[Any, ...] | None) -> tuple[int, list[str]]:
        steps[0] = 0
        rows = store.page("endpoint", PageQuery(sort_by, True, 10, after=after, name_contains="ep-"))
        return steps[0], [r.name for r in rows]

    first, names = cost("CreationTime", None)
    assert names == [f"ep-{i:05d}" for i in range(1999, 1989, -1)]
    last, names = cost("CreationTime", (1005.0, "ep-00010"))  # the sort key of the 11th oldest
    assert names == [f"ep-{i:05d}" for i in range(9, -1, -1)]
    assert last <= 3 * first, (first, last)
    first, _ = cost("Name", None)
    last, names = cost("Name", ("ep-00010",))
    assert names == [f"ep-{i:05d}" for i in range(9, -1, -1)]
    assert last <= 3 * first, (first, last)
    store.close()


def test_the_sqlite_database_is_the_servers_alone(tmp_path: Path) -> None:
    # it holds models' Environment values (often secrets) and the audit trail: it was created 0644
    db = tmp_path / "data" / "zeroscale.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    engine.dispose()
    for path in tmp_path.glob("data/zeroscale.db*"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    db.chmod(0o644)  # an older server's file: made private at the next start
    make_engine(f"sqlite:///{db}").dispose()
    assert db.stat().st_mode & 0o777 == 0o600


def test_a_users_documents_are_bounded_in_bytes_across_kinds(db_url: str) -> None:
    """``user_size``: the bytes of each user's documents as created, every kind together, with the kind's own
    refusal where it has a per-user limit; the admin is not held to it; an update that grows a document
    counts nothing (its size is its create's); a delete makes room."""
    caller = ["AIDAALICE"]
    store = Store(
        db_url,
        user_limits={"topic": Limit(100, "topics", "--max-resources-per-user", TopicLimitExceeded)},
        user_size=SizeLimit(3000, "--max-resource-mb-per-user"),
        creator=lambda: caller[0],
    )
    doc = {"Blob": "x" * 980}  # 991 bytes as JSON

    def make(kind: str, name: str) -> None:
        store.insert(Record(kind, name, f"arn:{name}", 1.0, 1.0, "", doc))

    make("model", "a1")
    make("endpoint-config", "a2")
    make("model", "a3")  # 2,973 bytes
    with pytest.raises(ResourceLimitExceeded, match="'Size of resource documents per IAM user'"):
        make("model", "a4")
    with pytest.raises(TopicLimitExceeded, match="--max-resource-mb-per-user"):
        make("topic", "a4")
    assert store.get("model", "a4") is None and store.get("topic", "a4") is None
    caller[0] = "AIDABOB"
    make("model", "b1")
    caller[0] = ""
    for n in range(5):
        make("model", f"admin{n}")
    store.update(Record("model", "b1", "arn:b1", 1.0, 2.0, "", {"Blob": "y" * 5000}))
    caller[0] = "AIDABOB"
    make("model", "b2")
    caller[0] = "AIDAALICE"
    assert store.delete("model", "a1")
    make("model", "a4")
    store.close()


def test_a_users_limit_bounds_that_user_alone_and_survives_updates(tmp_path: Path) -> None:
    """Per-user quotas: each record remembers the IAM user it was made for (asked of ``creator`` at the
    insert); one user at its limit is refused, another user and the admin are not; an update keeps the
    creator; a delete makes room."""
    url = f"sqlite:///{tmp_path / 'zeroscale.db'}"
    caller = ["AIDAALICE"]
    store = Store(
        url,
        user_limits={"endpoint": Limit(2, "endpoints", "--max-resources-per-user")},
        creator=lambda: caller[0],
    )

    def make(name: str) -> Record:
        rec = Record("endpoint", name, f"arn:{name}", 1.0, 1.0, "InService", {})
        store.insert(rec)
        return rec

    first = make("a1")
    assert first.creator == "AIDAALICE"
    make("a2")
    with pytest.raises(ResourceLimitExceeded) as refused:
        make("a3")
    assert refused.value.message == (
        "The service limit 'Number of endpoints per IAM user' is 2 endpoints, with current utilization of 2 "
        "endpoints and a request delta of 1 endpoints: delete some, or have the operator raise it "
        "(--max-resources-per-user)."
    )
    assert store.get("endpoint", "a3") is None  # rolled back
    caller[0] = "AIDABOB"
    make("b1")
    caller[0] = ""  # the admin
    for n in range(3):
        assert make(f"admin{n}").creator is None
    store.update(Record("endpoint", "a1", "arn:a1", 1.0, 2.0, "Updating", {}))  # written without a creator
    again = store.get("endpoint", "a1")
    assert again is not None and again.creator == "AIDAALICE"
    caller[0] = "AIDAALICE"
    with pytest.raises(ResourceLimitExceeded):
        make("a3")
    assert store.delete("endpoint", "a2")
    make("a3")
    store.insert(Record("model", "free", "arn:m", 1.0, 1.0, "", {}))  # another kind: not limited
    assert Store(url).get("endpoint", "b1").creator == "AIDABOB"  # type: ignore[union-attr]


def test_a_kinds_limit_holds_across_two_stores_on_one_database(tmp_path: Path) -> None:
    """Two front ends (two stores) on one database: each follows its own writes, and near the limit every
    insert looks exactly, so the other's inserts count too; deleting makes room; other kinds are free."""
    url = f"sqlite:///{tmp_path / 'zeroscale.db'}"
    limits = {"endpoint": Limit(10, "endpoints", "--max-resources")}
    a, b = Store(url, limits), Store(url, limits)
    for n in range(5):
        a.insert(Record("endpoint", f"a{n}", f"arn:a{n}", 1.0, 1.0, "InService", {}))
        b.insert(Record("endpoint", f"b{n}", f"arn:b{n}", 1.0, 1.0, "InService", {}))
    for store in (a, b):
        with pytest.raises(ResourceLimitExceeded, match="'Number of endpoints' is 10 endpoints"):
            store.insert(Record("endpoint", "over", "arn:over", 1.0, 1.0, "InService", {}))
    with pytest.raises(AlreadyExists):  # a name taken says so, at the limit too
        a.insert(Record("endpoint", "b0", "arn:b0", 1.0, 1.0, "InService", {}))
    a.insert(Record("model", "free", "arn:m", 1.0, 1.0, "", {}))  # not limited
    assert b.delete("endpoint", "a0")
    a.insert(Record("endpoint", "over", "arn:over", 1.0, 1.0, "InService", {}))
    assert len(a.list("endpoint")) == 10


def test_a_limit_on_statuses_counts_only_records_in_them(tmp_path: Path) -> None:
    """Finished transform jobs are kept (until their retention): their quota counts the jobs in progress
    (or stopping), the account's and each user's, exactly at every insert; a job that ends makes room."""
    url = f"sqlite:///{tmp_path / 'zeroscale.db'}"
    caller = ["AIDAALICE"]
    running = ("InProgress", "Stopping")
    store = Store(
        url,
        limits={"transform-job": Limit(3, "jobs", "--max-jobs", statuses=running, free="stop one")},
        user_limits={"transform-job": Limit(2, "jobs", "--max-jobs-per-user", statuses=running)},
        creator=lambda: caller[0],
    )

    def start(name: str) -> Record:
        rec = Record("transform-job", name, f"arn:{name}", 1.0, 1.0, "InProgress", {})
        store.insert(rec)
        return rec

    first, _ = start("a1"), start("a2")
    with pytest.raises(ResourceLimitExceeded, match="per IAM user' is 2 jobs"):
        start("a3")
    caller[0] = "AIDABOB"
    start("b1")
    with pytest.raises(ResourceLimitExceeded) as refused:
        start("b2")  # the account's 3 are taken
    assert "'Number of jobs' is 3 jobs" in refused.value.message and "stop one" in refused.value.message
    assert store.get("transform-job", "b2") is None
    first.status = "Stopping"  # still holds its workers
    store.update(first)
    with pytest.raises(ResourceLimitExceeded):
        start("b2")
    for status in ("Stopped", "Completed"):
        first.status = status
        store.update(first)
    start("b2")  # a1 ended: room for one more
    caller[0] = "AIDAALICE"
    with pytest.raises(ResourceLimitExceeded, match="'Number of jobs' is 3"):
        start("a3")  # alice has one in progress, but the account has three
    b1 = store.get("transform-job", "b1")
    assert b1 is not None
    b1.status = "Completed"
    store.update(b1)
    start("a3")
    assert sorted(r.name for r in store.list("transform-job")) == ["a1", "a2", "a3", "b1", "b2"]


def test_a_page_of_summaries_reads_no_document(tmp_path: Path) -> None:
    """An audit's ListModels over models of 500 KB each read every document on the page (220 ms a page, held
    in the server's memory) to answer names, ARNs and times: such a page now reads the columns only."""
    store = Store(f"sqlite:///{tmp_path / 'zeroscale.db'}")
    for i in range(3):
        model = rec(f"m-{i}", kind="model", t=1000.0 + i)
        model.doc["Containers"] = [{"Environment": {"BIG": "x" * 100_000}}]
        store.insert(model)
    statements: list[str] = []

    @event.listens_for(store._engine, "before_cursor_execute")
    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append(statement)

    light = store.page("model", PageQuery("Name", False, 10, documents=False))
    assert [(r.name, r.created_at, r.doc) for r in light] == [(f"m-{i}", 1000.0 + i, {}) for i in range(3)]
    assert "doc" not in statements[-1].split("FROM")[0]
    whole = store.page("model", PageQuery("Name", False, 10))
    assert whole[0].doc["Containers"][0]["Environment"]["BIG"] == "x" * 100_000
    store.close()


def test_prune_deletes_old_records_in_the_statuses_alone_and_their_tags(store: Store) -> None:
    """Finished transform jobs past a time go, in transactions of at most ``batch``, with the tags AddTags
    gave them; a record in another status, of another kind, or written since, stays."""
    for i in range(5):
        store.insert(rec(f"done-{i}", "transform-job", t=100.0 + i, status="Completed"))
    store.insert(rec("failed", "transform-job", t=50.0, status="Failed"))
    store.insert(rec("running", "transform-job", t=10.0, status="InProgress"))
    store.insert(rec("recent", "transform-job", t=500.0, status="Stopped"))
    store.insert(rec("model", "model", t=10.0, status="Completed"))
    assert store.set_tags("transform-job", "done-0", [{"Key": "k", "Value": "v"}], None)
    assert store.set_tags("transform-job", "recent", [{"Key": "k", "Value": "v"}], None)
    revision = store.revision()
    assert store.prune("transform-job", ("Completed", "Failed", "Stopped"), 200.0, batch=2) == 6
    assert store.revision() > revision  # the other front ends learn of it through the change feed
    left = sorted(r.name for r in store.list("transform-job"))
    assert left == ["recent", "running"]
    assert store.get("model", "model") is not None
    assert store.tags("transform-job", "done-0") is None
    assert store.tags("transform-job", "recent") is not None
    revision = store.revision()
    assert store.prune("transform-job", ("Completed", "Failed", "Stopped"), 200.0) == 0  # idempotent
    assert store.revision() == revision  # nothing deleted, nothing announced
    store.insert(rec("done-0", "transform-job", t=300.0, status="InProgress"))  # the name is free again
    assert store.tags("transform-job", "done-0") is None


def test_two_stores_pruning_one_database_at_once_delete_each_record_once(db_url: str) -> None:
    """Two front ends' retentions running together: every old record is deleted, by one or the other, and
    neither fails."""
    first, second = Store(db_url), Store(db_url)
    try:
        for i in range(40):
            first.insert(rec(f"job-{i}", "transform-job", t=float(i), status="Completed"))
        first.insert(rec("young", "transform-job", t=1000.0, status="Completed"))
        counts: list[int] = []
        errors: list[BaseException] = []

        def prune(store: Store) -> None:
            try:
                counts.append(store.prune("transform-job", ("Completed",), 100.0, batch=3))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=prune, args=(s,)) for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sum(counts) == 40
        assert [r.name for r in second.list("transform-job")] == ["young"]
    finally:
        first.close()
        second.close()


def test_records_having_a_member_are_found_in_the_database(store: Store) -> None:
    """A record by a member of its document, among the names under a prefix (a model package group's
    versions by their ClientToken), on each database."""

    def version(name: str, token: str | None, t: float) -> Record:
        r = rec(name, kind="model-package", t=t)
        r.doc = {"ModelPackageVersion": name, **({"ClientToken": token} if token else {}), "Big": "x" * 1000}
        return r

    store.insert(version("G/1", "t-1", 1.0))
    store.insert(version("G/2", None, 2.0))
    store.insert(version("G/3", "t-2", 3.0))
    store.insert(version("G2/1", "t-2", 4.0))  # another group (its name starts the same)
    store.insert(version("g_/1", "t-2", 5.0))  # a LIKE wildcard in a name is a plain character
    got = store.having("model-package", "g/", "ClientToken", "t-2")
    assert [r.name for r in got] == ["G/3"]
    assert [r.name for r in store.having("model-package", "G/", "ClientToken", "t-1")] == ["G/1"]
    assert store.having("model-package", "g/", "ClientToken", "t-3") == []
    assert store.having("model", "g/", "ClientToken", "t-1") == []
    assert [r.name for r in store.having("model-package", "g_/", "ClientToken", "t-2")] == ["g_/1"]

"""The durable queue (real SQLite) and the dispatcher's expiry path (real S3): claims in arrival order per
endpoint, Running requests back to Queued after a restart, backlog figures, and an expired request failed at
its FailureLocation without reaching a worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import event

from s3server import SeaweedS3
from zeroscale.asyncinf.queue import (
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    AsyncRequest,
    QueueBounds,
    QueueFull,
    RequestQueue,
)
from zeroscale.asyncinf.s3io import S3Io
from zeroscale.asyncinf.service import MAX_ATTEMPTS, AsyncEndpoint, AsyncInference
from zeroscale.control.async_config import async_config
from zeroscale.events import EventBus


def _request(endpoint: str, n: int, created_at: float = 100.0, ttl_s: int = 21600) -> AsyncRequest:
    return AsyncRequest(
        id=0,
        inference_id=f"id-{n}",
        endpoint_name=endpoint,
        status="",
        input_location="s3://b/in",
        content_type="application/json",
        accept=None,
        custom_attributes=None,
        output_location=f"s3://b/out/id-{n}.out",
        failure_location=f"s3://b/failed/id-{n}-error.out",
        ttl_s=ttl_s,
        timeout_s=900,
        created_at=created_at + n,
    )


@pytest.fixture
def queue(tmp_path: Path) -> RequestQueue:
    return RequestQueue(f"sqlite:///{tmp_path / 'zeroscale.db'}")


def test_claims_in_order_per_endpoint_and_a_restart_requeues_running(
    queue: RequestQueue, tmp_path: Path
) -> None:
    for n in range(3):
        queue.enqueue(_request("Alpha", n))
    queue.enqueue(_request("beta", 9))
    first = queue.claim("alpha", now=200.0)
    assert first is not None and first.inference_id == "id-0" and first.status == RUNNING
    assert first.attempts == 1 and first.started_at == 200.0
    second = queue.claim("ALPHA", now=201.0)
    assert second is not None and second.inference_id == "id-1"
    queue.finish(second, COMPLETED, 202.0)
    backlog = {b.endpoint_name: b for b in queue.backlog()}
    assert (backlog["Alpha"].queued, backlog["Alpha"].running, backlog["Alpha"].oldest_queued_at) == (
        1,
        1,
        102.0,
    )
    assert backlog["beta"].queued == 1

    # A new server on the same database: what was Running runs again, counted as a second attempt.
    queue.close()
    again = RequestQueue(f"sqlite:///{tmp_path / 'zeroscale.db'}")
    assert again.requeue_running() == 1
    retried = again.claim("alpha", now=300.0)
    assert retried is not None and retried.inference_id == "id-0" and retried.attempts == 2
    assert again.find("id-1") is not None and again.find("id-1").status == COMPLETED  # type: ignore[union-attr]
    again.requeue(retried)  # no capacity: back without counting the attempt
    assert again.find("id-0").status == QUEUED  # type: ignore[union-attr]
    assert again.claim("alpha", now=301.0).attempts == 2  # type: ignore[union-attr]
    assert again.find("nope") is None


def test_an_inline_input_is_kept_in_its_row_until_the_request_finishes(db_url: str) -> None:
    """InvokeEndpointAsync's Body: durable with the request (a new server on the database runs it), read
    only by the claim that runs it, and gone from the row once the request finished. Bytes of every value
    survive (a NUL, invalid UTF-8) on SQLite and PostgreSQL alike."""
    queue = RequestQueue(db_url)
    inline = _request("alpha", 0)
    inline.input_location, inline.body = "", b'{"rows": [[1, 2]]}\x00\xff'
    queue.enqueue(inline)
    queue.close()
    queue = RequestQueue(db_url)
    assert queue.find("id-0").body is None  # type: ignore[union-attr]  # lookups leave it out
    assert [r.body for r in queue.recent("alpha", 10)] == [None]
    claimed = queue.claim("alpha", now=200.0)
    assert claimed is not None and claimed.body == inline.body and claimed.input_location == ""
    queue.requeue(claimed)
    claimed = queue.claim("alpha", now=201.0)
    assert claimed is not None and claimed.body == inline.body
    queue.finish(claimed, COMPLETED, 202.0)
    queue.requeue(claimed)  # only to read the row again through a claim
    again = queue.claim("alpha", now=203.0)
    assert again is not None and again.body is None
    queue.close()


def test_recent_lists_an_endpoints_latest_requests_newest_first(queue: RequestQueue) -> None:
    """What ``GET /zeroscale/v1/async?endpoint=NAME`` (the console's list) shows."""
    for n in range(4):
        queue.enqueue(_request("Alpha", n))
    queue.enqueue(_request("beta", 9))
    claimed = queue.claim("alpha", now=200.0)
    assert claimed is not None
    queue.finish(claimed, FAILED, 201.0, "boom")
    recent = queue.recent("ALPHA", 3)
    assert [(r.inference_id, r.status) for r in recent] == [(f"id-{n}", QUEUED) for n in (3, 2, 1)]
    assert [(r.inference_id, r.status, r.failure_reason) for r in queue.recent("alpha", 10)][-1] == (
        "id-0",
        FAILED,
        "boom",
    )
    assert [r.inference_id for r in queue.recent("beta", 10)] == ["id-9"]
    assert queue.recent("gamma", 10) == []


def test_finished_requests_are_deleted_once_past_their_retention(tmp_path: Path) -> None:
    """Queued and Running rows stay whatever their age; a finished one goes once the retention has passed
    since it finished, looked for at most every tenth of the retention (or hour)."""
    queue = RequestQueue(f"sqlite:///{tmp_path / 'zeroscale.db'}", retention_s=1000.0)
    for n in range(4):
        queue.enqueue(_request("alpha", n))
    done = [queue.claim("alpha", now=200.0) for _ in range(3)]
    assert all(done)
    queue.finish(done[0], COMPLETED, 300.0)  # type: ignore[arg-type]
    queue.finish(done[1], FAILED, 900.0)  # type: ignore[arg-type]
    assert queue.prune(now=1350.0) == 1  # finished before 350
    assert queue.find("id-0") is None and queue.find("id-1") is not None
    assert not queue.prune_due(1440.0) and queue.prune(now=1440.0) == 0  # not due yet: nothing looked at
    assert queue.prune(now=1000_000.0) == 1  # the failed one; the Running and Queued ones stay
    assert {r.inference_id for r in queue.recent("alpha", 10)} == {"id-2", "id-3"}
    keep = RequestQueue(f"sqlite:///{tmp_path / 'zeroscale.db'}")  # 0: kept
    assert not keep.prune_due(1e12) and keep.prune(1e12) == 0


def _by(req: AsyncRequest, creator: str | None) -> AsyncRequest:
    req.creator = creator
    return req


def test_each_bound_refuses_the_request_past_it_and_writes_nothing(tmp_path: Path) -> None:
    """Queued requests only count: an endpoint's, an IAM user's over all endpoints (not the admin's), and
    everyone's together; a refused request leaves no row, and a claim makes room again."""
    bounds = QueueBounds(per_endpoint=2, per_user=3, total=4)
    queue = RequestQueue(f"sqlite:///{tmp_path / 'zeroscale.db'}", bounds=bounds)
    queue.enqueue(_by(_request("Alpha", 0), "AIDABOB"))
    queue.enqueue(_by(_request("alpha", 1), "AIDABOB"))
    with pytest.raises(QueueFull) as full:
        queue.enqueue(_by(_request("ALPHA", 2), None))  # the admin too: the endpoint's bound is everyone's
    assert (full.value.scope, full.value.bound) == ("endpoint", 2)
    queue.enqueue(_by(_request("beta", 3), "AIDABOB"))
    with pytest.raises(QueueFull) as full:
        queue.enqueue(_by(_request("gamma", 4), "AIDABOB"))
    assert (full.value.scope, full.value.bound) == ("user", 3)
    queue.enqueue(_by(_request("gamma", 5), None))  # the admin's are not a user's
    with pytest.raises(QueueFull) as full:
        queue.enqueue(_by(_request("delta", 6), "AIDACAROL"))
    assert (full.value.scope, full.value.bound) == ("total", 4)
    assert {queue.find(f"id-{n}") is None for n in (2, 4, 6)} == {True}
    claimed = queue.claim("alpha", now=200.0)
    assert claimed is not None  # Running is not waiting: room for one more, in every bound
    queue.enqueue(_by(_request("delta", 7), "AIDACAROL"))
    with pytest.raises(QueueFull, match="total"):
        queue.enqueue(_by(_request("delta", 8), "AIDACAROL"))


def _statements(queue: RequestQueue) -> list[str]:
    """The SQL ``queue`` runs from now on."""
    seen: list[str] = []

    @event.listens_for(queue._engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    return seen


def test_far_from_its_bound_an_enqueue_counts_nothing_exactly(tmp_path: Path) -> None:
    """A bound of 3,000: the first enqueue counts the queue once, and the estimate is counted again after
    256 enqueues or a second; none reads the index up to the bound (``OFFSET``) while the queue is more
    than 1,024 from it."""
    now = [0.0]
    url = f"sqlite:///{tmp_path / 'zeroscale.db'}"
    queue = RequestQueue(url, bounds=QueueBounds(total=3000), clock=lambda: now[0])
    seen = _statements(queue)
    for n in range(300):
        queue.enqueue(_request(f"ep-{n % 7}", n))
    assert [s for s in seen if "OFFSET" in s] == []
    counts = [s for s in seen if "COUNT(" in s]
    assert len(counts) == 2  # the first enqueue's, and the 257th's
    queue.enqueue(_request("ep-0", 300))
    now[0] += 1.0
    queue.enqueue(_request("ep-0", 301))
    assert len([s for s in seen if "COUNT(" in s]) == 3  # a second on: counted again
    assert [s for s in seen if "OFFSET" in s] == []
    queue.close()


def test_near_its_bound_every_enqueue_counts_what_other_front_ends_queued(tmp_path: Path) -> None:
    """A bound of 1,500 (near from 476 queued): front end B fills it; front end A, whose first enqueue comes
    after, counts B's requests and is refused; and once A has an estimate, requests another front end queued
    meanwhile still count, at each of A's enqueues near the bound."""
    url = f"sqlite:///{tmp_path / 'zeroscale.db'}"
    a, b = (RequestQueue(url, bounds=QueueBounds(total=1500)) for _ in range(2))
    for n in range(1500):
        b.enqueue(_request("beta", n))
    with pytest.raises(QueueFull, match="total"):
        b.enqueue(_request("beta", 1500))
    with pytest.raises(QueueFull, match="total"):
        a.enqueue(_request("alpha", 1501))
    for _ in range(2):
        assert b.claim("beta", now=200.0) is not None
    a.enqueue(_request("alpha", 1502))  # A's estimate: 1,501, near: counted exactly, room for it
    b.enqueue(_request("beta", 1503))  # the last room, taken by B
    with pytest.raises(QueueFull, match="total"):
        a.enqueue(_request("alpha", 1504))
    a.close()
    b.close()


FRONT_ENDS, THREADS_EACH, RACE_WINDOW_S = 3, 2, 0.05


@pytest.mark.parametrize("scope", ["endpoint", "user", "total"])
def test_a_bound_holds_when_front_ends_enqueue_at_once(db_url: str, scope: str) -> None:
    """Several queues on one database (as several front ends are), each with threads enqueueing at the same
    moment, every insert holding its transaction open a moment before it counts: of six requests with room
    for two, two are queued and four refused (without the lock on what is counted, on PostgreSQL each
    counts before the others commit and all pass)."""
    bounds = {
        "endpoint": QueueBounds(per_endpoint=2),
        "user": QueueBounds(per_user=2),
        "total": QueueBounds(total=2),
    }[scope]
    queues = [RequestQueue(db_url, bounds=bounds) for _ in range(FRONT_ENDS)]
    for queue in queues:

        @event.listens_for(queue._engine, "after_cursor_execute")
        def pause(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().upper().startswith("INSERT INTO ASYNC_REQUESTS"):
                time.sleep(RACE_WINDOW_S)

    workers = [q for q in queues for _ in range(THREADS_EACH)]
    start = threading.Barrier(len(workers))
    queued: list[int] = []
    refused: list[str] = []

    def send(queue: RequestQueue, n: int) -> None:
        start.wait()
        endpoint = "alpha" if scope == "endpoint" else f"ep-{n}"
        try:
            queue.enqueue(_by(_request(endpoint, n), "AIDABOB"))
            queued.append(n)
        except QueueFull as full:
            refused.append(full.scope)

    threads = [threading.Thread(target=send, args=(q, n)) for n, q in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert (len(queued), refused) == (2, [scope] * (len(workers) - 2))
        assert sum(b.queued for b in queues[0].backlog()) == 2
    finally:
        for queue in queues:
            queue.close()


def _failing_service(
    queue: RequestQueue, s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bucket: str
) -> tuple[Any, Any, AsyncInference]:
    """An S3 client, a config writing to ``bucket`` and the service, for paths that only fail a request
    (they reach no fleet, endpoint or config); its wall clock stands at 1000."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    config = async_config(
        {"OutputConfig": {"S3OutputPath": f"s3://{bucket}/out", "S3FailurePath": f"s3://{bucket}/f"}}
    )
    service = AsyncInference(
        queue,
        cast(Any, None),
        cast(Any, None),
        S3Io(s3_server.endpoint_url),
        EventBus(),
        region="us-east-1",
        account_id="000000000000",
        payload_limit_bytes=1024,
        scratch_dir=tmp_path / "scratch",
        wall=lambda: 1000.0,
    )
    return s3, config, service


async def test_an_expired_request_fails_at_its_failure_location(
    queue: RequestQueue, s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3, config, service = _failing_service(queue, s3_server, monkeypatch, tmp_path, "expiry")
    req = _request("late", 0, created_at=0.0, ttl_s=60)
    req.failure_location = config.failure_location("id-0")
    queue.enqueue(req)
    claimed = queue.claim("late", now=1000.0)
    assert claimed is not None
    await service._serve(AsyncEndpoint("late", config, 1), claimed)
    text = s3.get_object(Bucket="expiry", Key="f/id-0-error.out")["Body"].read().decode()
    assert "RequestTTLSeconds (60 s)" in text
    done = queue.find("id-0")
    assert done is not None and done.status == FAILED and done.finished_at == 1000.0


async def test_a_request_runs_with_its_senders_and_writers_rights_as_they_are_then(
    queue: RequestQueue, s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Hours may pass in the queue: the input is read only if its sender may still read it, and nothing is
    written where the endpoint's configuration creator (or deployer) may no longer write."""
    s3, config, service = _failing_service(queue, s3_server, monkeypatch, tmp_path, "rights")
    s3.put_object(Bucket="rights", Key="in.json", Body=b"{}")
    asked: list[tuple[str | None, str, str]] = []

    def may(user: str | None, action: str, url: str) -> str | None:
        asked.append((user, action, url))
        return "revoked" if user in ("sender", "writer") else None

    service._may = may
    req = _request("late", 0, created_at=900.0)
    req.input_location, req.creator = "s3://rights/in.json", "sender"
    req.failure_location = config.failure_location("id-0")
    queue.enqueue(req)
    claimed = queue.claim("late", now=1000.0)
    assert claimed is not None
    await service._serve(AsyncEndpoint("late", config, 1, ("writer",)), claimed)
    done = queue.find("id-0")
    assert done is not None and done.status == FAILED
    assert done.failure_reason == "AccessDenied: revoked (and the failure was not written: revoked)"
    assert asked == [
        ("sender", "s3:GetObject", "s3://rights/in.json"),
        ("writer", "s3:PutObject", "s3://rights/f/id-0-error.out"),
    ]
    assert s3.list_objects_v2(Bucket="rights", Prefix="f/").get("KeyCount") == 0


async def test_the_sweep_fails_expired_requests_while_they_wait(
    queue: RequestQueue, s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A request whose RequestTTLSeconds ran out while it waited is failed (and written to its
    FailureLocation) by the dispatcher's sweep, though no worker ever takes it; the others wait on."""
    s3, config, service = _failing_service(queue, s3_server, monkeypatch, tmp_path, "sweep")
    for n, created_at, ttl_s in ((0, 0.0, 60), (1, 950.0, 60), (2, 0.0, 21600)):
        req = _request("busy", n, created_at=created_at, ttl_s=ttl_s)  # created at created_at + n
        req.failure_location = config.failure_location(f"id-{n}")
        queue.enqueue(req)
    await service._expire()  # no endpoint serves asynchronously: the sweep looks for nothing
    assert queue.find("id-0").status == QUEUED  # type: ignore[union-attr]
    service._async["busy"] = AsyncEndpoint("busy", config, 1)
    await service._expire()
    await service._background.join()
    text = s3.get_object(Bucket="sweep", Key="f/id-0-error.out")["Body"].read().decode()
    assert "RequestTTLSeconds (60 s)" in text
    assert [(r.inference_id, r.status) for r in queue.recent("busy", 10)] == [
        ("id-2", QUEUED),
        ("id-1", QUEUED),  # expires at 1011 (the wall clock stands at 1000)
        ("id-0", FAILED),
    ]


async def test_a_request_running_at_every_restart_fails_after_max_attempts(
    queue: RequestQueue, s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A payload that takes the server down each time it runs: after MAX_ATTEMPTS restarts it fails at its
    FailureLocation instead of running again (while a request put back for want of capacity never counts)."""
    s3, config, service = _failing_service(queue, s3_server, monkeypatch, tmp_path, "poison")
    req = _request("crashy", 0, created_at=900.0)
    req.failure_location = config.failure_location("id-0")
    queue.enqueue(req)
    for _ in range(MAX_ATTEMPTS):  # claimed, then the server dies with it Running
        claimed = queue.claim("crashy", now=1000.0)
        assert claimed is not None
        queue.requeue(claimed)  # a throttled try in between does not count
        assert queue.claim("crashy", now=1000.0) is not None
        assert queue.requeue_running() == 1
    last = queue.claim("crashy", now=1000.0)
    assert last is not None and last.attempts == MAX_ATTEMPTS + 1
    await service._serve(AsyncEndpoint("crashy", config, 1), last)
    text = s3.get_object(Bucket="poison", Key="f/id-0-error.out")["Body"].read().decode()
    assert f"{MAX_ATTEMPTS} times" in text and "not run again" in text
    done = queue.find("id-0")
    assert done is not None and done.status == FAILED
    assert done.attempts == MAX_ATTEMPTS  # the times it ran, as its reason says (the last claim ran nothing)

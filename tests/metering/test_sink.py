"""The sink and the ledger on a real SQLite file: buffered invocations, batches, flush on close, provisioned
intervals that survive clean restarts and crashes, and the free tier's start recorded once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import event

from zeroscale.events import EventBus, InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metering.ledger import ROWS_PER_INSERT, Closed, Ledger, Opened, insert_chunks
from zeroscale.metering.pricing import PriceTable
from zeroscale.metering.records import UsageRecord
from zeroscale.metering.service import Metering
from zeroscale.metering.sink import MeteringSink, usage_record


class FakeWall:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'zeroscale.db'}"


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    led = Ledger(db_url)
    yield led
    led.close()


def inv(
    i: int, *, model_s: float = 0.0123, worker: str = "w1", setup_s: float | None = None
) -> InvocationRecord:
    return InvocationRecord(
        endpoint="ep",
        variant="AllTraffic",
        worker_id=worker,
        at=1_700_000_000.0 + i,
        model_s=model_s,
        total_s=model_s + 0.002,
        bytes_in=10,
        bytes_out=3,
        status=200 if worker else 429,
        error_code="" if worker else "ThrottlingException",
        memory_mb=2048,
        setup_s=setup_s,
        provisioned=False,
    )


def variant(kind: str, at: float, provisioned: int = 2, name: str = "ep") -> VariantEvent:
    return VariantEvent(
        name, "AllTraffic", kind, at, memory_mb=1024, max_concurrency=5, provisioned=provisioned
    )


def test_invocations_wait_in_memory_until_a_flush(ledger: Ledger) -> None:
    sink = MeteringSink(ledger, flush_interval_s=60)
    bus = EventBus([sink])
    for i in range(3):
        bus.invocation(inv(i))
    bus.worker(WorkerEvent("ep", "AllTraffic", "w1", "started", 0.0))
    assert (sink.pending, ledger.count_invocations()) == (3, 0)
    assert sink.flush() == 3
    assert (sink.pending, ledger.count_invocations(), sink.written) == (0, 3, 3)
    assert sink.flush() == 0


def test_records_as_stored(ledger: Ledger) -> None:
    sink = MeteringSink(ledger)
    sink.invocation(inv(0, model_s=0.0121001, setup_s=0.04))
    sink.invocation(inv(1, worker=""))
    sink.flush()
    served, throttled = ledger.invocations()
    assert served.billed_ms == 13 and served.model_s == 0.0121001
    assert served.setup_s == 0.04 and served.memory_mb == 2048
    assert served.started_at == pytest.approx(served.at - 0.0141001)
    assert (served.bytes_in, served.bytes_out, served.status) == (10, 3, 200)
    assert (throttled.billed_ms, throttled.status, throttled.error_code) == (0, 429, "ThrottlingException")
    assert served.id < throttled.id


def test_every_field_round_trips(ledger: Ledger) -> None:
    rec = UsageRecord("ep", "v", "w9", 10.25, 11.5, 1.0004, 1001, 3072, 7, 9, 0.125, 424, "ModelError", True)
    ledger.write([rec, replace(rec, setup_s=None, provisioned=False)], [])
    stored = ledger.invocations()
    assert [replace(r, id=0) for r in stored] == [rec, replace(rec, setup_s=None, provisioned=False)]


def test_a_flush_larger_than_one_insert_keeps_every_row_and_its_order(db_url: str) -> None:
    """Records go to the database many rows to a statement: two full statements and a partial one, on
    both databases, come back exactly, in the order written."""
    led = Ledger(db_url)
    try:
        rec = UsageRecord("ep", "v", "w", 0.0, 0.0, 0.0, 0, 1024, 0, 0, None, 200, "", False)
        records = [
            replace(
                rec,
                variant=f"v{i % 3}",
                started_at=1_700_000_000.123456 + i / 7,
                at=1_700_000_000.5 + i / 3,
                model_s=i / 1e6,
                billed_ms=i,
                bytes_in=i * 3,
                setup_s=i / 11 if i % 2 else None,
                status=200 if i % 5 else 424,
                error_code="" if i % 5 else "ModelError",
                provisioned=bool(i % 4 == 0),
            )
            for i in range(2 * ROWS_PER_INSERT + 88)
        ]
        led.write(records, [])
        stored = led.invocations()
        assert [replace(r, id=0) for r in stored] == records
        assert [r.id for r in stored] == sorted(r.id for r in stored)
    finally:
        led.close()


def test_insert_chunks_cover_every_record_once_in_few_sizes() -> None:
    sizes = set()
    for count in range(3 * ROWS_PER_INSERT + 2):
        chunks = list(insert_chunks(count))
        assert [start for start, _ in chunks] == [
            sum(rows for _, rows in chunks[:i]) for i in range(len(chunks))
        ]
        assert sum(rows for _, rows in chunks) == count
        assert all(0 < rows <= ROWS_PER_INSERT for _, rows in chunks)
        sizes |= {rows for _, rows in chunks}
    assert len(sizes) == ROWS_PER_INSERT.bit_length()  # 256, 128, ..., 1


def test_flushes_of_any_size_run_only_a_few_statement_texts(ledger: Ledger) -> None:
    """The driver keeps each statement text compiled (a few hundred KB for hundreds of rows): flushes of
    every size from 1 to 300 records run no more than nine INSERT texts, and keep every record in order."""
    texts: set[str] = set()

    def seen(conn: object, cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT INTO usage_invocations"):
            texts.add(statement)

    event.listen(ledger._engine, "before_cursor_execute", seen)
    written = 0
    for count in range(1, 301):
        ledger.write([usage_record(inv(written + i)) for i in range(count)], [])
        written += count
    assert len(texts) <= ROWS_PER_INSERT.bit_length()
    stored = ledger.invocations()
    assert [r.at for r in stored] == [1_700_000_000.0 + i for i in range(written)]


def test_the_writer_thread_flushes_every_interval(ledger: Ledger) -> None:
    sink = MeteringSink(ledger, flush_interval_s=0.05)
    sink.start()
    try:
        sink.invocation(inv(0))
        deadline = time.monotonic() + 5
        while ledger.count_invocations() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ledger.count_invocations() == 1
    finally:
        sink.close()


def test_a_full_batch_is_written_without_waiting_for_the_interval(ledger: Ledger) -> None:
    sink = MeteringSink(ledger, flush_interval_s=600, max_batch=50)
    sink.start()
    try:
        for i in range(50):
            sink.invocation(inv(i))
        deadline = time.monotonic() + 5
        while ledger.count_invocations() < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ledger.count_invocations() == 50
    finally:
        sink.close()


def test_close_writes_everything_queued(ledger: Ledger) -> None:
    sink = MeteringSink(ledger, flush_interval_s=600)
    sink.start()
    for i in range(1234):
        sink.invocation(inv(i))
    sink.close()
    assert ledger.count_invocations() == 1234


def test_provisioned_intervals_open_close_and_heartbeat(ledger: Ledger) -> None:
    wall = FakeWall(105)
    sink = MeteringSink(ledger, wall=wall)
    sink.variant(variant("activated", 100))
    sink.flush()
    (iv,) = ledger.intervals()
    assert (iv.started_at, iv.ended_at, iv.seen_at, iv.concurrency, iv.memory_mb) == (100, None, 105, 2, 1024)
    wall.now = 110
    sink.flush()  # nothing queued, but the open interval is confirmed
    assert ledger.intervals()[0].seen_at == 110
    sink.variant(variant("deactivated", 130))
    sink.variant(variant("activated", 130, provisioned=0))  # an update to no provisioned concurrency
    sink.flush()
    (iv,) = ledger.intervals()
    assert (iv.started_at, iv.ended_at) == (100, 130)


def test_an_update_replaces_the_interval_without_overlap(ledger: Ledger) -> None:
    sink = MeteringSink(ledger, wall=FakeWall(200))
    sink.variant(variant("activated", 100, provisioned=1))
    sink.variant(variant("deactivated", 150))
    sink.variant(variant("activated", 150, provisioned=3))
    sink.variant(variant("activated", 170, provisioned=4))  # activated again without a deactivation
    sink.flush()
    got = [(i.concurrency, i.started_at, i.ended_at) for i in ledger.intervals()]
    assert got == [(1, 100, 150), (3, 150, 170), (4, 170, None)]


def test_provisioned_workers_up_are_what_is_metered(ledger: Ledger) -> None:
    """ProvisionedConcurrency 3, of which the host's memory lets 1 run for a while, then none, then all:
    each change of what is up ends the interval and opens one at the number up (none while none is)."""
    sink = MeteringSink(ledger, wall=FakeWall(300))
    sink.variant(variant("activated", 100, provisioned=3))
    sink.variant(variant("provisioned", 110, provisioned=1))
    sink.variant(variant("provisioned", 150, provisioned=0))
    sink.variant(variant("provisioned", 200, provisioned=3))
    sink.variant(variant("deactivated", 250))
    sink.flush()
    got = [(i.concurrency, i.started_at, i.ended_at) for i in ledger.intervals()]
    assert got == [(3, 100, 110), (1, 110, 150), (3, 200, 250)]


def test_endpoints_without_provisioned_concurrency_meter_nothing_while_idle(ledger: Ledger) -> None:
    sink = MeteringSink(ledger, wall=FakeWall(200))
    sink.variant(variant("activated", 100, provisioned=0))
    sink.flush()
    sink.variant(variant("deactivated", 150, provisioned=0))
    sink.flush()
    assert ledger.intervals() == [] and ledger.count_invocations() == 0


def test_clean_restart_neither_loses_nor_doubles_provisioned_time(db_url: str) -> None:
    wall = FakeWall(100)
    first = Ledger(db_url)
    sink = MeteringSink(first, wall=wall)
    sink.start()
    sink.variant(variant("activated", 100))
    wall.now = 160
    sink.variant(variant("deactivated", 160))  # the fleet deactivates every variant on shutdown
    sink.close()
    first.close()
    second = Ledger(db_url)
    sink = MeteringSink(second, wall=wall)
    sink.start()
    sink.variant(variant("activated", 300))  # the server re-activates on restart
    wall.now = 320
    sink.close()
    got = [(i.started_at, i.ended_at) for i in second.intervals()]
    assert got == [(100, 160), (300, None)]
    second.close()


def test_after_a_crash_an_interval_ends_at_its_last_heartbeat(db_url: str) -> None:
    wall = FakeWall(100)
    crashed = Ledger(db_url)
    sink = MeteringSink(crashed, wall=wall)
    sink.variant(variant("activated", 100))
    sink.flush()
    wall.now = 101
    sink.flush()
    wall.now = 102  # dies before the next flush: no close, no deactivation
    crashed.close()
    restarted = Ledger(db_url)
    sink = MeteringSink(restarted, wall=wall)
    sink.start()
    wall.now = 500
    sink.variant(variant("activated", 500))
    sink.close()
    got = [(i.started_at, i.ended_at) for i in restarted.intervals()]
    assert got == [(100, 101), (500, None)]
    restarted.close()


def test_intervals_query_by_overlap(ledger: Ledger) -> None:
    sink = MeteringSink(ledger, wall=FakeWall(1000))
    sink.variant(variant("activated", 100, name="a"))
    sink.variant(variant("deactivated", 200, name="a"))
    sink.variant(variant("activated", 300, name="b"))
    sink.flush()
    assert [i.endpoint for i in ledger.intervals(150, 250)] == ["a"]
    assert [i.endpoint for i in ledger.intervals(200, 250)] == []
    assert [i.endpoint for i in ledger.intervals(250, 2000)] == ["b"]
    assert [i.endpoint for i in ledger.intervals(None, 300)] == ["a"]


def test_first_resource_is_recorded_once_and_durably(db_url: str) -> None:
    wall = FakeWall(1000)
    metering = Metering(Ledger(db_url), PriceTable(), wall=wall)
    calls: list[str] = []
    ops = metering.track_creates(
        {"CreateModel": lambda p: calls.append("c") or {}, "DescribeModel": lambda p: calls.append("d") or {}}
    )
    ops["DescribeModel"]({})
    assert metering.first_resource_at is None
    ops["CreateModel"]({})
    wall.now = 2000
    ops["CreateModel"]({})
    assert calls == ["d", "c", "c"]
    assert metering.first_resource_at == 1000
    metering.close()
    again = Metering(Ledger(db_url), PriceTable(), wall=wall)
    assert again.first_resource_at == 1000
    assert again.ledger.mark_first_resource(3000) == 1000
    again.close()


def test_a_failed_create_does_not_start_the_free_tier(db_url: str) -> None:
    metering = Metering(Ledger(db_url), PriceTable(), wall=FakeWall(1000))

    def fails(params: object) -> dict[str, str]:
        raise ValueError("no")

    ops = metering.track_creates({"CreateEndpoint": fails})
    with pytest.raises(ValueError):
        ops["CreateEndpoint"]({})
    assert metering.first_resource_at is None
    metering.close()


def test_report_includes_what_is_still_queued(db_url: str) -> None:
    wall = FakeWall(1_700_000_100.0)
    metering = Metering(Ledger(db_url), PriceTable(), wall=wall)
    assert metering.sink is not None
    metering.sink.invocation(inv(0, model_s=1.0))
    rep = metering.report(group_by="endpoint", start=None, end=None)
    assert rep.reconciled and rep.total.invocations == 1 and rep.total.billed_ms == 1000
    metering.close()


def test_metering_off_has_no_sink(db_url: str) -> None:
    metering = Metering(Ledger(db_url), PriceTable(), enabled=False)
    bus = EventBus()
    metering.attach(bus)
    assert metering.sink is None and bus.sinks == []
    metering.start()
    metering.close()


def test_front_ends_sharing_a_ledger_close_and_refresh_only_their_own_intervals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = Ledger(url, "a"), Ledger(url, "b")
    a.write([], [Opened("ep", "v", 1024, 1, 10.0)])
    b.write([], [Opened("ep", "v", 1024, 1, 11.0)])  # B's share: A's interval stays open
    assert [(i.concurrency, i.ended_at) for i in a.intervals()] == [(1, None), (1, None)]
    b.write([], [Closed("ep", "v", 12.0)], heartbeat_at=None)
    a.write([], [], heartbeat_at=13.0)
    assert [(i.started_at, i.ended_at, i.seen_at) for i in a.intervals()] == [
        (10.0, None, 13.0),
        (11.0, 12.0, 11.0),
    ]
    # A restarted B closes nothing of A's while A refreshes them; a dead A's go once stale.
    b.write([], [Opened("ep", "v", 1024, 1, 14.0)])
    restarted, other = Ledger(url, "b"), Ledger(url, "c")
    assert restarted.close_dangling(stale_before=12.0) == 1  # B's own open one (it restarted)
    assert other.close_dangling(stale_before=14.0) == 1  # A's, not seen since 13
    assert all(i.ended_at is not None for i in a.intervals())
    for ledger in (a, b, restarted, other):
        ledger.close()


def test_the_workers_running_are_every_live_front_end_s_open_intervals(tmp_path: Path) -> None:
    """What an instance variant's CurrentInstanceCount counts: each front end's share that is up (a shortfall
    reopens the interval at the number up), not a closed interval, not another endpoint's, and not a share
    whose front end stopped refreshing it (dead)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = Ledger(url, "a"), Ledger(url, "b")
    a.write([], [Opened("ep", "A", 2048, 3, 10.0), Opened("ep", "B", 2048, 2, 10.0)])
    b.write([], [Opened("ep", "A", 2048, 3, 10.0), Opened("other", "A", 2048, 5, 10.0)])
    assert a.running("ep", seen_since=10.0) == {"A": 6, "B": 2}
    b.write([], [Opened("ep", "A", 2048, 1, 12.0)], heartbeat_at=12.0)  # B's share: 1 of its 3 up
    a.write([], [Closed("ep", "B", 12.0)], heartbeat_at=13.0)
    assert b.running("ep", seen_since=12.0) == {"A": 4}
    assert b.running("ep", seen_since=12.5) == {"A": 3}  # B stopped refreshing its own: left out
    assert (b.running("ep", 12.0, others=True), a.running("ep", 12.0, others=True)) == ({"A": 3}, {"A": 1})
    assert a.running("none", seen_since=0.0) == {}
    a.close()
    b.close()


def test_the_sink_is_handed_each_invocation_before_the_answer(ledger: Ledger) -> None:
    """The invoke path journals through ``invocation_before_answer``: the metering sink must be among the
    sinks it reaches (a crash right after an answer loses no usage)."""
    sink = MeteringSink(ledger)
    bus = EventBus([sink])
    bus.invocation_before_answer(inv(0))
    bus.invocation_after_answer(inv(1))
    assert sink.pending == 1

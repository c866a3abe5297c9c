"""The event bus: a sink that raises never fails the caller nor starves the other sinks."""

from __future__ import annotations

import logging

import pytest

from zeroscale.errors import UsageNotRecorded
from zeroscale.events import EventBus, InvocationRecord, VariantEvent, WorkerEvent

RECORD = InvocationRecord("ep", "v", "w1", 1.0, 0.01, 0.02, 10, 20, 200, "", 1024, None, False)
WORKER = WorkerEvent("ep", "v", "w1", "crashed", 1.0)
VARIANT = VariantEvent("ep", "v", "activated", 1.0)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def invocation(self, record: InvocationRecord) -> None:
        self.seen.append(record)

    def worker(self, event: WorkerEvent) -> None:
        self.seen.append(event)

    def variant(self, event: VariantEvent) -> None:
        self.seen.append(event)


class Raising:
    def invocation(self, record: InvocationRecord) -> None:
        raise RuntimeError("invocation sink bug")

    def worker(self, event: WorkerEvent) -> None:
        raise KeyError("worker sink bug")

    def variant(self, event: VariantEvent) -> None:
        raise ValueError("variant sink bug")


def test_a_raising_sink_is_isolated_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    before, after = Recorder(), Recorder()
    bus = EventBus([before, Raising(), after])
    with caplog.at_level(logging.ERROR, logger="zeroscale.events"):
        bus.invocation(RECORD)
        bus.worker(WORKER)
        bus.worker(WORKER)
        bus.variant(VARIANT)
    assert before.seen == after.seen == [RECORD, WORKER, WORKER, VARIANT]
    assert bus.failures == {("Raising", "invocation"): 1, ("Raising", "worker"): 2, ("Raising", "variant"): 1}
    assert "event sink Raising failed on a worker event" in caplog.text
    assert "worker sink bug" in caplog.text  # the traceback is in the log


def test_a_failing_sink_logs_its_first_failures_then_one_in_a_thousand(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus([Raising()])
    with caplog.at_level(logging.ERROR, logger="zeroscale.events"):
        for _ in range(2000):
            bus.invocation(RECORD)
    assert bus.failures[("Raising", "invocation")] == 2000
    assert len(caplog.records) == 10 + 2  # the first ten, then the 1000th and the 2000th


class Journal(Recorder):
    before_answer = True

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def invocation_before_answer(self, record: InvocationRecord) -> None:
        if self.full:
            raise UsageNotRecorded("the journal is full")
        self.invocation(record)


def test_an_answered_invocation_reaches_the_journal_before_the_answer_and_the_others_after() -> None:
    journal, metrics = Journal(), Recorder()
    bus = EventBus([metrics, journal])
    bus.invocation_before_answer(RECORD)
    assert (journal.seen, metrics.seen) == ([RECORD], [])
    bus.invocation_after_answer(RECORD)
    assert (journal.seen, metrics.seen) == ([RECORD], [RECORD])
    bus.invocation(RECORD)  # every sink at once
    assert (journal.seen, metrics.seen) == ([RECORD, RECORD], [RECORD, RECORD])
    bus.worker(WORKER)
    assert journal.seen[-1] == metrics.seen[-1] == WORKER


def test_an_invocation_the_journal_cannot_take_is_refused_before_its_answer() -> None:
    journal, broken = Journal(), Journal()
    broken.full = True
    bus = EventBus([broken, journal])
    with pytest.raises(UsageNotRecorded, match="full"):
        bus.invocation_before_answer(RECORD)
    assert journal.seen == [RECORD] and not bus.failures  # the others took it; refusing is no failure

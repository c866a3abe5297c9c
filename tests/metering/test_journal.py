"""The usage journal: what a crash kept out of the ledger is folded in at the next start, exactly once;
a torn last line is skipped; segments the ledger holds are deleted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from zeroscale.metering.journal import Journal
from zeroscale.metering.ledger import Ledger
from zeroscale.metering.sink import MeteringSink

from .test_sink import inv


def crashed_sink(ledger: Ledger, journal_dir: Path, n: int, flush_after: int) -> None:
    """A sink that journals ``n`` records, writes the first ``flush_after`` to the ledger, then 'dies'
    (its thread and queue are simply dropped, as SIGKILL would)."""
    sink = MeteringSink(ledger, flush_interval_s=3600, journal=Journal(journal_dir))
    sink.start()
    for i in range(flush_after):
        sink.invocation(inv(i))
    sink.flush()
    for i in range(flush_after, n):
        sink.invocation(inv(i))
    sink._closing = True  # stop its thread without the final flush
    sink._wake.set()


def test_a_crash_loses_nothing_and_replay_counts_once(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'db.sqlite'}")
    crashed_sink(ledger, tmp_path / "journal", n=50, flush_after=20)
    assert ledger.count_invocations() == 20

    sink = MeteringSink(ledger, flush_interval_s=3600, journal=Journal(tmp_path / "journal"))
    sink.start()  # folds the 30 the crash kept out
    assert ledger.count_invocations() == 50
    assert [r.at for r in ledger.invocations()] == [inv(i).at for i in range(50)]
    sink.invocation(inv(50))
    sink.close()
    again = MeteringSink(ledger, flush_interval_s=3600, journal=Journal(tmp_path / "journal"))
    again.start()  # a clean stop: nothing to fold, nothing counted twice
    assert ledger.count_invocations() == 51
    again.close()
    assert len(Journal(tmp_path / "journal").segments()) == 1  # the folded segments are gone
    ledger.close()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.start()
    for i in range(3):
        journal.append(inv(i))
    journal.close()
    path = tmp_path / "journal-00000001.log"
    with open(path, "ab") as f:
        f.write(b"ep\tAllTraffic\tw1\t1700")  # the crash came mid-write
    records, end = Journal(tmp_path).unfolded((0, 0))
    assert [r.at for r in records] == [inv(i).at for i in range(3)]
    assert end == (1, path.stat().st_size - len(b"ep\tAllTraffic\tw1\t1700"))


def test_segments_roll_over(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=200)
    journal.start()
    positions = [journal.append(inv(i)) for i in range(10)]
    assert len(journal.segments()) > 2
    records, _ = Journal(tmp_path).unfolded((0, 0))
    assert len(records) == 10
    journal.committed(positions[-1])
    assert journal.segments() == [positions[-1][0]]
    journal.close()


def test_every_field_reads_back_exactly(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.start()
    records = [
        replace(inv(1, setup_s=0.123456789012345, worker=""), provisioned=True, at=1_700_000_000.1 + 1e-7),
        replace(inv(2), status=424, error_code="ModelError", model_status=500),
    ]
    for r in records:
        journal.append(r)
    journal.close()
    back, _ = Journal(tmp_path).unfolded((0, 0))
    assert back == [replace(records[0]), replace(records[1], model_status=0)]  # model_status is not metered

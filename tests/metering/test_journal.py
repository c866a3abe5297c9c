"""The usage journal: what a crash kept out of the ledger is folded in at the next start, exactly once;
a torn last line is skipped; segments the ledger holds are deleted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from zeroscale.metering.journal import Journal
from zeroscale.metering.ledger import Ledger, position_key
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


def test_front_ends_on_one_database_each_replay_their_own_journal_exactly_once(
    db_url: str, tmp_path: Path
) -> None:
    """Each front end keeps its journal in its own data directory, so each has its own position in the
    ledger: another front end's flushes (here B's, after A's crash) do not move A's, and A's restart
    folds in exactly what its crash kept out (with one shared position, A replayed from B's)."""
    a, b = Ledger(db_url, "a"), Ledger(db_url, "b")
    crashed_sink(a, tmp_path / "a", n=30, flush_after=10)
    sink_b = MeteringSink(b, flush_interval_s=3600, journal=Journal(tmp_path / "b"))
    sink_b.start()
    for i in range(100, 105):
        sink_b.invocation(inv(i))
    sink_b.flush()
    assert a.count_invocations() == 15

    restarted = MeteringSink(Ledger(db_url, "a"), flush_interval_s=3600, journal=Journal(tmp_path / "a"))
    restarted.start()
    assert a.count_invocations() == 35
    ats = sorted(r.at for r in a.invocations())
    assert ats == sorted([inv(i).at for i in range(30)] + [inv(i).at for i in range(100, 105)])
    restarted.close()
    sink_b.close()
    assert b.count_invocations() == 35  # B's clean stop: nothing twice either
    a.close()
    b.close()


def test_the_position_written_before_front_ends_had_their_own_is_read_once(tmp_path: Path) -> None:
    """A ledger written before the positions were per front end has one bare position: the front end's
    first start after the upgrade takes it (its journal folded once), then writes its own."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    legacy = Ledger(url)  # no front end id: the bare key, as every front end wrote it before
    crashed_sink(legacy, tmp_path / "journal", n=12, flush_after=5)
    assert legacy.journal_position() is not None
    upgraded = Ledger(url, "a")
    assert upgraded.journal_position() == legacy.journal_position()
    sink = MeteringSink(upgraded, flush_interval_s=3600, journal=Journal(tmp_path / "journal"))
    sink.start()
    assert upgraded.count_invocations() == 12
    assert upgraded.journal_position() != legacy.journal_position()  # its own, now
    sink.close()
    assert len(position_key("f" * 64)) <= 64 and position_key("a") == "journal_position:a"
    legacy.close()
    upgraded.close()


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

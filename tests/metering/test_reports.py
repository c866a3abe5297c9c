"""Reports group priced usage and reconcile: the rows sum to the total of the raw records."""

from __future__ import annotations

import random
from decimal import Decimal as D
from decimal import localcontext

import pytest

from metering.builders import interval, t, usage
from zeroscale.metering.pricing import EXACT, PriceTable
from zeroscale.metering.records import ProvisionedInterval, UsageRecord
from zeroscale.metering.reports import GROUPS, build_report, parse_time, report_since

PRICES = PriceTable()
NOW = t("2025-03-10T00:00:00")


def report(
    records: list[UsageRecord],
    intervals: list[ProvisionedInterval],
    group_by: str,
    *,
    start: float | None = None,
    end: float = NOW,
    first: float | None = None,
    prices: PriceTable = PRICES,
) -> dict:  # type: ignore[type-arg]
    rep = build_report(records, intervals, prices, first, group_by=group_by, start=start, end=end, now=NOW)
    assert rep.reconciled
    return rep.to_json()


RECORDS = [
    usage(t("2025-01-31T10:00:00"), 0.5, endpoint="a", id=1, bytes_in=100, bytes_out=20, setup_s=0.05),
    usage(t("2025-01-31T11:00:00"), 1.5, endpoint="a", variant="v2", memory_mb=2048, id=2),
    usage(
        t("2025-02-01T09:00:00"),
        0.25,
        endpoint="b",
        memory_mb=6144,
        id=3,
        status=424,
        error_code="ModelError",
    ),
    usage(
        t("2025-02-01T09:00:01"),
        0.0,
        endpoint="b",
        id=4,
        status=429,
        error_code="ThrottlingException",
        worker_id="",
    ),
]
# 2 workers x 2 h over midnight into February, and an open one at 3072 MB since 2025-03-09T23:00
INTERVALS = [
    interval(t("2025-01-31T23:00:00"), t("2025-02-01T01:00:00"), endpoint="a", concurrency=2),
    interval(t("2025-03-09T23:00:00"), None, endpoint="b", memory_mb=3072),
]


def test_group_by_endpoint_hand_computed() -> None:
    rep = report(RECORDS, INTERVALS, "endpoint")
    rows = {r["key"]: r for r in rep["rows"]}
    assert list(rows) == ["a", "b"]
    a, b = rows["a"], rows["b"]
    assert (a["invocations"], a["errors"], a["cold_starts"]) == (2, 0, 1)
    assert D(a["billed_s"]) == D("2.0")
    assert D(a["setup_s"]) == D("0.05")  # shown, not billed
    # 0.5 s at 1024 MB + 1.5 s at 2048 MB; 120 bytes of data; 14400 worker-seconds at 1024 MB
    assert D(a["duration_cost"]) == D("0.5") * D("0.00002") + D("1.5") * D("0.00004") == D("0.00007")
    assert D(a["data_cost"]) == D(120) / D(2**30) * D("0.016")
    assert D(a["provisioned_s"]) == 14400
    assert D(a["provisioned_cost"]) == D("0.0576")
    assert (b["invocations"], b["errors"]) == (2, 2)
    assert D(b["duration_cost"]) == D("0.25") * D("0.00012")
    assert D(b["provisioned_s"]) == 3600  # open interval: until now
    assert D(b["provisioned_cost"]) == D(3600) * D("0.000012")
    total = rep["total"]
    assert total == rep["reconciliation"]["raw_total"]
    with localcontext(EXACT):
        assert D(total["cost"]) == sum(D(r["cost"]) for r in rep["rows"])
    assert total["invocations"] == rep["reconciliation"]["raw_records"] == 4


def test_group_by_variant() -> None:
    rep = report(RECORDS, INTERVALS, "variant")
    assert [r["key"] for r in rep["rows"]] == ["a/AllTraffic", "a/v2", "b/AllTraffic"]


def test_group_by_day_splits_provisioned_time_at_midnight() -> None:
    rep = report(RECORDS, INTERVALS, "day")
    rows = {r["key"]: r for r in rep["rows"]}
    assert list(rows) == ["2025-01-31", "2025-02-01", "2025-03-09"]
    assert D(rows["2025-01-31"]["provisioned_s"]) == 7200
    assert D(rows["2025-02-01"]["provisioned_s"]) == 7200
    assert D(rows["2025-01-31"]["provisioned_cost"]) == D("0.0288")
    assert rows["2025-01-31"]["invocations"] == 2
    assert D(rows["2025-03-09"]["provisioned_s"]) == 3600  # the open interval, up to now (midnight)


def test_group_by_month() -> None:
    rep = report(RECORDS, INTERVALS, "month")
    rows = {r["key"]: r for r in rep["rows"]}
    assert list(rows) == ["2025-01", "2025-02", "2025-03"]
    assert (D(rows["2025-01"]["provisioned_s"]), D(rows["2025-02"]["provisioned_s"])) == (7200, 7200)


def test_time_range_clips_records_and_intervals() -> None:
    rep = report(
        RECORDS, INTERVALS, "endpoint", start=t("2025-02-01T00:00:00"), end=t("2025-02-01T09:00:00.5")
    )
    rows = {r["key"]: r for r in rep["rows"]}
    assert D(rows["a"]["provisioned_s"]) == 7200  # only the hour after midnight, 2 workers
    assert rows["a"]["invocations"] == 0
    assert rows["b"]["invocations"] == 1  # the 09:00:01 record is after the end
    assert rep["start"] == "2025-02-01T00:00:00Z"


def test_free_tier_section_and_consumption() -> None:
    prices = PriceTable(free_tier_s_per_month=D(1))
    first = t("2025-01-15T00:00:00")
    rep = report(RECORDS, [], "month", first=first, prices=prices)
    rows = {r["key"]: r for r in rep["rows"]}
    # January: 0.5 s free, then 0.5 of the 1.5 s record free, 1.0 s billed at 2048 MB
    assert (D(rows["2025-01"]["free_s"]), D(rows["2025-01"]["charged_s"])) == (1, 1)
    assert D(rows["2025-01"]["duration_cost"]) == D("0.00004")
    assert D(rows["2025-02"]["free_s"]) == D("0.25")
    tier = rep["free_tier"]
    assert tier["first_resource_at"] == "2025-01-15T00:00:00Z"
    assert tier["ends_at"] == "2025-03-01T00:00:00Z"
    assert [(m["month"], D(m["used_s"]), D(m["remaining_s"])) for m in tier["months"]] == [
        ("2025-01", 1, 0),
        ("2025-02", D("0.25"), D("0.75")),
    ]


def test_a_report_starting_mid_month_counts_earlier_free_use_of_that_month() -> None:
    prices = PriceTable(free_tier_s_per_month=D(1))
    first = t("2025-01-01T00:00:00")
    records = [usage(t("2025-01-05T00:00:00"), 0.75, id=1), usage(t("2025-01-20T00:00:00"), 0.5, id=2)]
    start = t("2025-01-10T00:00:00")
    assert report_since(start) == t("2025-01-01T00:00:00")
    rep = report(records, [], "endpoint", start=start, first=first, prices=prices)
    (row,) = rep["rows"]
    assert row["invocations"] == 1
    assert (D(row["free_s"]), D(row["charged_s"])) == (D("0.25"), D("0.25"))
    assert D(rep["free_tier"]["months"][0]["used_s"]) == 1


@pytest.mark.parametrize("group_by", GROUPS)
def test_reports_reconcile_on_random_usage(group_by: str) -> None:
    rng = random.Random(group_by)
    base = t("2025-01-25T00:00:00")
    records = [
        usage(
            base + rng.uniform(0, 20 * 86400),
            rng.choice([0.0, rng.uniform(0, 3)]),
            endpoint=rng.choice("xyz"),
            variant=rng.choice(["A", "B"]),
            memory_mb=rng.choice([1024, 2048, 3072, 4096, 5120, 6144]),
            bytes_in=rng.randrange(10_000),
            bytes_out=rng.randrange(10_000),
            provisioned=rng.random() < 0.2,
            setup_s=rng.choice([None, rng.uniform(0, 0.2)]),
            id=i,
        )
        for i in range(500)
    ]
    intervals = []
    for _ in range(20):
        a = base + rng.uniform(0, 20 * 86400)
        b = a + rng.uniform(1, 5 * 86400)
        intervals.append(interval(a, b, endpoint=rng.choice("xyz"), concurrency=rng.randint(1, 4)))
    now = base + 21 * 86400
    rep = build_report(
        records,
        intervals,
        PriceTable(free_tier_s_per_month=D(300)),
        base,
        group_by=group_by,
        start=base + 86400,
        end=now,
        now=now,
    )
    assert rep.reconciled
    in_range = [r for r in records if r.at >= base + 86400]
    assert rep.total.invocations == len(in_range)
    assert rep.total.billed_ms == sum(r.billed_ms for r in in_range)
    assert rep.total.bytes_in == sum(r.bytes_in for r in in_range)
    assert rep.total.free_s + rep.total.charged_s == D(sum(r.billed_ms for r in in_range)) / 1000
    with localcontext(EXACT):
        assert sum((row.cost for row in rep.rows.values()), D(0)) == rep.raw_total.cost


def test_unknown_grouping() -> None:
    with pytest.raises(ValueError, match="group_by"):
        build_report([], [], PRICES, None, group_by="week", start=None, end=NOW, now=NOW)


def test_parse_time() -> None:
    assert parse_time("2025-01-31") == t("2025-01-31T00:00:00")
    assert parse_time("2025-01-31T12:30:00Z") == t("2025-01-31T12:30:00")
    assert parse_time("2025-01-31T14:30:00+02:00") == t("2025-01-31T12:30:00")
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_json_amounts_are_exact_text() -> None:
    # (2**30 - 1) bytes of data cost exactly 0.016 - 0.016 / 2**30 (28 significant digits); the JSON
    # carries them all, without trailing zeros or an exponent
    rec = usage(t("2025-01-31T10:00:00"), 0.001, bytes_in=2**30 - 1)
    rep = report([rec], [], "endpoint")
    assert rep["total"]["data_cost"] == "0.01599999998509883880615234375"
    assert rep["total"]["billed_s"] == "0.001" and rep["total"]["provisioned_s"] == "0"

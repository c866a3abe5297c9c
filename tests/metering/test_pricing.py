"""Billed durations, prices per memory size, data, and the free tier, against hand-computed Decimals."""

from __future__ import annotations

import json
import math
import random
from decimal import Decimal as D
from pathlib import Path

import pytest

from metering.builders import t, usage
from zeroscale.metering.pricing import (
    PriceTable,
    PriceTableError,
    billed_ms,
    free_tier_months,
    load_price_table,
    price_invocations,
    provisioned_cost,
)

PRICES = PriceTable()
GiB = 2**30


@pytest.mark.parametrize(
    ("model_s", "ms"),
    [(0.0, 0), (1e-9, 1), (0.001, 1), (0.0010001, 2), (0.1, 100), (0.3, 300), (0.1234, 124), (2.5, 2500)],
)
def test_billed_ms_rounds_up_to_the_millisecond(model_s: float, ms: int) -> None:
    # 0.3 * 1000 is 300.00000000000006 in binary floating point: a naive ceil would bill 301 ms.
    assert billed_ms(model_s) == ms


def test_billed_ms_is_the_ceiling_of_the_printed_decimal() -> None:
    rng = random.Random(3)
    near_whole = [k / 1000 + d for k in range(1, 3000, 7) for d in (0.0, 1e-10, -1e-10, 1e-12)]
    for model_s in [rng.uniform(0, 60) for _ in range(20_000)] + near_whole:
        assert billed_ms(model_s) == math.ceil(D(repr(model_s)) * 1000), model_s


@pytest.mark.parametrize(
    ("memory_mb", "cost"),
    [
        (1024, D("0.00005")),
        (2048, D("0.0001")),
        (3072, D("0.00015")),
        (4096, D("0.0002")),
        (5120, D("0.00025")),
        (6144, D("0.0003")),
    ],
)
def test_duration_cost_for_each_memory_size(memory_mb: int, cost: D) -> None:
    (p,), _ = price_invocations([usage(t("2025-05-01T00:00:00"), 2.5, memory_mb=memory_mb)], PRICES, None)
    assert p.billed_s == D("2.5")
    assert (p.free_s, p.charged_s) == (0, D("2.5"))
    assert p.duration_cost == cost
    assert p.cost == cost


def test_millisecond_granularity_and_data_processing() -> None:
    rec = usage(t("2025-05-01T00:00:00"), 0.1234, memory_mb=3072, bytes_in=GiB, bytes_out=GiB // 2)
    (p,), _ = price_invocations([rec], PRICES, None)
    assert p.billed_s == D("0.124")
    assert p.duration_cost == D("0.124") * D("0.000060") == D("0.00000744")
    assert p.data_bytes == GiB + GiB // 2
    assert p.data_cost == D("0.024")  # 1.5 GB at $0.016
    assert p.cost == D("0.02400744")


def test_small_payload_data_cost_is_exact() -> None:
    (p,), _ = price_invocations([usage(1e9, 0.01, bytes_in=1000, bytes_out=24)], PRICES, None)
    # 1024 bytes = 2**-20 GB; 0.016 / 2**20 is a finite decimal, kept exactly
    assert p.data_cost == D("0.016") / D(2**20) == D("1.52587890625E-8")


def test_throttled_request_bills_nothing() -> None:
    rec = usage(1e9, 0.0, bytes_in=500, status=429, error_code="ThrottlingException", worker_id="")
    (p,), _ = price_invocations([rec], PRICES, None)
    assert (p.billed_s, p.cost, p.data_bytes) == (0, 0, 0)


def test_model_error_after_processing_is_billed() -> None:
    rec = usage(1e9, 0.25, bytes_in=10, bytes_out=5, status=424, error_code="ModelError")
    (p,), _ = price_invocations([rec], PRICES, None)
    assert p.duration_cost == D("0.25") * D("0.000020")
    assert p.data_bytes == 15


def test_free_tier_split_mid_request() -> None:
    first = t("2025-01-10T12:00:00")
    before = usage(t("2025-01-20T00:00:00"), 149_999.9, memory_mb=2048, id=1)
    crossing = usage(t("2025-01-21T00:00:00"), 0.25, memory_mb=2048, id=2)
    after = usage(t("2025-01-22T00:00:00"), 1.0, memory_mb=2048, id=3)
    priced, used = price_invocations([after, crossing, before], PRICES, first)  # out of order on purpose
    assert [p.record.id for p in priced] == [1, 2, 3]
    a, b, c = priced
    assert (a.free_s, a.charged_s, a.duration_cost) == (D("149999.9"), 0, 0)
    # 0.1 s of allowance left: 0.1 s free, 0.15 s billed at 2048 MB
    assert (b.free_s, b.charged_s) == (D("0.1"), D("0.15"))
    assert b.duration_cost == D("0.0000060")
    assert (c.free_s, c.charged_s, c.duration_cost) == (0, D("1.0"), D("0.00004"))
    assert used == {"2025-01": D("150000"), "2025-02": 0}


def test_free_tier_is_two_calendar_months_from_the_first_resource() -> None:
    first = t("2025-01-31T23:00:00")
    assert free_tier_months(first, PRICES) == ["2025-01", "2025-02"]
    assert free_tier_months(None, PRICES) == []
    records = [
        usage(t("2025-01-31T22:59:59"), 1.0, id=1),  # before the first resource: not in the free tier
        usage(t("2025-01-31T23:30:00"), 1.0, id=2),
        usage(t("2025-02-28T23:59:59"), 2.0, id=3),
        usage(t("2025-03-01T00:00:00"), 4.0, id=4),  # third month: billed
    ]
    priced, used = price_invocations(records, PRICES, first)
    assert [p.free_s for p in priced] == [0, D("1.0"), D("2.0"), 0]
    assert [p.free_month for p in priced] == [None, "2025-01", "2025-02", None]
    assert [p.duration_cost for p in priced] == [D("0.000020"), 0, 0, D("0.000080")]
    assert used == {"2025-01": D("1.0"), "2025-02": D("2.0")}


def test_each_free_month_has_its_own_allowance() -> None:
    prices = PriceTable(free_tier_s_per_month=D(10))
    first = t("2025-06-15T00:00:00")
    records = [
        usage(t("2025-06-20T00:00:00"), 12.0, id=1),
        usage(t("2025-07-01T00:00:00"), 12.0, id=2),
        usage(t("2025-08-01T00:00:00"), 12.0, id=3),
    ]
    priced, _ = price_invocations(records, prices, first)
    assert [(p.free_s, p.charged_s) for p in priced] == [(10, 2), (10, 2), (0, 12)]


def test_free_tier_already_used_this_month_carries_in() -> None:
    prices = PriceTable(free_tier_s_per_month=D(10))
    first = t("2025-06-15T00:00:00")
    (p,), used = price_invocations(
        [usage(t("2025-06-20T00:00:00"), 4.0)], prices, first, free_used={"2025-06": D("7.5")}
    )
    assert (p.free_s, p.charged_s) == (D("2.5"), D("1.5"))
    assert used["2025-06"] == 10


def test_requests_served_by_provisioned_concurrency_do_not_use_the_free_tier() -> None:
    first = t("2025-01-01T00:00:00")
    (p,), used = price_invocations([usage(t("2025-01-02T00:00:00"), 1.0, provisioned=True)], PRICES, first)
    assert (p.free_s, p.duration_cost) == (0, D("0.000020"))
    assert used["2025-01"] == 0


@pytest.mark.parametrize(
    ("memory_mb", "rate"),
    [(1024, "0.000004"), (2048, "0.000008"), (3072, "0.000012"), (6144, "0.000024")],
)
def test_provisioned_cost(memory_mb: int, rate: str) -> None:
    # 2 workers for an hour
    assert provisioned_cost(D(3600), memory_mb, 2, PRICES) == D(7200) * D(rate)


def test_sizes_missing_from_the_table() -> None:
    prices = PriceTable(duration_per_s={1024: D("0.00002"), 4096: D("0.00008")})
    assert prices.duration_rate(2048) == D("0.00008")  # the next larger size listed
    assert prices.duration_rate(8192) == D("0.00016")  # past the largest: pro rata
    assert PRICES.duration_rate(16384) == D("0.00032")


def test_price_table_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "duration_per_second": {"1024": "0.00001", "2048": 0.1},
                "data_per_gb": 0.02,
                "free_tier": {"seconds_per_month": 0},
                "currency": "EUR",
            }
        )
    )
    prices = load_price_table(path)
    assert prices.duration_rate(1024) == D("0.00001")
    assert prices.duration_rate(2048) == D("0.1")  # a JSON number, read exactly
    assert prices.duration_rate(3072) == D("0.000060")  # not overridden
    assert prices.provisioned_rate(1024) == D("0.000004")
    assert prices.data_per_gb == D("0.02")
    assert (prices.free_tier_s_per_month, prices.free_tier_months, prices.currency) == (0, 2, "EUR")
    assert load_price_table(None) == PriceTable()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"durations": {}}, "unknown keys"),
        ({"duration_per_second": {"big": "1"}}, "not a memory size"),
        ({"duration_per_second": {"1024": "-1"}}, "non-negative"),
        ({"data_per_gb": "cheap"}, "non-negative number"),
        ({"data_per_gb": True}, "expected a number"),
        ({"free_tier": {"months": 1.5}}, "whole number"),
        ({"free_tier": {"days": 3}}, "free_tier takes"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_price_tables_are_rejected(tmp_path: Path, doc: object, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PriceTableError, match=message):
        load_price_table(path)


def test_unreadable_price_table(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="price table"):
        load_price_table(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PriceTableError):
        load_price_table(tmp_path / "bad.json")

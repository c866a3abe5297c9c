"""Usage and cost reports: group priced usage by endpoint, variant, day or month, and reconcile the rows
against the raw records. Pure: the caller passes the records, the prices and ``now``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from zeroscale.metering.pricing import (
    EXACT,
    ZERO,
    PricedInvocation,
    PriceTable,
    add_months,
    free_tier_months,
    month_of,
    month_start,
    price_invocations,
    provisioned_cost,
)
from zeroscale.metering.records import ProvisionedInterval, UsageRecord

GROUPS = ("endpoint", "variant", "day", "month")


@dataclass
class Totals:
    """Sums of usage and cost. ``provisioned_s`` counts worker-seconds (seconds x provisioned workers)."""

    invocations: int = 0
    errors: int = 0
    cold_starts: int = 0
    billed_ms: int = 0
    free_s: Decimal = ZERO
    charged_s: Decimal = ZERO
    setup_s: Decimal = ZERO  # recorded and shown, not billed
    bytes_in: int = 0
    bytes_out: int = 0
    provisioned_s: Decimal = ZERO
    duration_cost: Decimal = ZERO
    data_cost: Decimal = ZERO
    provisioned_cost: Decimal = ZERO

    @property
    def cost(self) -> Decimal:
        with localcontext(EXACT):
            return self.duration_cost + self.data_cost + self.provisioned_cost

    def add_invocation(self, p: PricedInvocation) -> None:
        rec = p.record
        self.invocations += 1
        self.errors += rec.status != 200
        self.billed_ms += rec.billed_ms
        self.free_s += p.free_s
        self.charged_s += p.charged_s
        if rec.setup_s is not None:
            self.cold_starts += 1
            self.setup_s += Decimal(repr(rec.setup_s))
        self.bytes_in += rec.bytes_in
        self.bytes_out += rec.bytes_out
        self.duration_cost += p.duration_cost
        self.data_cost += p.data_cost

    def add_provisioned(self, worker_s: Decimal, cost: Decimal) -> None:
        self.provisioned_s += worker_s
        self.provisioned_cost += cost

    def merge(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        return {
            "invocations": self.invocations,
            "errors": self.errors,
            "cold_starts": self.cold_starts,
            "billed_s": _s(Decimal(self.billed_ms).scaleb(-3)),
            "free_s": _s(self.free_s),
            "charged_s": _s(self.charged_s),
            "setup_s": _s(self.setup_s),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "provisioned_s": _s(self.provisioned_s),
            "duration_cost": _s(self.duration_cost),
            "data_cost": _s(self.data_cost),
            "provisioned_cost": _s(self.provisioned_cost),
            "cost": _s(self.cost),
        }


@dataclass(frozen=True)
class FreeTierMonth:
    month: str
    allowance_s: Decimal
    used_s: Decimal  # from the start of the month up to the report's end

    @property
    def remaining_s(self) -> Decimal:
        return max(ZERO, self.allowance_s - self.used_s)


@dataclass
class Report:
    group_by: str
    start: float | None
    end: float
    now: float
    prices: PriceTable
    first_resource_at: float | None
    rows: dict[str, Totals] = field(default_factory=dict)
    total: Totals = field(default_factory=Totals)  # the sum of the rows
    raw_total: Totals = field(default_factory=Totals)  # straight from the records, no grouping or splitting
    raw_records: int = 0
    raw_intervals: int = 0
    free_tier: list[FreeTierMonth] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        return self.total == self.raw_total and self.raw_total.invocations == self.raw_records

    def to_json(self) -> dict[str, Any]:
        months = free_tier_months(self.first_resource_at, self.prices)
        return {
            "group_by": self.group_by,
            "start": None if self.start is None else iso(self.start),
            "end": iso(self.end),
            "generated_at": iso(self.now),
            "currency": self.prices.currency,
            "rows": [{"key": key, **totals.to_json()} for key, totals in self.rows.items()],
            "total": self.total.to_json(),
            "reconciliation": {
                "raw_records": self.raw_records,
                "raw_provisioned_intervals": self.raw_intervals,
                "raw_total": self.raw_total.to_json(),
                "reconciled": self.reconciled,
            },
            "free_tier": {
                "first_resource_at": None if self.first_resource_at is None else iso(self.first_resource_at),
                "ends_at": iso(month_start(add_months(months[-1], 1))) if months else None,
                "seconds_per_month": _s(self.prices.free_tier_s_per_month),
                "months": [
                    {
                        "month": m.month,
                        "allowance_s": _s(m.allowance_s),
                        "used_s": _s(m.used_s),
                        "remaining_s": _s(m.remaining_s),
                    }
                    for m in self.free_tier
                ],
            },
            "prices": self.prices.to_json(),
        }


def build_report(
    records: Iterable[UsageRecord],
    intervals: Iterable[ProvisionedInterval],
    prices: PriceTable,
    first_resource_at: float | None,
    *,
    group_by: str,
    start: float | None,
    end: float,
    now: float,
) -> Report:
    """``records`` must include every record since the start of ``start``'s month (for the free tier's
    running consumption); only those with ``start <= at < end`` are reported. Open intervals end ``now``."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {GROUPS}")
    report = Report(group_by, start, end, now, prices, first_resource_at)
    priced, _ = price_invocations((r for r in records if r.at < end), prices, first_resource_at)
    lo = float("-inf") if start is None else start
    with localcontext(EXACT):
        free_by_month: dict[str, Decimal] = {}
        for p in priced:
            if p.free_month is not None:
                free_by_month[p.free_month] = free_by_month.get(p.free_month, ZERO) + p.free_s
            if p.record.at < lo:
                continue
            report.raw_records += 1
            report.raw_total.add_invocation(p)
            report.rows.setdefault(_key(group_by, p.record), Totals()).add_invocation(p)
        for interval in intervals:
            stop = interval.ended_at if interval.ended_at is not None else now
            a, b = max(interval.started_at, lo), min(stop, end)
            if b <= a:
                continue
            report.raw_intervals += 1
            whole = _seconds(a, b)
            report.raw_total.add_provisioned(
                whole * interval.concurrency,
                provisioned_cost(whole, interval.memory_mb, interval.concurrency, prices),
            )
            for key, pa, pb in _pieces(group_by, interval, a, b):
                seconds = _seconds(pa, pb)
                report.rows.setdefault(key, Totals()).add_provisioned(
                    seconds * interval.concurrency,
                    provisioned_cost(seconds, interval.memory_mb, interval.concurrency, prices),
                )
        report.rows = dict(sorted(report.rows.items()))
        for totals in report.rows.values():
            report.total.merge(totals)
        for month in free_tier_months(first_resource_at, prices):
            if month_start(month) < end and (start is None or month_start(add_months(month, 1)) > start):
                report.free_tier.append(
                    FreeTierMonth(month, prices.free_tier_s_per_month, free_by_month.get(month, ZERO))
                )
    return report


def _key(group_by: str, rec: UsageRecord) -> str:
    if group_by == "endpoint":
        return rec.endpoint
    if group_by == "variant":
        return f"{rec.endpoint}/{rec.variant}"
    if group_by == "day":
        return day_of(rec.at)
    return month_of(rec.at)


def _pieces(
    group_by: str, interval: ProvisionedInterval, a: float, b: float
) -> Iterator[tuple[str, float, float]]:
    """``[a, b)`` cut at UTC day or month boundaries for those groupings, with each piece's key."""
    if group_by == "endpoint":
        yield interval.endpoint, a, b
        return
    if group_by == "variant":
        yield f"{interval.endpoint}/{interval.variant}", a, b
        return
    while a < b:
        if group_by == "day":
            key = day_of(a)
            boundary = (
                datetime.fromtimestamp(a, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                + timedelta(days=1)
            ).timestamp()
        else:
            key = month_of(a)
            boundary = month_start(add_months(key, 1))
        piece_end = min(b, boundary)
        yield key, a, piece_end
        a = piece_end


def _seconds(a: float, b: float) -> Decimal:
    return Decimal(repr(b)) - Decimal(repr(a))


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """ISO 8601 date or date-time; without a zone it is UTC."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def report_since(start: float | None) -> float | None:
    """Where a report's records must start: the beginning of ``start``'s month (free tier is monthly)."""
    return None if start is None else month_start(month_of(start))


def _s(value: Decimal) -> str:
    return format(value.normalize(EXACT), "f")

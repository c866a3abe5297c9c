"""Prices and the arithmetic of a bill: pure functions over plain records, money in exact ``Decimal``.

Billing rules (the README's "Usage and cost" section says the same):
- Inference duration: the worker's processing time, rounded up to the millisecond, times the per-second
  price of the variant's memory size. A request that reached no worker (throttled) bills nothing.
- Cold-start setup time is recorded and shown, not billed (SageMaker bills inference duration, not
  container start-up).
- Data processed: request plus response bytes of every request that reached a worker, per GB (2**30 bytes).
- Provisioned concurrency: per second provisioned, per provisioned worker, by memory size.
- Free tier: ``seconds_per_month`` of on-demand duration in each of the first ``months`` calendar months
  (UTC), counting the month in which the first resource was created; consumed in the order usage happened
  (by the time each answer was sent), a request that crosses the allowance split into a free part and a
  billed part. Requests served within provisioned concurrency are not on-demand and do not use it.
A memory size missing from a table is priced at the next larger size listed, past the largest pro rata.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from zeroscale.metering.records import UsageRecord

GB = 2**30
# Wide enough that every sum and product of realistic usage is exact.
EXACT = Context(prec=80)
ZERO = Decimal(0)
_MS = Decimal(1000)


def billed_ms(model_s: float) -> int:
    """The worker's processing time rounded up to the millisecond, as the decimal the float prints as (so
    0.3 s bills 300 ms although 0.3 * 1000 is 300.00000000000006 in binary floating point)."""
    if model_s <= 0:
        return 0
    ms = model_s * 1000.0
    up = math.ceil(ms)
    if up - ms > 1e-6 and ms - (up - 1) > 1e-6:  # far from a whole millisecond: float error cannot matter
        return up
    with localcontext(EXACT):
        return math.ceil(Decimal(repr(model_s)) * _MS)


def _per_second(values: Mapping[int, str]) -> dict[int, Decimal]:
    return {mb: Decimal(v) for mb, v in values.items()}


DEFAULT_DURATION_PER_S = _per_second(
    {
        1024: "0.000020",
        2048: "0.000040",
        3072: "0.000060",
        4096: "0.000080",
        5120: "0.000100",
        6144: "0.000120",
    }
)
# zeroscale's default for provisioned concurrency: a fifth of the on-demand duration price per second
# provisioned (the ratio Lambda uses); set your own in a price table.
DEFAULT_PROVISIONED_PER_S = _per_second(
    {
        1024: "0.000004",
        2048: "0.000008",
        3072: "0.000012",
        4096: "0.000016",
        5120: "0.000020",
        6144: "0.000024",
    }
)
DEFAULT_DATA_PER_GB = Decimal("0.016")  # SageMaker's listed data-processing price (in + out)


@dataclass(frozen=True)
class PriceTable:
    duration_per_s: Mapping[int, Decimal] = field(default_factory=lambda: dict(DEFAULT_DURATION_PER_S))
    provisioned_per_s: Mapping[int, Decimal] = field(default_factory=lambda: dict(DEFAULT_PROVISIONED_PER_S))
    data_per_gb: Decimal = DEFAULT_DATA_PER_GB
    free_tier_s_per_month: Decimal = Decimal(150_000)
    free_tier_months: int = 2
    currency: str = "USD"

    def duration_rate(self, memory_mb: int) -> Decimal:
        return _rate(self.duration_per_s, memory_mb)

    def provisioned_rate(self, memory_mb: int) -> Decimal:
        return _rate(self.provisioned_per_s, memory_mb)

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "duration_per_second": {str(k): _s(v) for k, v in sorted(self.duration_per_s.items())},
            "provisioned_per_second": {str(k): _s(v) for k, v in sorted(self.provisioned_per_s.items())},
            "data_per_gb": _s(self.data_per_gb),
            "free_tier": {
                "seconds_per_month": _s(self.free_tier_s_per_month),
                "months": self.free_tier_months,
            },
        }


def _rate(table: Mapping[int, Decimal], memory_mb: int) -> Decimal:
    sizes = sorted(table)
    for size in sizes:
        if size >= memory_mb:
            return table[size]
    largest = sizes[-1]
    with localcontext(EXACT):
        return table[largest] * Decimal(memory_mb) / Decimal(largest)


def _s(value: Decimal) -> str:
    """A Decimal as plain text, never in exponent form."""
    return format(value.normalize(EXACT), "f")


class PriceTableError(ValueError):
    pass


def load_price_table(path: Path | None) -> PriceTable:
    """The default table, with whatever the JSON file at ``path`` overrides (every key optional):
    ``{"duration_per_second": {"1024": "0.00002", ...}, "provisioned_per_second": {...},
    "data_per_gb": "0.016", "free_tier": {"seconds_per_month": 150000, "months": 2}, "currency": "USD"}``.
    Numbers may be JSON strings or numbers; they are read as exact decimals."""
    if path is None:
        return PriceTable()
    try:
        doc = json.loads(Path(path).read_text(), parse_float=Decimal, parse_int=Decimal)
    except (OSError, ValueError) as exc:
        raise PriceTableError(f"price table {path}: {exc}") from None
    return parse_price_table(doc, str(path))


def parse_price_table(doc: Any, where: str = "price table") -> PriceTable:
    if not isinstance(doc, dict):
        raise PriceTableError(f"{where}: expected a JSON object")
    known = {"duration_per_second", "provisioned_per_second", "data_per_gb", "free_tier", "currency"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise PriceTableError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    base = PriceTable()
    free = doc.get("free_tier", {})
    if not isinstance(free, dict) or set(free) - {"seconds_per_month", "months"}:
        raise PriceTableError(f"{where}: free_tier takes seconds_per_month and months")
    months = _decimal(free.get("months", base.free_tier_months), f"{where}: free_tier.months")
    if months != months.to_integral_value():
        raise PriceTableError(f"{where}: free_tier.months must be a whole number")
    return PriceTable(
        duration_per_s={
            **base.duration_per_s,
            **_sizes(doc.get("duration_per_second", {}), f"{where}: duration_per_second"),
        },
        provisioned_per_s={
            **base.provisioned_per_s,
            **_sizes(doc.get("provisioned_per_second", {}), f"{where}: provisioned_per_second"),
        },
        data_per_gb=_decimal(doc.get("data_per_gb", base.data_per_gb), f"{where}: data_per_gb"),
        free_tier_s_per_month=_decimal(
            free.get("seconds_per_month", base.free_tier_s_per_month), f"{where}: free_tier.seconds_per_month"
        ),
        free_tier_months=int(months),
        currency=str(doc.get("currency", base.currency)),
    )


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise PriceTableError(f"{where}: expected a number, got {value!r}")
    try:
        out = Decimal(value) if isinstance(value, str | int | Decimal) else None
    except InvalidOperation:
        out = None
    if out is None or not out.is_finite() or out < 0:
        raise PriceTableError(f"{where}: expected a non-negative number, got {value!r}")
    return out


def _sizes(values: Any, where: str) -> dict[int, Decimal]:
    if not isinstance(values, dict):
        raise PriceTableError(f"{where}: expected an object of memory size (MB) -> price per second")
    out: dict[int, Decimal] = {}
    for key, value in values.items():
        if not str(key).isdigit() or int(key) <= 0:
            raise PriceTableError(f"{where}: {key!r} is not a memory size in MB")
        out[int(key)] = _decimal(value, f"{where}.{key}")
    return out


# ---- the free tier ----
def month_of(at: float) -> str:
    """The UTC calendar month of an epoch time, as ``YYYY-MM``."""
    d = datetime.fromtimestamp(at, UTC)
    return f"{d.year:04d}-{d.month:02d}"


def month_start(month: str) -> float:
    year, mon = (int(p) for p in month.split("-"))
    return datetime(year, mon, 1, tzinfo=UTC).timestamp()


def add_months(month: str, n: int) -> str:
    year, mon = (int(p) for p in month.split("-"))
    index = year * 12 + (mon - 1) + n
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def free_tier_months(first_resource_at: float | None, prices: PriceTable) -> list[str]:
    """The calendar months that carry a free-tier allowance: the month of the first resource and the next."""
    if first_resource_at is None or prices.free_tier_months <= 0:
        return []
    first = month_of(first_resource_at)
    return [add_months(first, i) for i in range(prices.free_tier_months)]


@dataclass(frozen=True, slots=True)
class PricedInvocation:
    record: UsageRecord
    billed_s: Decimal  # billed duration, exact to the millisecond
    free_s: Decimal  # the part the free tier covered
    charged_s: Decimal  # billed_s - free_s
    duration_cost: Decimal
    data_bytes: int
    data_cost: Decimal
    free_month: str | None  # the free-tier month it drew from, if any

    @property
    def cost(self) -> Decimal:
        return self.duration_cost + self.data_cost


def price_invocations(
    records: Iterable[UsageRecord],
    prices: PriceTable,
    first_resource_at: float | None,
    free_used: Mapping[str, Decimal] | None = None,
) -> tuple[list[PricedInvocation], dict[str, Decimal]]:
    """Price ``records`` in the order they happened (``at``, then ledger order), drawing on the free tier
    as it goes. ``free_used``: free-tier seconds already used per month before the first of these records.
    Returns the priced records (same order) and the free-tier seconds used per month after them."""
    months = free_tier_months(first_resource_at, prices)
    used = {m: Decimal(0) for m in months}
    used.update({m: v for m, v in (free_used or {}).items() if m in used})
    out: list[PricedInvocation] = []
    with localcontext(EXACT):
        for rec in sorted(records, key=lambda r: (r.at, r.id)):
            billed_s = Decimal(rec.billed_ms) / _MS
            free_s = ZERO
            month: str | None = None
            if (
                not rec.provisioned
                and billed_s > 0
                and first_resource_at is not None
                and rec.at >= first_resource_at
            ):
                candidate = month_of(rec.at)
                if candidate in used:
                    month = candidate
                    left = max(ZERO, prices.free_tier_s_per_month - used[month])
                    free_s = min(left, billed_s)
                    used[month] += free_s
            charged_s = billed_s - free_s
            data_bytes = rec.bytes_in + rec.bytes_out if rec.worker_id else 0
            out.append(
                PricedInvocation(
                    record=rec,
                    billed_s=billed_s,
                    free_s=free_s,
                    charged_s=charged_s,
                    duration_cost=charged_s * prices.duration_rate(rec.memory_mb),
                    data_bytes=data_bytes,
                    data_cost=Decimal(data_bytes) / GB * prices.data_per_gb,
                    free_month=month if free_s > 0 else None,
                )
            )
    return out, used


def provisioned_cost(seconds: Decimal, memory_mb: int, concurrency: int, prices: PriceTable) -> Decimal:
    """``seconds`` is wall time provisioned; the price is per worker-second."""
    with localcontext(EXACT):
        return seconds * concurrency * prices.provisioned_rate(memory_mb)

"""``zeroscale usage``: usage and cost by endpoint, variant, day or month (``GET /zeroscale/v1/usage``)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from zeroscale.cli.client import common_options, make_clients
from zeroscale.metering.pricing import PriceTableError, load_price_table

_MB = Decimal(1024 * 1024)
_COLUMNS = (
    "invocations",
    "errors",
    "cold_starts",
    "billed_s",
    "free_s",
    "charged_s",
    "setup_s",
    "bytes_in",
    "bytes_out",
    "provisioned_s",
    "duration_cost",
    "data_cost",
    "provisioned_cost",
    "cost",
)


def check_price_table(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """``serve --price-table``: reject a bad file before the server starts."""
    try:
        load_price_table(value)
    except PriceTableError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _q(value: str, places: int) -> str:
    """Exact decimal text rounded for display only."""
    return f"{Decimal(value):.{places}f}"


def table_lines(report: dict[str, Any]) -> list[str]:
    group = report["group_by"].upper()
    header = (group, "INVOCATIONS", "ERRORS", "BILLED_S", "FREE_S", "CHARGED_S", "SETUP_S", "DATA_MB",
              "PROVISIONED_S", f"COST_{report['currency']}")  # fmt: skip

    def cells(key: str, r: dict[str, Any]) -> tuple[str, ...]:
        data_mb = (Decimal(r["bytes_in"]) + Decimal(r["bytes_out"])) / _MB
        return (key, str(r["invocations"]), str(r["errors"]), _q(r["billed_s"], 3), _q(r["free_s"], 3),
                _q(r["charged_s"], 3), _q(r["setup_s"], 3), f"{data_mb:.3f}", _q(r["provisioned_s"], 1),
                _q(r["cost"], 8))  # fmt: skip

    rows = [header, *(cells(r["key"], r) for r in report["rows"]), cells("TOTAL", report["total"])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    total = report["total"]
    lines.append("")
    period = f"{report['start']} to {report['end']}" if report["start"] else f"up to {report['end']}"
    lines.append(
        f"cost {period}: duration {_q(total['duration_cost'], 8)} + data {_q(total['data_cost'], 8)}"
        f" + provisioned {_q(total['provisioned_cost'], 8)} = {_q(total['cost'], 8)} {report['currency']}"
    )
    tier = report["free_tier"]
    if tier["first_resource_at"] is None:
        lines.append("free tier: not started (no resource created yet)")
    else:
        used = "; ".join(
            f"{m['month']}: {_q(m['used_s'], 3)} of {_q(m['allowance_s'], 0)} s used" for m in tier["months"]
        )
        lines.append(f"free tier (until {tier['ends_at']}): {used or 'no free-tier month in this period'}")
    rec = report["reconciliation"]
    verdict = "reconciled" if rec["reconciled"] else "NOT RECONCILED"
    lines.append(
        f"{verdict}: the rows sum to the totals of {rec['raw_records']} raw invocation records and "
        f"{rec['raw_provisioned_intervals']} provisioned interval(s)"
    )
    return lines


def csv_text(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([report["group_by"], *_COLUMNS])
    for row in report["rows"]:
        writer.writerow([row["key"], *(row[c] for c in _COLUMNS)])
    writer.writerow(["TOTAL", *(report["total"][c] for c in _COLUMNS)])
    return out.getvalue()


@click.command()
@click.option(
    "--group-by",
    type=click.Choice(["endpoint", "variant", "day", "month"]),
    default="endpoint",
    show_default=True,
    help="One row per endpoint, per endpoint variant, per day or per month.",
)
@click.option("--start", default=None, help="ISO date or date-time (UTC unless it says otherwise).")
@click.option("--end", default=None, help="ISO date or date-time, exclusive (default: now).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="A table for people, CSV for spreadsheets, or the server's report as it sent it (JSON).",
)
@common_options
def usage(
    group_by: str,
    start: str | None,
    end: str | None,
    fmt: str,
    endpoint_url: str,
    region: str | None,
    data_dir: Path,
) -> None:
    """Usage and cost: billed inference duration (by the millisecond), data processed, provisioned
    concurrency, cold starts (shown, not billed) and the free tier, with totals that reconcile with the
    raw usage records."""
    query = {"group_by": group_by}
    if start:
        query["start"] = start
    if end:
        query["end"] = end
    body = make_clients(endpoint_url, region, data_dir).rest("GET", "usage", query)
    if fmt == "json":
        click.echo(body.decode().rstrip())
        return
    report = json.loads(body)
    if fmt == "csv":
        click.echo(csv_text(report), nl=False)
        return
    for line in table_lines(report):
        click.echo(line.rstrip())

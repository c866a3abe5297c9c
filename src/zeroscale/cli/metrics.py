"""``zeroscale metrics ENDPOINT``: an endpoint's recent one-minute history as a table, no Prometheus."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from zeroscale.cli.client import check_endpoint_exists, check_variant, common_options, make_clients
from zeroscale.cli.since import HELP, since_seconds
from zeroscale.metrics import catalog as m

Point = dict[str, Any]
# The summary: header, metric, statistic, format of the value.
_SUMMARY: tuple[tuple[str, str, str, Callable[[float], str]], ...] = (
    ("INVOCATIONS", m.INVOCATIONS, "Sum", lambda v: f"{v:.0f}"),
    ("4XX", m.INVOCATION_4XX_ERRORS, "Sum", lambda v: f"{v:.0f}"),
    ("5XX", m.INVOCATION_5XX_ERRORS, "Sum", lambda v: f"{v:.0f}"),
    ("MODEL_MS", m.MODEL_LATENCY, "Average", lambda v: f"{v / 1000:.2f}"),
    ("OVERHEAD_MS", m.OVERHEAD_LATENCY, "Average", lambda v: f"{v / 1000:.2f}"),
    ("COLD_STARTS", m.MODEL_SETUP_TIME, "SampleCount", lambda v: f"{v:.0f}"),
    ("SETUP_MS", m.MODEL_SETUP_TIME, "Average", lambda v: f"{v / 1000:.1f}"),
    ("MEM_%_MAX", m.MEMORY_UTILIZATION, "Maximum", lambda v: f"{v:.1f}"),
    ("CONCURRENCY_MAX", m.CONCURRENT_EXECUTIONS_UTILIZATION, "Maximum", lambda v: f"{v:.2f}"),
    ("WORKERS_MAX", m.WORKERS, "Maximum", lambda v: f"{v:.0f}"),
    ("QUEUE_MAX", m.QUEUE_DEPTH, "Maximum", lambda v: f"{v:.0f}"),
    ("PROVISIONED_INV", m.PROVISIONED_INVOCATIONS, "Sum", lambda v: f"{v:.0f}"),
    ("SPILLOVER_INV", m.SPILLOVER_INVOCATIONS, "Sum", lambda v: f"{v:.0f}"),
)


def _when(minute: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(minute))


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.4g}"


def summary_rows(points: Sequence[Point]) -> list[tuple[str, ...]]:
    """One row per (minute, variant) with each metric's usual statistic; columns no point has are left out."""
    cells: dict[tuple[int, str], dict[str, Point]] = {}
    for p in points:
        cells.setdefault((p["Minute"], p["VariantName"]), {})[p["MetricName"]] = p
    present = {p["MetricName"] for p in points}
    columns = [c for c in _SUMMARY if c[1] in present]
    rows: list[tuple[str, ...]] = [("TIME", "VARIANT", *(c[0] for c in columns))]
    for (minute, variant), by_metric in sorted(cells.items()):
        values = []
        for _, metric, stat, fmt in columns:
            point = by_metric.get(metric)
            values.append("-" if point is None else fmt(float(point[stat])))
        rows.append((_when(minute), variant, *values))
    return rows


def detail_rows(points: Sequence[Point]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("TIME", "VARIANT", "METRIC", "UNIT", "SUM", "COUNT", "AVG", "MIN", "MAX")]
    for p in points:
        rows.append(
            (
                _when(p["Minute"]),
                p["VariantName"],
                p["MetricName"],
                p["Unit"],
                _number(p["Sum"]),
                str(p["SampleCount"]),
                _number(p["Average"]),
                _number(p["Minimum"]),
                _number(p["Maximum"]),
            )
        )
    return rows


def _echo_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@click.command()
@click.argument("endpoint")
@click.option("--since", default="30m", show_default=True, help=HELP)
@click.option(
    "--metric",
    "metric_names",
    multiple=True,
    type=click.Choice([info.name for info in m.CATALOG]),
    help="Show every statistic of this metric (repeatable) instead of the summary.",
)
@click.option("--variant", default=None, help="Only this production variant.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON answer.")
@common_options
def metrics(
    endpoint: str,
    since: str,
    metric_names: tuple[str, ...],
    variant: str | None,
    as_json: bool,
    endpoint_url: str,
    region: str | None,
    data_dir: Path,
) -> None:
    """An endpoint's one-minute metrics (SageMaker's names): invocations, errors, latency, cold starts,
    memory and concurrency utilization. Latencies in the summary are milliseconds; --metric shows SageMaker's
    units (microseconds, percent)."""
    query = {"endpoint": endpoint, "since": since_seconds(since, time.time())}
    if metric_names:
        query["metric"] = ",".join(metric_names)
    clients = make_clients(endpoint_url, region, data_dir)
    if variant:
        check_variant(clients, endpoint, variant)
        query["variant"] = variant
    body = clients.rest("GET", "metrics", query)
    points: list[Point] = json.loads(body)["Datapoints"]
    if not points:  # a deleted endpoint's history is still shown; nothing at all: does it exist?
        check_endpoint_exists(clients, endpoint)
    if as_json:
        click.echo(body.decode())
        return
    if not points:
        click.echo(f"No metrics for {endpoint} in that time (--since {since}).")
        return
    _echo_table(detail_rows(points) if metric_names else summary_rows(points))

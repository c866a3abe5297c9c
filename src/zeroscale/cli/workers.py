"""``zeroscale workers [ENDPOINT]``: the live workers of every live front end, asked through the one at
--endpoint-url. A front end that did not answer it is named on stderr (the listing shows the others' workers
and the command succeeds: it lists what it could reach, and says what it could not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from zeroscale.cli.client import check_endpoint_exists, common_options, make_clients

_COLUMNS = (
    ("ENDPOINT", "EndpointName"),
    ("VARIANT", "VariantName"),
    ("WORKER", "WorkerId"),
    ("NODE", "Node"),
    ("STATE", "State"),
    ("PID", "Pid"),
    ("RSS_MB", "ResidentMB"),
)


def rows(workers: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    table: list[tuple[str, ...]] = [tuple(header for header, _ in _COLUMNS)]
    for w in workers:
        cells = ["-" if w.get(key) is None else str(w[key]) for _, key in _COLUMNS]
        if w.get("Draining"):
            cells[4] += " (draining)"
        table.append(tuple(cells))
    return table


@click.command()
@click.argument("endpoint", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON answer.")
@common_options
def workers(
    endpoint: str | None, as_json: bool, endpoint_url: str, region: str | None, data_dir: Path
) -> None:
    """Live workers (starting, idle, busy, stopping) of every endpoint, or of ENDPOINT: endpoint, variant,
    worker id, node, state, pid and resident memory. With several front ends, every live one's; one that
    does not answer is named on stderr."""
    query = {"endpoint": endpoint} if endpoint else None
    clients = make_clients(endpoint_url, region, data_dir)
    body = clients.rest("GET", "workers", query)
    answer = json.loads(body)
    found: list[dict[str, Any]] = answer["Workers"]
    for missing in answer.get("Unreachable") or []:  # a server from before the field answers without it
        click.secho(
            f"warning: front end {missing['Frontend']} at {missing['Url']} did not answer: its workers are "
            "not listed",
            fg="yellow",
            err=True,
        )
    if not found and endpoint:
        check_endpoint_exists(clients, endpoint)
    if as_json:
        click.echo(body.decode())
        return
    if not found:
        click.echo(f"No live workers{f' for {endpoint}' if endpoint else ''}.")
        return
    table = rows(found)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

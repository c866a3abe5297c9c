"""``zeroscale audit``: the control-plane calls the server recorded (``GET /zeroscale/v1/audit``)."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import click

from zeroscale.cli.client import common_options, make_clients
from zeroscale.cli.since import HELP, since_seconds

_COLUMNS = ("TIME", "USER", "ACCESS_KEY", "SOURCE", "ACTION", "RESOURCE", "OUTCOME", "ERROR")


@click.command()
@click.option("--since", default=None, help=HELP)
@click.option("--user", default=None, help="Only this IAM user's calls ('admin' for the admin credentials).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True, help="Newest N.")
@click.option("--json", "as_json", is_flag=True, help="The events as JSON.")
@common_options
def audit(
    since: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
    endpoint_url: str,
    region: str | None,
    data_dir: Path,
) -> None:
    """Who did what: every control-plane call (SageMaker, IAM, logs, zeroscale's own API), with its caller,
    source address, resource and outcome, oldest first."""
    query = {"limit": str(limit)}
    if since:
        query["since"] = since_seconds(since, time.time())
    if user:
        query["user"] = user
    body = make_clients(endpoint_url, region, data_dir).rest("GET", "audit", query)
    events = json.loads(body)["Events"]
    if as_json:
        click.echo(json.dumps(events, indent=1))
        return
    if not events:
        who = f" by user {user!r}" if user else ""
        when = f" since {since}" if since else ""
        hint = " (user names are case-sensitive; `zeroscale audit` lists every caller)" if user else ""
        click.echo(f"No control-plane calls{who} recorded{when}{hint}.", err=True)
        return
    rows = [_COLUMNS] + [
        (
            datetime.datetime.fromtimestamp(e["at"], datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4]
            + "Z",
            e["user"] or "-",
            e["access_key_id"] or "-",
            e["source"] or "-",
            e["action"],
            e["resource"],
            e["outcome"],
            e["error_code"] or "-",
        )
        for e in events
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

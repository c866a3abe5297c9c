"""``zeroscale logs ENDPOINT``: an endpoint's log events (worker output and platform events), like
``aws logs tail``: FilterLogEvents on the group ``/aws/sagemaker/Endpoints/<ENDPOINT>``, printed as
``<time> <stream> <message>``; ``--follow`` polls for new events until Ctrl-C."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from zeroscale.cli.client import (
    _fail,
    check_endpoint_exists,
    check_variant,
    common_options,
    described,
    make_clients,
)
from zeroscale.cli.since import parse_since

GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
# Re-read this far behind the newest event seen when following: events written a little late (by another
# writer of the stream) are not missed, and the event ids already printed are not printed again.
OVERLAP_MS = 10_000


def quote(text: str) -> str:
    """A filter pattern that matches events containing ``text`` as it is."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_event(event: dict[str, Any]) -> str:
    ms = int(event["timestamp"])
    when = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z {event['logStreamName']} {event['message']}"


def fetch(client: Any, query: dict[str, Any], start_ms: int | None) -> list[dict[str, Any]]:
    """Every event matching ``query`` from ``start_ms`` on, following nextToken."""
    args = dict(query)
    if start_ms is not None:
        args["startTime"] = start_ms
    events: list[dict[str, Any]] = []
    while True:
        resp = client.filter_log_events(**args)
        events.extend(resp.get("events", []))
        token = resp.get("nextToken")
        if not token:
            return events
        args["nextToken"] = token


def follow(
    client: Any,
    query: dict[str, Any],
    start_ms: int | None,
    emit: Callable[[dict[str, Any]], None],
    interval_s: float,
) -> None:
    """Print new events every ``interval_s`` forever (the caller stops it with Ctrl-C)."""
    seen: dict[str, int] = {}  # event id -> timestamp, for the events inside the overlap window
    newest: int | None = None
    while True:
        since = start_ms if newest is None else max(0, newest - OVERLAP_MS)
        for event in fetch(client, query, since):
            event_id = str(event.get("eventId"))
            if event_id in seen:
                continue
            seen[event_id] = int(event["timestamp"])
            newest = max(newest or 0, int(event["timestamp"]))
            emit(event)
        if newest is not None:
            horizon = newest - OVERLAP_MS
            seen = {k: ts for k, ts in seen.items() if ts >= horizon}
        time.sleep(interval_s)


@click.command()
@click.argument("endpoint")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--since", help="Only events since then: 10m, 2h, 1d ago, or an ISO 8601 time.")
@click.option("--filter", "text", help="Only events that contain TEXT.")
@click.option("--variant", help="Only the streams of this production variant.")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between polls.",
)
@common_options
def logs(
    endpoint: str,
    follow_: bool,
    since: str | None,
    text: str | None,
    variant: str | None,
    interval: float,
    endpoint_url: str,
    region: str | None,
    data_dir: Path,
) -> None:
    """Print an endpoint's logs: what its workers printed and zeroscale's platform events.

    Streams are <variant>/<worker-id> (a worker's output, cold start, scale-in, crash) and
    <variant>/platform (deploys and updates). The same events are in CloudWatch Logs' API:
    `aws logs filter-log-events --log-group-name /aws/sagemaker/Endpoints/ENDPOINT --endpoint-url ...`.
    """
    start_ms = parse_since(since, time.time()) if since else None
    clients = make_clients(endpoint_url, region, data_dir)
    client = clients.logs
    desc = described(clients, endpoint)
    if desc is not None:  # its log group has the endpoint's name as created (group names are case-sensitive)
        endpoint = desc["EndpointName"]
    query: dict[str, Any] = {"logGroupName": GROUP_PREFIX + endpoint}
    if variant:
        query["logStreamNamePrefix"] = f"{variant}/"
    if text:
        query["filterPattern"] = quote(text)

    def emit(event: dict[str, Any]) -> None:
        click.echo(format_event(event))

    if variant and desc is not None:  # a variant it does not have would print nothing, as if quiet
        check_variant(clients, endpoint, variant, desc)
    try:
        if follow_:
            follow(client, query, start_ms, emit, interval)
        for event in fetch(client, query, start_ms):
            emit(event)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            check_endpoint_exists(clients, endpoint)  # says so when there is no such endpoint
            raise click.ClickException(f"Endpoint {endpoint} has no logs yet.") from None
        raise _fail(exc) from None
    except BotoCoreError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        pass

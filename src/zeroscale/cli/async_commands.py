"""``zeroscale async status ID``: where an asynchronous request is (Queued, Running, Completed or Failed)."""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from zeroscale.cli.client import common_options, make_clients


@click.group("async")
def async_group() -> None:
    """Asynchronous inference requests (InvokeEndpointAsync)."""


def _when(epoch: Any) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@async_group.command()
@click.argument("inference_id")
@click.option(
    "--endpoint",
    "endpoint",
    default=None,
    help="The endpoint the request was sent to (an InferenceId is the sender's to choose, so several "
    "endpoints' requests may share one; without it: the newest you may read).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@common_options
def status(
    inference_id: str,
    endpoint: str | None,
    as_json: bool,
    endpoint_url: str,
    region: str | None,
    data_dir: Path,
) -> None:
    """Show an asynchronous request's state, times, locations and failure reason."""
    clients = make_clients(endpoint_url, region, data_dir)
    route = f"async/{urllib.parse.quote(inference_id, safe='')}"
    if endpoint:
        route += f"?endpoint={urllib.parse.quote(endpoint, safe='')}"
    doc = json.loads(clients.rest("GET", route))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{doc['InferenceId']}  {doc['Status']}  endpoint {doc['EndpointName']}")
    click.echo(f"  created  {_when(doc.get('CreationTime'))}")
    click.echo(f"  started  {_when(doc.get('StartTime'))}  (attempts: {doc.get('Attempts', 0)})")
    click.echo(f"  ended    {_when(doc.get('EndTime'))}")
    click.echo(f"  input    {doc.get('InputLocation') or '(inline, in the request)'}")
    if doc["Status"] == "Failed":
        click.echo(f"  failure  {doc['FailureLocation']}")
        click.echo(f"  reason   {doc.get('FailureReason', '')}")
    else:
        click.echo(f"  output   {doc['OutputLocation']}")

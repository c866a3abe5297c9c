"""``zeroscale transform wait NAME``: follow a batch transform job to its end with a progress bar."""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import click

from zeroscale.cli.client import Clients, common_options, make_clients

_RUNNING = ("InProgress", "Stopping")


@click.group("transform")
def transform_group() -> None:
    """Batch transform jobs (CreateTransformJob)."""


def _progress(clients: Clients, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(clients.rest("GET", f"transform/{urllib.parse.quote(name, safe='')}"))
    return doc


@transform_group.command()
@click.argument("name")
@click.option("--interval-s", default=1.0, show_default=True, help="Seconds between polls.")
@common_options
def wait(name: str, interval_s: float, endpoint_url: str, region: str | None, data_dir: Path) -> None:
    """Wait for a transform job to end, showing files and records done; exit 1 unless it Completed."""
    clients = make_clients(endpoint_url, region, data_dir)
    doc = _progress(clients, name)
    shown = 0
    bar: Any
    with click.progressbar(
        length=max(1, int(doc.get("FilesTotal") or 1)),
        label=f"{name}",
        show_pos=True,
        item_show_func=lambda _: f"{doc.get('RecordsDone', 0)} records",
        file=sys.stderr,
    ) as bar:
        while True:
            total = int(doc.get("FilesTotal") or 0)
            if total and bar.length != total:
                bar.length = total
            done = int(doc.get("FilesDone", 0)) + int(doc.get("FilesFailed", 0))
            if done > shown:
                bar.update(done - shown, None)
                shown = done
            if doc["TransformJobStatus"] not in _RUNNING:
                break
            time.sleep(interval_s)
            doc = _progress(clients, name)
    status = doc["TransformJobStatus"]
    click.echo(
        f"{name}: {status} ({doc.get('FilesDone', 0)} of {doc.get('FilesTotal', 0)} files, "
        f"{doc.get('RecordsDone', 0)} records)"
    )
    if doc.get("FailureReason"):
        click.echo(doc["FailureReason"], err=True)
    if status != "Completed":
        raise SystemExit(1)

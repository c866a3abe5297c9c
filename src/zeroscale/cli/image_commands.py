"""``zeroscale images``: the images a model can name (built-in runtimes and pushed ones),
``zeroscale images push NAME:TAG DIR`` to register a bring-your-own image directory, and
``zeroscale images delete NAME:TAG`` to forget one."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import click

from zeroscale.cli.client import ApiError, Clients, common_options, make_clients
from zeroscale.images import ImageError, parse_manifest
from zeroscale.images.names import split_reference


def _call(clients: Clients, method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    try:
        payload = clients.rest(method, path, body=body)
    except ApiError as err:
        if "oversize body" in err.message:
            hint = "an image push is limited to 16 MB; keep large files in the model's ModelDataUrl"
            raise click.ClickException(f"{err.message} ({hint})") from None
        raise
    result: dict[str, Any] = json.loads(payload)
    return result


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Same directory, same bytes: no owners or times in the archive."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def pack(directory: Path) -> bytes:
    """A reproducible tar.gz of ``directory`` (entries sorted, owners and times cleared)."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.add(directory, arcname=".", filter=_normalise)
    return buf.getvalue()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _pushed_by(image: dict[str, Any]) -> str:
    """The IAM user whose push a tag names now ("(admin)" for the admin's); "-" for a built-in image."""
    if "PushedBy" not in image:
        return "-"
    return str(image["PushedBy"]) or "(admin)"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON instead of a table.")
@common_options
@click.pass_context
def images(ctx: click.Context, as_json: bool, endpoint_url: str, region: str | None, data_dir: Path) -> None:
    """List the images a model can name in CreateModel's Image: built-in runtimes and pushed images."""
    if ctx.invoked_subcommand is not None:
        return
    doc = _call(make_clients(endpoint_url, region, data_dir), "GET", "images")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    rows = [
        (
            img["Name"],
            img["Kind"],
            img.get("Version") or img.get("Tag") or "-",
            _pushed_by(img),
            ", ".join(img.get("ContentTypes") or []) or "-",
        )
        for img in doc["Images"]
    ]
    header = ("NAME", "KIND", "VERSION/TAG", "PUSHED BY", "CONTENT TYPES")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@images.command()
@click.argument("ref", metavar="NAME:TAG")
@click.argument("source", metavar="DIR", type=click.Path(exists=True, path_type=Path))
@common_options
def push(ref: str, source: Path, endpoint_url: str, region: str | None, data_dir: Path) -> None:
    """Register DIR (a directory with manifest.json at its top, or a tar.gz of one) as NAME:TAG.

    Then deploy it with CreateModel's PrimaryContainer Image="NAME:TAG" (a missing tag means latest)."""
    try:
        name, tag = split_reference(ref)
        if source.is_dir():
            parse_manifest(source)  # the server checks again; this fails before any upload
    except ImageError as exc:
        raise click.ClickException(exc.message) from None
    body = pack(source) if source.is_dir() else source.read_bytes()
    clients = make_clients(endpoint_url, region, data_dir)
    doc = _call(clients, "PUT", f"images/{name}/{tag}", body)
    click.echo(f"pushed {doc['Image']}  {doc['Digest']}  ({doc['Files']} files, {_size(doc['Size'])})")
    click.echo(f"use it: CreateModel PrimaryContainer Image={doc['Image']!r}")


@images.command()
@click.argument("ref", metavar="NAME:TAG")
@common_options
def delete(ref: str, endpoint_url: str, region: str | None, data_dir: Path) -> None:
    """Forget NAME:TAG: later deployments cannot name it; endpoints running it keep its files until they
    stop (a missing tag means latest)."""
    try:
        name, tag = split_reference(ref)
    except ImageError as exc:
        raise click.ClickException(exc.message) from None
    doc = _call(make_clients(endpoint_url, region, data_dir), "DELETE", f"images/{name}/{tag}")
    kept = " (its files stay while endpoints run it)" if doc.get("FilesKept") else ""
    click.echo(f"deleted {doc['Image']}  {doc['Digest']}  ({_size(doc['Size'])}){kept}")

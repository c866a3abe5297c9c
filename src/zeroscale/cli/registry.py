"""``zeroscale model-packages``: the model registry's groups and versions as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from zeroscale.cli.client import common_options, fail, make_clients


@click.group("model-packages")
def registry_group() -> None:
    """Model package groups and their versions (CreateModelPackageGroup, CreateModelPackage)."""


@registry_group.command("list")
@click.argument("group", required=False)
@common_options
def list_packages(group: str | None, endpoint_url: str, region: str | None, data_dir: Path) -> None:
    """List model package groups; with GROUP, its versions and their approval status, newest first.

    Deploy a version with `CreateModel` and `PrimaryContainer.ModelPackageName` set to its ARN, or to the
    group's name for its latest Approved version."""
    sm = make_clients(endpoint_url, region, data_dir).sagemaker
    rows: list[tuple[str, ...]]
    try:
        if group is None:
            header: tuple[str, ...] = ("GROUP", "STATUS", "CREATED", "DESCRIPTION")
            rows = [
                (
                    g["ModelPackageGroupName"],
                    g["ModelPackageGroupStatus"],
                    _time(g),
                    g.get("ModelPackageGroupDescription", ""),
                )
                for page in sm.get_paginator("list_model_package_groups").paginate(
                    SortBy="Name", SortOrder="Ascending"
                )
                for g in page["ModelPackageGroupSummaryList"]
            ]
        else:
            header = ("VERSION", "APPROVAL", "STATUS", "CREATED", "ARN")
            rows = [
                (
                    str(p["ModelPackageVersion"]),
                    p.get("ModelApprovalStatus", ""),
                    p["ModelPackageStatus"],
                    _time(p),
                    p["ModelPackageArn"],
                )
                for page in sm.get_paginator("list_model_packages").paginate(
                    ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending"
                )
                for p in page["ModelPackageSummaryList"]
            ]
    except (ClientError, BotoCoreError) as exc:
        raise fail(exc) from None
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _time(summary: dict[str, Any]) -> str:
    return str(summary["CreationTime"].strftime("%Y-%m-%d %H:%M:%S"))

"""An uncompressed model under an S3 prefix (``ModelDataSource.S3DataSource``, S3DataType ``S3Prefix``,
CompressionType ``None``): every object below the prefix becomes a file of the model directory, at its key
relative to the prefix. Keys that would escape the directory, or clash with another, are refused by name."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from zeroscale.artifacts.extract import ExtractStats, Limits
from zeroscale.artifacts.fetch import S3Fetcher, S3Location
from zeroscale.errors import DeployError

_DIR_MODE = 0o755
_FILE_MODE = 0o644


@dataclass(frozen=True)
class PrefixObject:
    key: str
    etag: str
    size: int


def list_prefix(s3: S3Fetcher, loc: S3Location, limits: Limits) -> list[PrefixObject]:
    """Every object under the prefix (directory markers, keys ending in ``/``, left out), by key."""
    client = s3.client()
    out: list[PrefixObject] = []
    total = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key):
            for item in page.get("Contents") or []:
                key = str(item["Key"])
                if key.endswith("/"):
                    continue
                out.append(PrefixObject(key, str(item.get("ETag", "")), int(item.get("Size", 0))))
                total += int(item.get("Size", 0))
                if len(out) > limits.max_files or total > limits.max_bytes:
                    raise DeployError(
                        f"Model data {loc.url} holds more than {limits.max_files} files, or more bytes "
                        f"than the limit of {limits.bytes_text()}."
                    )
    except DeployError:
        raise
    except Exception as exc:
        raise s3.error(loc, exc) from exc
    if not out:
        raise DeployError(f"Model data {loc.url}: no object found under the S3 prefix.")
    return sorted(out, key=lambda o: o.key)


def relative_path(loc: S3Location, key: str) -> str:
    """The file an object becomes, relative to the model directory; refused when it would leave it."""
    rel = key[len(loc.key) :]
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\0" in rel:
        raise DeployError(
            f"Model data {loc.url}: object key {key!r} is not a safe relative path below the prefix."
        )
    return rel


def download_prefix(
    s3: S3Fetcher, loc: S3Location, objects: list[PrefixObject], dest: Path
) -> tuple[str, ExtractStats]:
    """Fetch ``objects`` into the empty directory ``dest``; the content hash of the whole, and its size."""
    digest = hashlib.sha256(b"zeroscale-s3-prefix-v1\0")
    total = 0
    for obj in objects:
        rel = relative_path(loc, obj.key)
        target = dest / rel
        for parent in reversed(target.relative_to(dest).parents[:-1]):
            directory = dest / parent
            if not directory.is_dir():
                try:
                    os.mkdir(directory, _DIR_MODE)
                except FileExistsError as exc:
                    raise DeployError(
                        f"Model data {loc.url}: object key {obj.key!r} clashes with another object."
                    ) from exc
        try:
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE
            )
        except (FileExistsError, IsADirectoryError) as exc:
            raise DeployError(
                f"Model data {loc.url}: object key {obj.key!r} clashes with another object."
            ) from exc
        with os.fdopen(fd, "wb") as out:
            result, _ = s3.download(S3Location(f"s3://{loc.bucket}/{obj.key}", loc.bucket, obj.key), out)
        total += result.size
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0" + result.sha256.encode() + b"\n")
    return digest.hexdigest(), ExtractStats(members=len(objects), bytes=total)

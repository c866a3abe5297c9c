"""The on-disk registry of bring-your-own images.

Layout under ``root`` (``<data-dir>/images``)::

    <name>/<tag>/image.json        the current push of name:tag: digest, time, size, manifest
    <name>/<tag>/<sha256>/         an image's files, manifest.json at the top (one per pushed content)
    .tmp/<pid>-<rand>              staging; renamed into place or removed

An image directory is named by the hash of its content and never changes once in place; a push that
changes a tag adds a directory and then replaces ``image.json`` in one rename. Endpoints resolve a tag when
they deploy and keep the directory they got, so pushing a tag again changes only later deployments (as
with a container registry); earlier directories stay for the endpoints that still run them.

Archives go through ``zeroscale.artifacts``' safe extractor (no absolute paths, ``..``, escaping links,
devices; size and file-count limits), and every push's manifest is checked before it becomes visible.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroscale.artifacts.extract import Limits, copy_directory, extract_archive
from zeroscale.artifacts.scratch import remove_stale, staging_dir
from zeroscale.errors import DeployError
from zeroscale.images.manifest import Manifest, from_json, parse_manifest
from zeroscale.images.names import ImageError, parse_reference, validate_name, validate_tag

RECORD_FILE = "image.json"
_TMP = ".tmp"


@dataclass(frozen=True)
class ImageRecord:
    name: str
    tag: str
    digest: str  # sha256 of the image's content (names, executable bits, bytes), independent of tar metadata
    pushed_at: float
    files: int
    size: int
    manifest: Manifest
    root: Path  # the image's files

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def workdir(self) -> Path:
        return self.root / self.manifest.workdir

    @property
    def resolved(self) -> str:
        """What DescribeEndpoint shows as the resolved image: name, tag and content digest."""
        return f"{self.ref}@sha256:{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tag": self.tag,
            "digest": f"sha256:{self.digest}",
            "pushed_at": self.pushed_at,
            "files": self.files,
            "size": self.size,
            "manifest": self.manifest.to_json(),
        }


class ImageRegistry:
    def __init__(self, root: Path, *, max_bytes: int = 20 * 1024**3, max_files: int = 100_000) -> None:
        self.root = Path(root).resolve()
        self._limits = Limits(max_bytes=max_bytes, max_files=max_files)
        self._tmp = self.root / _TMP
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        remove_stale(self._tmp)  # what processes that died mid-push left

    # ---- push ----
    def push(self, name: str, tag: str, source: Path) -> ImageRecord:
        """Blocking. Register ``source`` (a directory, or a tar / tar.gz of one) as ``name:tag``.

        Raises ImageError saying what is wrong with the name, the archive or the manifest."""
        validate_name(name)
        validate_tag(tag)
        ref = f"{name}:{tag}"
        what = f"image {ref}"
        real = Path(os.path.realpath(source))
        if real.is_dir() and (real == self.root or real in self.root.parents):
            raise ImageError(f"Image {ref}: {source} contains the image registry ({self.root})")
        with self._staging() as staging:
            image = staging / "image"
            image.mkdir()
            try:
                if real.is_dir():
                    digest, stats = copy_directory(real, image, limits=self._limits, source=str(source))
                elif real.is_file():
                    unpacked = staging / "unpacked"
                    unpacked.mkdir()
                    extract_archive(real, unpacked, limits=self._limits, source=what)
                    digest, stats = copy_directory(unpacked, image, limits=self._limits, source=what)
                else:
                    raise ImageError(f"Image {ref}: {source} is not a directory or a tar.gz archive")
            except DeployError as exc:
                raise ImageError(f"Image {ref}: {_image_wording(str(exc), what)}") from exc
            except OSError as exc:
                raise ImageError(f"Image {ref}: {source}: {exc.strerror or exc}") from exc
            manifest = parse_manifest(image)
            tag_dir = self.root / name / tag
            with self._lock:
                tag_dir.mkdir(parents=True, exist_ok=True)
                final = tag_dir / digest
                if not final.exists():
                    os.rename(image, final)
                record = ImageRecord(
                    name, tag, digest, time.time(), stats.members, stats.bytes, manifest, final
                )
                tmp = staging / RECORD_FILE
                tmp.write_text(json.dumps(record.to_json(), indent=2))
                os.replace(tmp, tag_dir / RECORD_FILE)
        return record

    def push_bytes(self, name: str, tag: str, archive: bytes) -> ImageRecord:
        """``push`` of a tar / tar.gz held in memory (an upload)."""
        with self._staging() as staging:
            path = staging / "upload.tar.gz"
            path.write_bytes(archive)
            return self.push(name, tag, path)

    # ---- read ----
    def get(self, name: str, tag: str) -> ImageRecord | None:
        tag_dir = self.root / name / tag
        try:
            doc = json.loads((tag_dir / RECORD_FILE).read_text())
            digest = str(doc["digest"]).removeprefix("sha256:")
            record = ImageRecord(
                name=str(doc["name"]),
                tag=str(doc["tag"]),
                digest=digest,
                pushed_at=float(doc["pushed_at"]),
                files=int(doc["files"]),
                size=int(doc["size"]),
                manifest=from_json(doc["manifest"]),
                root=tag_dir / digest,
            )
        except (OSError, ValueError, KeyError, TypeError, ImageError):
            return None
        return record if record.root.is_dir() else None

    def list(self) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        with contextlib.suppress(OSError):
            for name_dir in sorted(self.root.iterdir()):
                if name_dir.name == _TMP or not name_dir.is_dir():
                    continue
                for tag_dir in sorted(name_dir.iterdir()):
                    record = self.get(name_dir.name, tag_dir.name)
                    if record is not None:
                        records.append(record)
        return records

    def resolve(self, image: str) -> ImageRecord | None:
        """The registered image an ``Image`` value names (``name``, ``name:tag``, or a URI ending in one)."""
        parsed = parse_reference(image)
        return None if parsed is None else self.get(*parsed)

    # ---- temporaries ----
    def _staging(self) -> contextlib.AbstractContextManager[Path]:
        return staging_dir(self._tmp)


def _image_wording(message: str, what: str) -> str:
    """The artifact extractor speaks of models; here the archive is an image (already named)."""
    for model, image in (
        (f" (artifact: {what})", ""),
        (f"Model artifact {what}", "the archive"),
        ("Model archive", "Image archive"),
        ("Model directory", "Image directory"),
        ("the model directory", "the image"),
    ):
        message = message.replace(model, image)
    return message

    return True

"""The on-disk registry of bring-your-own images.

Layout under ``root`` (``<data-dir>/images``)::

    <name>/<tag>/image.json        the current push of name:tag: digest, time, size, manifest
    <name>/<tag>/<sha256>/         an image's files, manifest.json at the top (one per pushed content)
    .tmp/<pid>-<rand>              staging; renamed into place or removed

An image directory is named by the hash of its content and never changes once in place; a push that
changes a tag adds a directory and then replaces ``image.json`` in one rename. Endpoints resolve a tag when
they deploy and keep the directory they got, so pushing a tag again changes only later deployments (as
with a container registry); earlier directories stay for the endpoints that still run them.

A directory no tag names any more (pushed over, or its tag deleted) is removed by ``collect`` once no pool
runs it (``in_use``) and it was not resolved in the last ``RESOLVED_GRACE_S`` (a deployment under way):
at each push and delete and at start. All of them together hold at most ``max_total_bytes``: a push past
it is refused by name, after what can be collected is. A push may be refused after that too, before it is
in place (``push``'s ``admit``: a user's quota, ``images.quota``).

Archives go through ``zeroscale.artifacts``' safe extractor (no absolute paths, ``..``, escaping links,
devices; size and file-count limits), and every push's manifest is checked before it becomes visible.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from zeroscale.artifacts.extract import Limits, copy_directory, extract_archive
from zeroscale.artifacts.scratch import remove_stale, staging_dir
from zeroscale.errors import DeployError
from zeroscale.fstree import remove_tree_quietly, tree_bytes
from zeroscale.images.manifest import Manifest, from_json, parse_manifest
from zeroscale.images.names import ImageError, parse_reference, validate_name, validate_tag

RECORD_FILE = "image.json"
_TMP = ".tmp"
RESOLVED_GRACE_S = 600.0  # a directory resolved this recently may be on its way into a pool
MB = 1024 * 1024


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
    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = 20 * 1024**3,
        max_files: int = 100_000,
        max_total_bytes: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_bytes``/``max_files``: one image's; ``max_total_bytes``: all of them (0: no limit)."""
        self.root = Path(root).resolve()
        self._limits = Limits(max_bytes=max_bytes, max_files=max_files)
        self._max_total_bytes = max_total_bytes
        self._tmp = self.root / _TMP
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._clock = clock
        self._resolved: dict[Path, float] = {}  # image directory -> when ``resolve`` last handed it out
        # The directories pools run (their workdirs, inside image directories); None: only tags keep them.
        self.in_use: Callable[[], Iterable[str]] | None = None
        remove_stale(self._tmp)  # what processes that died mid-push left

    # ---- push ----
    def push(
        self,
        name: str,
        tag: str,
        source: Path,
        *,
        pushed_at: float | None = None,
        admit: Callable[[ImageRecord], None] | None = None,
    ) -> ImageRecord:
        """Blocking. Register ``source`` (a directory, or a tar / tar.gz of one) as ``name:tag``
        (``pushed_at``: when it was pushed, for a copy of another front end's push; default now).
        ``admit``: called with the push once it fits ``max_total_bytes``, under the registry's lock, before
        it is in place (it records the push where it may be refused: a user's quota); what it raises leaves
        the registry as it was.

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
                final = tag_dir / digest
                if not final.exists():
                    self._check_room(ref, stats.bytes, self.get(name, tag))
                at = time.time() if pushed_at is None else pushed_at
                record = ImageRecord(name, tag, digest, at, stats.members, stats.bytes, manifest, final)
                if admit is not None:
                    admit(record)
                tag_dir.mkdir(parents=True, exist_ok=True)
                if not final.exists():
                    try:
                        os.rename(image, final)
                    except OSError:  # another process (a node's other agent) put the same content there
                        if not final.is_dir():
                            raise
                tmp = staging / RECORD_FILE
                tmp.write_text(json.dumps(record.to_json(), indent=2))
                os.replace(tmp, tag_dir / RECORD_FILE)
                self._collect()  # the version this push replaced, unless a pool runs it
        return record

    def push_bytes(
        self, name: str, tag: str, archive: bytes, *, admit: Callable[[ImageRecord], None] | None = None
    ) -> ImageRecord:
        """``push`` of a tar / tar.gz held in memory (an upload)."""
        with self._staging() as staging:
            path = staging / "upload.tar.gz"
            path.write_bytes(archive)
            return self.push(name, tag, path, admit=admit)

    def archive(self, name: str, tag: str) -> Path | None:
        """Blocking. A tar.gz of ``name:tag``'s files, in a file of its own the caller removes (another
        front end copies the image from it); None when it is not registered."""
        record = self.get(name, tag)
        if record is None:
            return None
        fd, path = tempfile.mkstemp(prefix=f"{os.getpid()}-archive-", suffix=".tar.gz", dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                write_archive(record.root, out)
        except BaseException:
            os.unlink(path)
            raise
        return Path(path)

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
        """The registered image an ``Image`` value names (``name``, ``name:tag``, or a URI ending in one);
        its directory is kept from ``collect`` for a while (the deployment that asked is under way)."""
        parsed = parse_reference(image)
        record = None if parsed is None else self.get(*parsed)
        if record is not None:
            with self._lock:
                self._resolved[record.root] = self._clock()
        return record

    # ---- delete, collect, size ----
    def delete(self, name: str, tag: str, *, digest: str | None = None) -> tuple[ImageRecord, bool]:
        """Forget ``name:tag`` (ImageError when it is not registered; with ``digest``, when it names another
        push now: one taken meanwhile); (its record, whether its files stay for the pools that run it, until
        they are gone)."""
        validate_name(name)
        validate_tag(tag)
        with self._lock:
            record = self.get(name, tag)
            if record is None:
                raise ImageError(f"Image {name}:{tag} is not registered.")
            if digest not in (None, record.digest):
                raise ImageError(f"Image {name}:{tag} names sha256:{record.digest} now, not sha256:{digest}.")
            (self.root / name / tag / RECORD_FILE).unlink()
            self._collect()
            return record, record.root.exists()

    def collect(self) -> int:
        """Remove the image directories no tag names and nothing uses (module docstring); how many."""
        with self._lock:
            return self._collect()

    def total_bytes(self) -> int:
        """The bytes of every image directory's files (those no tag names included)."""
        return sum(tree_bytes(d) for d in self._image_dirs())

    def _image_dirs(self) -> builtins.list[Path]:
        found: builtins.list[Path] = []
        with contextlib.suppress(OSError):
            for name_dir in self.root.iterdir():
                if name_dir.name == _TMP or not name_dir.is_dir():
                    continue
                for tag_dir in name_dir.iterdir():
                    if tag_dir.is_dir():
                        found += [d for d in tag_dir.iterdir() if d.is_dir()]
        return found

    def _kept(self) -> Callable[[Path], bool]:
        """Whether an image directory is kept whatever its tag says: a pool runs it, or it was resolved
        lately."""
        now = self._clock()
        self._resolved = {d: at for d, at in self._resolved.items() if now - at < RESOLVED_GRACE_S}
        used = [Path(p) for p in (self.in_use() if self.in_use is not None else ())]
        return lambda d: d in self._resolved or any(p == d or d in p.parents for p in used)

    def _collect(self) -> int:
        kept = self._kept()
        removed = 0
        for directory in self._image_dirs():
            tag_dir = directory.parent
            current = self.get(tag_dir.parent.name, tag_dir.name)
            if (current is not None and current.root == directory) or kept(directory):
                continue
            remove_tree_quietly(directory)
            removed += 1
        for tag_dir in self._tag_dirs():
            with contextlib.suppress(OSError):
                tag_dir.rmdir()  # only when empty: no record, no directory left
            with contextlib.suppress(OSError):
                tag_dir.parent.rmdir()
        return removed

    def _tag_dirs(self) -> builtins.list[Path]:
        with contextlib.suppress(OSError):
            return [
                t
                for n in self.root.iterdir()
                if n.name != _TMP and n.is_dir()
                for t in n.iterdir()
                if t.is_dir()
            ]
        return []

    def _check_room(self, ref: str, adding: int, replacing: ImageRecord | None) -> None:
        """``adding`` bytes fit with what stays: the version this push replaces stays only if kept."""
        if self._max_total_bytes <= 0:
            return
        self._collect()
        held = self.total_bytes()
        if replacing is not None and not self._kept()(replacing.root):
            held -= tree_bytes(replacing.root)
        if held + adding > self._max_total_bytes:
            raise ImageError(
                f"Image {ref}: its {adding / MB:.1f} MB would take the registry's images past "
                f"{self._max_total_bytes / MB:.0f} MB (they hold {held / MB:.1f} MB; zeroscale serve "
                "--images-max-mb): delete images no model needs (zeroscale images delete NAME:TAG)."
            )

    # ---- temporaries ----
    def _staging(self) -> contextlib.AbstractContextManager[Path]:
        return staging_dir(self._tmp)


def write_archive(root: Path, out: BinaryIO) -> None:
    """A tar.gz of an image's files (``root``) into ``out``: what another front end or a cluster node
    registers again, through the same checks as a push (its digest is of the files, not of these bytes)."""
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        tar.add(root, arcname=".")


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

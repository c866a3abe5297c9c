"""The content-addressed artifact cache: ModelDataUrl -> ``root/<sha256>/model``.

Layout under ``root``::

    <sha256>/model/      the extracted model (what becomes /opt/ml/model)
    <sha256>/complete    marker, written before the entry is renamed into place
    index/<id>.json      source identity + fingerprint -> sha256, so an unchanged source is not refetched
    tmp/<pid>-<rand>*    downloads and staging directories; renamed into place or removed
    empty/model/         what a model without an artifact gets

An entry appears by one ``os.rename`` of a finished staging directory, so readers (threads or
processes) never see half of one.

With a capacity (``--artifact-cache-mb``), entries nothing keeps are evicted least recently used when the
cache holds more (``shelf.py``): after an entry is added, and when ``trim`` is called. A deployment prepares
its artifacts with a ``Hold`` (``holds.py``) and closes it once its pools are routed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from zeroscale.artifacts.extract import (
    ExtractStats,
    Limits,
    ReadCheck,
    check_read,
    copy_directory,
    directory_fingerprint,
    extract_archive,
)
from zeroscale.artifacts.fetch import (
    LocalLocation,
    S3Fetcher,
    S3Location,
    copy_local_file,
    describe_os_error,
    file_fingerprint,
    parse_model_data_url,
)
from zeroscale.artifacts.holds import Hold, Holds
from zeroscale.artifacts.prefix import download_prefix, list_prefix
from zeroscale.artifacts.scratch import remove_stale, scratch_path, staging_dir
from zeroscale.artifacts.shelf import GRACE_S, Shelf, Shelved
from zeroscale.config import DEFAULT_MAX_EXTRACTED_MB, MB
from zeroscale.errors import DeployError

MARKER = "complete"
MODEL = "model"


def entry_source(model_dir: str | Path) -> tuple[str, str | None] | None:
    """Where a model directory this cache made came from: (its sha256, its source URL), with no source for
    ``empty/model`` (a model without an artifact); None for a directory that is not a cache entry. Another
    machine's cache (a cluster node's) makes the same entry from the same source."""
    model = Path(model_dir)
    if model.name != MODEL:
        return None
    if model.parent.name == "empty":
        return "empty", None
    try:
        marker = json.loads((model.parent / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("source"), str):
        return None
    return model.parent.name, marker["source"]


class ArtifactCache(Shelved):
    def __init__(
        self,
        root: Path,
        *,
        s3_endpoint_url: str | None = None,
        max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_MB * MB,
        max_extracted_files: int = 100_000,
        capacity_bytes: int | None = None,
        holds: Holds | None = None,
        grace_s: float = GRACE_S,
        clock: Callable[[], float] = time.time,
        protected: Sequence[Path] = (),
    ) -> None:
        """``capacity_bytes``: the extracted files kept (None: all, never evicted; 0: only those in use).
        ``protected``: directories (besides the cache) no ``file://`` model may be read from, directly or
        through a symlink (the server's data directory: its credentials, database, other models)."""
        self.root = Path(root).resolve()
        self._protected = (self.root, *(Path(os.path.realpath(p)) for p in protected))
        self._limits = Limits(max_bytes=max_extracted_bytes, max_files=max_extracted_files)
        self._s3 = S3Fetcher(s3_endpoint_url)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._evictions: list[str] = []  # sha256s evicted since ``take_evictions`` (guarded by _locks_guard)
        # Told the directories of the entries each trim evicted, from the thread that trimmed (it must not
        # call back into the cache).
        self.on_evicted: Callable[[list[str]], None] | None = None
        self._index_dir = self.root / "index"
        self._tmp_dir = self.root / "tmp"
        for directory in (self.root, self._index_dir, self._tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        remove_stale(self._tmp_dir)  # what processes that died mid-prepare left
        self._shelf = Shelf(
            self.root,
            self._tmp_dir,
            marker=MARKER,
            leaf=MODEL,
            label="artifact cache",
            capacity_bytes=capacity_bytes,
            holds=holds,
            grace_s=grace_s,
            clock=clock,
        )

    # ---- public ----
    def hold(self) -> Hold:
        """Entries prepared with this hold are not evicted until it is closed."""
        return self._shelf.holds.hold()

    def prepare(
        self,
        model_data_url: str | None,
        hold: Hold | None = None,
        *,
        etag: str | None = None,
        reads: ReadCheck | None = None,
        archive_only: bool = False,
    ) -> Path:
        """Blocking. Returns the directory holding the extracted model (the future /opt/ml/model): held by
        ``hold`` until it is closed, or, without one, kept for the grace period from now. ``etag``: the S3
        object's ETag the model names (``ModelDataSource``); another one fails it. ``reads``: what model
        data on the server's disk may be read for this model, checked where each file and directory
        resolves when it is read (None: anything outside the protected directories). ``archive_only``: a
        local path must be a file (a multi-model endpoint's TargetModel names one archive, as an S3 key names
        one object), never a directory.

        Raises zeroscale.errors.DeployError with a clear, user-facing reason on any failure.
        """
        if hold is None:
            with self.hold() as own:
                model = self.prepare(model_data_url, own, etag=etag, reads=reads, archive_only=archive_only)
                return self._kept_for_grace(model)
        location = parse_model_data_url(model_data_url)
        if etag is not None and not isinstance(location, S3Location):
            raise DeployError(f"Model data {model_data_url}: an ETag names an S3 object's version.")
        try:
            if location is None:
                empty = self.root / "empty" / MODEL
                empty.mkdir(parents=True, exist_ok=True)
                return empty
            if isinstance(location, S3Location):
                model = self._prepare_s3(location, hold, etag)
            else:
                model = self._prepare_local(location, hold, reads, archive_only)
        except DeployError:
            raise
        except OSError as exc:
            raise DeployError(
                f"Could not prepare model artifact {model_data_url}: {describe_os_error(exc)}"
            ) from exc
        except ValueError as exc:  # e.g. a NUL byte in a path
            raise DeployError(f"Invalid model artifact URL {model_data_url!r}: {exc}") from exc
        self._trim_if_over()
        return model

    def prepare_source(self, source: str | None, hold: Hold | None = None) -> Path:
        """Blocking. The directory again from what ``entry_source`` says an entry came from (a Ray node
        fetches the front end's models so): an S3 prefix (``ModelDataSource``, its URL ends with ``/``) or
        an archive or path (``ModelDataUrl``)."""
        location = parse_model_data_url(source) if source else None
        if isinstance(location, S3Location) and location.key.endswith("/"):
            return self.prepare_prefix(location.url, hold)
        return self.prepare(source, hold)

    def prepare_prefix(self, s3_uri: str, hold: Hold | None = None) -> Path:
        """Blocking. An uncompressed model under an S3 prefix (``ModelDataSource``) -> its directory; fetched
        again only when an object under it changed. Raises DeployError naming the prefix."""
        if hold is None:
            with self.hold() as own:
                return self._kept_for_grace(self.prepare_prefix(s3_uri, own))
        location = parse_model_data_url(s3_uri)
        if not isinstance(location, S3Location) or not location.key.endswith("/"):
            raise DeployError(
                f"Invalid model data source {s3_uri!r}: expected an S3 prefix s3://bucket/prefix/"
            )
        try:
            objects = list_prefix(self._s3, location, self._limits)
            identity = "s3-prefix\n" + self._s3.identity(location)
            fingerprint = {"objects": [[o.key, o.etag, o.size] for o in objects]}
            with self._lock("source:" + identity):
                sha = self._lookup(identity, fingerprint, hold)
                if sha is not None:
                    return self._model_dir(sha)
                with self._staging() as staging:
                    (staging / MODEL).mkdir()
                    sha, stats = download_prefix(self._s3, location, objects, staging / MODEL)
                    with self._lock("entry:" + sha):
                        if not self._use(sha, hold):
                            self._publish(staging, sha, s3_uri, stats, hold)
                self._remember(identity, fingerprint, sha)
        except OSError as exc:
            raise DeployError(f"Could not prepare model data {s3_uri}: {describe_os_error(exc)}") from exc
        self._trim_if_over()
        return self._model_dir(sha)

    def keep(self, model_dir: str) -> bool:
        """Blocking. Whether ``model_dir`` (a directory ``prepare`` returned) is still in place; if it is, it
        is the most recently used entry and kept for the grace period from now (a multi-model endpoint's
        target model found again without a request to its source)."""
        sha = self._shelf.name_of(model_dir)
        if sha is None or not self._use(sha, None):
            return False
        self._shelf.kept_for_grace(sha)
        return True

    def trim(self) -> list[str]:
        """Blocking. Evict entries nothing keeps, least recently used first, until the cache fits its
        capacity; returns their sha256s."""
        return self._evicted(self._shelf.trim())

    def take_evictions(self) -> list[str]:
        """The sha256s evicted (by any trim) since the last call."""
        with self._locks_guard:
            taken, self._evictions = self._evictions, []
        return taken

    # ---- sources ----
    def _prepare_s3(self, loc: S3Location, hold: Hold | None, etag: str | None = None) -> Path:
        identity = self._s3.identity(loc)
        with self._lock("source:" + identity):
            head = self._s3.head(loc)
            if etag is not None and head.etag.strip('"') != etag.strip('"'):
                raise DeployError(
                    f"Model data {loc.url} has the ETag {head.etag}, not {etag} as the model's "
                    "ModelDataSource says: the object changed since the model was made. Create the model "
                    "again with the ETag it has now, or put back the object it named."
                )
            sha = self._lookup(identity, {"etag": head.etag, "size": head.size}, hold)
            if sha is not None:
                return self._model_dir(sha)
            with self._temp_path(".download") as download:
                with download.open("wb") as out:
                    result, obj = self._s3.download(loc, out)
                model = self._install_archive(download, result.sha256, loc.url, hold)
            self._remember(identity, {"etag": obj.etag, "size": obj.size}, result.sha256)
            return model

    def _prepare_local(
        self, loc: LocalLocation, hold: Hold | None, reads: ReadCheck | None, archive_only: bool = False
    ) -> Path:
        try:
            real = Path(os.path.realpath(loc.path))
            real.stat()
        except FileNotFoundError as exc:
            raise DeployError(f"Model artifact {loc.url} not found: {loc.path} does not exist") from exc
        except OSError as exc:
            raise DeployError(f"Model artifact {loc.url} cannot be read: {describe_os_error(exc)}") from exc
        self._check_real(loc.url, real, reads)
        if real.is_dir() and archive_only:
            raise DeployError(f"Model artifact {loc.url} is a directory, not a model archive (a .tar.gz)")
        if real.is_dir():
            return self._prepare_directory(loc, real, hold, reads)
        if not real.is_file():
            raise DeployError(f"Model artifact {loc.url} is not a regular file or directory")
        identity = f"file\n{real}"
        with self._lock("source:" + identity):
            before = file_fingerprint(real)
            sha = self._lookup(identity, before, hold)
            if sha is not None:
                return self._model_dir(sha)
            with self._temp_path(".download") as copy:
                with copy.open("wb") as out:
                    result = copy_local_file(
                        loc, real, out, check=lambda opened: self._check_real(loc.url, opened, reads)
                    )
                model = self._install_archive(copy, result.sha256, loc.url, hold)
            if file_fingerprint(real) == before:  # else it changed while we read it: don't vouch for it
                self._remember(identity, before, result.sha256)
            return model

    def _check_real(self, url: str, real: Path, reads: ReadCheck | None) -> None:
        """Where model data on the server's disk resolves: outside the protected directories, and allowed to
        the model (``reads``)."""
        self._refuse_protected(url, real)
        if reads is not None:
            check_read(real, url, reads)

    def _refuse_protected(self, url: str, real: Path) -> None:
        for protected in self._protected:
            if real == protected or protected in real.parents:
                raise DeployError(f"Model artifact {url} is inside zeroscale's own directory ({protected})")
            if real in protected.parents:
                raise DeployError(f"Model directory {url} contains zeroscale's own directory ({protected})")

    def _prepare_directory(
        self, loc: LocalLocation, real: Path, hold: Hold | None, reads: ReadCheck | None
    ) -> Path:
        identity = f"dir\n{real}"
        protected = self._protected
        with self._lock("source:" + identity):
            listing = directory_fingerprint(
                real, limits=self._limits, source=loc.url, protected=protected, reads=reads
            )
            before = {"listing": listing}
            sha = self._lookup(identity, before, hold)
            if sha is not None:
                return self._model_dir(sha)
            with self._staging() as staging:
                (staging / MODEL).mkdir()
                sha, stats = copy_directory(
                    real,
                    staging / MODEL,
                    limits=self._limits,
                    source=loc.url,
                    protected=protected,
                    reads=reads,
                )
                with self._lock("entry:" + sha):
                    if not self._use(sha, hold):
                        self._publish(staging, sha, loc.url, stats, hold)
            after = {"listing": directory_fingerprint(real, limits=self._limits, source=loc.url)}
            if after == before:
                self._remember(identity, before, sha)
            return self._model_dir(sha)

    # ---- entries ----
    def _model_dir(self, sha: str) -> Path:
        return self.root / sha / MODEL

    def _is_complete(self, sha: str) -> bool:
        return self._shelf.is_complete(sha)

    def _install_archive(self, archive: Path, sha: str, source: str, hold: Hold | None) -> Path:
        with self._lock("entry:" + sha):
            if self._use(sha, hold):
                return self._model_dir(sha)
            with self._staging() as staging:
                (staging / MODEL).mkdir()
                stats = extract_archive(archive, staging / MODEL, limits=self._limits, source=source)
                self._publish(staging, sha, source, stats, hold)
        return self._model_dir(sha)

    def _use(self, sha: str, hold: Hold | None) -> bool:
        return self._shelf.use(sha, hold)

    def _kept_for_grace(self, model_dir: Path) -> Path:
        sha = self._shelf.name_of(str(model_dir))
        if sha is not None:
            self._shelf.kept_for_grace(sha)
        return model_dir

    def _trim_if_over(self) -> None:
        self._evicted(self._shelf.trim_if_grew())

    def _evicted(self, shas: list[str]) -> list[str]:
        if shas:
            self._forget_index(set(shas))
            with self._locks_guard:
                self._evictions.extend(shas)
            if self.on_evicted is not None:
                self.on_evicted([str(self._model_dir(sha)) for sha in shas])
        return shas

    def _forget_index(self, shas: set[str]) -> None:
        """Index records that lead to evicted entries (each source's record, ~200 bytes, would stay)."""
        for record_file in self._index_dir.iterdir():
            try:
                sha = json.loads(record_file.read_text()).get("sha256")
            except (OSError, ValueError, AttributeError):
                continue
            if sha in shas and not self._is_complete(sha):
                with contextlib.suppress(OSError):
                    record_file.unlink()

    def _publish(self, staging: Path, sha: str, source: str, stats: ExtractStats, hold: Hold | None) -> None:
        """Mark ``staging`` finished and rename it to ``root/<sha>``; losing a race to another
        process that published the same content is fine."""
        marker = {"sha256": sha, "source": source, "members": stats.members, "bytes": stats.bytes,
                  "created": time.time()}  # fmt: skip
        (staging / MARKER).write_text(json.dumps(marker))
        try:
            self._shelf.place(sha, stats.bytes, hold, staging)  # or another's copy, put in place first
        except OSError as exc:
            raise DeployError(
                f"Could not place model artifact {source} into the cache at {self.root / sha}: {exc}"
            ) from exc

    # ---- index ----
    def _index_file(self, identity: str) -> Path:
        return self._index_dir / (
            hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest() + ".json"
        )

    def _lookup(self, identity: str, fingerprint: dict[str, Any], hold: Hold | None) -> str | None:
        """The cached sha256 for this source if it is unchanged and its entry is in place (then used)."""
        try:
            record = json.loads(self._index_file(identity).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("source") != identity:
            return None
        if record.get("fingerprint") != fingerprint:
            return None
        sha = record.get("sha256")
        if not isinstance(sha, str) or not self._use(sha, hold):
            return None
        return sha

    def _remember(self, identity: str, fingerprint: dict[str, Any], sha: str) -> None:
        record = {"source": identity, "fingerprint": fingerprint, "sha256": sha}
        with self._temp_path(".json") as tmp:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self._index_file(identity))

    # ---- temporaries ----
    @contextlib.contextmanager
    def _temp_path(self, suffix: str) -> Iterator[Path]:
        path = scratch_path(self._tmp_dir, suffix)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _staging(self) -> contextlib.AbstractContextManager[Path]:
        return staging_dir(self._tmp_dir, ".staging")

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

"""Where a ModelDataUrl points, and getting its bytes: s3://, an S3 object's https:// URL, file:// and plain
local paths.

Every failure becomes a :class:`~zeroscale.errors.DeployError` whose message names the URL.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from zeroscale.errors import DeployError

CHUNK_SIZE = 1024 * 1024
SUPPORTED_FORMS = (
    "s3://bucket/key, https://bucket.s3.region.amazonaws.com/key, file:///absolute/path, "
    "or a local file or directory path"
)

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# S3's own host names: s3.amazonaws.com, s3.<region>.amazonaws.com, s3-<region>..., s3.dualstack.<region>...
_S3_HOST = r"s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?"
_VIRTUAL_HOST = re.compile(rf"^(?P<bucket>[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9])\.{_S3_HOST}$")
_PATH_HOST = re.compile(rf"^{_S3_HOST}$")


def s3_key_problem(key: str) -> str | None:
    """Why zeroscale refuses an S3 key (or prefix), or None. S3 takes a key as written, but S3-compatible
    stores rewrite some (SeaweedFS drops a leading "/", folds "//" and reads "\\" as "/"), so IAM would
    check one key as text while the store reads or writes another: a policy denying ``bucket/team-b/*``
    would not hold for ``bucket//team-b/x``. Refused: a backslash, an empty part (a trailing "/" aside),
    a "." or ".." part."""
    if "\\" in key:
        return "an S3 key here holds no backslash"
    parts = key.split("/")
    if parts[-1] == "":
        parts.pop()  # a prefix's (or a folder's) trailing "/"
    if any(part in ("", ".", "..") for part in parts):
        return 'an S3 key here has no empty, "." or ".." part'
    return None


def s3_object_of_https(url: str, endpoint_url: str | None = None) -> tuple[str, str] | None:
    """The (bucket, key) of an S3 object's https:// URL: virtual-hosted (``bucket.s3.region.amazonaws.com
    /key``), path-style (``s3.region.amazonaws.com/bucket/key``), or path-style on the S3-compatible
    endpoint zeroscale is configured with (its host and port). None for any other URL. The object is read
    through the configured S3 client either way."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or parts.query or parts.fragment or not parts.hostname:
        return None
    host, path = parts.hostname.lower(), unquote(parts.path).lstrip("/")
    virtual = _VIRTUAL_HOST.match(host)
    if virtual is not None:
        return (virtual.group("bucket"), path) if path else None
    endpoint = urlsplit(endpoint_url) if endpoint_url else None
    own = endpoint is not None and endpoint.netloc.lower() == parts.netloc.lower()
    if _PATH_HOST.match(host) or own:
        bucket, _, key = path.partition("/")
        return (bucket, key) if bucket and key else None
    return None


@dataclass(frozen=True)
class S3Location:
    url: str
    bucket: str
    key: str


@dataclass(frozen=True)
class LocalLocation:
    url: str
    path: Path  # absolute, not yet resolved through symlinks


Location = S3Location | LocalLocation


def parse_model_data_url(url: str | None) -> Location | None:
    """Classify a ModelDataUrl. ``None`` (or blank) means "no artifact"."""
    if url is None or not url.strip():
        return None
    match = _SCHEME_RE.match(url)
    if match is None:
        return LocalLocation(url=url, path=Path(url).absolute())
    scheme = match.group(1).lower()
    if scheme == "s3":
        bucket, _, key = url[match.end() :].partition("/")
        if not bucket or not key:
            raise DeployError(f"Invalid model artifact URL {url!r}: expected s3://bucket/key")
        if (problem := s3_key_problem(key)) is not None:
            raise DeployError(f"Invalid model artifact URL {url!r}: {problem}")
        return S3Location(url=url, bucket=bucket, key=key)
    if scheme == "https":
        found = s3_object_of_https(url)
        if found is None:
            raise DeployError(
                f"Unsupported model artifact URL {url!r}: an https:// ModelDataUrl must be an S3 object URL "
                "(https://bucket.s3.region.amazonaws.com/key or https://s3.region.amazonaws.com/bucket/key)"
            )
        if (problem := s3_key_problem(found[1])) is not None:
            raise DeployError(f"Invalid model artifact URL {url!r}: {problem}")
        return S3Location(url=url, bucket=found[0], key=found[1])
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise DeployError(
                f"Invalid model artifact URL {url!r}: a file URL must be absolute, like file:///path/model.tar.gz"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise DeployError(f"Invalid model artifact URL {url!r}: a file URL must hold an absolute path")
        return LocalLocation(url=url, path=Path(path))
    raise DeployError(
        f"Unsupported model artifact URL {url!r}: scheme {scheme}:// is not supported; use {SUPPORTED_FORMS}"
    )


@dataclass(frozen=True)
class FetchResult:
    sha256: str
    size: int


def hash_copy(src: BinaryIO, dst: BinaryIO) -> FetchResult:
    """Copy ``src`` to ``dst`` in chunks, returning the sha256 and length of what was copied."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = src.read(CHUNK_SIZE)
        if not chunk:
            break
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return FetchResult(sha256=digest.hexdigest(), size=size)


def file_fingerprint(path: Path) -> dict[str, int]:
    """What identifies an unchanged local file: size, mtime and inode."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev}


def copy_local_file(
    loc: LocalLocation, path: Path, dst: BinaryIO, check: Callable[[Path], None] | None = None
) -> FetchResult:
    """``check``: called with where the opened file resolved (a path swapped for a link after it was
    resolved is seen), before anything is read."""
    try:
        with path.open("rb") as src:
            if check is not None:
                check(Path(os.path.realpath(f"/proc/self/fd/{src.fileno()}")))
            return hash_copy(src, dst)
    except OSError as exc:
        raise DeployError(f"Could not read model artifact {loc.url}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class S3Object:
    etag: str
    size: int


class S3Fetcher:
    """A lazily-built, shared boto3 S3 client (boto3 clients are thread-safe; sessions are not)."""

    def __init__(self, endpoint_url: str | None) -> None:
        self.endpoint_url = endpoint_url
        self._client: Any = None
        self._lock = threading.Lock()
        self._credentials = False  # whether the client was built with any (boto3's chain, at build)

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                )
                try:
                    session = boto3.session.Session()
                    self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
                    self._credentials = session.get_credentials() is not None
                except Exception as exc:
                    raise DeployError(f"Could not create an S3 client: {exc}") from exc
            return self._client

    def has_credentials(self) -> bool:
        """Whether the client has credentials to sign with (without, botocore refuses every call before
        sending it). Builds the client: blocks (call it from a thread)."""
        self.client()
        return self._credentials

    def identity(self, loc: S3Location) -> str:
        return f"s3\n{self.endpoint_url or ''}\n{loc.bucket}\n{loc.key}"

    def head(self, loc: S3Location) -> S3Object:
        client = self.client()
        try:
            resp = client.head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            # HEAD errors carry no body, so the code is a bare "404"/"403". Ask with GET for the real code.
            raise self._diagnose(loc, exc) from exc
        return S3Object(etag=str(resp.get("ETag", "")), size=int(resp.get("ContentLength", -1)))

    def download(self, loc: S3Location, dst: BinaryIO) -> tuple[FetchResult, S3Object]:
        client = self.client()
        try:
            resp = client.get_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise self._error(loc, exc) from exc
        obj = S3Object(etag=str(resp.get("ETag", "")), size=int(resp.get("ContentLength", -1)))
        body = resp["Body"]
        digest = hashlib.sha256()
        size = 0
        try:
            while True:
                try:
                    chunk = body.read(CHUNK_SIZE)
                except Exception as exc:
                    raise DeployError(
                        f"Could not fetch model artifact {loc.url}: download interrupted: {exc}"
                    ) from exc
                if not chunk:
                    break
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
        finally:
            body.close()
        if obj.size >= 0 and size != obj.size:
            raise DeployError(
                f"Could not fetch model artifact {loc.url}: download truncated "
                f"({size} of {obj.size} bytes received)"
            )
        return FetchResult(sha256=digest.hexdigest(), size=size), obj

    def _diagnose(self, loc: S3Location, head_exc: Exception) -> DeployError:
        from botocore.exceptions import ClientError

        if isinstance(head_exc, ClientError):
            try:
                resp = self.client().get_object(Bucket=loc.bucket, Key=loc.key)
            except Exception as exc:
                return self._error(loc, exc)
            resp["Body"].close()
        return self._error(loc, head_exc)

    def error(self, loc: S3Location, exc: Exception) -> DeployError:
        """``exc`` from a call about ``loc`` as a DeployError naming it (and S3's code)."""
        return self._error(loc, exc)

    def _error(self, loc: S3Location, exc: Exception) -> DeployError:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        prefix = f"Could not fetch model artifact {loc.url}"
        if isinstance(exc, DeployError):
            return exc
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            code = str(error.get("Code") or "Unknown")
            message = str(error.get("Message") or exc)
            if code in ("NoSuchBucket",):
                detail = f"bucket '{loc.bucket}' does not exist"
            elif code in ("NoSuchKey", "404", "NotFound"):
                code = "NoSuchKey"
                detail = f"object '{loc.key}' does not exist in bucket '{loc.bucket}'"
            elif code in ("AccessDenied", "403", "Forbidden"):
                code = "AccessDenied"
                detail = "access denied (check the credentials and the bucket policy)"
            else:
                detail = message
            return DeployError(f"{prefix}: S3 error {code}: {detail}")
        if isinstance(exc, NoCredentialsError):
            return DeployError(f"{prefix}: no AWS credentials found (S3 error NoCredentials)")
        if isinstance(exc, EndpointConnectionError):
            endpoint = self.endpoint_url or "the default S3 endpoint"
            return DeployError(f"{prefix}: could not connect to {endpoint} (S3 error ConnectionError): {exc}")
        if isinstance(exc, BotoCoreError):
            return DeployError(f"{prefix}: S3 error {type(exc).__name__}: {exc}")
        return DeployError(f"{prefix}: {type(exc).__name__}: {exc}")


def describe_os_error(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text = f"{text}: {os.fsdecode(exc.filename)}"
    return text

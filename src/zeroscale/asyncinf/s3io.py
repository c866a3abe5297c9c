"""S3 in and out for asynchronous requests: read the input object, write the result or the failure.

Both directions stream through a file: the input is read from S3 into a scratch file in 1 MB chunks, and
the result is uploaded from one (one PutObject, or a multipart upload of 8 MB parts past 8 MB, each part
read from the file as it is sent). Either is
atomic in S3: the object appears whole, when the PutObject or CompleteMultipartUpload succeeds, or not at
all; so a reader polling the OutputLocation (the sagemaker SDK's ``object_exists`` waiter) never sees a
partial result. Calls block: the dispatcher runs them in threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

from zeroscale.artifacts.fetch import S3Fetcher, s3_key_problem, s3_object_of_https
from zeroscale.errors import DeployError

CHUNK = 1024 * 1024
# Multipart parts of 8 MB, two at a time: an upload holds about 16 MB, whatever the object's size.
_PART = 8 * 1024 * 1024


class InputError(Exception):
    """The input object could not be read (missing, denied, too large, unreachable)."""


class OutputError(Exception):
    """The result could not be written."""


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None) -> S3Url:
        """``s3://bucket/key``, or an S3 object's https:// URL (see ``s3_object_of_https``)."""
        if url.startswith("https://"):
            found = s3_object_of_https(url, endpoint_url)
            if found is None:
                raise ValueError(
                    f"{url!r} is not an S3 object URL (https://bucket.s3.region.amazonaws.com/key, "
                    "https://s3.region.amazonaws.com/bucket/key, or path-style on the configured S3 endpoint)"
                )
            bucket, key = found
        elif url.startswith("s3://"):
            bucket, _, key = url[len("s3://") :].partition("/")
            if not bucket:
                raise ValueError(f"{url!r} names no bucket")
        else:
            raise ValueError(f"{url!r} is not an s3:// URL")
        if (problem := s3_key_problem(key)) is not None:
            raise ValueError(f"{url!r}: {problem}")
        return cls(bucket, key)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return f"{error.get('Code') or 'Error'}: {error.get('Message') or exc}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Downloaded:
    size: int
    content_type: str | None  # the object's Content-Type (S3 says binary/octet-stream when none was given)


class S3Io:
    def __init__(self, endpoint_url: str | None) -> None:
        self._fetcher = S3Fetcher(endpoint_url)
        self.endpoint_url = endpoint_url
        # Credentials were found once, their client built: ``problem`` has nothing more to say (a request
        # need not hop to a thread to ask it again).
        self.ready = False

    def locate(self, url: str) -> S3Url:
        """Where ``url`` (s3:// or an S3 object's https://) points; ValueError names what is wrong."""
        return S3Url.parse(url, self.endpoint_url)

    def client(self) -> Any:
        return self._fetcher.client()

    def problem(self) -> str | None:
        """Why no request could read its input or write its result here (None: nothing known). Blocks the
        first time (the client is built)."""
        try:
            if self._fetcher.has_credentials():
                self.ready = True
                return None
        except DeployError as exc:  # no client at all (e.g. a malformed --s3-endpoint-url)
            return str(exc)
        return (
            "this server has no credentials for S3, where asynchronous requests read their input and write "
            "their results: start `zeroscale serve` with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "another source of AWS credentials) for your S3, and --s3-endpoint-url for an S3-compatible store"
        )

    def download(self, url: str, dst: BinaryIO, limit_bytes: int) -> Downloaded:
        """Stream the object at ``url`` into ``dst``; its size and content type. InputError when it cannot
        be read."""
        try:
            loc = self.locate(url)
            resp = self.client().get_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise InputError(f"Could not read the input {url}: {_code(exc)}") from exc
        body = resp["Body"]
        size = 0
        try:
            expected = int(resp.get("ContentLength", -1))
            if expected > limit_bytes:
                raise InputError(
                    f"The input {url} is {expected} bytes, over the {limit_bytes} byte limit for async "
                    "requests."
                )
            while chunk := body.read(CHUNK):
                dst.write(chunk)
                size += len(chunk)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"Could not read the input {url}: {_code(exc)}") from exc
        finally:
            body.close()
        if 0 <= expected != size:
            raise InputError(f"Could not read the input {url}: {size} of {expected} bytes arrived")
        dst.flush()
        return Downloaded(size, resp.get("ContentType"))

    def upload(self, url: str, src: BinaryIO, content_type: str) -> None:
        """Upload the whole of the file ``src``. Given by path (``/proc/self/fd/N`` names even an unlinked
        scratch file), s3transfer reads each part from the file as it sends it instead of holding parts in
        memory, as it does for a file object."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=_PART, multipart_chunksize=_PART, max_concurrency=2, use_threads=True
        )
        try:
            loc = S3Url.parse(url)
            self.client().upload_file(
                f"/proc/self/fd/{src.fileno()}",
                loc.bucket,
                loc.key,
                ExtraArgs={"ContentType": content_type},
                Config=config,
            )
        except Exception as exc:
            raise OutputError(f"Could not write {url}: {_code(exc)}") from exc

    def write(self, url: str, body: bytes, content_type: str) -> None:
        try:
            loc = S3Url.parse(url)
            self.client().put_object(Bucket=loc.bucket, Key=loc.key, Body=body, ContentType=content_type)
        except Exception as exc:
            raise OutputError(f"Could not write {url}: {_code(exc)}") from exc

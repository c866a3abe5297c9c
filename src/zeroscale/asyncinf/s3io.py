"""S3 in and out for asynchronous requests: read the input object, write the result or the failure.

A single PutObject is atomic in S3 (the object appears whole or not at all), so a reader polling the
OutputLocation (the sagemaker SDK's ``object_exists`` waiter) never sees a partial result. Calls block: the
dispatcher runs them in threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zeroscale.artifacts.fetch import S3Fetcher


class InputError(Exception):
    """The input object could not be read (missing, denied, too large, unreachable)."""


class OutputError(Exception):
    """The result could not be written."""


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not url.startswith("s3://"):
            raise ValueError(f"{url!r} is not an s3:// URL")
        bucket, _, key = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{url!r} names no bucket")
        return cls(bucket, key)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return f"{error.get('Code') or 'Error'}: {error.get('Message') or exc}"
    return f"{type(exc).__name__}: {exc}"


class S3Io:
    def __init__(self, endpoint_url: str | None) -> None:
        self._fetcher = S3Fetcher(endpoint_url)

    def client(self) -> Any:
        return self._fetcher.client()

    def read(self, url: str, limit_bytes: int) -> bytes:
        try:
            loc = S3Url.parse(url)
            resp = self.client().get_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise InputError(f"Could not read the input {url}: {_code(exc)}") from exc
        body = resp["Body"]
        try:
            size = int(resp.get("ContentLength", -1))
            if size > limit_bytes:
                raise InputError(
                    f"The input {url} is {size} bytes, over the {limit_bytes} byte limit for async requests."
                )
            data = body.read()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"Could not read the input {url}: {_code(exc)}") from exc
        finally:
            body.close()
        return bytes(data)

    def write(self, url: str, body: bytes, content_type: str) -> None:
        try:
            loc = S3Url.parse(url)
            self.client().put_object(Bucket=loc.bucket, Key=loc.key, Body=body, ContentType=content_type)
        except Exception as exc:
            raise OutputError(f"Could not write {url}: {_code(exc)}") from exc

"""Image names and tags (Docker's rules), and ``Image`` strings -> (name, tag)."""

from __future__ import annotations

import re

from zeroscale.errors import ValidationException

DEFAULT_TAG = "latest"
_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_MAX = 128
_DIGEST = re.compile(r"[0-9a-f]{64}")


class ImageError(ValidationException):
    """A bad push or manifest; the message says what to fix."""


def validate_name(name: str) -> str:
    return _valid(
        "name", name, _NAME, "lower-case letters, digits and single '.', '_' or '-' between them", "my-model"
    )


def validate_tag(tag: str) -> str:
    return _valid("tag", tag, _TAG, "letters, digits, '_', '.' and '-', not starting with '.' or '-'", "1.0")


def _valid(what: str, value: str, pattern: re.Pattern[str], rule: str, example: str) -> str:
    if len(value) > _MAX or not pattern.fullmatch(value):
        raise ImageError(
            f"Image {what} {value!r} is not valid: use {rule} (at most {_MAX} characters), e.g. '{example}'."
        )
    return value


def split_reference(ref: str) -> tuple[str, str]:
    """``name[:tag]`` as the CLI takes it -> (name, tag), validated; a missing tag is ``latest``."""
    name, sep, tag = ref.strip().partition(":")
    return validate_name(name), validate_tag(tag if sep else DEFAULT_TAG)


def digest_of(image: str) -> str | None:
    """The digest an ``Image`` value pins (``name:tag@sha256:<64 hex digits>``: its hex digits), None when it
    pins none. ImageError for a digest of another form (it would pin nothing zeroscale can check)."""
    _, at, digest = image.strip().partition("@")
    if not at:
        return None
    algorithm, _, hexdigits = digest.partition(":")
    if algorithm != "sha256" or not _DIGEST.fullmatch(hexdigits):
        raise ImageError(
            f"Image {image.strip()[:300]!r}: a digest is sha256: and 64 lower-case hex digits, as `zeroscale "
            "images list` shows each push's."
        )
    return hexdigits


def parse_reference(image: str) -> tuple[str, str] | None:
    """An ``Image`` value -> (name, tag), or None when it cannot name a registered image.

    Like framework images, a registry and path are ignored: ``123.dkr.ecr.../my-model:1.0`` and
    ``my-model:1.0`` name the same image. A ``@sha256:...`` digest suffix is ``digest_of``'s."""
    ref = image.strip().split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    name, sep, tag = last.partition(":")
    tag = tag if sep else DEFAULT_TAG
    if len(name) > _MAX or len(tag) > _MAX or not _NAME.fullmatch(name) or not _TAG.fullmatch(tag):
        return None
    return name, tag

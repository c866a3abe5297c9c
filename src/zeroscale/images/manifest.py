"""``manifest.json``, the part of a Dockerfile zeroscale needs, checked with errors that say what to fix.

    {
      "entrypoint": ["./serve"],            # required; the server runs <entrypoint> serve, like SageMaker
      "env": {"PYTHONUNBUFFERED": "1"},     # optional; the model's Environment is laid over it
      "workdir": ".",                       # optional; relative to the image root, the process's cwd
      "content_types": ["text/csv"]         # optional; informational, shown by `zeroscale images`
    }

``entrypoint[0]`` is looked up like a container's: a bare name on PATH (the image's ``env`` PATH, else the
server's), a relative path from ``workdir`` (it must be an executable file in the image), or an absolute
path on the host.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeroscale.images.names import ImageError

MANIFEST_FILE = "manifest.json"
_KEYS = ("entrypoint", "env", "workdir", "content_types")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXAMPLE = '{"entrypoint": ["./serve"], "env": {"KEY": "value"}, "workdir": "."}'


@dataclass(frozen=True)
class Manifest:
    entrypoint: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "."  # normalised, relative to the image root
    content_types: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "entrypoint": list(self.entrypoint),
            "env": dict(self.env),
            "workdir": self.workdir,
            "content_types": list(self.content_types),
        }


def _fail(problem: str) -> ImageError:
    return ImageError(f"{MANIFEST_FILE}: {problem}. A manifest looks like {_EXAMPLE}.")


def _strings(value: Any, what: str, *, non_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"{what} must be a list of strings")
    if non_empty and not value:
        raise _fail(f"{what} must not be empty")
    if any("\x00" in v for v in value):
        raise _fail(f"{what} has a NUL byte")
    return tuple(value)


def from_json(doc: Any) -> Manifest:
    """The manifest in ``doc`` (parsed JSON), checked for shape only (no files are looked at)."""
    if not isinstance(doc, dict):
        raise _fail("the manifest must be a JSON object")
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise _fail(f"unknown key(s) {', '.join(map(repr, unknown))}; the keys are {', '.join(_KEYS)}")
    if "entrypoint" not in doc:
        raise _fail("'entrypoint' is required")
    entrypoint = _strings(doc["entrypoint"], "'entrypoint'", non_empty=True)
    if not entrypoint[0]:
        raise _fail("'entrypoint' starts with an empty string")
    env = doc.get("env", {})
    if not isinstance(env, dict):
        raise _fail("'env' must be an object of names to string values")
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise _fail(f"'env' name {key!r} is not a valid environment variable name")
        if not isinstance(value, str) or "\x00" in value:
            raise _fail(f"'env' value of {key} must be a string (quote numbers: \"1\")")
    workdir = doc.get("workdir", ".")
    if not isinstance(workdir, str) or not workdir or "\x00" in workdir:
        raise _fail("'workdir' must be a non-empty string")
    if workdir.startswith("/"):
        raise _fail(f'\'workdir\' {workdir!r} must be relative to the image root, e.g. "." or "app"')
    normal = posixpath.normpath(workdir)
    if normal == ".." or normal.startswith("../"):
        raise _fail(f"'workdir' {workdir!r} leaves the image")
    content_types = _strings(doc.get("content_types", []), "'content_types'", non_empty=False)
    return Manifest(entrypoint, dict(env), normal, content_types)


def parse_manifest(root: Path) -> Manifest:
    """Read and check ``root/manifest.json`` against the image in ``root``. Raises ImageError."""
    path = root / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(
            f"The image has no {MANIFEST_FILE} at its top level. Add one, e.g. {_EXAMPLE}."
        ) from None
    except OSError as exc:
        raise ImageError(f"{MANIFEST_FILE} cannot be read: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(f"not valid JSON ({exc})") from None
    manifest = from_json(doc)
    real_root = os.path.realpath(root)
    workdir = os.path.realpath(root / manifest.workdir)
    if not (workdir == real_root or workdir.startswith(real_root + os.sep)) or not os.path.isdir(workdir):
        raise _fail(f"'workdir' {manifest.workdir!r} is not a directory in the image")
    program = manifest.entrypoint[0]
    if "/" in program and not program.startswith("/"):
        target = os.path.realpath(os.path.join(workdir, program))
        if not target.startswith(real_root + os.sep):
            raise _fail(f"'entrypoint' {program!r} leaves the image")
        try:
            st = os.stat(target)
        except OSError:
            raise _fail(f"'entrypoint' {program!r} is not a file in the image (from workdir)") from None
        if not stat.S_ISREG(st.st_mode):
            raise _fail(f"'entrypoint' {program!r} is not a regular file")
        if not st.st_mode & 0o111:
            raise _fail(f"'entrypoint' {program!r} is not executable (chmod +x it before pushing)")
    return manifest

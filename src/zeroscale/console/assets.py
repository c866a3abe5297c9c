"""The console's static files, shipped inside the package (no build step): read once, served with an ETag."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


class Assets:
    """Every file under ``static/`` by its relative path; nothing outside that set is ever read."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self._files: dict[str, Asset] = {}
        for path in sorted(root.rglob("*")):
            content_type = _TYPES.get(path.suffix)
            if not path.is_file() or content_type is None:
                continue
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self._files[path.relative_to(root).as_posix()] = Asset(body, content_type, etag)

    def get(self, name: str) -> Asset | None:
        return self._files.get(name)

    def names(self) -> list[str]:
        return list(self._files)

"""Build real tarballs (friendly and hostile) for the artifact tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

Member = tuple[tarfile.TarInfo, bytes | None]


def file_member(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def dir_member(name: str, mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info, None


def symlink_member(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def hardlink_member(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, None


def special_member(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, None


def write_tar(path: Path, members: list[Member], *, compression: str = "gz") -> Path:
    """Write ``members`` to ``path``; compression is "gz", "bz2", "xz" or "" (plain tar)."""
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def model_tarball(path: Path, files: dict[str, bytes] | None = None, *, compression: str = "gz") -> Path:
    files = files if files is not None else {"model.bin": b"weights", "code/inference.py": b"print('hi')\n"}
    return write_tar(path, [file_member(name, data) for name, data in files.items()], compression=compression)


def cached_entries(root: Path) -> list[str]:
    """Everything in the cache that is not bookkeeping: must be empty after a rejected archive."""
    left: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name in ("index", "tmp"):
            left += [str(p.relative_to(root)) for p in entry.iterdir()]
        else:
            left.append(entry.name)
    return left


def tree(directory: Path) -> dict[str, bytes | str]:
    """{relative path: file bytes, or 'dir', or 'link -> target'} for a directory."""
    out: dict[str, bytes | str] = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        if path.is_symlink():
            out[rel] = f"link -> {path.readlink()}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out

"""Safe, member-by-member tar extraction with limits, and safe copies of local model directories.

Nothing here trusts tarfile's own extraction: every member is checked and written by hand into a
directory that only this process uses (the caller renames it into place when we return).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from zeroscale.errors import DeployError

CHUNK_SIZE = 1024 * 1024
_MB = 1024 * 1024
# Data after the tar end-of-archive marker that we read (to verify the compressed stream's checksum)
# before giving up; real writers pad to a 10 KiB record.
MAX_TRAILING_BYTES = 64 * 1024 * 1024

# How deep and how long a member's path may be. A real model's deepest paths (a vendored package's
# sources, a Hugging Face snapshot) are a few dozen levels and a few hundred bytes; the kernel's own limits
# are 255 bytes per name and 4096 per path, the cache's root and entry included. Checked before anything
# of the member is created, so such a member is refused by name rather than failing half-written.
MAX_DEPTH = 128
MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
_SHOWN_NAME = 160  # a longer member name is shortened (its start and end) in messages

# Whether the model being prepared may read a file or directory on the server's disk, where it resolved
# (symlinks followed): None, or why not. A model made by an IAM user reads with that user's rights.
ReadCheck = Callable[[Path], str | None]

_DIR_MODE = 0o755
_FILE_MODE = 0o644
_EXEC_MODE = 0o755


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_files: int

    def bytes_text(self) -> str:
        """The size limit as a message names it, with the flag that sets it."""
        size, flag = self.max_bytes, "zeroscale serve --max-extracted-mb"
        return f"{size // _MB} MB ({size} bytes, {flag})" if size % _MB == 0 else f"{size} bytes ({flag})"


@dataclass(frozen=True)
class ExtractStats:
    members: int
    bytes: int


def _file_mode(mode: int) -> int:
    """Executable stays executable; setuid/setgid/sticky and group/other write are dropped."""
    return _EXEC_MODE if mode & 0o111 else _FILE_MODE


def _inside(real_root: str, path: str) -> bool:
    return path == real_root or path.startswith(real_root + os.sep)


def path_rule(parts: list[str]) -> str | None:
    """Why a path of these components (relative to the model directory) is refused, or None if it is not."""
    if len(parts) > MAX_DEPTH:
        return f"is nested {len(parts)} levels deep (the limit is {MAX_DEPTH})"
    encoded = [p.encode("utf-8", "surrogateescape") for p in parts]
    longest = max((len(e) for e in encoded), default=0)
    if longest > MAX_NAME_BYTES:
        return f"has a name of {longest} bytes in its path (the limit is {MAX_NAME_BYTES} bytes)"
    total = sum(len(e) for e in encoded) + max(0, len(encoded) - 1)
    if total > MAX_PATH_BYTES:
        return f"has a path of {total} bytes (the limit is {MAX_PATH_BYTES} bytes)"
    return None


def shown_name(name: str) -> str:
    """``name`` quoted for a message, its middle left out when it is long."""
    if len(name) > _SHOWN_NAME:
        name = f"{name[:100]}...{name[-40:]}"
    return repr(name)


def _open_decompressed(raw: BinaryIO) -> BinaryIO | io.BufferedIOBase:
    """Detect compression by content: gzip, bzip2, xz, else plain tar."""
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic[:3] == b"BZh":
        return bz2.BZ2File(raw, mode="rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def extract_archive(archive: Path, dest: Path, *, limits: Limits, source: str) -> ExtractStats:
    """Extract ``archive`` (tar, optionally gzip/bzip2/xz compressed) into the existing empty ``dest``.

    Raises DeployError naming the offending member and rule; the caller removes ``dest`` on failure.
    """
    extractor = _Extractor(dest, limits, source)
    try:
        with archive.open("rb") as raw:
            stream = _open_decompressed(raw)
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tf:
                    for member in tf:
                        extractor.add(tf, member)
                _drain(stream, source)
            finally:
                if stream is not raw:
                    stream.close()
    except _ARCHIVE_ERRORS as exc:
        raise DeployError(f"Model artifact {source} is not a valid tar.gz archive: {exc}") from exc
    extractor.check_links()
    return ExtractStats(members=extractor.members, bytes=extractor.bytes)


def _drain(stream: BinaryIO | io.BufferedIOBase, source: str) -> None:
    """Read to the end so a truncated or corrupt compressed stream (bad CRC, missing trailer) is noticed."""
    trailing = 0
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            return
        trailing += len(chunk)
        if trailing > MAX_TRAILING_BYTES:
            raise DeployError(
                f"Model artifact {source} is not a valid tar.gz archive: "
                f"more than {MAX_TRAILING_BYTES} bytes of data after the end of the archive"
            )


class _Extractor:
    def __init__(self, dest: Path, limits: Limits, source: str) -> None:
        self.root = os.path.realpath(dest)
        self.limits = limits
        self.source = source
        self.members = 0
        self.bytes = 0
        self.symlinks: list[tuple[str, str]] = []  # (member name, absolute path)

    # ---- errors ----
    def reject(self, name: str, rule: str) -> DeployError:
        return DeployError(f"Model archive member {shown_name(name)} {rule} (artifact: {self.source})")

    # ---- paths ----
    def split(self, name: str, *, what: str = "") -> list[str]:
        """Archive path -> safe relative components; rejects absolute paths and '..'."""
        shown = what or name
        if "\x00" in name:
            raise self.reject(shown, "has a NUL byte in its name")
        if name.startswith("/"):
            raise self.reject(shown, "has an absolute path, which escapes the model directory")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.reject(shown, "escapes the model directory (its path contains '..')")
        rule = path_rule(parts)
        if rule is not None:
            raise self.reject(shown, f"is a link to a target that {rule}" if what else rule)
        return parts

    def parent_dir(self, name: str, parts: list[str]) -> str:
        """Create the parent directories of ``parts`` as real directories; never follow a symlink."""
        current = self.root
        for component in parts[:-1]:
            current = os.path.join(current, component)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, _DIR_MODE)
                os.chmod(current, _DIR_MODE)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise self.reject(name, "is inside a symlinked directory, which is not allowed")
            if not stat.S_ISDIR(st.st_mode):
                raise self.reject(name, "is inside a path that is not a directory")
        return current

    def clear(self, name: str, path: str, *, for_dir: bool) -> bool:
        """Make room at ``path``. Returns True if a directory already stands there (only ok for dirs)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if for_dir:
                return True
            raise self.reject(name, "would replace a directory")
        if for_dir:
            raise self.reject(name, "is a directory that would replace a file")
        os.unlink(path)  # a later member of the same name wins, as with tar
        return False

    # ---- members ----
    def add(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        self.members += 1
        if self.members > self.limits.max_files:
            raise DeployError(
                f"Model archive has more than {self.limits.max_files} members "
                f"(the max_extracted_files limit) (artifact: {self.source})"
            )
        if member.ischr() or member.isblk():
            raise self.reject(name, "is a device file, which is not allowed")
        if member.isfifo():
            raise self.reject(name, "is a FIFO, which is not allowed")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise self.reject(name, f"has an unsupported type {member.type!r}")
        parts = self.split(name)
        if member.issym():
            self.check_symlink_target(name, parts, member.linkname)
        elif member.islnk():
            self.split(member.linkname, what=name)  # the hardlink's target must be a safe archive path
        self.data_filter(member)
        if not parts:  # the archive root itself ("./")
            return
        parent = self.parent_dir(name, parts)
        path = os.path.join(parent, parts[-1])
        if member.isdir():
            if not self.clear(name, path, for_dir=True):
                os.mkdir(path, _DIR_MODE)
            os.chmod(path, _DIR_MODE)
        elif member.issym():
            self.clear(name, path, for_dir=False)
            os.symlink(member.linkname, path)
            if not _inside(self.root, os.path.realpath(path)):
                raise self.reject(
                    name, f"is a symlink to {member.linkname!r}, which escapes the model directory"
                )
            self.symlinks.append((name, path))
        elif member.islnk():
            self.hardlink(name, member.linkname, path)
        else:
            self.regular_file(tf, member, path)

    def check_symlink_target(self, name: str, parts: list[str], target: str) -> None:
        escape = f"is a symlink to {shown_name(target)}, which escapes the model directory"
        if not target or "\x00" in target:
            raise self.reject(name, "is a symlink with an invalid target")
        if target.startswith("/"):
            raise self.reject(name, escape)
        length = len(target.encode("utf-8", "surrogateescape"))
        if length > MAX_PATH_BYTES:
            raise self.reject(
                name, f"is a symlink to a target of {length} bytes (the limit is {MAX_PATH_BYTES} bytes)"
            )
        resolved = posixpath.normpath(posixpath.join("/".join(parts[:-1]), target))
        if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
            raise self.reject(name, escape)
        # Read as text it stays inside; on disk, earlier symlinks may still lead it out.
        if not _inside(self.root, os.path.realpath(os.path.join(self.root, *parts[:-1], target))):
            raise self.reject(name, escape)

    def data_filter(self, member: tarfile.TarInfo) -> None:
        """Python's own 'data' filter as a second opinion on top of the checks above."""
        try:
            tarfile.data_filter(member, self.root)
        except tarfile.FilterError as exc:
            raise self.reject(member.name, f"was rejected by the tar data filter: {exc}") from exc

    def hardlink(self, name: str, linkname: str, path: str) -> None:
        escape = f"is a hardlink to {linkname!r}, which escapes the model directory"
        target_parts = self.split(linkname, what=name)
        if not target_parts:
            raise self.reject(name, escape)
        target = os.path.join(self.root, *target_parts)
        if os.path.realpath(target) != target:  # would pass through (or be) a symlink
            raise self.reject(name, f"is a hardlink to {linkname!r} through a symlink, which is not allowed")
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise self.reject(
                name, f"is a hardlink to {linkname!r}, which is not an earlier file in the archive"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise self.reject(name, f"is a hardlink to {linkname!r}, which is not a regular file")
        if target == path:
            return
        self.clear(name, path, for_dir=False)
        os.link(target, path, follow_symlinks=False)

    def regular_file(self, tf: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        name = member.name
        limit = self.limits.max_bytes
        if self.bytes + member.size > limit:
            raise self.over_limit(name)
        self.clear(name, path, for_dir=False)
        mode = _file_mode(member.mode)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            data = tf.extractfile(member)
            if data is None:  # pragma: no cover - isreg() members always have data
                return
            with data:
                while True:
                    chunk = data.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    self.bytes += len(chunk)
                    if self.bytes > limit:
                        raise self.over_limit(name)
                    out.write(chunk)

    def over_limit(self, name: str) -> DeployError:
        return self.reject(
            name,
            f"would bring the extracted size over the limit of {self.limits.bytes_text()}",
        )

    def check_links(self) -> None:
        """Later members can change where earlier symlinks point: check them all once more at the end."""
        for name, path in self.symlinks:
            if os.path.islink(path) and not _inside(self.root, os.path.realpath(path)):
                raise self.reject(name, "is a symlink whose target escapes the model directory")


# ---- local directories ----
@dataclass(frozen=True)
class _Entry:
    rel: str
    path: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def _refuse_protected(real: Path, rel: str, source: str, protected: tuple[Path, ...]) -> None:
    """DeployError when ``real`` (where a symlink, a directory, an opened file resolves) is in a protected
    directory: a link in a model directory must not bring the server's own files into a model."""
    for root in protected:
        if real == root or root in real.parents or real in root.parents:
            raise DeployError(
                f"Model directory {source}: {shown_name(rel)} leads into zeroscale's own directory ({root})"
            )


def check_read(real: Path, source: str, reads: ReadCheck, name: str = "") -> None:
    """DeployError unless ``reads`` allows ``real``, where an entry or an opened file resolves. ``name``:
    the entry's name in the model directory ("": the model data itself)."""
    why = reads(real)
    if why is not None:
        what = f"Model directory {source}: {shown_name(name)}" if name else f"Model data {source}"
        raise DeployError(f"{what} leads to {real}: {why}")


def _check_leads(
    path: str,
    rel: str,
    source: str,
    protected: tuple[Path, ...],
    reads: ReadCheck | None,
    *,
    protected_too: bool = True,
) -> None:
    """Where ``path`` (an entry, an opened file's ``/proc/self/fd`` link) resolves, resolved once: not into
    ``protected`` (when ``protected_too``), and allowed by ``reads``."""
    guard = bool(protected) and protected_too
    if not guard and reads is None:
        return
    real = Path(os.path.realpath(path))
    if guard:
        _refuse_protected(real, rel, source, protected)
    if reads is not None:
        check_read(real, source, reads, rel)


def _walk(
    src: Path,
    limits: Limits,
    source: str,
    protected: tuple[Path, ...] = (),
    reads: ReadCheck | None = None,
) -> Iterator[_Entry]:
    """Every entry under ``src`` in a stable order, symlinks followed (a model directory may well be
    a snapshot of symlinks into a download cache), loops, special files and links (or directories) into
    ``protected`` rejected, and every entry ``reads`` does not allow where it resolves."""
    count = 0
    total = 0

    def visit(directory: str, rel: str, ancestors: frozenset[tuple[int, int]]) -> Iterator[_Entry]:
        nonlocal count, total
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            child_rel = f"{rel}/{name}" if rel else name
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise DeployError(f"Model directory {source}: {child_rel!r} is a broken symlink") from None
            rule = path_rule(child_rel.split("/"))
            if rule is not None:  # also bounds this recursion
                raise DeployError(f"Model directory {source}: {shown_name(child_rel)} {rule}")
            # a plain file is checked for ``protected`` where it is opened (copy_directory); a link or a
            # directory now, as what is under it would be reached through it
            linked = stat.S_ISDIR(st.st_mode) or os.path.islink(path)
            _check_leads(path, child_rel, source, protected, reads, protected_too=linked)
            count += 1
            if count > limits.max_files:
                raise DeployError(
                    f"Model directory {source} has more than {limits.max_files} entries "
                    "(the max_extracted_files limit)"
                )
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if ident in ancestors:
                    raise DeployError(f"Model directory {source}: {child_rel!r} is a symlink loop")
                yield _Entry(child_rel, path, st)
                yield from visit(path, child_rel, ancestors | {ident})
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                if total > limits.max_bytes:
                    raise DeployError(
                        f"Model directory {source} is larger than the limit of {limits.bytes_text()}"
                    )
                yield _Entry(child_rel, path, st)
            else:
                raise DeployError(
                    f"Model directory {source}: {child_rel!r} is not a regular file or directory"
                )

    root_st = os.stat(src)
    yield from visit(str(src), "", frozenset({(root_st.st_dev, root_st.st_ino)}))


def directory_fingerprint(
    src: Path,
    *,
    limits: Limits,
    source: str,
    protected: tuple[Path, ...] = (),
    reads: ReadCheck | None = None,
) -> str:
    """A cheap identity of a directory's current state (names, types, sizes, mtimes, modes)."""
    digest = hashlib.sha256()
    for entry in _walk(src, limits, source, protected, reads):
        st = entry.st
        digest.update(
            f"{entry.rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode(
                "utf-8", "surrogateescape"
            )
        )
    return digest.hexdigest()


def copy_directory(
    src: Path,
    dest: Path,
    *,
    limits: Limits,
    source: str,
    protected: tuple[Path, ...] = (),
    reads: ReadCheck | None = None,
) -> tuple[str, ExtractStats]:
    """Copy ``src`` into the existing empty ``dest``; return the content hash of what was copied. No file
    is read from ``protected``, nor one ``reads`` does not allow (each opened file is checked where it
    resolved: a link swapped after the walk looked at it is caught)."""
    digest = hashlib.sha256(b"zeroscale-directory-v1\0")
    members = 0
    copied = 0
    for entry in _walk(src, limits, source, protected, reads):
        members += 1
        rel_bytes = entry.rel.encode("utf-8", "surrogateescape")
        target = os.path.join(dest, entry.rel)
        if entry.is_dir:
            digest.update(b"D" + rel_bytes + b"\0")
            os.mkdir(target, _DIR_MODE)
            os.chmod(target, _DIR_MODE)
            continue
        mode = _file_mode(entry.st.st_mode)
        digest.update(b"F" + rel_bytes + b"\0" + (b"x" if mode == _EXEC_MODE else b"-"))
        file_digest = hashlib.sha256()
        size = 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        with open(entry.path, "rb") as inp, os.fdopen(fd, "wb") as out:
            _check_leads(f"/proc/self/fd/{inp.fileno()}", entry.rel, source, protected, reads)
            os.fchmod(out.fileno(), mode)
            while True:
                chunk = inp.read(CHUNK_SIZE)
                if not chunk:
                    break
                copied += len(chunk)
                if copied > limits.max_bytes:
                    raise DeployError(
                        f"Model directory {source} is larger than the limit of {limits.bytes_text()}"
                    )
                size += len(chunk)
                file_digest.update(chunk)
                out.write(chunk)
        digest.update(size.to_bytes(8, "big") + file_digest.digest())
    return digest.hexdigest(), ExtractStats(members=members, bytes=copied)

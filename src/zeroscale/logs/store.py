"""Where log groups and streams live on disk, and the only code that creates or deletes them.

Layout (the router and the worker manager write worker streams at the same paths)::

    <logs dir>/<endpoint name, lower-cased>/.name               the endpoint's name as created (the group)
    <logs dir>/<endpoint name, lower-cased>/<variant>/<worker-id>.log
    <logs dir>/<endpoint name, lower-cased>/<variant>/platform.log

Group ``/aws/sagemaker/Endpoints/<EndpointName>``; stream ``<variant>/<worker-id>`` (a worker's output and
its lifecycle), or ``<variant>/platform`` (the variant's deploys, updates and failed starts). A transform
job's workers (router key ``transform-job:<name>``, a directory of its own) log in the one group of every
job, ``/aws/sagemaker/TransformJobs``, streams ``<name>/<worker-id>``, as SageMaker's. Files hold
``workers.capture`` records. Group names are looked up case-insensitively (endpoint and job names are).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from zeroscale.types import TRANSFORM_LOG_GROUP, TRANSFORM_ROUTE_PREFIX, log_group_name, log_group_route
from zeroscale.workers.capture import encode

PLATFORM_STREAM = "platform"
_NAME_FILE = ".name"
_SUFFIX = ".log"


@dataclass(frozen=True)
class Group:
    name: str
    path: Path  # its directory (the transform jobs' group: its first job's)
    more: tuple[Path, ...] = ()  # the transform jobs' group: the other jobs' directories

    @property
    def dirs(self) -> tuple[Path, ...]:
        return (self.path, *self.more)


@dataclass(frozen=True)
class Stream:
    name: str  # <variant>/<worker-id>
    path: Path
    size: int  # the bytes it holds on disk (a punched head not counted)
    mtime_ms: int  # when it was last written (CloudWatch's lastIngestionTime)


def _held(st: os.stat_result) -> int:
    """The bytes a stream holds: its size, less a head punched out of a live stream past its bound (no
    blocks at all: data kept inline by the file system, or nothing it reports: its size)."""
    return min(st.st_size, st.st_blocks * 512) if st.st_blocks else st.st_size


def _subdirs(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if _safe(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _variant_streams(variant: os.DirEntry[str], prefix: str = "") -> list[Stream]:
    """The streams of one variant's directory whose names (``<variant>/<worker>``) start with ``prefix``."""
    try:
        files = list(os.scandir(variant.path))
    except OSError:
        return []
    found: list[Stream] = []
    for entry in files:
        if not (entry.name.endswith(_SUFFIX) and _safe(entry.name)):
            continue
        name = f"{variant.name}/{entry.name[: -len(_SUFFIX)]}"
        if not name.startswith(prefix):
            continue
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            found.append(Stream(name, Path(entry.path), _held(st), st.st_mtime_ns // 1_000_000))
    return found


def _jobs_named(group: Group, prefix: str) -> tuple[Path, ...]:
    """The directories of ``group`` a stream name starting with ``prefix`` can be in: the transform jobs'
    group looks only at the jobs it names (``<job name>/...``, a job's directory is its lower-cased key)."""
    if group.name != TRANSFORM_LOG_GROUP or not prefix:
        return group.dirs
    head, slash, _ = prefix.partition("/")
    key = TRANSFORM_ROUTE_PREFIX + head.lower()
    return tuple(d for d in group.dirs if (d.name == key if slash else d.name.startswith(key)))


def _safe(part: str) -> bool:
    return bool(part) and not part.startswith(".") and "/" not in part and "\0" not in part


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._named: set[str] = set()

    # ---- names ----
    @staticmethod
    def group_name(endpoint: str) -> str:
        return log_group_name(endpoint)

    def _group_dir(self, name: str) -> Path | None:
        route = log_group_route(name)
        return self.root / route.lower() if route is not None and _safe(route) else None

    def stream_path(self, endpoint: str, stream: str) -> Path | None:
        variant, _, worker = stream.partition("/")
        if not (_safe(endpoint) and _safe(variant) and _safe(worker)):
            return None
        return self.root / endpoint.lower() / variant / f"{worker}{_SUFFIX}"

    # ---- groups ----
    def group(self, name: str) -> Group | None:
        if name == TRANSFORM_LOG_GROUP:
            return self._transform_group(_subdirs(str(self.root)))
        path = self._group_dir(name)
        if path is None or not path.is_dir():
            return None
        # Log group names are case-sensitive, as on AWS: the group is named with its endpoint's name as it
        # was created. Its directory is lower-cased (endpoint names are unique regardless of case), but a name
        # in another case is no name of it: a policy denying the group by its name would not hold for it.
        group = Group(self._display_name(path), path)
        return group if group.name == name else None

    def groups(self) -> list[Group]:
        entries = _subdirs(str(self.root))
        found = [
            Group(self._display_name(Path(e.path)), Path(e.path))
            for e in entries
            if not e.name.startswith(TRANSFORM_ROUTE_PREFIX)
        ]
        jobs = self._transform_group(entries)
        return sorted([*found, *([jobs] if jobs is not None else [])], key=lambda g: g.name)

    @staticmethod
    def _transform_group(entries: list[os.DirEntry[str]]) -> Group | None:
        """Every transform job's directory as one group (None while there is none)."""
        dirs = sorted(Path(e.path) for e in entries if e.name.startswith(TRANSFORM_ROUTE_PREFIX))
        return Group(TRANSFORM_LOG_GROUP, dirs[0], tuple(dirs[1:])) if dirs else None

    def _display_name(self, path: Path) -> str:
        with contextlib.suppress(OSError):
            name = (path / _NAME_FILE).read_text().strip()
            if name.lower() == path.name:
                return log_group_name(name)
        return log_group_name(path.name)

    def created_ms(self, group: Group) -> int:
        """When the group was named (its ``.name`` file), else its directory's modification time."""
        for path in (group.path / _NAME_FILE, group.path):
            with contextlib.suppress(OSError):
                return path.stat().st_mtime_ns // 1_000_000
        return 0

    def remember(self, endpoint: str) -> None:
        """Record the endpoint's name as created (its directory is lower-cased), once per name."""
        if endpoint in self._named or not _safe(endpoint):
            return
        path = self.root / endpoint.lower() / _NAME_FILE
        with contextlib.suppress(OSError):
            if not (path.exists() and path.read_text().strip() == endpoint):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{_NAME_FILE}.{os.getpid()}")
                tmp.write_text(endpoint + "\n")
                tmp.replace(path)
            self._named.add(endpoint)

    # ---- streams ----
    def streams(self, group: Group, prefix: str = "") -> list[Stream]:
        found: list[Stream] = []
        for directory in _jobs_named(group, prefix):
            for variant in _subdirs(str(directory)):
                if (variant.name + "/").startswith(prefix[: len(variant.name) + 1]):
                    found += _variant_streams(variant, prefix)
        return sorted(found, key=lambda s: s.name) if group.more else found

    def every_stream(self) -> list[Stream]:
        """Every stream of every group, for retention: one pass of ``scandir`` and ``stat`` (no group's
        display name is read)."""
        return [
            stream
            for group in _subdirs(str(self.root))
            for variant in _subdirs(group.path)
            for stream in _variant_streams(variant)
        ]

    def stream(self, group: Group, name: str) -> Stream | None:
        variant, _, worker = name.partition("/")
        if not (_safe(variant) and _safe(worker)):
            return None
        for directory in _jobs_named(group, name):
            path = directory / variant / f"{worker}{_SUFFIX}"
            try:
                st = path.stat()
            except OSError:
                continue
            return Stream(name, path, _held(st), st.st_mtime_ns // 1_000_000)
        return None

    def append(self, endpoint: str, stream: str, ms: int, lines: list[str]) -> None:
        """Append one record per line, in one write (records never interleave with another writer's)."""
        path = self.stream_path(endpoint, stream)
        if path is None or not lines:
            return
        data = b"".join(encode(ms, line.encode("utf-8", "replace")) for line in lines)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def delete(self, stream: Stream) -> None:
        """Delete a stream; its variant directory and group go with the last of them."""
        with contextlib.suppress(FileNotFoundError):
            stream.path.unlink()
        variant_dir = stream.path.parent
        group_dir = variant_dir.parent
        with contextlib.suppress(OSError):
            variant_dir.rmdir()  # only when empty
        with contextlib.suppress(OSError):
            if not any(p.name != _NAME_FILE for p in group_dir.iterdir()):
                (group_dir / _NAME_FILE).unlink(missing_ok=True)
                group_dir.rmdir()
                self._named = {n for n in self._named if n.lower() != group_dir.name}

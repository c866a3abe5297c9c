"""What one front end's log store answers, for the CloudWatch Logs operations to merge with the other front
ends' (``logs.cloudwatch``): the same four reads whether asked in this process or by a peer
(``zeroscale.peers``), with JSON values only.

Every operation takes the group's name as the caller gave it and answers ``{"absent": "group"}`` when this
store has no such group (``{"absent": "stream"}``: no such stream), so that only the merge decides what does
not exist anywhere. Each source knows its id: a merged paging token holds one position per source, and each
source reads its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zeroscale.logs.patterns import compile_pattern
from zeroscale.logs.reader import bounds, page_backward, page_forward, search
from zeroscale.logs.store import Group, LogStore

AFTER_EVERY_OFFSET = 2**63  # a search cursor on another source: every event of this (time, stream) is after
NO_GROUP: dict[str, Any] = {"absent": "group"}
NO_STREAM: dict[str, Any] = {"absent": "stream"}


class BadArgs(ValueError):
    """A peer's call with arguments of the wrong shape."""


def _int(args: dict[str, Any], name: str) -> int | None:
    value = args.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise BadArgs(f"{name} is not an integer")
    return value


def _str(args: dict[str, Any], name: str, default: str | None = None) -> str:
    value = args.get(name, default)
    if not isinstance(value, str):
        raise BadArgs(f"{name} is not a string")
    return value


class LocalLogs:
    def __init__(self, store: LogStore, ident: str) -> None:
        self.store = store
        self.id = ident
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "logs.groups": self.groups,
            "logs.streams": self.streams,
            "logs.page": self.page,
            "logs.search": self.search,
        }

    def run(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = self._ops.get(op)
        if handler is None:
            raise BadArgs(f"no logs operation {op!r}")
        try:
            return handler(args)
        except (KeyError, TypeError, AttributeError) as exc:
            raise BadArgs(f"{op}: {type(exc).__name__} {exc}") from None

    @property
    def ops(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return dict(self._ops)

    def _group(self, args: dict[str, Any]) -> Group | None:
        return self.store.group(_str(args, "group"))

    def groups(self, args: dict[str, Any]) -> dict[str, Any]:
        """Groups by name after ``after``, filtered by ``prefix``, ``pattern`` (case-insensitive) or the names
        in ``wanted``: the first ``limit`` of them (name, creation ms, stored bytes), and whether there are
        more."""
        prefix, pattern = _str(args, "prefix", ""), _str(args, "pattern", "").lower()
        wanted = set(args.get("wanted") or [])
        after = args.get("after")
        limit = _int(args, "limit") or 50
        found = [
            g
            for g in self.store.groups()
            if g.name.startswith(prefix)
            and pattern in g.name.lower()
            and (not wanted or g.name in wanted)
            and (after is None or g.name > after)
        ]
        page = found[:limit]
        rows = [[g.name, self.store.created_ms(g), sum(s.size for s in self.store.streams(g))] for g in page]
        return {"groups": rows, "more": len(found) > limit}

    def streams(self, args: dict[str, Any]) -> dict[str, Any]:
        """A group's streams whose names start with ``prefix``: by name after ``after`` (``limit`` of them,
        ``descending`` or not), or every one of them when ``limit`` is None; each as (name, stored bytes,
        last write ms, first event ms, last event ms)."""
        group = self._group(args)
        if group is None:
            return NO_GROUP
        streams = sorted(self.store.streams(group, _str(args, "prefix", "")), key=lambda s: s.name)
        limit = _int(args, "limit")
        more = False
        if limit is not None:
            descending = bool(args.get("descending"))
            after = args.get("after")
            if descending:
                streams.reverse()
            if after is not None:
                streams = [s for s in streams if (s.name < after if descending else s.name > after)]
            more = len(streams) > limit
            streams = streams[:limit]
        rows = [[s.name, s.size, s.mtime_ms, *bounds(s.path)] for s in streams]
        return {"group": group.name, "streams": rows, "more": more}

    def page(self, args: dict[str, Any]) -> dict[str, Any]:
        """One stream's events from this source's position in ``offsets`` (none: the head going forward, the
        end going backward): each (timestamp, message, record start, record end), and where the scan
        stopped (``reached``) and, going backward, the end it read from (``end``)."""
        group = self._group(args)
        if group is None:
            return NO_GROUP
        stream = self.store.stream(group, _str(args, "stream"))
        if stream is None:
            return NO_STREAM
        offsets = args.get("offsets") or {}
        offset = offsets.get(self.id)
        if offset is not None and type(offset) is not int:
            raise BadArgs("an offset is not an integer")
        limit = _int(args, "limit") or 10_000
        start, end = _int(args, "start"), _int(args, "end")
        try:
            if args.get("direction") == "f":
                events, reached = page_forward(
                    stream.path, offset or 0, limit=limit, start_ms=start, end_ms=end
                )
                used_end = None
            else:
                events, reached, used_end = page_backward(
                    stream.path, offset, limit=limit, start_ms=start, end_ms=end
                )
        except FileNotFoundError:  # deleted by retention since it was looked up
            return NO_STREAM
        rows = [[e.timestamp, e.message, e.offset, e.end] for e in events]
        return {"events": rows, "reached": reached, "end": used_end}

    def search(self, args: dict[str, Any]) -> dict[str, Any]:
        """Events of the group's streams (``names``, or those starting with ``prefix``) in time order after
        the merged cursor ``after`` (timestamp, stream, offset, source): up to ``limit`` of them, each
        (timestamp, stream, record start, message), and whether there are more."""
        group = self._group(args)
        if group is None:
            return NO_GROUP
        names = args.get("names")
        if names:
            streams = [s for n in names if (s := self.store.stream(group, str(n))) is not None]
        else:
            streams = self.store.streams(group, _str(args, "prefix", ""))
        cursor = None
        after = args.get("after")
        if after is not None:
            ts, name, offset, source = after
            if source != self.id:  # another source's event: this one's at the same (time, stream) order by id
                offset = AFTER_EVERY_OFFSET if self.id < source else -1
            cursor = (int(ts), str(name), int(offset))
        found, more = search(
            [(s.name, s.path) for s in streams],
            limit=_int(args, "limit") or 10_000,
            start_ms=_int(args, "start"),
            end_ms=_int(args, "end"),
            match=compile_pattern(args.get("pattern")),
            after=cursor,
        )
        return {"events": [[e.timestamp, e.stream, e.offset, e.message] for e in found], "more": more}

"""The CloudWatch Logs operations zeroscale serves over its JSON 1.1 API (``X-Amz-Target: Logs_20140328.*``,
signing name ``logs``): DescribeLogGroups, DescribeLogStreams, GetLogEvents and FilterLogEvents, read-only.
Input arrives validated against botocore's model; each operation runs in a worker thread so that reading
files never holds up the event loop (and so the invoke path).

Each front end keeps the streams of the workers it ran on its own disk. An operation reads this front end's
store and, when other front ends share the database, theirs (``zeroscale.peers``; each answers what its own
store holds, ``logs.sources``), and merges: a group or stream held by several (each front end writes a
variant's ``platform`` stream) is one, its sizes added and its events interleaved in time. A front end that
does not answer in time is left out of that answer (the server's log says so).

Paging tokens:
- GetLogEvents: ``f/`` or ``b/`` and a map of each source's byte offset (a record boundary in its file).
  At the end of a stream ``nextForwardToken`` comes back unchanged (CloudWatch's signal that there is
  nothing new yet; the sagemaker SDK and boto3 loops stop on an empty page, or poll with it to follow).
- FilterLogEvents: the (timestamp, stream, offset, source) of the last event returned; events come in
  timestamp order across the streams searched.
- DescribeLogGroups / DescribeLogStreams: the sort key of the last item returned.
"""

from __future__ import annotations

import asyncio
import base64
import json
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from zeroscale import safejson
from zeroscale.errors import InvalidParameterException, LogsResourceNotFound
from zeroscale.logs.patterns import compile_pattern
from zeroscale.logs.reader import EVENT_OVERHEAD, MAX_RESPONSE_BYTES
from zeroscale.logs.sources import LocalLogs
from zeroscale.logs.store import LogStore
from zeroscale.peers import Gather

Params = Mapping[str, Any]
AsyncOperation = Callable[[Params], Awaitable[dict[str, Any]]]
Answers = list[tuple[str, dict[str, Any]]]  # (source id, what it answered), by source id
# The other front ends' answers to a read of their own stores (zeroscale.peers.PeerClient.gather); one that
# does not answer cannot be named in CloudWatch Logs' answers: the server's log says so (PeerClient)
Others = Gather

MAX_EVENTS = 10_000
MAX_DESCRIBE = 50
_MAX_OFFSET = 2**63 - 1
_MAX_SOURCES = 64


def _token(value: Any) -> str:
    return base64.urlsafe_b64encode(
        json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    ).decode()


def _untoken(token: str) -> Any:
    try:
        return safejson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):  # JsonRejected, binascii.Error and UnicodeError are ValueErrors
        raise InvalidParameterException("The specified nextToken is invalid.") from None


def _invalid_token() -> InvalidParameterException:
    return InvalidParameterException("The specified nextToken is invalid.")


def _event_token(token: str) -> tuple[str, dict[str, int]]:
    """A GetLogEvents token: its direction and each source's offset."""
    direction, slash, rest = token.partition("/")
    if direction not in ("f", "b") or not slash:
        raise _invalid_token()
    offsets = _untoken(rest)
    if not (
        isinstance(offsets, dict)
        and len(offsets) <= _MAX_SOURCES
        and all(type(v) is int and 0 <= v <= _MAX_OFFSET for v in offsets.values())
    ):
        raise _invalid_token()
    return direction, offsets


def _event_id(source: str, stream: str, timestamp: int, offset: int) -> str:
    return f"{timestamp:016d}{zlib.crc32(f'{source}/{stream}'.encode()):010d}{offset:020d}"


def _off_loop(fn: Callable[[Params], dict[str, Any]]) -> AsyncOperation:
    async def handler(params: Params) -> dict[str, Any]:
        return await asyncio.to_thread(fn, params)

    return handler


def _present(answers: Answers) -> Answers:
    """The answers of the sources that hold what was asked; none: it does not exist anywhere."""
    held = [(source, a) for source, a in answers if "absent" not in a]
    if held:
        return held
    if any(a.get("absent") == "stream" for _, a in answers):
        raise LogsResourceNotFound("The specified log stream does not exist.")
    raise LogsResourceNotFound("The specified log group does not exist.")


def _fits(sizes: list[int], limit: int) -> int:
    """How many of the events (their messages' sizes, in page order) one answer holds: ``limit``, and
    CloudWatch's 1 MB."""
    total = 0
    for n, size in enumerate(sizes):
        total += size + EVENT_OVERHEAD
        if n >= limit or (n and total > MAX_RESPONSE_BYTES):
            return n
    return min(len(sizes), limit)


class CloudWatchLogs:
    def __init__(
        self,
        store: LogStore,
        region: str,
        account_id: str,
        retention_hours: float = 0,
        *,
        ident: str = "local",
        others: Others | None = None,
    ) -> None:
        self.local = LocalLogs(store, ident)
        self._others = others
        self._arn_prefix = f"arn:aws:logs:{region}:{account_id}:log-group:"
        self._retention_hours = retention_hours

    def operations(self) -> dict[str, AsyncOperation]:
        return {
            "DescribeLogGroups": _off_loop(self.describe_log_groups),
            "DescribeLogStreams": _off_loop(self.describe_log_streams),
            "GetLogEvents": _off_loop(self.get_log_events),
            "FilterLogEvents": _off_loop(self.filter_log_events),
        }

    def _ask(self, op: str, args: dict[str, Any]) -> Answers:
        """This front end's answer and every live peer's, ordered by source id (the same order on every front
        end, so that a merged page and its token mean the same wherever the next call goes)."""
        answers = [(self.local.id, self.local.run(op, args))]
        if self._others is not None:
            answers += self._others(op, args).answers
        return sorted(answers, key=lambda item: item[0])

    # ---- names ----
    def _group_name(self, p: Params) -> str:
        name, ident = p.get("logGroupName"), p.get("logGroupIdentifier")
        if name and ident:
            raise InvalidParameterException(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters."
            )
        if ident:
            name = self._name_of(ident)
        if not name:
            raise InvalidParameterException("Either logGroupName or logGroupIdentifier must be specified.")
        return str(name)

    def _name_of(self, identifier: str) -> str:
        """A log group's name from its name or its ARN (with or without the trailing ``:*``)."""
        if identifier.startswith(self._arn_prefix):
            return identifier[len(self._arn_prefix) :].removesuffix(":*")
        return identifier

    # ---- groups ----
    def describe_log_groups(self, p: Params) -> dict[str, Any]:
        prefix, pattern = p.get("logGroupNamePrefix"), p.get("logGroupNamePattern")
        identifiers: list[str] = p.get("logGroupIdentifiers") or []
        if prefix and pattern:
            raise InvalidParameterException(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters."
            )
        if identifiers and (prefix or pattern):
            raise InvalidParameterException(
                "logGroupIdentifiers cannot be combined with logGroupNamePrefix or logGroupNamePattern."
            )
        after = str(_untoken(p["nextToken"])) if p.get("nextToken") else None
        limit = p.get("limit") or MAX_DESCRIBE
        if p.get("logGroupClass", "STANDARD") != "STANDARD":  # every zeroscale log group is STANDARD
            return {"logGroups": []}
        args = {
            "prefix": prefix or "",
            "pattern": pattern or "",
            "wanted": sorted({self._name_of(i) for i in identifiers}),
            "after": after,
            "limit": limit,
        }
        # Each source's first `limit` after the cursor: a group in the merged first `limit` is in the page of
        # every source that holds it, so its sizes add up.
        merged: dict[str, list[int]] = {}
        more = False
        for _, answer in self._ask("logs.groups", args):
            more = more or bool(answer["more"])
            for name, created, size in answer["groups"]:
                seen = merged.get(name)
                merged[name] = [created, size] if seen is None else [min(seen[0], created), seen[1] + size]
        names = sorted(merged)
        page = names[:limit]
        out: dict[str, Any] = {"logGroups": [self._group_entry(n, *merged[n]) for n in page]}
        if more or len(names) > limit:
            out["nextToken"] = _token(page[-1])
        return out

    def _group_entry(self, name: str, created: int, size: int) -> dict[str, Any]:
        arn = self._arn_prefix + name
        entry: dict[str, Any] = {
            "logGroupName": name,
            "creationTime": created,
            "metricFilterCount": 0,
            "arn": arn + ":*",
            "logGroupArn": arn,
            "storedBytes": size,
            "logGroupClass": "STANDARD",
        }
        if self._retention_hours > 0 and self._retention_hours % 24 == 0:
            entry["retentionInDays"] = int(self._retention_hours // 24)
        return entry

    # ---- streams ----
    def describe_log_streams(self, p: Params) -> dict[str, Any]:
        name = self._group_name(p)
        order = p.get("orderBy") or "LogStreamName"
        prefix = p.get("logStreamNamePrefix") or ""
        descending = bool(p.get("descending"))
        if prefix and order == "LastEventTime":
            raise InvalidParameterException("Cannot order by LastEventTime with a logStreamNamePrefix.")
        limit = p.get("limit") or MAX_DESCRIBE
        after = _untoken(p["nextToken"]) if p.get("nextToken") else None
        by_time = order == "LastEventTime"
        if after is not None:
            shape = [int, str] if by_time else [str]
            if not (
                isinstance(after, list)
                and len(after) == len(shape)
                and all(type(part) is kind for part, kind in zip(after, shape, strict=True))
            ):
                raise _invalid_token()
        args: dict[str, Any] = {"group": name, "prefix": prefix}
        if not by_time:  # by name, each source's own page (a name's key is the same on every source)
            args.update(after=after[0] if after else None, limit=limit, descending=descending)
        answers = _present(self._ask("logs.streams", args))
        merged: dict[str, list[Any]] = {}
        more = False
        for _, answer in answers:
            more = more or bool(answer["more"])
            for row in answer["streams"]:
                seen = merged.get(row[0])
                merged[row[0]] = row if seen is None else _combined(seen, row)
        keyed = [
            ([row[4] if row[4] is not None else row[2], row[0]] if by_time else [row[0]], row)
            for row in merged.values()
        ]
        keyed.sort(key=lambda item: item[0], reverse=descending)
        if by_time and after is not None:
            keyed = [k for k in keyed if (k[0] < after if descending else k[0] > after)]
        page = keyed[:limit]
        arn = f"{self._arn_prefix}{answers[0][1]['group']}:log-stream:"  # as the endpoint was created
        out: dict[str, Any] = {"logStreams": [self._stream_entry(arn, row) for _, row in page]}
        if more or len(keyed) > limit:
            out["nextToken"] = _token(page[-1][0])
        return out

    @staticmethod
    def _stream_entry(arn: str, row: list[Any]) -> dict[str, Any]:
        name, size, mtime, first, last = row
        entry: dict[str, Any] = {
            "logStreamName": name,
            "creationTime": first if first is not None else mtime,
            "lastIngestionTime": mtime,
            "arn": arn + name,
            "storedBytes": size,
        }
        if first is not None and last is not None:
            entry["firstEventTimestamp"] = first
            entry["lastEventTimestamp"] = last
        return entry

    # ---- events ----
    def get_log_events(self, p: Params) -> dict[str, Any]:
        name = self._group_name(p)
        limit = p.get("limit") or MAX_EVENTS
        if p.get("nextToken"):
            direction, offsets = _event_token(p["nextToken"])
        else:
            direction, offsets = ("f" if p.get("startFromHead") else "b"), {}
        args = {
            "group": name,
            "stream": p["logStreamName"],
            "direction": direction,
            "offsets": offsets,
            "limit": limit,
            "start": p.get("startTime"),
            "end": p.get("endTime"),
        }
        answers = _present(self._ask("logs.page", args))
        # every source's events, tagged with their source, in time order (ties: by source, then position)
        tagged = sorted(
            (
                (ts, source, offset, end, message)
                for source, a in answers
                for ts, message, offset, end in a["events"]
            ),
            key=lambda e: (e[0], e[1], e[2]),
        )
        if direction == "f":
            taken = tagged[: _fits([len(e[4].encode()) for e in tagged], limit)]
        else:  # the newest `limit` (and 1 MB, counted from the newest)
            newest = tagged[::-1]
            taken = newest[: _fits([len(e[4].encode()) for e in newest], limit)][::-1]
        forward, backward = dict(offsets), dict(offsets)
        for source, answer in answers:
            mine = [e for e in taken if e[1] == source]
            if mine:
                forward[source], backward[source] = mine[-1][3], mine[0][2]
            elif direction == "f":  # nothing of it in the page: what it read comes next (all of it newer)
                backward[source] = offsets.get(source, 0)
                forward[source] = offsets.get(source, 0) if answer["events"] else answer["reached"]
            elif answer["events"]:  # going backward, every event it read is older than the page
                forward[source] = backward[source] = answer["end"]
            else:
                backward[source], forward[source] = answer["reached"], answer["end"]
        return {
            "events": [{"timestamp": e[0], "message": e[4], "ingestionTime": e[0]} for e in taken],
            "nextForwardToken": "f/" + _token(forward),
            "nextBackwardToken": "b/" + _token(backward),
        }

    def filter_log_events(self, p: Params) -> dict[str, Any]:
        name = self._group_name(p)
        names, prefix = p.get("logStreamNames"), p.get("logStreamNamePrefix")
        if names and prefix:
            raise InvalidParameterException(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters."
            )
        after = None
        if p.get("nextToken"):
            token = _untoken(p["nextToken"])
            kinds = (int, str, int, str)
            if not (
                isinstance(token, list)
                and len(token) == 4
                and all(type(part) is kind for part, kind in zip(token, kinds, strict=True))
            ):
                raise _invalid_token()
            after = token
        compile_pattern(p.get("filterPattern"))  # a bad pattern is refused here, before any source reads
        limit = p.get("limit") or MAX_EVENTS
        args = {
            "group": name,
            "names": names,
            "prefix": prefix or "",
            "after": after,
            "limit": limit,
            "start": p.get("startTime"),
            "end": p.get("endTime"),
            "pattern": p.get("filterPattern"),
        }
        answers = _present(self._ask("logs.search", args))
        found = sorted(
            (
                (ts, stream, source, offset, message)
                for source, a in answers
                for ts, stream, offset, message in a["events"]
            ),
            key=lambda e: (e[0], e[1], e[2], e[3]),
        )
        page = found[: _fits([len(e[4].encode()) for e in found], limit)]
        more = len(page) < len(found) or any(a["more"] for _, a in answers)
        out: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": stream,
                    "timestamp": ts,
                    "message": message,
                    "ingestionTime": ts,
                    "eventId": _event_id(source, stream, ts, offset),
                }
                for ts, stream, source, offset, message in page
            ],
        }
        if more and page:
            ts, stream, source, offset, _ = page[-1]
            out["nextToken"] = _token([ts, stream, offset, source])
        return out


def _combined(a: list[Any], b: list[Any]) -> list[Any]:
    """One stream held by two sources: (name, bytes added, last write, first event, last event)."""
    firsts = [x for x in (a[3], b[3]) if x is not None]
    lasts = [x for x in (a[4], b[4]) if x is not None]
    return [
        a[0],
        a[1] + b[1],
        max(a[2], b[2]),
        min(firsts) if firsts else None,
        max(lasts) if lasts else None,
    ]

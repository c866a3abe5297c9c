"""The CloudWatch Logs operations zeroscale serves over its JSON 1.1 API (``X-Amz-Target: Logs_20140328.*``,
signing name ``logs``): DescribeLogGroups, DescribeLogStreams, GetLogEvents and FilterLogEvents, read-only,
over the log store. Input arrives validated against botocore's model; each operation runs in a worker
thread so that reading files never holds up the event loop (and so the invoke path).

Paging tokens:
- GetLogEvents: ``f/<offset>`` and ``b/<offset>``, byte offsets of record boundaries in the stream file.
  At the end of a stream ``nextForwardToken`` comes back unchanged (CloudWatch's signal that there is
  nothing new yet; the sagemaker SDK and boto3 loops stop on an empty page, or poll with it to follow).
- FilterLogEvents: the (timestamp, stream, offset) of the last event returned; events come in timestamp
  order across the streams searched.
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
from zeroscale.logs.reader import bounds, page_backward, page_forward, search
from zeroscale.logs.store import Group, LogStore, Stream

Params = Mapping[str, Any]
AsyncOperation = Callable[[Params], Awaitable[dict[str, Any]]]

MAX_EVENTS = 10_000
MAX_DESCRIBE = 50


def _token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _untoken(token: str) -> Any:
    try:
        return safejson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):  # JsonRejected, binascii.Error and UnicodeError are ValueErrors
        raise InvalidParameterException("The specified nextToken is invalid.") from None


def _event_token(token: str) -> tuple[str, int]:
    direction, _, offset = token.partition("/")
    if direction not in ("f", "b") or not (offset.isascii() and offset.isdigit() and len(offset) <= 20):
        raise InvalidParameterException("The specified nextToken is invalid.")
    return direction, int(offset)


def _event_id(stream: str, timestamp: int, offset: int) -> str:
    return f"{timestamp:016d}{zlib.crc32(stream.encode()):010d}{offset:020d}"


def _off_loop(fn: Callable[[Params], dict[str, Any]]) -> AsyncOperation:
    async def handler(params: Params) -> dict[str, Any]:
        return await asyncio.to_thread(fn, params)

    return handler


class CloudWatchLogs:
    def __init__(self, store: LogStore, region: str, account_id: str, retention_hours: float = 0) -> None:
        self._store = store
        self._arn_prefix = f"arn:aws:logs:{region}:{account_id}:log-group:"
        self._retention_hours = retention_hours

    def operations(self) -> dict[str, AsyncOperation]:
        return {
            "DescribeLogGroups": _off_loop(self.describe_log_groups),
            "DescribeLogStreams": _off_loop(self.describe_log_streams),
            "GetLogEvents": _off_loop(self.get_log_events),
            "FilterLogEvents": _off_loop(self.filter_log_events),
        }

    # ---- resources ----
    def _group(self, p: Params) -> Group:
        name, ident = p.get("logGroupName"), p.get("logGroupIdentifier")
        if name and ident:
            raise InvalidParameterException(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters."
            )
        if ident:
            name = self._group_name(ident)
        if not name:
            raise InvalidParameterException("Either logGroupName or logGroupIdentifier must be specified.")
        group = self._store.group(name)
        if group is None:
            raise LogsResourceNotFound("The specified log group does not exist.")
        return group

    def _group_name(self, identifier: str) -> str:
        """A log group's name from its name or its ARN (with or without the trailing ``:*``)."""
        if identifier.startswith(self._arn_prefix):
            return identifier[len(self._arn_prefix) :].removesuffix(":*")
        return identifier

    def _stream(self, group: Group, name: str) -> Stream:
        stream = self._store.stream(group, name)
        if stream is None:
            raise LogsResourceNotFound("The specified log stream does not exist.")
        return stream

    # ---- operations ----
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
        wanted = {self._group_name(i) for i in identifiers}
        # every zeroscale log group is in the STANDARD class
        groups = [
            g
            for g in self._store.groups()
            if (not prefix or g.name.startswith(prefix))
            and (not pattern or pattern.lower() in g.name.lower())
            and (not wanted or g.name in wanted)
            and p.get("logGroupClass", "STANDARD") == "STANDARD"
        ]
        if p.get("nextToken"):
            after = str(_untoken(p["nextToken"]))
            groups = [g for g in groups if g.name > after]
        limit = p.get("limit") or MAX_DESCRIBE
        page = groups[:limit]
        out: dict[str, Any] = {"logGroups": [self._group_entry(g) for g in page]}
        if len(groups) > limit:
            out["nextToken"] = _token(page[-1].name)
        return out

    def _group_entry(self, group: Group) -> dict[str, Any]:
        arn = self._arn_prefix + group.name
        streams = self._store.streams(group)
        entry: dict[str, Any] = {
            "logGroupName": group.name,
            "creationTime": self._store.created_ms(group),
            "metricFilterCount": 0,
            "arn": arn + ":*",
            "logGroupArn": arn,
            "storedBytes": sum(s.size for s in streams),
            "logGroupClass": "STANDARD",
        }
        if self._retention_hours > 0 and self._retention_hours % 24 == 0:
            entry["retentionInDays"] = int(self._retention_hours // 24)
        return entry

    def describe_log_streams(self, p: Params) -> dict[str, Any]:
        group = self._group(p)
        order = p.get("orderBy") or "LogStreamName"
        prefix = p.get("logStreamNamePrefix") or ""
        descending = bool(p.get("descending"))
        if prefix and order == "LastEventTime":
            raise InvalidParameterException("Cannot order by LastEventTime with a logStreamNamePrefix.")
        streams = self._store.streams(group, prefix)
        limit = p.get("limit") or MAX_DESCRIBE
        after = _untoken(p["nextToken"]) if p.get("nextToken") else None
        if order == "LastEventTime":
            keyed = []
            for s in streams:
                first, last = bounds(s.path)
                keyed.append(([last if last is not None else s.mtime_ms, s.name], s, first, last))
        else:
            keyed = [([s.name], s, None, None) for s in streams]
        keyed.sort(key=lambda item: item[0], reverse=descending)
        if after is not None:
            shape = [int, str] if order == "LastEventTime" else [str]
            if not (
                isinstance(after, list)
                and len(after) == len(shape)
                and all(type(part) is kind for part, kind in zip(after, shape, strict=True))
            ):
                raise InvalidParameterException("The specified nextToken is invalid.")
            keyed = [k for k in keyed if (k[0] < after if descending else k[0] > after)]
        page = keyed[:limit]
        entries = []
        for _, stream, first, last in page:
            if order != "LastEventTime":
                first, last = bounds(stream.path)
            entries.append(self._stream_entry(group, stream, first, last))
        out: dict[str, Any] = {"logStreams": entries}
        if len(keyed) > limit:
            out["nextToken"] = _token(page[-1][0])
        return out

    def _stream_entry(
        self, group: Group, stream: Stream, first: int | None, last: int | None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "logStreamName": stream.name,
            "creationTime": first if first is not None else stream.mtime_ms,
            "lastIngestionTime": stream.mtime_ms,
            "arn": f"{self._arn_prefix}{group.name}:log-stream:{stream.name}",
            "storedBytes": stream.size,
        }
        if first is not None and last is not None:
            entry["firstEventTimestamp"] = first
            entry["lastEventTimestamp"] = last
        return entry

    def get_log_events(self, p: Params) -> dict[str, Any]:
        stream = self._stream(self._group(p), p["logStreamName"])
        limit = p.get("limit") or MAX_EVENTS
        start, end = p.get("startTime"), p.get("endTime")
        if p.get("nextToken"):
            direction, offset = _event_token(p["nextToken"])
        else:
            direction, offset = ("f" if p.get("startFromHead") else "b"), -1
        try:
            if direction == "f":
                events, forward = page_forward(
                    stream.path, max(0, offset), limit=limit, start_ms=start, end_ms=end
                )
                backward = events[0].offset if events else max(0, offset)
            else:
                events, backward, used_end = page_backward(
                    stream.path, None if offset < 0 else offset, limit=limit, start_ms=start, end_ms=end
                )
                forward = events[-1].end if events else used_end
        except FileNotFoundError:  # deleted by retention since it was looked up
            raise LogsResourceNotFound("The specified log stream does not exist.") from None
        return {
            "events": [
                {"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp} for e in events
            ],
            "nextForwardToken": f"f/{forward:020d}",
            "nextBackwardToken": f"b/{backward:020d}",
        }

    def filter_log_events(self, p: Params) -> dict[str, Any]:
        group = self._group(p)
        names, prefix = p.get("logStreamNames"), p.get("logStreamNamePrefix")
        if names and prefix:
            raise InvalidParameterException(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters."
            )
        if names:
            streams = [s for n in names if (s := self._store.stream(group, n)) is not None]
        else:
            streams = self._store.streams(group, prefix or "")
        after = None
        if p.get("nextToken"):
            token = _untoken(p["nextToken"])
            if not (
                isinstance(token, list)
                and len(token) == 3
                and all(type(part) is kind for part, kind in zip(token, (int, str, int), strict=True))
            ):
                raise InvalidParameterException("The specified nextToken is invalid.")
            after = (token[0], token[1], token[2])
        found, more = search(
            [(s.name, s.path) for s in streams],
            limit=p.get("limit") or MAX_EVENTS,
            start_ms=p.get("startTime"),
            end_ms=p.get("endTime"),
            match=compile_pattern(p.get("filterPattern")),
            after=after,
        )
        out: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": e.stream,
                    "timestamp": e.timestamp,
                    "message": e.message,
                    "ingestionTime": e.timestamp,
                    "eventId": _event_id(e.stream, e.timestamp, e.offset),
                }
                for e in found
            ],
        }
        if more and found:
            out["nextToken"] = _token(list(found[-1].key))
        return out

"""The ``application/vnd.amazon.eventstream`` framing that botocore's ``botocore/eventstream.py`` parses.

A message: total length (u32), headers length (u32), CRC32 of those 8 bytes, headers, payload, CRC32 of
everything before it; big-endian. A header: name length (u8), name, type (7: string), value length (u16),
value. Only what InvokeEndpointWithResponseStream sends: PayloadPart events and exception events, and
``Frames``, which cuts a stream relayed from another front end at its messages' ends.
"""

from __future__ import annotations

import json
import struct
import zlib

CONTENT_TYPE = b"application/vnd.amazon.eventstream"
_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")


def _header(name: str, value: str) -> bytes:
    n, v = name.encode("utf-8"), value.encode("utf-8")
    return bytes((len(n),)) + n + bytes((_STRING,)) + struct.pack(">H", len(v)) + v


def message(headers: bytes, payload: bytes) -> bytes:
    """One framed message from encoded headers and a payload."""
    prelude = _PRELUDE.pack(12 + len(headers) + len(payload) + 4, len(headers))
    head = prelude + _CRC.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(headers, zlib.crc32(head)))
    return b"".join((head, headers, payload, _CRC.pack(crc)))


_PAYLOAD_PART = (
    _header(":event-type", "PayloadPart")
    + _header(":content-type", "application/octet-stream")
    + _header(":message-type", "event")
)


def payload_part(data: bytes) -> bytes:
    """A PayloadPart event: its ``Bytes`` member is the payload, raw."""
    return message(_PAYLOAD_PART, data)


def exception(kind: str, fields: dict[str, str]) -> bytes:
    """An exception event of the stream (ModelStreamError, InternalStreamFailure): a JSON payload."""
    headers = (
        _header(":exception-type", kind)
        + _header(":content-type", "application/json")
        + _header(":message-type", "exception")
    )
    return message(headers, json.dumps(fields).encode())


class Frames:
    """Whole messages out of an event stream that arrives cut anywhere (relayed from another front end): what
    is passed on is always whole messages, so that a stream that breaks off can still end with an exception
    event a client can read."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bytes:
        """The messages ``data`` completes (b"" when none); ValueError when the bytes are not messages."""
        self._buffer += data
        end = 0
        while len(self._buffer) - end >= _CRC.size:
            (total,) = _CRC.unpack_from(self._buffer, end)  # a message begins with its total length
            if total < _PRELUDE.size + 2 * _CRC.size:
                raise ValueError(f"an event stream message of {total} bytes")
            if len(self._buffer) - end < total:
                break
            end += total
        out = bytes(self._buffer[:end])
        del self._buffer[:end]
        return out

    @property
    def partial(self) -> bool:
        """Whether a message has begun and not ended."""
        return bool(self._buffer)

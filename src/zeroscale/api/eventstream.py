"""The ``application/vnd.amazon.eventstream`` framing that botocore's ``botocore/eventstream.py`` parses.

A message: total length (u32), headers length (u32), CRC32 of those 8 bytes, headers, payload, CRC32 of
everything before it; big-endian. A header: name length (u8), name, type (7: string), value length (u16),
value. Only what InvokeEndpointWithResponseStream sends: PayloadPart events and exception events.
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

"""Smithy RPC v2 CBOR, the protocol newer botocore versions pick for CloudWatch: ``POST
/service/<target prefix>/operation/<Operation>`` with header ``smithy-protocol: rpc-v2-cbor`` and CBOR
bodies (cbor2). A request is turned into the same call as its JSON twin (``<prefix>.<Operation>`` with a JSON
body: timestamps, CBOR tag 1, become epoch seconds), so the JSON service's allow-list, validation and
handlers serve it unchanged; the answer is CBOR again, its timestamps tagged as the output shape says."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from typing import Any

import cbor2

from zeroscale.api.wire import Send, respond
from zeroscale.errors import SerializationException, ZeroscaleError

_PREFIX = "/service/"
_MIDDLE = "/operation/"
CBOR = b"application/cbor"
MAX_DEPTH = 64


def target(method: str, path: str, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """``<prefix>.<Operation>`` for an RPC v2 CBOR request, else None."""
    if method != "POST" or not path.startswith(_PREFIX) or _MIDDLE not in path:
        return None
    if not any(k.lower() == b"smithy-protocol" and v == b"rpc-v2-cbor" for k, v in headers):
        return None
    service, _, operation = path[len(_PREFIX) :].partition(_MIDDLE)
    if not service or not operation or "/" in service or "/" in operation:
        return None
    return f"{service}.{operation}"


def to_json(body: bytes) -> bytes:
    """The CBOR request body as the JSON body of the same call (SerializationException when it is not CBOR
    or holds what JSON cannot)."""
    if not body:
        return b"{}"
    try:
        value = cbor2.loads(body, max_depth=MAX_DEPTH, allow_duplicate_keys=False)
    except Exception as exc:  # cbor2 raises several kinds for a malformed body
        raise SerializationException(f"The request body is not valid CBOR: {exc}") from None
    try:
        return json.dumps(_plain(value), allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationException(f"The request body holds a value zeroscale cannot read: {exc}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("map keys must be strings")
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and infinities are not accepted")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"unsupported CBOR item {type(value).__name__}")


def _tagged(shape: Any, value: Any) -> Any:
    """``value`` with its timestamps as CBOR tag 1 (epoch seconds), walking botocore's output shape."""
    if shape is None:
        return value
    kind = shape.type_name
    if kind == "timestamp" and isinstance(value, int | float):
        return cbor2.CBORTag(1, value)
    if kind == "structure" and isinstance(value, dict):
        return {k: _tagged(shape.members.get(k), v) for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_tagged(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _tagged(shape.value, v) for k, v in value.items()}
    return value


async def ok(send: Send, request_id: str, output_shape: Any, payload: dict[str, Any]) -> None:
    body = cbor2.dumps(_tagged(output_shape, payload))
    headers = [
        (b"content-type", CBOR),
        (b"smithy-protocol", b"rpc-v2-cbor"),
        (b"x-amzn-requestid", request_id.encode()),
    ]
    await respond(send, 200, body, headers)


async def error(send: Send, request_id: str, err: ZeroscaleError) -> None:
    """``{"__type", "message"}`` in CBOR; the code also in ``x-amzn-query-error`` (CloudWatch is
    query-compatible: botocore takes the code from there)."""
    body = cbor2.dumps({"__type": err.code, "message": err.message})
    fault = "Sender" if err.status < 500 else "Receiver"
    headers = [
        (b"content-type", CBOR),
        (b"smithy-protocol", b"rpc-v2-cbor"),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-query-error", f"{err.code};{fault}".encode()),
    ]
    await respond(send, err.status, body, headers)

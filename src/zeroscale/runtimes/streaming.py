"""Response streaming inside the worker: which hook results stream, and how a failure mid-stream is told.

A hook result streams when it is an iterator (a generator, ``iter(...)``, anything with ``__next__``): each
item becomes one part. Bytes, str, lists, dicts and arrays are whole answers, as before. The container server
answers a stream with ``Transfer-Encoding: chunked``, one HTTP chunk per part, sent as soon as the part
exists; an exception after the first part ends the body with the trailer ``X-Zeroscale-Stream-Error`` (its
status and message), which the server turns into a ModelStreamError event (or a ModelError on a plain
InvokeEndpoint, where the parts are joined).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

# The trailer a worker ends a failed stream with: "<status> <message>" (one line).
ERROR_TRAILER = b"X-Zeroscale-Stream-Error"


class StreamFailed(Exception):
    """A streaming hook raised after its first part: the status and message the worker reports."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_stream(value: Any) -> bool:
    """An iterator that is not a whole answer (bytes, str and containers are never iterators)."""
    return hasattr(value, "__next__") and not isinstance(value, bytes | str | bytearray | memoryview)


def parts(
    items: Iterator[Any],
    encode: Callable[[Any], bytes],
    on_error: Callable[[Exception], tuple[int, str]],
) -> Iterator[bytes]:
    """The items as bytes parts (``encode`` each, empty ones skipped: an empty HTTP chunk would end the
    body). An exception from the items or ``encode`` becomes ``StreamFailed`` with ``on_error``'s status and
    message (which also logs it). Closing this closes ``items`` (a client that went away stops the model at
    its next part)."""
    try:
        for item in items:
            data = encode(item)
            if data:
                yield data
    except Exception as exc:
        status, message = on_error(exc)
        raise StreamFailed(status, message) from exc
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """``first``, then ``rest``; closing it closes ``rest`` (``itertools.chain`` would not)."""
    yield first
    yield from rest


def trailer(status: int, message: str) -> bytes:
    """The error trailer's value: status and message on one line of latin-1 text."""
    text = " ".join(message.split())[:2048]
    return f"{status} {text}".encode("latin-1", "replace")


def parse_trailer(value: bytes) -> tuple[int, str]:
    """``trailer``'s inverse: (status, message); status 500 when the value has none."""
    text = value.decode("latin-1")
    head, _, rest = text.partition(" ")
    if head.isdigit():
        return int(head), rest
    return 500, text

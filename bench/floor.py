"""The floor under zeroscale's invoke path: the same stack (uvicorn, uvloop, httptools, raw ASGI) doing the
least a front end can do, measured with the same load generator as zeroscale, so the throughput and
overhead figures can be split into "what this stack costs here" and "what zeroscale's own code costs".

    python -m bench.floor --port P                         # answers every request itself (no hop)
    python -m bench.floor --port P --worker S1 --worker S2 # forwards the body to these worker sockets
    python -m bench.floor --port P --server granian        # the same app under Granian (Rust HTTP, ASGI)

The proxy mode keeps one keep-alive Unix-socket connection per worker and hands each request to a free one
(a queue), like zeroscale's pool, but checks no signature, routes nothing, records nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_CONTENT_LENGTH = re.compile(rb"(?i)content-length:\s*(\d+)")
_HEADERS = [(b"content-type", b"application/json")]


def make_app(workers: list[str]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None

    async def pool() -> asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        nonlocal free
        if free is None:
            free = asyncio.Queue()
            for path in workers:
                free.put_nowait(await asyncio.open_unix_connection(path))
        return free

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if workers:
            conns = await pool()
            reader, writer = await conns.get()
            try:
                writer.write(
                    b"POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                match = _CONTENT_LENGTH.search(head)
                body = await reader.readexactly(int(match.group(1))) if match else b""
            finally:
                conns.put_nowait((reader, writer))
        headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def granian_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The app for Granian, which imports its target: the workers come from ZSFLOOR_WORKERS."""
    return make_app([w for w in os.environ.get("ZSFLOOR_WORKERS", "").split(",") if w])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worker", action="append", default=[], help="a worker's Unix socket (repeatable)")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    args = parser.parse_args()
    if args.server == "granian":
        from granian import Granian  # type: ignore[import-not-found, unused-ignore]
        from granian.constants import Interfaces, Loops  # type: ignore[import-not-found, unused-ignore]

        os.environ["ZSFLOOR_WORKERS"] = ",".join(args.worker)
        Granian(
            "bench.floor:granian_app",
            address="127.0.0.1",
            port=args.port,
            interface=Interfaces.ASGI,
            loop=Loops.uvloop,
            factory=True,
            workers=1,
            log_access=False,
        ).serve()
        return
    uvicorn.run(
        make_app(args.worker),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()

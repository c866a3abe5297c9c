"""What the HTTP limits (api/guard.py) cost per request: the same trivial ASGI app under uvicorn with its
plain httptools protocol and with zeroscale's guarded one, each in its own process, requests interleaved on
one keep-alive connection to each (same run, same client). Prints p50/p90 per request and the difference.

    PYTHONPATH=src python -m bench.http_guard [--requests 20000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

SERVER = r"""
import sys, uvicorn
from zeroscale.api import guard
from zeroscale.config import HttpLimits

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

http = guard.protocol(HttpLimits()) if sys.argv[2] == "guarded" else "httptools"
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http=http, log_level="warning",
            lifespan="off")
"""
REQUEST = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 20
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _once(sock: socket.socket) -> float:
    start = time.perf_counter()
    sock.sendall(REQUEST)
    data = b""
    while not data.endswith(b"ok"):
        data += sock.recv(4096)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    procs, socks = {}, {}
    for kind in ("plain", "guarded"):
        port = _port()
        procs[kind] = subprocess.Popen([sys.executable, "-c", SERVER, str(port), kind])
        socks[kind] = _connect(port)
    try:
        times: dict[str, list[float]] = {"plain": [], "guarded": []}
        for _ in range(500):  # warm-up
            for kind in times:
                _once(socks[kind])
        for i in range(args.requests):
            order = ("plain", "guarded") if i % 2 else ("guarded", "plain")
            for kind in order:
                times[kind].append(_once(socks[kind]))
        p50 = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        p90 = {k: statistics.quantiles(v, n=10)[-1] * 1e6 for k, v in times.items()}
        for kind in times:
            print(f"{kind:8} p50 {p50[kind]:7.1f} us   p90 {p90[kind]:7.1f} us")
        print(
            f"guarded - plain: p50 {p50['guarded'] - p50['plain']:+.1f} us "
            f"({p50['guarded'] / p50['plain']:.3f}x)"
        )
    finally:
        for proc in procs.values():
            proc.terminate()


if __name__ == "__main__":
    main()

"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending one pre-built request
as soon as the previous answer is complete. One process, one thread, ``selectors``; it does no parsing
beyond finding Content-Length, so its CPU per request stays in the tens of microseconds.

    python -m bench.loadgen --target unix:/path.sock --target tcp:127.0.0.1:8080 --request-file R \
        --connections 2 --duration 5 --warmup 0.5

``--think-ms T`` makes each connection wait T ms after an answer before its next request (an open-loop-like
low rate, for measuring what a request costs a server that sleeps between requests).

Connections are spread over the targets round-robin. Prints one JSON object: requests completed inside the
measured window, errors (non-200), latency percentiles, and this process's CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import socket
import time

_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


def _connect(target: str) -> socket.socket:
    kind, _, where = target.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(where)
    else:
        host, _, port = where.rpartition(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run(
    targets: list[str],
    request: bytes,
    connections: int,
    duration_s: float,
    warmup_s: float,
    think_s: float = 0.0,
) -> dict[str, object]:
    sel = selectors.DefaultSelector()
    sent_at: dict[int, float] = {}
    buffers: dict[int, bytearray] = {}
    socks = [_connect(targets[i % len(targets)]) for i in range(connections)]
    cpu0 = os.times()
    start = time.perf_counter()
    measure_from = start + warmup_s
    end = measure_from + duration_s
    by_fd = {sock.fileno(): sock for sock in socks}
    for sock in socks:
        buffers[sock.fileno()] = bytearray()
        sel.register(sock, selectors.EVENT_READ)
        sent_at[sock.fileno()] = time.perf_counter()
        sock.sendall(request)
    latencies: list[float] = []
    errors = 0
    total = 0
    open_count = len(socks)
    due: dict[int, float] = {}  # fd -> when its next request goes (with think time)
    while open_count:
        if due:
            now = time.perf_counter()
            for fd, at in list(due.items()):
                if at <= now:
                    del due[fd]
                    sent_at[fd] = now
                    by_fd[fd].sendall(request)
            wait = min(due.values(), default=now + 5.0) - now
        else:
            wait = 5.0
        for key, _ in sel.select(max(0.0, wait)):
            fd = key.fd
            sock = by_fd[fd]
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed a connection")
            buf = buffers[fd]
            buf += data
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            match = _CONTENT_LENGTH.search(buf, 0, head_end + 2)
            length = int(match.group(1)) if match else 0
            if len(buf) < head_end + 4 + length:
                continue
            now = time.perf_counter()
            ok = buf[9:12] == b"200"
            del buf[: head_end + 4 + length]
            total += 1
            if measure_from <= now <= end:
                latencies.append(now - sent_at[fd])
                errors += not ok
            if now >= end:
                sel.unregister(sock)
                open_count -= 1
                continue
            if think_s > 0:
                due[fd] = now + think_s
                continue
            sent_at[fd] = now
            sock.sendall(request)
    cpu1 = os.times()
    for sock in socks:
        sock.close()
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else 0.0

    return {
        "count": len(latencies),
        "total": total,
        "errors": errors,
        "duration_s": duration_s,
        "rps": len(latencies) / duration_s,
        "p50_s": q(50),
        "p99_s": q(99),
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", action="append", required=True, help="unix:PATH or tcp:HOST:PORT")
    parser.add_argument("--request-file", required=True, help="the raw HTTP/1.1 request to send, bytes")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--think-ms", type=float, default=0.0, help="wait after each answer (ms)")
    args = parser.parse_args()
    with open(args.request_file, "rb") as f:
        request = f.read()
    out = run(args.target, request, args.connections, args.duration, args.warmup, args.think_ms / 1000)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

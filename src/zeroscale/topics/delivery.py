"""HTTP(S) deliveries to topic subscribers: each message is one POST, retried with exponential backoff.

Deliveries run on their own small thread pool, and each one is a background task, so a subscriber that is
down or slow delays only its own messages: never a publisher, the asynchronous queue or another subscriber.

A subscriber's URL is the subscriber's choice, and the server makes the request: none is sent to a host
that resolves to a link-local, multicast, unspecified or reserved address (169.254.169.254 is a cloud's
instance metadata service: its credentials). The connection is made to the very address that was checked
(looked up once per attempt, inside the connection: a name that resolves elsewhere a moment later changes
nothing), and redirects are not followed (a 3xx answer is a failed attempt), so a public URL cannot send
the server there either. Loopback and private addresses stay reachable: a self-hosted server's subscribers
are often on its own network.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import logging
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from zeroscale.background import Background

log = logging.getLogger("zeroscale.topics")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # the first try and three retries, as SNS's default HTTP delivery policy
    first_delay_s: float = 1.0
    max_delay_s: float = 20.0
    timeout_s: float = 5.0  # per attempt

    def delay_s(self, retry: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * (2**retry)))


@dataclass(frozen=True)
class Delivery:
    url: str
    body: bytes
    headers: Mapping[str, str]
    what: str  # for the log: "<message type> <message id> to <subscription>"


def forbidden(address: str) -> str | None:
    """Why the server sends nothing to ``address`` (an IP), or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None  # ::1 sits in IPv6's reserved ::/8
    for kind, test in (
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
    ):
        if test:
            return f"{address} is a {kind} address"
    return None


def check_host(host: str, port: int | None) -> list[tuple[Any, ...]]:
    """``host``'s addresses (``getaddrinfo``'s entries); ValueError when it does not resolve, or one of them
    is an address ``forbidden`` names."""
    try:
        found = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"{host} does not resolve: {exc}") from None
    for *_, sockaddr in found:
        why = forbidden(str(sockaddr[0]))
        if why is not None:
            raise ValueError(f"{host} resolves to {why}: nothing is delivered there")
    return found


def _connect_checked(
    address: tuple[str, int], timeout: float | None = None, source_address: Any = None, **_: Any
) -> socket.socket:
    """``socket.create_connection`` to an address ``check_host`` let through, the one it checked."""
    last: OSError | None = None
    for family, kind, proto, _name, sockaddr in check_host(*address):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"could not connect to {address[0]}")


class _CheckedHTTP(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _connect_checked


class _CheckedHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _connect_checked  # TLS is then wrapped with the URL's host name


class _CheckedHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_CheckedHTTP, req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_CheckedHTTPS, req, context=ssl.create_default_context())


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx answer is the attempt's result


_OPENER = urllib.request.build_opener(_CheckedHandler, _CheckedHTTPSHandler, _NoRedirects)


def _post(delivery: Delivery, timeout_s: float) -> int:
    request = urllib.request.Request(
        delivery.url, data=delivery.body, method="POST", headers=dict(delivery.headers)
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


class Deliverer:
    def __init__(
        self,
        policy: RetryPolicy | None = None,
        threads: int = 4,
        post: Callable[[Delivery, float], int] = _post,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="topic-delivery")
        self._background = Background("topic deliveries")
        self._post = post
        self.delivered = 0
        self.failed = 0  # gave up after every attempt

    def send(self, delivery: Delivery) -> None:
        """Start delivering; returns at once."""
        self._background.spawn(self._deliver(delivery))

    async def _deliver(self, delivery: Delivery) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(self.policy.attempts):
            if attempt:
                await asyncio.sleep(self.policy.delay_s(attempt - 1))
            try:
                status = await loop.run_in_executor(
                    self._executor, self._post, delivery, self.policy.timeout_s
                )
            except (OSError, ValueError) as exc:
                status, why = 0, f"{type(exc).__name__}: {exc}"
            else:
                why = f"HTTP {status}"
            if 200 <= status < 300:
                self.delivered += 1
                return
            log.info("delivery of %s failed (attempt %d): %s", delivery.what, attempt + 1, why)
        self.failed += 1
        log.warning("gave up delivering %s after %d attempts", delivery.what, self.policy.attempts)

    async def close(self) -> None:
        await self._background.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

"""--trusted-proxy on a real server: a named proxy's X-Forwarded-For and X-Forwarded-Proto name the client
(the audit trail's source, the console's throttle of wrong secrets, its Secure cookie), and its connections
are not held to the per-client cap; without the flag, those headers change nothing."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from zeroscale.console.sessions import MAX_FAILURES
from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess

from .test_audit_bounds import trail


@pytest.fixture(scope="module")
def behind(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that believes a proxy on the loopback address (the tests' own connections)."""
    return server_factory(trusted_proxy=["127.0.0.1", "::1"], max_connections_per_client=2)


@pytest.fixture(scope="module")
def alone(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(max_connections_per_client=2)


def _forwarded_client(server: ServerProcess, client: str | None) -> Any:
    """A boto3 sagemaker client whose requests carry X-Forwarded-For: ``client`` (unsigned, as a proxy adds
    it)."""
    sm = server.client("sagemaker")

    def add(request: Any, **_: Any) -> None:
        if client is not None:
            request.headers["X-Forwarded-For"] = f"6.6.6.6, {client}"

    sm.meta.events.register("before-send.sagemaker.*", add)
    return sm


def _sources(server: ServerProcess, action: str) -> list[str]:
    time.sleep(1.0)  # the trail's writer's next batch
    return [e["source"] for e in trail(server) if e["action"] == action]


def test_the_audit_trail_names_the_forwarded_client_only_behind_a_trusted_proxy(
    behind: ServerProcess, alone: ServerProcess
) -> None:
    _forwarded_client(behind, "203.0.113.7").list_models()
    _forwarded_client(behind, None).list_endpoints()
    assert _sources(behind, "sagemaker:ListModels") == ["203.0.113.7"]  # the nearest untrusted hop
    assert _sources(behind, "sagemaker:ListEndpoints") == ["127.0.0.1"]  # no header: the peer itself

    _forwarded_client(alone, "203.0.113.7").list_models()  # anyone may send the header: not believed
    assert _sources(alone, "sagemaker:ListModels") == ["127.0.0.1"]


def _sign_in(
    server: ServerProcess, secret: str, client: str, proto: str = "http"
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = json.dumps({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": secret}).encode()
    headers = {"Content-Type": "application/json", "X-Forwarded-For": client, "X-Forwarded-Proto": proto}
    conn.request("POST", "/console/api/session", body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_the_console_throttles_wrong_secrets_per_forwarded_client(
    behind: ServerProcess, alone: ServerProcess
) -> None:
    for _ in range(MAX_FAILURES):
        assert _sign_in(behind, "wrong" * 8, "203.0.113.66").status == 401
    assert _sign_in(behind, SECRET_KEY, "203.0.113.66").status == 429  # that client is held off
    signed_in = _sign_in(behind, SECRET_KEY, "203.0.113.8", proto="https")  # another is not
    assert signed_in.status == 200
    assert "; Secure" in signed_in.headers["Set-Cookie"]  # the proxy said the client came over HTTPS

    # Without a trusted proxy, every forwarded "client" is the one peer: the guesser holds everyone off.
    for n in range(MAX_FAILURES):
        assert _sign_in(alone, "wrong" * 8, f"203.0.113.{n}").status == 401
    assert _sign_in(alone, SECRET_KEY, "203.0.113.8", proto="https").status == 429


def _open(server: ServerProcess, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(n)]


def _refused(sock: socket.socket) -> bool:
    """Whether the server answered this idle connection 503 and closed it (the per-client cap)."""
    sock.settimeout(0.5)
    try:
        return sock.recv(100).startswith(b"HTTP/1.1 503")
    except TimeoutError:
        return False


def test_a_trusted_proxy_is_not_held_to_the_per_client_connection_cap(
    behind: ServerProcess, alone: ServerProcess
) -> None:
    conns = _open(behind, 4)
    try:
        assert not any(_refused(c) for c in conns)
    finally:
        for c in conns:
            c.close()
    conns = _open(alone, 3)
    try:
        assert [_refused(c) for c in conns] == [False, False, True]
    finally:
        for c in conns:
            c.close()

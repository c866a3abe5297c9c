"""Where a topic's deliveries may go: a real local HTTP server stands for subscribers; a link-local (cloud
metadata) address is refused before anything is sent, whether written in the URL or reached by a redirect."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from zeroscale.topics.delivery import Delivery, _post, check_host, forbidden

hits: list[str] = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        hits.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/moved":  # to the metadata service, as a hostile subscriber's server might answer
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def delivery(url: str) -> Delivery:
    return Delivery(url, b"{}", {"Content-Type": "text/plain"}, "a test message")


def test_loopback_is_delivered_and_a_redirect_is_not_followed(base: str) -> None:
    hits.clear()
    assert _post(delivery(f"{base}/hook"), 5.0) == 200
    assert _post(delivery(f"{base}/moved"), 5.0) == 307  # a failed attempt, nothing more sent
    assert hits == ["/hook", "/moved"]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://0.0.0.0:9/x",
        "http://224.0.0.1/x",
    ],
)
def test_forbidden_addresses_get_nothing(url: str) -> None:
    with pytest.raises(ValueError, match="nothing is delivered there"):
        _post(delivery(url), 1.0)


def test_what_is_forbidden() -> None:
    assert forbidden("169.254.169.254") == "169.254.169.254 is a link-local address"
    assert forbidden("127.0.0.1") is None and forbidden("10.1.2.3") is None and forbidden("::1") is None
    check_host("localhost", 80)  # resolves to loopback: allowed
    with pytest.raises(ValueError, match="does not resolve"):
        check_host("no-such-host.invalid", 80)

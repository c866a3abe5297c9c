"""api/proxies.py: whose X-Forwarded-For and X-Forwarded-Proto are believed, and which client they name."""

from __future__ import annotations

from typing import Any

import pytest

from zeroscale.api.proxies import TrustedProxies

PROXIES = TrustedProxies.of(["10.0.0.0/8", "192.168.1.5", "::1"])


def scope(peer: str, *headers: tuple[bytes, bytes], scheme: str = "http") -> dict[str, Any]:
    return {"client": (peer, 4242), "scheme": scheme, "headers": list(headers)}


def test_addresses_and_networks_are_trusted_and_nothing_else() -> None:
    assert PROXIES.trusts("10.1.2.3")
    assert PROXIES.trusts("192.168.1.5")
    assert not PROXIES.trusts("192.168.1.6")
    assert PROXIES.trusts("::1")
    assert PROXIES.trusts("::ffff:10.0.0.1")  # an IPv4 peer of a dual-stack socket
    assert not PROXIES.trusts("127.0.0.1")
    assert not PROXIES.trusts("not-an-address")


@pytest.mark.parametrize("spec", ["example.com", "10.0.0.0/33", "", "10.0.0.1,10.0.0.2"])
def test_a_spec_that_is_no_address_or_network_is_refused_by_name(spec: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or network"):
        TrustedProxies.of([spec])


def test_the_client_is_the_nearest_untrusted_hop() -> None:
    # what the client sent stands left of what the proxies appended: it names no one
    assert PROXIES.client([b"6.6.6.6, 203.0.113.7, 10.0.0.2"]) == "203.0.113.7"
    assert PROXIES.client([b"6.6.6.6", b"203.0.113.7", b"10.0.0.2"]) == "203.0.113.7"  # one header per hop
    assert PROXIES.client([b"10.0.0.3, 10.0.0.2"]) == "10.0.0.3"  # all trusted: the first
    assert PROXIES.client([b"[2001:db8::1]:5000"]) == "2001:db8::1"
    assert PROXIES.client([b"203.0.113.7:5000"]) == "203.0.113.7"
    assert PROXIES.client([b"unknown, 10.0.0.2"]) is None  # not an address: nothing believed
    assert PROXIES.client([]) is None


def test_a_trusted_peer_s_headers_rewrite_the_scope() -> None:
    s = scope(
        "10.0.0.2",
        (b"X-Forwarded-For", b"203.0.113.7"),
        (b"x-forwarded-proto", b"http, HTTPS"),
    )
    PROXIES.resolve(s)
    assert s["client"] == ("203.0.113.7", 0)
    assert s["scheme"] == "https"


def test_an_untrusted_peer_s_headers_are_ignored() -> None:
    s = scope("127.0.0.1", (b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https"))
    PROXIES.resolve(s)
    assert s["client"] == ("127.0.0.1", 4242)
    assert s["scheme"] == "http"


def test_a_scheme_other_than_http_or_https_is_ignored() -> None:
    s = scope("10.0.0.2", (b"x-forwarded-proto", b"javascript"))
    PROXIES.resolve(s)
    assert s["scheme"] == "http"
    assert s["client"] == ("10.0.0.2", 4242)  # no X-Forwarded-For: the proxy itself

"""Which Host headers name the server (api/hosts.py): its names, any IP address, what --allowed-host adds."""

from __future__ import annotations

import pytest

from zeroscale.api.hosts import AllowedHosts, hostname


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost:8080", "localhost"),
        ("LocalHost.", "localhost"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("127.0.0.1:80", "127.0.0.1"),
        (" Proxy.Example.COM ", "proxy.example.com"),
    ],
)
def test_a_host_headers_name_has_no_port_brackets_case_or_final_dot(header: str, host: str) -> None:
    assert hostname(header) == host


def test_its_names_and_every_ip_address_are_allowed_and_nothing_else() -> None:
    hosts = AllowedHosts.of(["zeroscale-1", "proxy.example.com."])
    for header in (
        "localhost",
        "localhost:9000",
        "LOCALHOST.:9000",
        "zeroscale-1:8080",
        "proxy.example.com",
        "127.0.0.1:8080",
        "10.0.0.5",
        "[::1]:8080",
        "[fe80::1]",
        None,  # no Host at all: HTTP/1.0, never a browser
    ):
        assert hosts.allows(header), header
    for header in (
        "rebound.example:8080",
        "evil.localhost.example",
        "127.0.0.1.nip.io",  # a name, whatever it resolves to
        "zeroscale-1.attacker.example",
        "proxy.example.com.evil",
        "2130706433",  # 127.0.0.1 as one number: a browser would send the dotted form
        "",
        "localhost:8080:1",
    ):
        assert not hosts.allows(header), header


def test_a_star_allows_any_host() -> None:
    assert AllowedHosts.of(["*"]).allows("rebound.example")
    assert not AllowedHosts.of(["rebound.example.org"]).allows("rebound.example")

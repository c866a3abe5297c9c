"""Which ``Host`` headers the server answers what it serves without a signature (``/metrics``, ``/ping``,
``/healthz``, the console, SNS's confirmation links): a guard against DNS rebinding, where a web page
points its own name at 127.0.0.1 and then reads those answers as its own origin's.

A request names the server when its Host (port aside) is:

- an IP address (``127.0.0.1``, ``[::1]``, ``10.0.0.5``): a page can only be on an address's origin by being
  served from it, and a rebound page's requests carry its own name;
- ``localhost``, the bound address (``--host``) and the host of ``--advertise-url`` when they are names, and
  the machine's hostname;
- a name given with ``--allowed-host`` (a proxy's, a DNS name of the machine); ``*`` allows any.

Compared without case and a trailing dot. A request with no Host (HTTP/1.0; no browser sends one) passes.
Pure: the caller says which names are its own; what a refused request looks like is ``api/app.py``'s."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

ANY = "*"


def _name(host: str) -> str:
    return host.strip().lower().rstrip(".")


def hostname(header: str) -> str:
    """A Host header's host: no port, no IPv6 brackets, lower case, no trailing dot."""
    value = header.strip()
    if value.startswith("["):  # [v6]:port
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # name:port (a bare IPv6 address has more colons)
        value = value.partition(":")[0]
    return _name(value)


def is_address(host: str) -> bool:
    """Whether ``host`` is an IP address (v4 or v6), not a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AllowedHosts:
    names: frozenset[str]
    any: bool = False

    @classmethod
    def of(cls, names: Iterable[str]) -> AllowedHosts:
        """``names`` as given (``*`` among them: any host), with localhost."""
        given = {_name(n) for n in names if n.strip()}
        return cls(frozenset(given | {"localhost"}) - {ANY}, any=ANY in given)

    def allows(self, header: str | None) -> bool:
        """Whether a request whose Host is ``header`` (None: none was sent) names this server."""
        if self.any or header is None:
            return True
        host = hostname(header)
        return host in self.names or is_address(host)

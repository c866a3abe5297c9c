"""Reverse proxies whose word is believed (``--trusted-proxy``): behind one, every connection's peer is the
proxy, and the client's address and scheme come in the ``X-Forwarded-For`` and ``X-Forwarded-Proto``
headers it sets. Those headers are believed only on a connection from an address the operator named, since
any other client can send them; then the client is the nearest address in ``X-Forwarded-For`` that is not
itself a trusted proxy (read from the right: each proxy appends the address it was reached from, and what
the client itself sent stands left of it).

What reads the client: the audit trail's source address, the console's throttle of wrong secrets (per
client address and key), its ``Secure`` cookie and its same-origin check (the scheme). The HTTP guard's
per-client connection cap does not apply to a trusted proxy: its connections carry many clients (the server's
total still does). Runtime invocations read neither, and pay nothing for this.

Pure: ``App`` rewrites a request's ASGI scope with ``resolve`` before anything reads it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FOR = b"x-forwarded-for"
_PROTO = b"x-forwarded-proto"
_SCHEMES = {"http", "https"}


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[Network, ...]

    @classmethod
    def of(cls, specs: Iterable[str]) -> TrustedProxies:
        """Addresses or networks (``10.0.0.5``, ``10.0.0.0/8``, ``::1``); ValueError names one that is
        neither."""
        networks = []
        for spec in specs:
            try:
                networks.append(ipaddress.ip_network(spec.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{spec!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/8)"
                ) from None
        return cls(tuple(networks))

    def trusts(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(address in network for network in self.networks)

    def client(self, forwarded_for: Iterable[bytes]) -> str | None:
        """The client's address from a trusted proxy's ``X-Forwarded-For`` values (in the order they came):
        the rightmost that is no trusted proxy, or the leftmost when all are; None when there is none, or
        when the nearest untrusted entry is not an address (a proxy that passes names on)."""
        hops = [h for value in forwarded_for for h in value.decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return None
            if not any(address in network for network in self.networks):
                return str(address)
        first = _address(hops[0]) if hops else None
        return str(first) if first is not None else None

    def resolve(self, scope: MutableMapping[str, Any]) -> None:
        """When the request's connection comes from a trusted proxy: its ``client`` becomes the forwarded
        client's address (port 0: not known) and its ``scheme`` the forwarded scheme, where the proxy gave
        them. Anything else is left as the connection says."""
        peer = scope.get("client")
        if not peer or not self.trusts(str(peer[0])):
            return
        forwarded: list[bytes] = []
        proto: bytes | None = None
        for name, value in scope["headers"]:
            lname = name.lower()
            if lname == _FOR:
                forwarded.append(value)
            elif lname == _PROTO:
                proto = value  # the last one: set by the nearest proxy
        client = self.client(forwarded)
        if client is not None:
            scope["client"] = (client, 0)
        if proto is not None:
            scheme = proto.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
            if scheme in _SCHEMES:
                scope["scheme"] = scheme

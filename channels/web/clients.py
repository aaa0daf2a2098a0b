"""Who is asking: the client's address (through the proxies the operator trusts), flood
limits per client with a clear answer, and who may read ``/metrics``.

The address is the connection's peer. Only when that peer is one of ``[web]
trusted_proxies`` is ``X-Forwarded-For`` read, from the right: each address a trusted
proxy added is skipped, and the first one no trusted proxy vouches for is the client.
Without the setting the header is ignored, since anyone can write it.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and networks as written in the configuration ("10.0.0.5", "10.0.0.0/8")."""
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, among: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in among)


def client_address(request: web.Request, trusted: tuple[Network, ...]) -> str:
    """The client's IP address: the peer, or what trusted proxies say they received it from."""
    peer = request.remote or ""
    if not trusted or not _within(_address(peer), trusted):
        return peer
    hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage from before the first trusted proxy: the last good hop is the client
        client = str(address)
        if not _within(address, trusted):
            break
    return client


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def may_read_metrics(request: web.Request, allowed: tuple[Network, ...], token: str | None,
                     trusted: tuple[Network, ...]) -> int | None:
    """None when the client may read /metrics; else the status that refuses it (401 or 403).

    Neither an allow-list nor a token configured: open to all, as before. Either one lets
    a client in: an address on the list, or ``Authorization: Bearer <token>``.
    """
    if not allowed and not token:
        return None
    if allowed and _within(_address(client_address(request, trusted)), allowed):
        return None
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode("utf-8", "replace"),
                                                              token.encode("utf-8")):
            return None
        return 401
    return 403

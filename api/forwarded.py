"""Who is calling, and over what, when a reverse proxy may stand in front.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only when the connection comes from a
proxy named in ``GRIDPATROL_API_TRUSTED_PROXIES`` (empty by default: nobody's). Anyone else could
write any address there and slip past a per-address limit, or claim https.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastapi import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def trusted_networks(setting: str) -> tuple[Network, ...]:
    """Parse ``"10.0.0.5, 192.168.0.0/24, ::1"``.

    Raises
    ------
    ValueError
        For an entry that is neither an address nor a network.
    """
    networks: list[Network] = []
    for raw in setting.replace(";", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(
                f"GRIDPATROL_API_TRUSTED_PROXIES: {entry!r} is not an address or network"
            ) from exc
    return tuple(networks)


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _networks(request: Request) -> tuple[Network, ...]:
    settings = getattr(request.app.state, "settings", None)
    setting = settings.api.trusted_proxies if settings is not None else ""
    return trusted_networks(setting)


def _from_trusted_proxy(request: Request) -> bool:
    peer = request.client.host if request.client else ""
    return _is_trusted(peer, _networks(request))


def client_address(request: Request) -> str:
    """The caller's address: the peer's, or — when the peer is a trusted proxy — the nearest
    untrusted address of ``X-Forwarded-For`` (read from the right, so a client cannot choose it
    by putting addresses at the front)."""
    peer = request.client.host if request.client else "?"
    networks = _networks(request)
    if not _is_trusted(peer, networks):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


def is_https(request: Request) -> bool:
    """The request came over TLS: to us directly, or to a trusted proxy that says so."""
    if request.url.scheme == "https":
        return True
    if not _from_trusted_proxy(request):
        return False
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return proto == "https"


def origin(request: Request) -> str:
    """This server's own origin as the browser sees it (``https://host:port``)."""
    host = request.headers.get("host", "")
    if _from_trusted_proxy(request):
        host = request.headers.get("x-forwarded-host", "").split(",")[0].strip() or host
    return f"{'https' if is_https(request) else 'http'}://{host}".lower()

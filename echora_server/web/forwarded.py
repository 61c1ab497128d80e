"""The client behind a trusted reverse proxy: from a peer in ``trusted_proxies`` only, its
``X-Forwarded-For`` (the rightmost address that is not itself a trusted proxy),
``X-Forwarded-Proto`` and ``X-Forwarded-Host`` become the request's remote, scheme and host;
from anyone else they are ignored. aiohttp-remotes was weighed: its filtered variant believes
the chain whoever sends it, its strict one needs every hop listed and answers 400."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

import structlog
from aiohttp import hdrs, web

from echora_server.core.route import Handler

log = structlog.get_logger("echora.forwarded")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``127.0.0.1``, ``::1``: a bare address is a network of one."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _last(request: web.Request, header: str) -> str | None:
    values = ",".join(request.headers.getall(header, ())).split(",")
    value = values[-1].strip()
    return value or None


def forwarded_middleware(trusted: tuple[Network, ...]) -> Any:
    def is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and any(address in network for network in trusted)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not trusted or not peer or not is_trusted(_address(str(peer[0]))):
            return await handler(request)
        overrides: dict[str, str] = {}
        chain = ",".join(request.headers.getall(hdrs.X_FORWARDED_FOR, ())).split(",")
        hops = [_address(hop) for hop in chain if hop.strip()]
        if hops and None not in hops:
            client = next((hop for hop in reversed(hops) if not is_trusted(hop)), hops[0])
            overrides["remote"] = str(client)
        elif hops:
            log.warning("forwarded_for_ignored", value=request.headers.get(hdrs.X_FORWARDED_FOR))
        proto = _last(request, hdrs.X_FORWARDED_PROTO)
        if proto in ("http", "https"):
            overrides["scheme"] = proto
        host = _last(request, hdrs.X_FORWARDED_HOST)
        if host and _HOST.match(host):
            overrides["host"] = host
        if not overrides:
            return await handler(request)
        forwarded = request.clone(**overrides)  # type: ignore[arg-type]
        try:
            return await handler(forwarded)
        finally:
            # clone() copied the state, and aiohttp prepares a returned response with the
            # original request: what inner layers stored (the request id) must be there.
            request.update(forwarded)

    return middleware

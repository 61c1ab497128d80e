"""One push attempt, as an outbound request an attacker may aim: http(s) only (checked when
the URL is set), no redirect followed, a deadline, at most ``MAX_ANSWER`` bytes of the answer
read, and unless allowed no connection to a non-public address: the host is resolved here and
the connection made to the addresses checked (no second lookup), at every attempt."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

MAX_ANSWER = 4096
USER_AGENT = "Echora-Webhooks/1"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused(address: IPAddress) -> bool:
    """Loopback, private, link-local, multicast, unspecified, reserved: anything not public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
    )


class AddressRefused(OSError):
    """The callback's host is (or resolves only to) an address push may not reach."""


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and keeps only the addresses push may reach; aiohttp
    connects to what this returns. (IP literals skip resolvers: see ``literal_refused``.)"""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if not refused(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise AddressRefused(f"{host} resolves to no public address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def literal_refused(url: str) -> bool:
    host = URL(url).host or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: the resolver checks it
    return refused(address)


def new_session(timeout: float, *, allow_private: bool) -> aiohttp.ClientSession:
    """One session per process. Where addresses are checked, connections are not kept:
    every attempt resolves and checks the host again (a name may be pointed elsewhere between
    two attempts). Where any address is allowed (an agent on this host), there is nothing to
    check again, and connections are kept for the next attempt."""
    connector = aiohttp.TCPConnector(
        resolver=None if allow_private else GuardedResolver(),
        use_dns_cache=False,
        **({"keepalive_timeout": 15} if allow_private else {"force_close": True}),
        limit=256,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=False,
        trust_env=False,  # no HTTP proxy: the address checked is the one connected to
        headers={"User-Agent": USER_AGENT},
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None = None
    error: str | None = None  # None: delivered (2xx)
    retry_after: float | None = None  # seconds, from a 429 or 503's Retry-After


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - now).total_seconds(), 0.0)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    seconds: float,
    allow_private: bool,
) -> Outcome:
    """One POST, given at most ``seconds`` in all (connecting, sending, the answer)."""
    if not allow_private and literal_refused(url):
        return Outcome(error="address_refused")
    try:
        async with (
            asyncio.timeout(seconds),
            session.post(
                url,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as response,
        ):
            await response.content.read(MAX_ANSWER)
            status = response.status
            retry_after = response.headers.get("Retry-After")
    except TimeoutError:
        return Outcome(error="timeout")
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, AddressRefused):
            return Outcome(error="address_refused")
        return Outcome(error="dns_failed")
    except (aiohttp.ClientError, OSError):
        return Outcome(error="connection_failed")
    if 200 <= status < 300:
        return Outcome(status)
    error = "redirect_refused" if 300 <= status < 400 else f"http_{status}"
    wait = (
        retry_after_seconds(retry_after, dt.datetime.now(dt.UTC)) if status in (429, 503) else None
    )
    return Outcome(status, error, wait)

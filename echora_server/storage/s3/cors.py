"""Whether web pages of an origin may send forms straight to the store: its CORS rules,
asked of the store by the preflight a browser would send, one question per origin however
many requests wait, the answer kept a few minutes."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import structlog

log = structlog.get_logger("echora.storage")

CORS_SECONDS = 300.0
CORS_ORIGINS = 64


async def cors_allows(url: str, origin: str, seconds: float) -> bool:
    """Whether the store's CORS rules let a page of ``origin`` POST a form to ``url`` and read
    the answer: the preflight a browser sends first (an upload with progress always has one)."""
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.options(url, headers=headers, allow_redirects=False) as response,
        ):
            await response.read()
            allowed_origin = response.headers.get("Access-Control-Allow-Origin", "")
            methods = response.headers.get("Access-Control-Allow-Methods", "")
    except (aiohttp.ClientError, TimeoutError):
        log.warning("cors_preflight_failed", url=url, origin=origin, exc_info=True)
        return False
    allowed_methods = {m.strip().upper() for m in methods.split(",")}
    return (
        200 <= response.status < 300
        and allowed_origin in ("*", origin)
        and bool(allowed_methods & {"*", "POST"})
    )


class PageOrigins:
    """The store's answers per page origin, for the form URL ``url`` (set once probed)."""

    def __init__(self, seconds: float) -> None:
        self.url = ""
        self._seconds = seconds
        self._known: dict[str, tuple[float, bool]] = {}
        self._asking: dict[str, asyncio.Future[bool]] = {}

    async def allowed(self, origin: str) -> bool:
        known = self._known.get(origin)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        asking = self._asking.get(origin)
        if asking is None:  # one question to the store per origin, however many wait
            asking = asyncio.ensure_future(self._ask(origin))
            self._asking[origin] = asking
            asking.add_done_callback(lambda _: self._asking.pop(origin, None))
        return await asyncio.shield(asking)

    async def _ask(self, origin: str) -> bool:
        allowed = await cors_allows(self.url, origin, self._seconds)
        if len(self._known) >= CORS_ORIGINS:
            self._known.clear()  # a few origins in practice; many means a stale mix
        self._known[origin] = (time.monotonic() + CORS_SECONDS, allowed)
        if not allowed:
            log.warning("direct_uploads_not_for_pages", origin=origin)
        return allowed

    def close(self) -> None:
        for asking in list(self._asking.values()):
            asking.cancel()

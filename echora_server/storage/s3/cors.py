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


# What a page sends straight to the store: a form, or a PUT with the headers it signs.
PAGE_REQUESTS: dict[str, tuple[str, ...]] = {
    "POST": (),
    "PUT": ("content-type", "x-amz-checksum-sha256"),
}


async def cors_allows(url: str, origin: str, seconds: float, method: str = "POST") -> bool:
    """Whether the store's CORS rules let a page of ``origin`` send ``method`` (a form, or a
    presigned PUT with its headers) to ``url`` and read the answer: the preflight a browser
    sends first (an upload with progress always has one)."""
    wanted = PAGE_REQUESTS[method]
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if wanted:
        headers["Access-Control-Request-Headers"] = ",".join(wanted)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.options(url, headers=headers, allow_redirects=False) as response,
        ):
            await response.read()
            allowed_origin = response.headers.get("Access-Control-Allow-Origin", "")
            methods = response.headers.get("Access-Control-Allow-Methods", "")
            allowed_headers = response.headers.get("Access-Control-Allow-Headers", "")
    except (aiohttp.ClientError, TimeoutError):
        log.warning("cors_preflight_failed", url=url, origin=origin, exc_info=True)
        return False
    allowed_methods = {m.strip().upper() for m in methods.split(",")}
    named = {h.strip().lower() for h in allowed_headers.split(",")}
    return (
        200 <= response.status < 300
        and allowed_origin in ("*", origin)
        and bool(allowed_methods & {"*", method})
        and ("*" in named or named.issuperset(wanted))
    )


class PageOrigins:
    """The store's answers per page origin, for the form URL ``url`` (set once probed)."""

    def __init__(self, seconds: float) -> None:
        self.url = ""
        self._seconds = seconds
        self._known: dict[tuple[str, str], tuple[float, bool]] = {}
        self._asking: dict[tuple[str, str], asyncio.Future[bool]] = {}

    async def allowed(self, origin: str, method: str = "POST") -> bool:
        asked = (origin, method)
        known = self._known.get(asked)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        asking = self._asking.get(asked)
        if asking is None:  # one question to the store per origin, however many wait
            asking = asyncio.ensure_future(self._ask(asked))
            self._asking[asked] = asking
            asking.add_done_callback(lambda _: self._asking.pop(asked, None))
        return await asyncio.shield(asking)

    async def _ask(self, asked: tuple[str, str]) -> bool:
        origin, method = asked
        # The bucket's URL: its CORS rules are the bucket's, whatever the key.
        allowed = await cors_allows(self.url, origin, self._seconds, method)
        if len(self._known) >= CORS_ORIGINS:
            self._known.clear()  # a few origins in practice; many means a stale mix
        self._known[asked] = (time.monotonic() + CORS_SECONDS, allowed)
        if not allowed:
            log.warning("direct_uploads_not_for_pages", origin=origin, method=method)
        return allowed

    def close(self) -> None:
        for asking in list(self._asking.values()):
            asking.cancel()

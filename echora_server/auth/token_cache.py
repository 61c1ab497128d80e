"""Verified API tokens, reused for a few seconds so a busy client's requests skip the lookup.

Only tokens (never browser sessions). Expiry is checked on every use. A revocation forgets
its token at once in the revoking process, and in every other on the ``credential.revoked``
event. While the events may be missed (the listener lost, until it is back) nothing is
served from the cache, and it is emptied when they flow again: a revoked token is refused
everywhere as soon as its event arrives, and never later than the TTL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from echora_server.config import CONFIG
from echora_server.db.records import Credential

MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class _Entry:
    credential: Credential
    stored_at: float


class TokenCache:
    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[bytes, _Entry] = {}  # by token digest, oldest first
        self._generation = 0  # bumped by every forget: a lookup from before it is stale
        self._live = True  # revocation events are arriving

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self._live

    def generation(self) -> int:
        return self._generation

    def get(self, token_digest: bytes) -> Credential | None:
        """The credential verified less than ``ttl`` ago, if any; expiry is the caller's check."""
        if not self.enabled:
            return None
        entry = self._entries.get(token_digest)
        if entry is None:
            return None
        if self._clock() - entry.stored_at >= self.ttl:
            del self._entries[token_digest]
            return None
        return entry.credential

    def put(self, token_digest: bytes, credential: Credential, generation: int) -> None:
        """Keep a credential just verified, unless something was forgotten since the lookup
        began (``generation``): it may be that very token, revoked in between."""
        if not self.enabled or generation != self._generation or credential.revoked:
            return
        if len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))
        self._entries.pop(token_digest, None)
        self._entries[token_digest] = _Entry(credential, self._clock())

    def forget_token(self, token_id: int) -> None:
        self._generation += 1
        for key, entry in list(self._entries.items()):
            if entry.credential.token_id == token_id:
                del self._entries[key]

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def events_lost(self) -> None:
        """Revocations may be missed from now on: serve nothing from the cache."""
        self._live = False
        self.clear()

    def events_restored(self) -> None:
        self.clear()  # what was missed meanwhile is unknown
        self._live = True

    def __len__(self) -> int:
        return len(self._entries)


TOKEN_CACHE = web.AppKey("token_cache", TokenCache)


async def token_cache_ctx(app: web.Application) -> AsyncIterator[None]:
    app[TOKEN_CACHE] = TokenCache(app[CONFIG].token_cache_ttl)
    yield


def forget_revoked(cache: TokenCache, data: dict[str, object]) -> None:
    """From a ``credential.revoked`` event's data: a token id, or a session (never cached)."""
    token_id = data.get("token_id")
    if isinstance(token_id, int):
        cache.forget_token(token_id)

"""Random bearer secrets, prefixed so leaks are recognisable and stored only as sha256:
256 random bits need no slow KDF, and lookups by digest compare no secret byte by byte."""

from __future__ import annotations

import hashlib
import re
import secrets

SESSION_PREFIX = "echs_"
API_TOKEN_PREFIX = "echt_"
# Single-use: one upload ticket's bytes and finalize.
UPLOAD_TICKET_PREFIX = "echu_"
_SHAPE = re.compile(r"^ech[a-z]_[A-Za-z0-9_-]{43}$")


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def well_formed(secret: str, prefix: str) -> bool:
    return secret.startswith(prefix) and bool(_SHAPE.match(secret))


def hint(secret: str) -> str:
    """The part of a secret that may be shown again (in token listings)."""
    return secret[: len(API_TOKEN_PREFIX) + 4]

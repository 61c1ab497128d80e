"""Callback URLs of push-mode bots: http or https, a host name or IPv4 address, no
credentials. Written once as a pattern for the check and for the OpenAPI document."""

from __future__ import annotations

import re

from echora_server.core.errors import InvalidRequest
from echora_server.core.validation import SPACES

MAX_CALLBACK_URL = 2048
# No "@" in the authority (no userinfo), no spaces or controls anywhere; a port of 1-5 digits.
_URL = r"https?://[A-Za-z0-9._~-]+(:[0-9]{1,5})?(/[!-~]*)?"
CALLBACK_URL = re.compile(_URL)
# As the document states it: request bodies are stripped of surrounding spaces first.
CALLBACK_URL_PATTERN = f"^[{SPACES}]*{_URL}[{SPACES}]*$"


def check_callback_url(url: str) -> str:
    if len(url) > MAX_CALLBACK_URL or not CALLBACK_URL.fullmatch(url):
        raise InvalidRequest(
            "A callback URL is http:// or https://, a host and an optional port and path, "
            "with no user name or password.",
            code="invalid_callback_url",
            details={"field": "callback_url"},
        )
    return url


def callback_url_required() -> InvalidRequest:
    return InvalidRequest(
        "Push delivery needs a callback_url.",
        code="callback_url_required",
        details={"field": "callback_url"},
    )

"""The API against its own OpenAPI document. Schemathesis generates requests from the
document, valid and invalid, for every documented operation and sends them to a live server
(``echora serve`` on real PostgreSQL and SeaweedFS, with a valid token, a seeded channel,
message and image). Every answer must be no 5xx, of a documented status and content type,
and match the schema documented for that status (the error shape included); data valid by
the document must be accepted, and data it calls invalid refused.

Every operation is fuzzed but the WebSocket upgrade (a protocol of its own); the few that
would destroy the seed are kept off it (``_spares_the_seed``). Logging out with a token
ends no token, so it is fuzzed like the rest. Bounded and repeatable: a fixed seed,
``MAX_EXAMPLES`` per operation and phase, no example database, no deadline.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import asyncpg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis import GenerationMode
from support.postgres import TEMPLATE, PostgresServer, admin_execute
from support.processes import echora_env, free_port, start_echora, stop
from support.seaweed import S3Server, s3_config_kwargs

from echora_server.accounts import service as accounts
from echora_server.agents import bots
from echora_server.web.openapi import build_document
from echora_server.web.route_table import ROUTES

MAX_EXAMPLES = 50  # about a minute for the whole module
SEED = 20260601
PASSWORD = "correct horse battery"

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        # Each operation on its own; links between operations are not documented.
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # Too many files is refused with 413 (as documented), a refusal like the others.
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413", "415"),
                    *("422", "428", "429", "5xx"),  # the default list, and 413
                ]
            }
        },
    }
)
# The document the app serves (the fixture checks that it is this one).
DOCUMENT = build_document(ROUTES)
# The WebSocket upgrade is a protocol of its own (tests/messages/test_websocket.py).
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG).exclude(path="/api/ws")


@dataclass
class Seeded:
    """What the live server holds before the fuzzing starts."""

    # A fresh database numbers rows from 1, so these are known before the seed exists (the
    # hooks also run at collection, for the coverage phase's cases); the fixture checks them.
    user_id: int = 1
    bob_id: int = 2
    bot_id: int = 3  # a bot in poll mode, a member of the seeded channel
    workspace_id: int = 1
    token_id: int = 1
    channel_id: int = 1
    message_id: int = 1
    # Known once seeded.
    url: str = ""
    token: str = ""
    bot_token: str = ""
    attachment_id: str = ""
    filename: str = ""
    # Requests sent, by operation and status: the test's own evidence that it reached things.
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)


SEEDED = Seeded()


@schema.auth()
class Bearer:
    """The seeded user's token, given the way the document says (so the ignored-auth check
    can take it away and try without it, or with an invalid one); the seeded bot's for the
    inbox, which only bots have."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return SEEDED.bot_token if case.path.startswith("/api/inbox") else SEEDED.token

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _id(value: Any) -> int | None:
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() else None


def _label(case: schemathesis.Case) -> str:
    return f"{case.method.upper()} {case.path}"


# Operations that would destroy what the fuzzing of the others relies on, and the path
# parameters they must not name: the token in use, the seeded message, channel and people.
def _spares_the_seed(path: dict[str, Any]) -> dict[str, bool]:
    ids = {name: _id(value) for name, value in path.items()}
    people = (SEEDED.user_id, SEEDED.bob_id, SEEDED.bot_id)
    return {
        "DELETE /api/tokens/{token_id}": ids.get("token_id") != SEEDED.token_id,
        "DELETE /api/messages/{message_id}": ids.get("message_id") != SEEDED.message_id,
        "POST /api/channels/{channel_id}/leave": ids.get("channel_id") != SEEDED.channel_id,
        "POST /api/channels/{channel_id}/archive": ids.get("channel_id") != SEEDED.channel_id,
        "DELETE /api/channels/{channel_id}": ids.get("channel_id") != SEEDED.channel_id,
        "DELETE /api/channels/{channel_id}/members/{user_id}": not (
            ids.get("channel_id") == SEEDED.channel_id and ids.get("user_id") in people
        ),
        "DELETE /api/workspaces/{workspace_id}/members/{user_id}": not (
            ids.get("workspace_id") == SEEDED.workspace_id and ids.get("user_id") in people
        ),
    }


def _names_an_upload(case: schemathesis.Case) -> bool:
    return _label(case) == "POST /api/channels/{channel_id}/messages" and bool(
        isinstance(case.body, dict) and case.body.get("attachment_ids")
    )


@schema.hook("filter_case")
def spare_the_seed(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    if not SEEDED.attachment_id and _names_an_upload(case) and _positive(case):
        return False  # no upload of mine to name yet (see _within_unwritten_rules)
    return _spares_the_seed(dict(case.path_parameters or {})).get(_label(case), True)


def _positive(case: schemathesis.Case) -> bool:
    return case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE


_turn = itertools.count()


@schema.hook("map_case")
def reach_the_seed(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Every other valid case names what was seeded: random ids, attachment ids and names
    are almost never ones that exist, so only these get past the 404s and 401s."""
    _without_long_polls(case)
    if not _positive(case):
        return case
    _within_unwritten_rules(case)
    label = _label(case)
    if label in _spares_the_seed({}) or next(_turn) % 2:
        return case
    if label == "POST /api/auth/login":
        case.body = {"username": "fuzzer", "password": PASSWORD}
    if label == "POST /api/workspaces/{workspace_id}/members" and isinstance(case.body, dict):
        case.body = {**case.body, "username": "bob"}
    if label == "POST /api/inbox/ack":
        case.body = {"ids": [1]}  # the seeded bot's first entry (its joining the channel)
    seeded = {
        "workspace_id": SEEDED.workspace_id,
        "channel_id": SEEDED.channel_id,
        "message_id": SEEDED.message_id,
        "user_id": SEEDED.bob_id,
        "bot_id": SEEDED.bot_id,
        "filename": "app.css" if case.path.startswith("/static/") else SEEDED.filename,
        "attachment_id": SEEDED.attachment_id,
    }
    if not SEEDED.attachment_id:  # at collection
        del seeded["filename"], seeded["attachment_id"]
    if case.path_parameters:
        case.path_parameters = {
            name: seeded.get(name, _as_read(name, value))
            for name, value in case.path_parameters.items()
        }
    return case


def _as_read(name: str, value: Any) -> Any:
    """The emoji as the server reads it. Schemathesis keeps path parameters percent-encoded
    and validates them again once a hook replaced them: an encoded emoji ("%F0%9F%91%8D")
    would then count as invalid, and the valid one it stands for be expected refused."""
    return unquote(value) if name == "emoji" and isinstance(value, str) else value


def _without_long_polls(case: schemathesis.Case) -> None:
    """A long poll of an empty inbox takes its whole wait (tests/agents/test_inbox.py)."""
    query = dict(case.query or {})
    if _label(case) == "GET /api/inbox" and "wait" in query:
        try:
            waits = 0 < float(query["wait"]) <= 30
        except (TypeError, ValueError):
            waits = False
        if waits:
            case.query = {**query, "wait": 0}


_OPEN_POLICY: dict[str, Any] = {"denied_types": [], "tickets": True, "direct_uploads": True}


def _within_unwritten_rules(case: schemathesis.Case) -> None:
    """Rules OpenAPI has no words for, stated in the document's prose and tested on their
    own (tests/messages, tests/files): valid cases are brought within them."""
    label, body, query = _label(case), case.body, dict(case.query or {})
    if label == "GET /api/channels/{channel_id}/messages" and {"before", "after"} <= set(query):
        del query["after"]  # before or after, not both
        case.query = query
    editing = label == "PATCH /api/messages/{message_id}" and isinstance(body, dict)
    if editing and not str(body.get("content", "x")).strip():
        # Text may go only from a message with attachments or links: the seeded one.
        case.path_parameters = {"message_id": SEEDED.message_id}
    if label == "POST /api/uploads" and isinstance(body, dict):
        # No content_type: the filename's extension must tell one; the size limit is the
        # deployment's (ECHORA_MAX_UPLOAD_BYTES), the document's maximum any deployment's.
        body = case.body = {
            **body,
            "content_type": body.get("content_type") or "application/octet-stream",
            "size": min(int(body.get("size", 0)), 1024),
        }
    if label == "PATCH /api/workspaces/{workspace_id}/settings" and isinstance(body, dict):
        # The uploads fuzzed beside it need the seeded workspace to accept them: the same
        # settings, at values that restrict nothing (tests/workspaces checks the others).
        case.body = {name: _OPEN_POLICY.get(name) for name in body}
    dm = label == "POST /api/workspaces/{workspace_id}/dms" and isinstance(body, dict)
    if dm and isinstance(body.get("user_ids"), list):
        # 2 to 8 people, the caller always one of them.
        others = [i for i in body["user_ids"] if i != SEEDED.user_id] or [SEEDED.bob_id]
        case.body = {**body, "user_ids": others[:7]}
    if _names_an_upload(case) and isinstance(body, dict):
        # Only ids of my own uploads are; the seeded one is linked already (409).
        case.body = {**body, "attachment_ids": [SEEDED.attachment_id]}
    uploads = label in ("POST /api/upload", "PUT /api/upload")
    form = isinstance(body, dict) and "file" in body
    if form and (uploads or label == "POST /api/channels/{channel_id}/messages"):
        # A form's other fields come before its files (stored as they arrive); an upload's
        # channel_id and workspace_id agree with the query string's.
        case.body = {**{k: v for k, v in body.items() if k != "file"}, "file": body["file"]}
        if uploads:
            case.query = {k: v for k, v in query.items() if str(body.get(k, v)) == str(v)}
    elif uploads and (case.media_type or "").startswith(("multipart/", "image/")):
        # A raw body: multipart/form-data is the form's media type (the more specific one
        # wins), and a declared image type must be what the bytes are.
        case.media_type = "application/octet-stream"


@schema.hook("after_call")
def count_statuses(
    context: schemathesis.HookContext, case: schemathesis.Case, response: schemathesis.Response
) -> None:
    SEEDED.statuses[(_label(case), response.status_code)] += 1


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


async def _seed_people(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        user, workspace = await accounts.create_user(
            conn, workspace_slug="acme", username="fuzzer", password=PASSWORD, role="owner"
        )
        bob, _ = await accounts.create_user(
            conn, workspace_slug="acme", username="bob", password=None
        )
        token, secret = await accounts.issue_api_token(conn, user.id, "fuzz")
        bot, SEEDED.bot_token, _ = await bots.create_bot(
            conn, workspace_id=workspace.id, username="helper", delivery="poll"
        )
    finally:
        await conn.close()
    SEEDED.token = secret
    known = (SEEDED.user_id, SEEDED.bob_id, SEEDED.bot_id, SEEDED.workspace_id, SEEDED.token_id)
    assert (user.id, bob.id, bot.user.id, workspace.id, token.id) == known


def _seed_chat(url: str) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {SEEDED.token}"

    def call(method: str, path: str, status: int, **kw: Any) -> Any:
        response = session.request(method, f"{url}{path}", timeout=30, **kw)
        assert response.status_code == status, (path, response.text)
        return response.json()

    channel = call(
        "POST", "/api/channels", 201, json={"workspace_id": SEEDED.workspace_id, "name": "general"}
    )
    assert channel["id"] == SEEDED.channel_id
    for member in (SEEDED.bob_id, SEEDED.bot_id):
        call("POST", f"/api/channels/{SEEDED.channel_id}/members", 201, json={"user_id": member})
    stored = call(
        "POST",
        "/api/upload",
        201,
        params={"channel_id": SEEDED.channel_id, "filename": "pixel.png"},
        data=_png(),
        headers={"Content-Type": "image/png"},
    )
    attachment = stored["attachments"][0]
    assert "thumbnail_url" in attachment, attachment
    SEEDED.attachment_id, SEEDED.filename = attachment["id"], attachment["filename"]
    message = call(
        "POST",
        f"/api/channels/{SEEDED.channel_id}/messages",
        201,
        json={
            "content": "hello",
            "attachment_ids": [SEEDED.attachment_id],
            "links": [{"url": "https://example.com/", "title": "Example"}],
        },
    )
    assert message["id"] == SEEDED.message_id
    # The document under test is the one this server serves.
    assert call("GET", "/api/openapi.json", 200) == DOCUMENT


def _wait_ready(url: str, process: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "echora serve exited"
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became ready")


@pytest.fixture(scope="module")
def live(
    pg_server: PostgresServer, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    name = f"fuzz_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(admin_execute(pg_server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
    database_url = pg_server.uri(name)
    port = free_port()
    env = echora_env(
        ECHORA_DATABASE_URL=database_url,
        ECHORA_DATA_DIR=str(tmp_path_factory.mktemp("fuzz")),
        ECHORA_LISTEN=f"127.0.0.1:{port}",
        ECHORA_LOG_LEVEL="warning",
        ECHORA_SWEEP_INTERVAL_SECONDS="0",
        # Limits are tested on their own; here they would hide the rules behind a 429.
        ECHORA_MESSAGE_RATE_PER_MINUTE="1000000",
        ECHORA_MESSAGE_RATE_BURST="1000000",
        ECHORA_LOGIN_RATE_PER_MINUTE="1000000",
        **{
            f"ECHORA_{key.upper()}": str(value)
            for key, value in s3_config_kwargs(s3_server).items()
        },
    )
    process = None
    try:
        asyncio.run(_seed_people(database_url))
        process = start_echora("serve", env=env)
        SEEDED.url = f"http://127.0.0.1:{port}"
        _wait_ready(SEEDED.url, process)
        _seed_chat(SEEDED.url)
        yield SEEDED
    finally:
        if process is not None:
            stop(process)
        asyncio.run(admin_execute(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_operation_keeps_to_the_document(case: schemathesis.Case, live: Seeded) -> None:
    case.call_and_validate(base_url=live.url, timeout=30)


# Operations whose success needs an object the fuzzing made itself, or one it must spare;
# and a ticket's PUT and finalize, which need its single-use token (tests/tickets).
_NO_SUCCESS_EXPECTED = set(_spares_the_seed({})) | {
    "PUT /api/uploads/{upload_id}",
    "POST /api/uploads/{upload_id}/finalize",
}


def test_the_fuzzing_got_past_the_refusals(live: Seeded) -> None:
    """Proof that the seed and token worked: every other operation succeeded at least once."""
    operations = {
        f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items() for method in ops
    } - {"GET /api/ws"}
    if not operations <= {label for label, _ in live.statuses}:
        pytest.skip("not every operation was fuzzed in this run")
    succeeded = {label for (label, status), _ in live.statuses.items() if status < 300}
    missing = operations - _NO_SUCCESS_EXPECTED - succeeded
    assert not missing, sorted(missing)

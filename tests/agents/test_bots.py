"""Bot accounts: owners and admins create them (API and CLI), the token is shown once and
stored hashed, and the delivery mode follows its rules. Every refusal leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
from aiohttp.test_utils import TestClient
from support.bots import make_bot
from support.chat import assert_same_response, fetch
from support.people import People
from support.processes import echora_env, run_echora

from echora_server.accounts import service as accounts


async def _leftovers(client: TestClient, username: str) -> tuple[int, int]:
    users = await fetch(client, "SELECT count(*) FROM users WHERE username = $1", username)
    bots = await fetch(client, "SELECT count(*) FROM bots")
    return users, bots


async def test_owner_creates_a_bot_whose_token_is_shown_once_and_stored_hashed(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    response = await owner.post(
        f"/api/workspaces/{owner.workspace_id}/bots",
        json={"username": "Helper", "display_name": "Helper bot"},
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    bot = created["bot"]
    assert bot["username"] == "helper"
    assert bot["display_name"] == "Helper bot"
    assert bot["delivery"] == "websocket"  # the default
    assert bot["callback_url"] is None
    assert bot["workspace_id"] == owner.workspace_id
    token = created["token"]
    assert token.startswith("echt_")
    stored = await fetch(client, "SELECT token_hash FROM api_tokens WHERE user_id = $1", bot["id"])
    assert stored == hashlib.sha256(token.encode()).digest()
    # No password; a bot role in the workspace; its token reaches that workspace only.
    assert await fetch(client, "SELECT password_hash FROM users WHERE id = $1", bot["id"]) is None
    me = await (await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()
    assert me["user"]["id"] == bot["id"]
    assert [(w["id"], w["role"]) for w in me["workspaces"]] == [(owner.workspace_id, "bot")]
    listed = await (await owner.get(f"/api/workspaces/{owner.workspace_id}/bots")).json()
    assert listed == {"bots": [bot]}
    # The secret is never shown again.
    assert token not in await (await owner.get(f"/api/workspaces/{owner.workspace_id}/bots")).text()


async def test_push_without_a_callback_url_is_422_and_leaves_nothing(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    path = f"/api/workspaces/{owner.workspace_id}/bots"
    response = await owner.post(path, json={"username": "pusher", "delivery": "push"})
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "callback_url_required"
    null_url = await owner.post(
        path, json={"username": "pusher", "delivery": "push", "callback_url": None}
    )
    assert (await null_url.json())["error"]["code"] == "callback_url_required"
    assert await _leftovers(client, "pusher") == (0, 0)
    made = await make_bot(owner, "pusher", "push", callback_url="https://agent.example/hook")
    found = await fetch(client, "SELECT callback_url FROM bots WHERE user_id = $1", made.user_id)
    assert found == "https://agent.example/hook"


async def test_callback_urls_are_http_without_credentials(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    path = f"/api/workspaces/{owner.workspace_id}/bots"
    for url in (
        "ftp://agent.example/hook",
        "https://user:secret@agent.example/hook",
        "https://user@agent.example/",
        "javascript:alert(1)",
        "https://agent.example/a b",
        "https://",
    ):
        response = await owner.post(
            path, json={"username": "pusher", "delivery": "push", "callback_url": url}
        )
        assert response.status == 422, url
        assert (await response.json())["error"]["code"] == "invalid_callback_url", url
    assert await _leftovers(client, "pusher") == (0, 0)


async def test_only_owners_and_admins_create_and_list_bots(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    admin = await people.create("ada", role="admin")
    path = f"/api/workspaces/{owner.workspace_id}/bots"
    refused = await member.post(path, json={"username": "sneaky"})
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "forbidden"
    assert (await member.get(path)).status == 403
    assert await _leftovers(client, "sneaky") == (0, 0)
    await make_bot(admin, "by-admin")
    assert [b["username"] for b in (await (await admin.get(path)).json())["bots"]] == ["by-admin"]


async def test_another_workspace_looks_missing(client: TestClient, people: People) -> None:
    await people.create("olive")
    stranger = await people.create("sam", workspace="elsewhere")
    theirs = f"/api/workspaces/{stranger.workspace_id - 1}/bots"
    missing = f"/api/workspaces/{stranger.workspace_id + 100}/bots"
    await assert_same_response(stranger, "GET", theirs, missing)
    await assert_same_response(stranger, "POST", theirs, missing, json={"username": "x-bot"})
    assert await _leftovers(client, "x-bot") == (0, 0)


async def test_a_taken_username_is_409_and_leaves_nothing(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    response = await owner.post(
        f"/api/workspaces/{owner.workspace_id}/bots", json={"username": "olive"}
    )
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "username_taken"
    assert await fetch(client, "SELECT count(*) FROM bots") == 0
    assert await fetch(client, "SELECT count(*) FROM api_tokens") == 1  # olive's own


async def test_delivery_mode_changes_follow_the_same_rules(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    stranger = await people.create("sam", workspace="elsewhere")
    bot = await make_bot(owner, "helper", "websocket")
    path = f"/api/bots/{bot.user_id}"
    no_url = await owner.request("PATCH", path, json={"delivery": "push"})
    assert no_url.status == 422
    assert (await no_url.json())["error"]["code"] == "callback_url_required"
    assert (await member.request("PATCH", path, json={"delivery": "poll"})).status == 403
    await assert_same_response(
        stranger, "PATCH", path, f"/api/bots/{bot.user_id + 100}", json={"delivery": "poll"}
    )
    # A user who is no bot is no bot to set either.
    await assert_same_response(
        owner,
        "PATCH",
        f"/api/bots/{member.user_id}",
        "/api/bots/999999",
        json={"delivery": "poll"},
    )
    assert await fetch(client, "SELECT delivery FROM bots") == "websocket"
    pushed = await owner.request(
        "PATCH", path, json={"delivery": "push", "callback_url": "http://10.0.0.5:8000/in"}
    )
    assert pushed.status == 200
    assert (await pushed.json())["delivery"] == "push"
    polled = await (await owner.request("PATCH", path, json={"delivery": "poll"})).json()
    assert (polled["delivery"], polled["callback_url"]) == ("poll", None)


async def test_echora_create_bot_prints_a_working_token(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(database_url)
    try:
        await accounts.create_user(
            conn, workspace_slug="acme", username="olive", password=None, role="owner"
        )
    finally:
        await conn.close()
    env = echora_env(ECHORA_DATABASE_URL=database_url, ECHORA_DATA_DIR=str(tmp_path))
    args = ("create-bot", "-w", "acme", "scanner", "--delivery", "poll")
    done = await asyncio.to_thread(run_echora, *args, env=env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("echt_")
    refused = await asyncio.to_thread(
        run_echora, "create-bot", "-w", "acme", "pusher", "--delivery", "push", env=env
    )
    assert refused.returncode != 0
    assert "callback_url" in refused.stderr
    missing = await asyncio.to_thread(run_echora, "create-bot", "-w", "nowhere", "x", env=env)
    assert missing.returncode != 0
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT u.username, b.delivery, t.token_hash, t.workspace_id, m.role "
            "FROM bots b JOIN users u ON u.id = b.user_id JOIN api_tokens t ON t.user_id = u.id "
            "JOIN memberships m ON m.user_id = u.id"
        )
    finally:
        await conn.close()
    assert [(r["username"], r["delivery"], r["role"]) for r in rows] == [("scanner", "poll", "bot")]
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).digest()
    assert rows[0]["workspace_id"] is not None

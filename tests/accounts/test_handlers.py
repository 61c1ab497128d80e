"""Log in, sessions, API tokens and the 401s they give."""

from __future__ import annotations

import datetime as dt

import pytest
import structlog
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from support.people import PASSWORD, People

from echora_server.db.pool import POOL


async def error_code(response: ClientResponse) -> str:
    body = await response.json()
    return str(body["error"]["code"])


async def test_login_sets_session_and_me_works(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    response = await client.post(
        "/api/auth/login", json={"username": "Alice", "password": PASSWORD}
    )
    assert response.status == 200
    cookie = response.cookies["echora_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    me = await client.get("/api/me")
    assert me.status == 200
    body = await me.json()
    assert body["user"]["username"] == "alice"
    assert body["auth"] == "session"
    assert [w["id"] for w in body["workspaces"]] == [alice.workspace_id]
    assert body["workspaces"][0]["role"] == "owner"


async def test_wrong_password_and_unknown_user_answer_alike(
    client: TestClient, people: People
) -> None:
    await people.create("alice")
    wrong = await client.post(
        "/api/auth/login", json={"username": "alice", "password": "nope-nope"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"username": "bob", "password": "nope-nope"}
    )
    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json()
    assert await error_code(wrong) == "invalid_credentials"
    assert "echora_session" not in wrong.cookies


async def test_no_credentials_gives_401(client: TestClient) -> None:
    response = await client.get("/api/me")
    assert response.status == 401
    assert await error_code(response) == "auth_required"


async def test_unknown_token_gives_401(client: TestClient, people: People) -> None:
    await people.create("alice")
    for token in ("echt_" + "A" * 43, "garbage", "echs_" + "B" * 43):
        response = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 401
        assert await error_code(response) == "invalid_token"


async def test_revoked_token_gives_401(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    created = await alice.post("/api/tokens", json={"name": "ci"})
    assert created.status == 201
    token = await created.json()
    assert token["token"].startswith("echt_")
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert (await client.get("/api/me", headers=headers)).status == 200
    assert (await alice.delete(f"/api/tokens/{token['id']}")).status == 204
    response = await client.get("/api/me", headers=headers)
    assert response.status == 401
    assert await error_code(response) == "token_revoked"
    listed = await (await alice.get("/api/tokens")).json()
    assert [t["revoked"] for t in listed["tokens"] if t["id"] == token["id"]] == [True]


# The database's expiry is changed under the server: with the cache on, its copy would still
# say tomorrow (tests/auth/test_token_cache.py proves expiry while cached).
@pytest.mark.parametrize("config_overrides", [{"token_cache_ttl": 0}])
async def test_expired_token_gives_401(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    created = await (
        await alice.post("/api/tokens", json={"name": "short", "expires_in_days": 1})
    ).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert (await client.get("/api/me", headers=headers)).status == 200
    async with client.app[POOL].acquire() as conn:
        await conn.execute(
            "UPDATE api_tokens SET expires_at = $2 WHERE id = $1",
            created["id"],
            dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
        )
    response = await client.get("/api/me", headers=headers)
    assert response.status == 401
    assert await error_code(response) == "token_expired"


async def test_someone_elses_token_cannot_be_revoked(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    bob = await people.create("bob")
    token = await (await alice.post("/api/tokens", json={"name": "mine"})).json()
    assert (await bob.delete(f"/api/tokens/{token['id']}")).status == 404
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert (await client.get("/api/me", headers=headers)).status == 200


async def test_token_workspace_beyond_bigint_is_invalid(people: People) -> None:
    alice = await people.create("alice")
    response = await alice.post("/api/tokens", json={"name": "x", "workspace_id": 2**63})
    assert response.status == 422
    assert await error_code(response) == "invalid_request"


async def test_a_username_with_nul_finds_nobody(people: People) -> None:
    """NUL is valid JSON but no PostgreSQL text: such a name is nobody's, not a 500."""
    alice = await people.create("alice")
    login = await alice.post(
        "/api/auth/login", json={"username": "\u0000alice", "password": PASSWORD}
    )
    assert login.status == 401, await login.text()
    added = await alice.post(
        f"/api/workspaces/{alice.workspace_id}/members", json={"username": "bob\u0000"}
    )
    assert added.status == 404, await added.text()


async def test_token_names_follow_the_text_rules(people: People) -> None:
    alice = await people.create("alice")
    for name in ("nul\u0000", "line\nbreak", "   "):
        response = await alice.post("/api/tokens", json={"name": name})
        assert response.status == 422, (name, await response.text())
    named = await alice.post("/api/tokens", json={"name": "  laptop  "})
    assert (await named.json())["name"] == "laptop"


async def test_token_from_password_for_curl(client: TestClient, people: People) -> None:
    await people.create("alice")
    response = await client.post(
        "/api/tokens", json={"name": "laptop", "username": "alice", "password": PASSWORD}
    )
    assert response.status == 201
    token = (await response.json())["token"]
    me = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert (await me.json())["auth"] == "token"
    bad = await client.post(
        "/api/tokens", json={"name": "laptop", "username": "alice", "password": "wrong-one"}
    )
    assert bad.status == 401
    assert await error_code(bad) == "invalid_credentials"


async def test_tokens_are_stored_hashed(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch("SELECT encode(token_hash, 'escape') AS h, hint FROM api_tokens")
    assert rows and all(alice.token not in r["h"] for r in rows)
    assert all(alice.token.startswith(r["hint"]) and len(r["hint"]) == 9 for r in rows)


async def test_logout_ends_the_session(client: TestClient, people: People) -> None:
    await people.create("alice")
    await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    jar = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    stolen = jar["echora_session"].value
    assert (await client.post("/api/auth/logout", headers={"X-Requested-With": "x"})).status == 200
    client.session.cookie_jar.clear()
    response = await client.get("/api/me", cookies={"echora_session": stolen})
    assert response.status == 401
    assert await error_code(response) == "session_expired"


async def test_cross_site_cookie_request_is_refused(client: TestClient, people: People) -> None:
    await people.create("alice")
    await client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    evil = await client.post(
        "/api/tokens", json={"name": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert evil.status == 403
    assert await error_code(evil) == "csrf_failed"
    cross_site = await client.post(
        "/api/tokens", json={"name": "x"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status == 403
    bare = await client.post("/api/tokens", json={"name": "x"})
    assert bare.status == 403
    own = str(client.make_url("/")).rstrip("/")
    ok = await client.post("/api/tokens", json={"name": "x"}, headers={"Origin": own})
    assert ok.status == 201
    evil_login = await client.post(
        "/api/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert evil_login.status == 403


async def test_login_rate_limit(client: TestClient, people: People) -> None:
    await people.create("alice")
    statuses = []
    for _ in range(11):
        r = await client.post("/api/auth/login", json={"username": "alice", "password": "wrong-pw"})
        statuses.append(r.status)
    assert statuses[:10] == [401] * 10
    assert statuses[-1] == 429
    assert await error_code(r) == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1


async def test_a_refused_origin_is_logged_with_what_was_expected(
    client: TestClient, people: People
) -> None:
    await people.create("alice")
    with structlog.testing.capture_logs() as logs:
        response = await client.post(
            "/api/auth/login",
            json={"username": "alice", "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
    assert response.status == 403
    (refused,) = [e for e in logs if e["event"] == "origin_refused"]
    assert refused["received"] == "https://evil.example"
    assert refused["expected"] == [f"http://{client.host}:{client.port}"]

"""Workspace membership: who may see and change what, and tenant isolation."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from support.people import People


async def test_members_list_and_add(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    await people.create("bob", workspace="other")
    added = await owner.post(
        f"/api/workspaces/{owner.workspace_id}/members", json={"username": "bob"}
    )
    assert added.status == 201
    listed = await (await owner.get(f"/api/workspaces/{owner.workspace_id}/members")).json()
    assert {(m["username"], m["role"]) for m in listed["members"]} == {
        ("olive", "owner"),
        ("bob", "member"),
    }


async def test_plain_member_cannot_add_or_remove(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    await people.create("zed", workspace="elsewhere")
    path = f"/api/workspaces/{owner.workspace_id}/members"
    forbidden = await member.post(path, json={"username": "zed"})
    assert forbidden.status == 403
    assert (await forbidden.json())["error"]["code"] == "forbidden"
    assert (await member.delete(f"{path}/{owner.user_id}")).status == 403


async def test_removed_member_gets_404_on_next_request(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    path = f"/api/workspaces/{owner.workspace_id}/members"
    assert (await member.get(path)).status == 200
    assert (await owner.delete(f"{path}/{member.user_id}")).status == 204
    after = await member.get(path)
    assert after.status == 404
    assert (await after.json())["error"]["code"] == "not_found"
    me = await (await member.get("/api/me")).json()
    assert me["workspaces"] == []


async def test_other_tenant_looks_exactly_like_missing(client: TestClient, people: People) -> None:
    a = await people.create("alice", workspace="a-corp")
    b = await people.create("bob", workspace="b-corp")
    missing_id = b.workspace_id + 1000
    pairs = [
        (f"/api/workspaces/{b.workspace_id}/members", f"/api/workspaces/{missing_id}/members"),
        (
            f"/api/workspaces/{b.workspace_id}/members/{b.user_id}",
            f"/api/workspaces/{missing_id}/members/{b.user_id}",
        ),
    ]
    for theirs, missing in pairs:
        for method in ("GET", "POST", "DELETE"):
            r1 = await a.client.request(method, theirs, headers=a.auth, json={"username": "alice"})
            r2 = await a.client.request(method, missing, headers=a.auth, json={"username": "alice"})
            assert r1.status == r2.status, (method, theirs)
            assert await r1.read() == await r2.read(), (method, theirs)
            hidden = {"Content-Length", "Content-Type", "Cache-Control"}
            assert {k: r1.headers.get(k) for k in hidden} == {k: r2.headers.get(k) for k in hidden}
    # And B's workspace is untouched.
    listed = await (await b.get(f"/api/workspaces/{b.workspace_id}/members")).json()
    assert [m["username"] for m in listed["members"]] == ["bob"]


async def test_workspace_scoped_token_cannot_reach_other_workspace(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice", workspace="one")
    other = await people.create("oscar", workspace="two")
    await other.post(f"/api/workspaces/{other.workspace_id}/members", json={"username": "alice"})
    scoped = await (
        await alice.post("/api/tokens", json={"name": "bot", "workspace_id": alice.workspace_id})
    ).json()
    headers = {"Authorization": f"Bearer {scoped['token']}"}
    ok = await client.get(f"/api/workspaces/{alice.workspace_id}/members", headers=headers)
    assert ok.status == 200
    hidden = await client.get(f"/api/workspaces/{other.workspace_id}/members", headers=headers)
    assert hidden.status == 404
    me = await (await client.get("/api/me", headers=headers)).json()
    assert [w["id"] for w in me["workspaces"]] == [alice.workspace_id]


async def test_last_owner_cannot_leave(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    response = await owner.delete(f"/api/workspaces/{owner.workspace_id}/members/{owner.user_id}")
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "last_owner"


async def test_member_may_leave(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    path = f"/api/workspaces/{owner.workspace_id}/members"
    assert (await member.delete(f"{path}/{member.user_id}")).status == 204
    assert (await member.get(path)).status == 404

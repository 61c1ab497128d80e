"""Short calls for channel and message tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from echora_server.db.pool import POOL
from support.people import Person
from support.tapped import tapped_app
from support.wiretap import PgTap

ClientFactory = Callable[..., Awaitable[TestClient]]


@contextlib.asynccontextmanager
async def tapped_client(
    database_url: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> AsyncIterator[tuple[TestClient, PgTap]]:
    """The app (local storage) talking to PostgreSQL through a proxy that counts round trips."""
    async with tapped_app(database_url, tmp_path, aiohttp_client) as (client, pg, _):
        yield client, pg


async def refuse_inserts_at_commit(client: TestClient, table: str) -> None:
    """Make every transaction that inserts into ``table`` fail at its COMMIT, after all of
    its statements succeeded (a deferred constraint trigger)."""
    async with client.app[POOL].acquire() as conn:
        await conn.execute(
            f"""
            CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
            CREATE CONSTRAINT TRIGGER refuse_{table} AFTER INSERT ON {table}
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_{table}();
            """
        )


async def channel_with(owner: Person, *members: Person, name: str = "general") -> int:
    """A public channel ``owner`` made and ``members`` joined: its id."""
    channel_id = int((await make_channel(owner, name))["id"])
    for member in members:
        response = await member.post(f"/api/channels/{channel_id}/join")
        assert response.status == 200, await response.text()
    return channel_id


async def make_channel(
    person: Person, name: str, *, private: bool = False, topic: str = ""
) -> dict[str, Any]:
    response = await person.post(
        "/api/channels",
        json={
            "workspace_id": person.workspace_id,
            "name": name,
            "private": private,
            "topic": topic,
        },
    )
    assert response.status == 201, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def post(person: Person, channel_id: int, content: str, **extra: Any) -> dict[str, Any]:
    response = await person.post(
        f"/api/channels/{channel_id}/messages", json={"content": content, **extra}
    )
    assert response.status == 201, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def fetch(client: TestClient, sql: str, *args: Any) -> Any:
    async with client.app[POOL].acquire() as conn:
        return await conn.fetchval(sql, *args)


HIDDEN_HEADERS = ("Content-Length", "Content-Type", "Cache-Control")


async def assert_same_response(
    person: Person, method: str, theirs: str, missing: str, **kw: Any
) -> None:
    """A resource the caller may not see answers exactly like one that does not exist."""
    r1 = await person.request(method, theirs, **kw)
    r2 = await person.request(method, missing, **kw)
    body1, body2 = await r1.read(), await r2.read()
    assert (r1.status, body1) == (r2.status, body2), (method, theirs, body1, body2)
    assert r1.status == 404, (method, theirs, r1.status)
    assert {h: r1.headers.get(h) for h in HIDDEN_HEADERS} == {
        h: r2.headers.get(h) for h in HIDDEN_HEADERS
    }

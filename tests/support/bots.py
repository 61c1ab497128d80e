"""Bots created through the real API, as a workspace owner would."""

from __future__ import annotations

from typing import Any

from echora_server.db.records import Delivery
from support.people import Person


async def make_bot(
    owner: Person, username: str, delivery: Delivery = "poll", **extra: Any
) -> Person:
    """A bot of ``owner``'s workspace, as a Person holding the bot's token."""
    response = await owner.post(
        f"/api/workspaces/{owner.workspace_id}/bots",
        json={"username": username, "delivery": delivery, **extra},
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    bot = created["bot"]
    return Person(owner.client, bot["id"], bot["username"], owner.workspace_id, created["token"])


async def poll(bot: Person, **query: Any) -> list[dict[str, Any]]:
    """GET /api/inbox; the entries it leased."""
    response = await bot.get("/api/inbox", params={k: str(v) for k, v in query.items()})
    assert response.status == 200, await response.text()
    return (await response.json())["entries"]  # type: ignore[no-any-return]


async def ack(bot: Person, *ids: int) -> Any:
    return await bot.post("/api/inbox/ack", json={"ids": list(ids)})

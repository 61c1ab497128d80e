"""Test helpers that create real users through the real account code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import CookieJar
from aiohttp.test_utils import TestClient

from echora_server.accounts import service as accounts
from echora_server.db.pool import POOL
from echora_server.db.records import Role

PASSWORD = "correct horse battery"


@dataclass
class Person:
    client: TestClient
    user_id: int
    username: str
    workspace_id: int
    token: str
    cookies: CookieJar = field(default_factory=lambda: CookieJar(unsafe=True))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        headers = {**self.auth, **kw.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kw)

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Any:
        return await self.request("POST", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Any:
        return await self.request("DELETE", path, **kw)


class People:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def create(self, username: str, workspace: str = "acme", role: Role = "member") -> Person:
        async with self.client.app[POOL].acquire() as conn:
            user, ws = await accounts.create_user(
                conn, workspace_slug=workspace, username=username, password=PASSWORD, role=role
            )
            _, secret = await accounts.issue_api_token(conn, user.id, "test")
        return Person(self.client, user.id, user.username, ws.id, secret)

"""The asyncpg pool: created, migrated and closed by one cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from echora_server.config import Config
from echora_server.keys import CONFIG, POOL
from echora_server.migrations import migrate


async def create_pool(config: Config, dsn: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=config.db_pool_min,
        max_size=config.db_pool_max,
        timeout=config.db_timeout,
        command_timeout=30,
        # Idle connections are recycled so a restarted server is noticed quickly.
        max_inactive_connection_lifetime=60,
        server_settings={"application_name": "echora"},
    )
    assert pool is not None
    return pool


def database_dsn(config: Config) -> str:
    if config.database_url is None:
        raise RuntimeError("no database URL: the CLI resolves the embedded server before start")
    return config.database_url.get_secret_value()


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    pool = await create_pool(config, database_dsn(config))
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        app[POOL] = pool
        yield
    finally:
        await pool.close()


async def ping(conn: asyncpg.Connection) -> None:
    await conn.fetchval("SELECT 1")

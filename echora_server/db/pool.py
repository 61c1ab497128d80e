"""The asyncpg pool: created, migrated and closed by one cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from echora_server.config import Config
from echora_server.db.migrations import migrate
from echora_server.keys import CONFIG, POOL


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection released without asyncpg's reset query.

    The default reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``)
    costs a round trip on every release, and nothing here leaves such state behind: no
    session setting is ever changed, cursors live inside transactions, LISTEN runs on the
    fan-out's own connection, and the migration lock is released in a ``finally``. asyncpg
    still rolls back a transaction left open."""

    def get_reset_query(self) -> str:
        return ""


async def create_pool(config: Config, dsn: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        connection_class=PooledConnection,
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

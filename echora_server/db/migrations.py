"""Forward-only migrations (``sql/NNNN_name.sql``), each in a transaction under an advisory
lock, recorded with its sha256: edited or unknown applied migrations are refused."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import asyncpg
import structlog

from echora_server.core.resources import sql_dir

log = structlog.get_logger("echora.migrations")

# An arbitrary constant: the advisory lock key shared by every Echora process.
LOCK_KEY = 0x6563686F7261
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
_SELECT_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
_INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
_TABLE_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"


class MigrationError(Exception):
    """The database schema does not match this code; the server must not start."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    applied: int
    latest: int
    pending: list[int]

    @property
    def current(self) -> bool:
        return not self.pending


def load_migrations() -> list[Migration]:
    found = []
    for entry in sql_dir().iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration files must be numbered 1..n without gaps: {versions}")
    return found


async def _check(conn: asyncpg.Connection, migrations: list[Migration]) -> MigrationStatus:
    known = {m.version: m for m in migrations}
    applied = await conn.fetch(_SELECT_APPLIED) if await conn.fetchval(_TABLE_EXISTS) else []
    for row in applied:
        migration = known.get(row["version"])
        if migration is None:
            raise MigrationError(
                f"the database schema is newer than this code (migration {row['version']:04d}_"
                f"{row['name']} is applied but unknown here); upgrade Echora"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql was edited after it "
                "was applied; applied migrations must never change"
            )
    done = {row["version"] for row in applied}
    pending = [m.version for m in migrations if m.version not in done]
    return MigrationStatus(max(done, default=0), max(known, default=0), pending)


async def status(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> MigrationStatus:
    return await _check(conn, migrations if migrations is not None else load_migrations())


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations; return the versions applied. Raises MigrationError."""
    migrations = migrations if migrations is not None else load_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        state = await _check(conn, migrations)
        applied = []
        for migration in migrations:
            if migration.version not in state.pending:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    _INSERT_APPLIED, migration.version, migration.name, migration.checksum
                )
            log.info("migration_applied", version=migration.version, name=migration.name)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)

"""Forward-only migrations (``sql/NNNN_name.sql``), each in a transaction under an advisory
lock, recorded with its sha256: edited or unknown applied migrations are refused.
A file that says ``-- echora: compatible`` declares that servers of the release before it keep
working once it is applied (a new nullable column, a new table, an index); anything else is
breaking. A server whose database is ahead of it by compatible migrations only stays ready,
for rolling upgrades; a breaking one is applied to an existing database only when asked."""

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

_DECLARATION = re.compile(r"^-- echora: (\S+)[ \t]*(?:\n|$)", re.MULTILINE)
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
-- Read by the servers of older releases that find the schema ahead of them.
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS compatible boolean NOT NULL DEFAULT false
"""
# Every column: databases migrated by older releases have no ``compatible`` yet.
_SELECT_APPLIED = "SELECT * FROM schema_migrations ORDER BY version"
_INSERT_APPLIED = """
INSERT INTO schema_migrations (version, name, checksum, compatible) VALUES ($1, $2, $3, $4)
"""
_TABLE_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"


class MigrationError(Exception):
    """The database schema does not match this code; the server must not start."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def compatible(self) -> bool:
        return "compatible" in _DECLARATION.findall(self.sql)

    @property
    def checksum(self) -> str:
        """Of the SQL without its declarations, which may be added to a landed file."""
        return hashlib.sha256(_DECLARATION.sub("", self.sql).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    applied: int
    latest: int
    pending: list[int]
    ahead: list[int]  # applied, unknown to this code, and declared compatible

    @property
    def current(self) -> bool:
        return not self.pending

    def describe(self) -> str:
        if self.pending:
            return f"pending: {self.pending}"
        if self.ahead:
            return f"ok, ahead of this release by compatible migrations {self.ahead}"
        return "ok"


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
    ahead = []
    for row in applied:
        migration = known.get(row["version"])
        if migration is None and row.get("compatible"):
            ahead.append(row["version"])
            continue
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
    return MigrationStatus(max(done, default=0), max(known, default=0), pending, ahead)


async def status(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> MigrationStatus:
    return await _check(conn, migrations if migrations is not None else load_migrations())


async def migrate(
    conn: asyncpg.Connection,
    migrations: list[Migration] | None = None,
    *,
    allow_breaking: bool = False,
) -> list[int]:
    """Apply pending migrations; return the versions applied. Raises MigrationError, also
    for a breaking migration pending on a database already in use, unless ``allow_breaking``."""
    migrations = migrations if migrations is not None else load_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        state = await _check(conn, migrations)
        breaking = [m for m in migrations if m.version in state.pending and not m.compatible]
        if breaking and state.applied and not allow_breaking:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in breaking)
            raise MigrationError(
                f"migration {names} is breaking: servers of the previous release stop being "
                "ready once it is applied. Stop them, then run "
                "`echora migrate --allow-breaking` (docs/upgrading.md)"
            )
        applied = []
        for migration in migrations:
            if migration.version not in state.pending:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    _INSERT_APPLIED,
                    migration.version,
                    migration.name,
                    migration.checksum,
                    migration.compatible,
                )
            log.info("migration_applied", version=migration.version, name=migration.name)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)

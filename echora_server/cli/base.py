"""The ``echora`` group and what its commands share: the configuration, the database (the
embedded one unless configured) and running one piece of work on a connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import click
import structlog
from pydantic import SecretStr

from echora_server.config import Config, ConfigError, deprecated_variables, load_config
from echora_server.core.errors import ApiError
from echora_server.core.logs import configure_logging
from echora_server.db.embedded import embedded_postgres
from echora_server.db.migrations import MigrationError, migrate


@click.group()
@click.version_option(package_name="echora-server")
def main() -> None:
    """Echora server: self-hostable chat in which files are first-class."""


def load() -> Config:
    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    configure_logging(config.log_level, config.log_format)
    for note in deprecated_variables():
        structlog.get_logger("echora.config").warning("deprecated_setting", note=note)
    return config


@contextmanager
def database(config: Config) -> Iterator[Config]:
    if config.database_url is not None:
        yield config
        return
    with embedded_postgres(config.pgdata_dir) as uri:
        yield config.model_copy(update={"database_url": SecretStr(uri)})


def run_db(config: Config, work: Any, *, allow_breaking: bool = False) -> Any:
    async def runner() -> Any:
        assert config.database_url is not None
        conn = await asyncpg.connect(config.database_url.get_secret_value())
        try:
            await migrate(conn, allow_breaking=allow_breaking)
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(runner())
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    except ApiError as exc:
        raise click.ClickException(exc.message) from None

"""Running and checking the server: serve, migrate, check-config, cleanup, healthcheck."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

import asyncpg
import click
from yarl import URL

from echora_server.cli.base import database, load, main, run_db
from echora_server.config import Config, deprecated_variables, secret_sources
from echora_server.db.migrations import MigrationError
from echora_server.storage.base import Storage
from echora_server.web.server import serve as serve_app


@main.command()
def serve() -> None:
    """Run the server (embedded PostgreSQL and local files unless configured otherwise)."""
    from echora_server.app import create_app

    config = load()
    with database(config) as resolved:
        app = create_app(resolved)

        def announce(address: str) -> None:
            click.echo(f"Echora is listening on {address}; users open {resolved.base_url}")
            click.echo(
                "(Ctrl+C to stop)  Create the first user with:  "
                "echora create-user --workspace acme alice"
            )

        try:
            serve_app(
                app,
                host=resolved.listen_host,
                port=resolved.listen_port,
                grace=resolved.shutdown_grace,
                announce=announce,
            )
        except MigrationError as exc:
            raise click.ClickException(str(exc)) from None


@main.command("migrate")
@click.option(
    "--allow-breaking",
    is_flag=True,
    help="Apply migrations that servers of the previous release cannot run with "
    "(stop them first; see docs/upgrading.md).",
)
def migrate_command(allow_breaking: bool) -> None:
    """Apply pending database migrations and exit."""
    config = load()

    async def work(conn: asyncpg.Connection) -> None:
        return None

    with database(config) as resolved:
        run_db(resolved, work, allow_breaking=allow_breaking)
    click.echo("The database schema is up to date.")


@main.command("check-config")
@click.option("--connect", is_flag=True, help="Also reach the database and the file store.")
def check_config(connect: bool) -> None:
    """Validate the configuration and print it (effective values, secrets masked, and where
    each secret came from); with --connect, exit 1 unless the database and store answer."""
    config = load()
    shown = config.masked()
    for var, source in secret_sources().items():
        shown[f"{var} (from)"] = source
    click.echo(json.dumps(shown, indent=2, default=str))
    for note in deprecated_variables():
        click.echo(f"note: {note}", err=True)
    if connect:
        with database(config) as resolved:
            problems = asyncio.run(_reach(resolved))
        for name, problem in problems.items():
            click.echo(f"{name}: {problem}", err=True)
        if any(problem != "ok" for problem in problems.values()):
            raise SystemExit(1)


async def _reach(config: Config) -> dict[str, str]:
    from echora_server.db.migrations import status as migration_status
    from echora_server.storage.factory import create_storage

    found: dict[str, str] = {}
    assert config.database_url is not None
    try:
        conn = await asyncpg.connect(
            config.database_url.get_secret_value(), timeout=config.db_timeout
        )
        try:
            state = await migration_status(conn)
            found["database"] = state.describe()
        finally:
            await conn.close()
    except Exception as exc:  # every failure is the answer here
        found["database"] = f"unreachable: {type(exc).__name__}: {exc}"
    storage = create_storage(config)
    try:
        await storage.start()
        await storage.ping()
        found["storage"] = "ok"
        await _say_direct_uploads(config, storage)
    except Exception as exc:
        found["storage"] = f"unreachable: {type(exc).__name__}: {exc}"
    finally:
        await storage.close()
    return found


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
def cleanup(dry_run: bool) -> None:
    """Run one cleanup pass now (what the server's sweeper does every few minutes)."""
    from echora_server.files.sweeper import run_cleanup
    from echora_server.storage.base import StorageError

    config = load()
    with database(config) as resolved:
        try:
            result = asyncio.run(run_cleanup(resolved, dry_run=dry_run))
        except (MigrationError, StorageError) as exc:
            raise click.ClickException(str(exc)) from None
    if dry_run:
        click.echo("Dry run: what a pass would remove; nothing was changed.")
    for kind, count in result.counts().items():
        click.echo(f"{kind}: {count}")
    if result.errors:
        raise click.ClickException(f"{result.errors} errors (logged); the next pass retries")


@main.command()
@click.option(
    "--url", default=None, help="The server (its /readyz is asked); default ECHORA_LISTEN."
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA certificate file to verify an https URL with.",
)
@click.option("--timeout", default=5.0, show_default=True)
def healthcheck(url: str | None, cacert: str | None, timeout: float) -> None:
    """Exit 0 when the running server reports ready (for container health checks)."""
    if url is None:
        config = load()
        host = config.listen_host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host  # noqa: S104
        url = f"http://{host}:{config.listen_port}"
    target = _readyz_url(url)
    context = ssl.create_default_context(cafile=cacert) if cacert else None
    try:
        with urllib.request.urlopen(target, timeout=timeout, context=context) as response:  # noqa: S310
            body = response.read(65536)
    except urllib.error.HTTPError as exc:
        body = exc.read(65536)
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"not ready: {target}: {exc}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise click.ClickException(f"not ready: {target} did not answer as /readyz does") from None
    if not isinstance(answer, dict) or answer.get("status") != "ready":
        raise click.ClickException(f"not ready: {json.dumps(answer)}")
    click.echo("ready")


def _readyz_url(url: str) -> str:
    """Any URL of the server (``https://chat.example.com``, ``…/readyz``) to its /readyz."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/readyz", "", ""))


async def _say_direct_uploads(config: Config, storage: Storage) -> None:
    """Which ways straight to the store are on, for agents and for the browser client."""
    say = functools.partial(click.echo, err=True)
    page = str(URL(config.public_url).origin()) if config.public_url else None
    if storage.direct_put_problem:
        say(f"direct PUTs of a declared SHA-256: off: {storage.direct_put_problem}")
    else:
        say("direct PUTs of a declared SHA-256: on")
        if page is not None:
            if await storage.accepts_pages_from(page, "PUT"):
                say(f"direct PUTs from pages of {page}: on")
            else:
                say(
                    f"direct PUTs from pages of {page}: off: the store's CORS rules do not let "
                    "that origin PUT with Content-Type and x-amz-checksum-sha256"
                )
    if storage.direct_upload_problem:
        say(f"direct uploads: off: {storage.direct_upload_problem}")
        return
    say(f"direct uploads: on, to {storage.direct_upload_origin}")
    if page is not None:
        if await storage.accepts_pages_from(page):
            say(f"direct uploads from pages of {page}: on")
        else:
            say(
                f"direct uploads from pages of {page}: off: the store's CORS rules "
                "do not let that origin post (the browser client sends through Echora)"
            )

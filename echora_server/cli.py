"""The ``echora`` command: loads configuration and runs one thing. No logic of its own."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import click
import structlog
from pydantic import SecretStr
from yarl import URL

from echora_server.accounts import service as accounts
from echora_server.agents import bots
from echora_server.audit.record import ACTIONS
from echora_server.config import (
    Config,
    ConfigError,
    deprecated_variables,
    load_config,
    secret_sources,
)
from echora_server.core.errors import ApiError
from echora_server.core.logs import configure_logging
from echora_server.db import audit, users, workspaces
from echora_server.db.embedded import embedded_postgres
from echora_server.db.migrations import MigrationError, migrate
from echora_server.db.records import DELIVERIES, Delivery, Role
from echora_server.puller.pull import PullError, PullSettings, pull
from echora_server.web.server import serve as serve_app
from echora_server.workspaces.audit import entry_json


def _load() -> Config:
    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    configure_logging(config.log_level, config.log_format)
    for note in deprecated_variables():
        structlog.get_logger("echora.config").warning("deprecated_setting", note=note)
    return config


@contextmanager
def _database(config: Config) -> Iterator[Config]:
    if config.database_url is not None:
        yield config
        return
    with embedded_postgres(config.pgdata_dir) as uri:
        yield config.model_copy(update={"database_url": SecretStr(uri)})


def _run_db(config: Config, work: Any, *, allow_breaking: bool = False) -> Any:
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


@click.group()
@click.version_option(package_name="echora-server")
def main() -> None:
    """Echora server: self-hostable chat in which files are first-class."""


@main.command()
def serve() -> None:
    """Run the server (embedded PostgreSQL and local files unless configured otherwise)."""
    from echora_server.app import create_app

    config = _load()
    with _database(config) as resolved:
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
    config = _load()

    async def work(conn: asyncpg.Connection) -> None:
        return None

    with _database(config) as resolved:
        _run_db(resolved, work, allow_breaking=allow_breaking)
    click.echo("The database schema is up to date.")


@main.command("check-config")
@click.option("--connect", is_flag=True, help="Also reach the database and the file store.")
def check_config(connect: bool) -> None:
    """Validate the configuration and print it (effective values, secrets masked, and where
    each secret came from); with --connect, exit 1 unless the database and store answer."""
    config = _load()
    shown = config.masked()
    for var, source in secret_sources().items():
        shown[f"{var} (from)"] = source
    click.echo(json.dumps(shown, indent=2, default=str))
    for note in deprecated_variables():
        click.echo(f"note: {note}", err=True)
    if connect:
        with _database(config) as resolved:
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
        problem = storage.direct_upload_problem
        if problem:
            click.echo(f"direct uploads: off: {problem}", err=True)
        else:
            click.echo(f"direct uploads: on, to {storage.direct_upload_origin}", err=True)
            if config.public_url:
                page = str(URL(config.public_url).origin())
                if await storage.accepts_pages_from(page):
                    click.echo(f"direct uploads from pages of {page}: on", err=True)
                else:
                    click.echo(
                        f"direct uploads from pages of {page}: off: the store's CORS rules "
                        "do not let that origin post (the browser client sends through Echora)",
                        err=True,
                    )
    except Exception as exc:
        found["storage"] = f"unreachable: {type(exc).__name__}: {exc}"
    finally:
        await storage.close()
    return found


def _read_password(confirm: bool) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return value


@main.command("create-user")
@click.argument("username")
@click.option("--workspace", "-w", required=True, help="Workspace slug; created if needed.")
@click.option("--admin", is_flag=True, help="Make the user a workspace admin.")
@click.option("--bot", is_flag=True, help="A bot account: no password, use create-token.")
@click.option("--display-name", default="", help="Name shown to others.")
def create_user(username: str, workspace: str, admin: bool, bot: bool, display_name: str) -> None:
    """Create a user (password from stdin or a prompt) in a workspace."""
    config = _load()
    password = None if bot else _read_password(confirm=True)
    role: Role = "bot" if bot else "admin" if admin else "member"

    async def work(conn: asyncpg.Connection) -> tuple[Any, Any]:
        return await accounts.create_user(
            conn,
            workspace_slug=workspace,
            username=username,
            password=password,
            role=role,
            display_name=display_name,
        )

    with _database(config) as resolved:
        user, ws = _run_db(resolved, work)
    click.echo(f"Created user {user.username} (id {user.id}) in workspace {ws.slug}.")


@main.command("create-bot")
@click.argument("username")
@click.option("--workspace", "-w", required=True, help="Workspace slug (must exist).")
@click.option(
    "--delivery",
    type=click.Choice(DELIVERIES),
    default="websocket",
    show_default=True,
    help="How the bot gets events: its WebSocket, push to --callback-url, or polling.",
)
@click.option("--callback-url", default=None, help="Where push delivery POSTs (http or https).")
@click.option("--display-name", default="", help="Name shown to others.")
def create_bot(
    username: str, workspace: str, delivery: Delivery, callback_url: str | None, display_name: str
) -> None:
    """Create a bot account in a workspace and print its API token (shown only once); for
    push, its webhook signing secret on a second line (shown only once too)."""
    config = _load()

    async def work(conn: asyncpg.Connection) -> str:
        workspace_id = await workspaces.select_workspace_id(conn, workspace.strip().lower())
        if workspace_id is None:
            raise click.ClickException(f"no workspace {workspace!r}")
        _, secret, webhook_secret = await bots.create_bot(
            conn,
            workspace_id=workspace_id,
            username=username,
            display_name=display_name,
            delivery=delivery,
            callback_url=callback_url,
        )
        return secret if webhook_secret is None else f"{secret}\n{webhook_secret}"

    with _database(config) as resolved:
        secret = _run_db(resolved, work)
    click.echo(secret)


@main.command("create-token")
@click.argument("username")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@click.option("--workspace", "-w", default=None, help="Restrict the token to this workspace.")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=None)
def create_token(
    username: str, name: str, workspace: str | None, expires_in_days: int | None
) -> None:
    """Create an API token for a user and print it (shown only once)."""
    config = _load()

    async def work(conn: asyncpg.Connection) -> str:
        user = await users.select_user_by_username(conn, username.strip().lower())
        if user is None:
            raise click.ClickException(f"no user named {username!r}")
        workspace_id = None
        if workspace is not None:
            memberships = await workspaces.select_memberships_of_user(conn, user.id)
            match = [m for m in memberships if m.workspace.slug == workspace.lower()]
            if not match:
                raise click.ClickException(f"{username} is not a member of {workspace!r}")
            workspace_id = match[0].workspace.id
        expires = dt.timedelta(days=expires_in_days) if expires_in_days else None
        _, secret = await accounts.issue_api_token(
            conn, user.id, name, workspace_id=workspace_id, expires_in=expires
        )
        return secret

    with _database(config) as resolved:
        secret = _run_db(resolved, work)
    click.echo(secret)


@main.command("audit")
@click.option("--workspace", "-w", default=None, help="Workspace slug.")
@click.option(
    "--server-level", is_flag=True, help="Records of no workspace (refused unknown tokens)."
)
@click.option("--action", type=click.Choice(ACTIONS), default=None)
@click.option("--attachment", default=None, help="A file's (or upload ticket's) id.")
@click.option("--actor", default=None, help="Username of who acted.")
@click.option("--since", type=click.DateTime(), default=None, help="UTC unless an offset is given.")
@click.option("--until", type=click.DateTime(), default=None)
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
def audit_command(
    workspace: str | None,
    server_level: bool,
    action: str | None,
    attachment: str | None,
    actor: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> None:
    """Print audit records, newest first, one JSON object per line."""
    if (workspace is None) == (not server_level):
        raise click.UsageError("give --workspace or --server-level")
    config = _load()

    def utc(value: dt.datetime | None) -> dt.datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=dt.UTC)

    async def work(conn: asyncpg.Connection) -> list[audit.AuditRow]:
        workspace_id = None
        if workspace is not None:
            workspace_id = await workspaces.select_workspace_id(conn, workspace.lower())
            if workspace_id is None:
                raise click.ClickException(f"no workspace {workspace!r}")
        actor_id = None
        if actor is not None:
            user = await users.select_user_by_username(conn, actor.strip().lower())
            if user is None:
                raise click.ClickException(f"no user named {actor!r}")
            actor_id = user.id
        where = audit.AuditFilter(
            actor_id, attachment, (action,) if action else (), utc(since), utc(until)
        )
        return await audit.select_entries(conn, workspace_id, where, None, limit)

    with _database(config) as resolved:
        rows = _run_db(resolved, work)
    for row in rows:
        click.echo(json.dumps(entry_json(row)))


def _bytes_or_none(value: str | None) -> Any:
    """A size option: bytes, or ``none`` to clear the limit; None when not given."""
    if value is None:
        return _UNSET
    if value.strip().lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number of bytes nor none") from None


def _types_option(value: str | None, clear: str) -> Any:
    if value is None:
        return _UNSET
    if value.strip().lower() == clear:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


_UNSET = object()


@main.command("workspace-settings")
@click.argument("workspace")
@click.option("--max-file-size", help="Largest file in bytes (at most the server's), or none.")
@click.option("--allow", help="Allowed types or groups, comma-separated, or all.")
@click.option("--deny", help="Denied types or groups, comma-separated, or none.")
@click.option("--tickets/--no-tickets", default=None, help="Upload tickets on or off.")
@click.option("--direct/--no-direct", default=None, help="Tickets straight to the store.")
@click.option("--storage-quota", help="Stored bytes for the workspace, or none.")
@click.option("--member-quota", help="Stored bytes per member, or none.")
@click.option("--bot-quota", help="Stored bytes per bot, or none.")
def workspace_settings(
    workspace: str,
    max_file_size: str | None,
    allow: str | None,
    deny: str | None,
    tickets: bool | None,
    direct: bool | None,
    storage_quota: str | None,
    member_quota: str | None,
    bot_quota: str | None,
) -> None:
    """Show a workspace's upload policy and quotas; with options, change them first."""
    from echora_server.db import policies
    from echora_server.workspaces.settings import change_settings
    from echora_server.workspaces.settings_shapes import ChangeSettings, settings_json

    config = _load()
    given = {
        "max_file_size": _bytes_or_none(max_file_size),
        "allowed_types": _types_option(allow, "all"),
        "denied_types": _types_option(deny, "none"),
        "tickets": _UNSET if tickets is None else tickets,
        "direct_uploads": _UNSET if direct is None else direct,
        "storage_quota": _bytes_or_none(storage_quota),
        "member_quota": _bytes_or_none(member_quota),
        "bot_quota": _bytes_or_none(bot_quota),
    }
    try:
        changes = ChangeSettings.model_validate(
            {name: value for name, value in given.items() if value is not _UNSET}
        )
    except ValueError as exc:
        raise click.ClickException(f"invalid setting: {exc}") from None

    async def work(conn: asyncpg.Connection) -> Any:
        workspace_id = await workspaces.select_workspace_id(conn, workspace.strip().lower())
        if workspace_id is None:
            raise click.ClickException(f"no workspace {workspace!r}")
        if not changes.model_fields_set:
            return await policies.select_settings(conn, workspace_id)
        wanted = {name: getattr(changes, name) for name in changes.model_fields_set}
        return await change_settings(conn, workspace_id, wanted, config.max_upload_bytes)

    with _database(config) as resolved:
        settings = _run_db(resolved, work)
    click.echo(json.dumps(settings_json(settings, config.max_upload_bytes), indent=2))


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
def cleanup(dry_run: bool) -> None:
    """Run one cleanup pass now (what the server's sweeper does every few minutes)."""
    from echora_server.files.sweeper import run_cleanup
    from echora_server.storage.base import StorageError

    config = _load()
    with _database(config) as resolved:
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
        config = _load()
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


@main.group()
def agent() -> None:
    """Run the agent side of a bot: take its events where it runs."""


@agent.command("pull")
@click.option("--server", required=True, help="The Echora server, e.g. https://chat.example.com.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="File holding the bot's token; default: the ECHORA_AGENT_TOKEN variable.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory for entries/<id>.json and files/<attachment id>/<name>.",
)
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--wait", type=click.IntRange(0, 30), default=30, show_default=True)
@click.option("--once", is_flag=True, help="Take what is there now, then exit.")
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA certificate file to verify an https server with.",
)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto")
@click.argument("command", nargs=-1)
def agent_pull(
    server: str,
    token_file: str | None,
    out: str,
    limit: int,
    wait: int,
    once: bool,
    cacert: str | None,
    log_format: str,
    command: tuple[str, ...],
) -> None:
    """Long-poll a bot's inbox; write each entry and its files under --out, run COMMAND on
    it if given (the entry as JSON on stdin; acknowledged only when it exits 0), then
    acknowledge it. Safe to kill and start again: nothing is lost or written twice."""
    configure_logging("info", log_format)
    if token_file is not None:
        with open(token_file, encoding="utf-8") as source:
            token = source.read().strip()
    else:
        token = os.environ.get("ECHORA_AGENT_TOKEN", "").strip()
    if not token:
        raise click.ClickException("no token: give --token-file or set ECHORA_AGENT_TOKEN")
    settings = PullSettings(server, token, Path(out), command or None, limit, wait, once, cacert)
    try:
        asyncio.run(pull(settings))
    except PullError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _readyz_url(url: str) -> str:
    """Any URL of the server (``https://chat.example.com``, ``…/readyz``) to its /readyz."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/readyz", "", ""))

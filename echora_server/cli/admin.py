"""Workspace administration: the audit log and the upload policy."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg
import click

from echora_server.audit.record import ACTIONS
from echora_server.cli.base import database, load, main, run_db
from echora_server.db import audit, users, workspaces
from echora_server.workspaces.audit import entry_json


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
    config = load()

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

    with database(config) as resolved:
        rows = run_db(resolved, work)
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

    config = load()
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

    with database(config) as resolved:
        settings = run_db(resolved, work)
    click.echo(json.dumps(settings_json(settings, config.max_upload_bytes), indent=2))

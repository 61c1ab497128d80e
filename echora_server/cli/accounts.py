"""Accounts from the command line: users, bots and API tokens."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import asyncpg
import click

from echora_server.accounts import service as accounts
from echora_server.agents import bots
from echora_server.cli.base import database, load, main, run_db
from echora_server.db import users, workspaces
from echora_server.db.records import DELIVERIES, Delivery, Role


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
    config = load()
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

    with database(config) as resolved:
        user, ws = run_db(resolved, work)
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
    config = load()

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

    with database(config) as resolved:
        secret = run_db(resolved, work)
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
    config = load()

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

    with database(config) as resolved:
        secret = run_db(resolved, work)
    click.echo(secret)

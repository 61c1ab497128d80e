"""The agent side of a bot: ``echora agent pull``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from pathlib import Path

import click

from echora_server.cli.base import main
from echora_server.core.logs import configure_logging
from echora_server.puller.pull import PullError, PullSettings, pull


def _say(line: str) -> None:
    """A line on stdout; a reader that went away (``| head``) does not stop the puller."""
    with contextlib.suppress(BrokenPipeError):
        click.echo(line)


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
    "--to",
    "--out",
    "out",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory for entries/<id>.json and files/<attachment id>/<name>.",
)
@click.option(
    "--exec",
    "exec_",
    default=None,
    metavar="CMD",
    help="Command line run per entry (split like a shell's words, not run by one); "
    "or give the command after --.",
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
    exec_: str | None,
    command: tuple[str, ...],
) -> None:
    """Long-poll a bot's inbox; write each entry and its files under --to, run COMMAND on
    it if given (the entry as JSON on stdin; acknowledged only when it exits 0), then
    acknowledge it and print one JSON line: its id, its type, the files written. Safe to
    kill and start again: nothing is lost or written twice."""
    if exec_ is not None and command:
        raise click.UsageError("give --exec or a command after --, not both")
    if exec_ is not None:
        command = tuple(shlex.split(exec_))
    configure_logging("info", log_format)
    if token_file is not None:
        with open(token_file, encoding="utf-8") as source:
            token = source.read().strip()
    else:
        token = os.environ.get("ECHORA_AGENT_TOKEN", "").strip()
    if not token:
        raise click.ClickException("no token: give --token-file or set ECHORA_AGENT_TOKEN")
    settings = PullSettings(
        server, token, Path(out), command or None, limit, wait, once, cacert, done=_say
    )
    try:
        asyncio.run(pull(settings))
    except PullError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass

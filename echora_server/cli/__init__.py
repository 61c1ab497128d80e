"""The ``echora`` command: loads configuration and runs one thing. No logic of its own; each
module registers its commands on ``main``."""

from echora_server.cli import accounts, admin, agent, server
from echora_server.cli.base import main

__all__ = ["accounts", "admin", "agent", "main", "server"]

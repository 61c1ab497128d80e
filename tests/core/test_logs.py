"""Structured logs: JSON lines that carry the request id."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from aiohttp.test_utils import TestClient

from echora_server.core.logs import configure_logging


async def test_json_log_lines_carry_request_id(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    try:
        await client.get("/healthz", headers={"X-Request-ID": "req-abcdef123"})
        lines = [
            json.loads(line)
            for line in capsys.readouterr().err.splitlines()
            if line.startswith("{")
        ]
        access = [line for line in lines if line.get("event") == "request"]
        assert access and access[-1]["request_id"] == "req-abcdef123"
        assert access[-1]["path"] == "/healthz" and access[-1]["status"] == 200
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()

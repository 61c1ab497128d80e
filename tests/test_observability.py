"""Structured logs carry a request id; /metrics counts requests by route template."""

from __future__ import annotations

import json
import logging

import pytest
from aiohttp.test_utils import TestClient

from echora_server.core.logs import configure_logging


async def test_metrics_by_route_template(client: TestClient) -> None:
    for _ in range(3):
        await client.get("/api/workspaces/7/members")  # 401, but counted under the template
    await client.get("/no/such/path")
    text = await (await client.get("/metrics")).text()
    template = "/api/workspaces/{workspace_id}/members"
    assert f'echora_http_requests_total{{method="GET",route="{template}",status="401"}} 3.0' in text
    assert 'route="(unmatched)"' in text
    assert "/api/workspaces/7/" not in text
    assert "echora_http_request_duration_seconds_bucket" in text


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

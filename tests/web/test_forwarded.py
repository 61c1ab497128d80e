"""Behind a reverse proxy: X-Forwarded-* believed from trusted proxies only, and login rate
limits that one address cannot use to lock a user out."""

from __future__ import annotations

import re
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from support.people import PASSWORD, People

from echora_server.config import ConfigError, load_config
from echora_server.web.forwarded import parse_networks


@pytest.fixture
def config_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    trusted = request.node.get_closest_marker("trusted")
    overrides: dict[str, Any] = {"trusted_proxies": list(trusted.args) if trusted else []}
    if "slow_refill" in request.keywords:  # the username's budget (5x) barely refills
        overrides["login_rate_per_minute"] = 2
    return overrides


async def login(client: TestClient, password: str, via: str, **headers: str) -> Any:
    return await client.post(
        "/api/auth/login",
        json={"username": "alice", "password": password},
        headers={"X-Forwarded-For": via, **headers},
    )


async def remote_logged(client: TestClient, **headers: str) -> str:
    with structlog.testing.capture_logs() as logs:
        assert (await client.get("/healthz", headers=headers)).status == 200
    (entry,) = [e for e in logs if e["event"] == "request"]
    return str(entry["remote"])


async def test_an_untrusted_peer_cannot_claim_an_address(
    client: TestClient, people: People
) -> None:
    assert await remote_logged(client, **{"X-Forwarded-For": "203.0.113.9"}) == "127.0.0.1"
    await people.create("alice")
    statuses = [(await login(client, "wrong", f"198.51.100.{n}")).status for n in range(11)]
    assert statuses == [401] * 10 + [429]  # every claimed address was the same peer


@pytest.mark.trusted("127.0.0.1", "10.0.0.0/8")
async def test_a_trusted_proxy_names_the_client(client: TestClient) -> None:
    # The rightmost address that is not a trusted proxy; a spoofed leftmost one is not it.
    via = "1.2.3.4, 203.0.113.9, 10.1.2.3"
    assert await remote_logged(client, **{"X-Forwarded-For": via}) == "203.0.113.9"
    assert await remote_logged(client, **{"X-Forwarded-For": "10.0.0.7"}) == "10.0.0.7"
    assert await remote_logged(client, **{"X-Forwarded-For": "not an address"}) == "127.0.0.1"
    assert await remote_logged(client) == "127.0.0.1"


@pytest.mark.trusted("127.0.0.1")
async def test_a_forwarded_request_keeps_its_request_id(client: TestClient) -> None:
    # The proxy's id, or Echora's own, is on the answer to a request whose address it took.
    via = {"X-Forwarded-For": "203.0.113.9"}
    given = await client.get("/healthz", headers={**via, "X-Request-ID": "from-the-proxy.1"})
    assert given.headers["X-Request-ID"] == "from-the-proxy.1"
    made = await client.get("/healthz", headers=via)
    assert re.fullmatch("[0-9a-f]{32}", made.headers["X-Request-ID"])


@pytest.mark.trusted("127.0.0.1")
async def test_one_address_cannot_lock_a_user_out(client: TestClient, people: People) -> None:
    await people.create("alice")
    statuses = [(await login(client, "wrong", "203.0.113.66")).status for _ in range(11)]
    assert statuses == [401] * 10 + [429]  # that address is refused
    # Failures claimed from 24 more addresses (what locked the user out before) ...
    for n in range(24):
        assert (await login(client, "wrong", f"198.51.100.{n}")).status == 401
    # ... and the user, from an address of their own, still logs in.
    assert (await login(client, PASSWORD, "192.0.2.10")).status == 200


@pytest.mark.trusted("127.0.0.1")
@pytest.mark.slow_refill
async def test_when_a_username_is_attacked_from_everywhere_fresh_addresses_still_try(
    client: TestClient, people: People
) -> None:
    await people.create("alice")
    for n in range(10):  # the username's whole failure budget (5 x 2), from 10 addresses
        assert (await login(client, "wrong", f"198.51.100.{n}")).status == 401
    # An address that failed for alice waits; one that never did may try, and succeeds.
    assert (await login(client, PASSWORD, "198.51.100.1")).status == 429
    assert (await login(client, PASSWORD, "192.0.2.10")).status == 200


@pytest.mark.trusted("127.0.0.1")
async def test_a_trusted_proxy_speaking_https_gets_secure_cookies(
    client: TestClient, people: People
) -> None:
    await people.create("alice")
    origin = f"https://chat.example.com:{client.port}"
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": f"chat.example.com:{client.port}",
        "Origin": origin,
    }
    response = await login(client, PASSWORD, "192.0.2.10", **headers)
    assert response.status == 200, await response.text()
    assert "Secure" in response.headers["Set-Cookie"]


async def test_an_untrusted_peer_claiming_https_is_not_believed(
    client: TestClient, people: People
) -> None:
    await people.create("alice")
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "chat.example.com",
        "Origin": "https://chat.example.com",
    }
    response = await login(client, PASSWORD, "192.0.2.10", **headers)
    assert response.status == 403  # the claimed origin is not this server's


def test_trusted_proxies_are_addresses_or_networks() -> None:
    config = load_config({"ECHORA_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1,::1"})
    assert [str(n) for n in parse_networks(config.trusted_proxies)] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
    ]
    with pytest.raises(ConfigError, match=r"ECHORA_TRUSTED_PROXIES: .*not an address"):
        load_config({"ECHORA_TRUSTED_PROXIES": "proxy.local"})

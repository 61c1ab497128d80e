"""The `echora` command end to end: embedded defaults, create-user, restart, tokens."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import web
from support.processes import echora_env, free_port, run_echora, start_echora

PASSWORD = "a long enough password"


def request(
    url: str, body: dict | None = None, headers: dict | None = None
) -> tuple[int, dict, dict]:  # type: ignore[type-arg]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def embedded_postgres_running(pgdata: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(proc.info["cmdline"] or []):
            return True
    return False


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = echora_env(ECHORA_DATA_DIR=str(data_dir), ECHORA_LISTEN=f"127.0.0.1:{self.port}")
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        self.process = start_echora(
            "serve",
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            seen.append(line)
            if "Echora is listening on" in line:
                seen.append(self.process.stdout.readline())  # the create-user hint
                return "".join(seen)
            if not line and self.process.poll() is not None:
                break
        raise AssertionError("server did not start:\n" + "".join(seen))

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


@pytest.fixture
def data_root() -> Iterator[Path]:
    """Outside pytest's basetemp: a concurrent pytest run resets its permissions to 0700,
    which the embedded_postgres system user could then no longer traverse."""
    root = Path(tempfile.mkdtemp(prefix="echora-cli-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server(data_root: Path) -> Iterator[Server]:
    srv = Server(data_root / "data")
    yield srv
    if srv.process is not None:
        if srv.process.poll() is None:
            srv.process.kill()
            srv.process.wait()
        if srv.process.stdout is not None:
            srv.process.stdout.close()


def test_embedded_defaults_survive_a_restart(server: Server, data_root: Path) -> None:
    banner = server.start()
    assert server.url in banner and "echora create-user" in banner
    status, body, _ = request(f"{server.url}/readyz")
    assert status == 200, body

    created = run_echora(
        "create-user", "--workspace", "acme", "alice", env=server.env, stdin=PASSWORD + "\n"
    )
    assert created.returncode == 0, created.stderr
    assert "alice" in created.stdout

    status, body, headers = request(
        f"{server.url}/api/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 200, body
    cookie = headers["Set-Cookie"].split(";")[0]
    status, me, _ = request(f"{server.url}/api/me", headers={"Cookie": cookie})
    assert status == 200 and me["user"]["username"] == "alice"
    assert me["workspaces"][0]["slug"] == "acme"

    token = run_echora("create-token", "alice", "--name", "ci", env=server.env)
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip()
    assert secret.startswith("echt_")

    pgdata = (data_root / "data" / "pgdata").resolve()
    assert embedded_postgres_running(pgdata)
    assert server.stop() == 0
    assert not embedded_postgres_running(pgdata), "stopping the server stops embedded PostgreSQL"

    server.start()
    status, me, _ = request(f"{server.url}/api/me", headers={"Authorization": f"Bearer {secret}"})
    assert status == 200 and me["user"]["username"] == "alice"
    status, _, _ = request(
        f"{server.url}/api/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 200
    health = run_echora("healthcheck", env=server.env)
    assert health.returncode == 0, health.stderr
    assert server.stop() == 0
    unhealthy = run_echora("healthcheck", env=server.env)
    assert unhealthy.returncode != 0


def test_create_user_refuses_a_taken_name_and_a_short_password(server: Server) -> None:
    ok = run_echora("create-user", "-w", "acme", "bob", env=server.env, stdin=PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    taken = run_echora("create-user", "-w", "acme", "bob", env=server.env, stdin=PASSWORD + "\n")
    assert taken.returncode != 0 and "taken" in taken.stderr
    short = run_echora("create-user", "-w", "acme", "carol", env=server.env, stdin="short\n")
    assert short.returncode != 0 and "at least 8" in short.stderr
    migrate = run_echora("migrate", env=server.env)
    assert migrate.returncode == 0 and "up to date" in migrate.stdout


async def _health(aiohttp_server: Any, status: int, body: str, content_type: str) -> list[str]:
    async def readyz(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    server = await aiohttp_server(app)
    results = []
    for url in (f"http://127.0.0.1:{server.port}", f"127.0.0.1:{server.port}/anything?x=1"):
        done = await asyncio.to_thread(run_echora, "healthcheck", "--url", url, env=echora_env())
        results.append(f"{done.returncode} {done.stdout.strip()} {done.stderr.strip()}")
    return results


async def test_healthcheck_believes_only_a_ready_readyz(aiohttp_server: Any) -> None:
    ready = json.dumps({"status": "ready", "checks": {}})
    assert all(
        r.startswith("0 ready")
        for r in await _health(aiohttp_server, 200, ready, "application/json")
    )
    for status, body, kind in (
        (200, "<html>the index page</html>", "text/html"),  # any 200 counted before
        (200, json.dumps({"status": "unavailable"}), "application/json"),
        (503, json.dumps({"status": "draining", "checks": {}}), "application/json"),
    ):
        for result in await _health(aiohttp_server, status, body, kind):
            assert result.startswith("1 ") and "not ready" in result, result


def test_check_config_connect_reaches_the_database_and_the_store(
    database_url: str, tmp_path: Path
) -> None:
    good = run_echora(
        "check-config",
        "--connect",
        env=echora_env(
            ECHORA_DATABASE_URL=database_url,
            ECHORA_DATA_DIR=str(tmp_path),
            ECHORA_PUBLIC_URL="https://chat.example.com",
        ),
    )
    assert good.returncode == 0, good.stderr
    shown = json.loads(good.stdout)
    assert shown["ECHORA_COOKIE_SECURE"] is True  # the effective value, not null
    assert shown["ECHORA_DATABASE_URL (from)"] == "environment"
    assert "database: ok" in good.stderr and "storage: ok" in good.stderr
    assert "direct uploads: off: the local store takes no direct uploads" in good.stderr
    assert "direct PUTs of a declared SHA-256: off: the local store" in good.stderr
    secret = tmp_path / "db-url"
    secret.write_text(f"postgresql://nobody@127.0.0.1:{free_port()}/none\n")
    bad = run_echora(
        "check-config",
        "--connect",
        env=echora_env(
            ECHORA_DATABASE_URL_FILE=str(secret),
            ECHORA_DATA_DIR=str(tmp_path),
            ECHORA_DB_TIMEOUT="2s",
        ),
    )
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ECHORA_DATABASE_URL (from)"] == f"file {secret}"
    assert "database: unreachable" in bad.stderr and "storage: ok" in bad.stderr

"""``docs/deploy/echora@.service``: verified offline by ``systemd-analyze``, and the
environment it gives an instance (including secrets as credentials) starts a real
``echora serve`` that stops within the unit's stop timeout.

systemd is not PID 1 here, so the unit itself cannot be started; its environment is
rebuilt from its lines (``%i`` the instance, ``%d`` the credentials directory) instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from support.postgres import TEMPLATE, PostgresServer
from support.processes import echora_env, free_port, start_echora

from echora_server.config import load_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "docs" / "deploy" / "echora@.service"
SHIPPED_EXEC = "/opt/echora/bin/echora"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _lines(text: str) -> list[tuple[str, str]]:
    """(key, value) of every setting, in order; a key may repeat (Environment=)."""
    settings = []
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.append((key, value))
    return settings


def _settings(key: str, text: str | None = None) -> list[str]:
    return [value for k, value in _lines(text or UNIT.read_text()) if k == key]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.fail("needs systemd-analyze (Debian: apt-get install systemd; .ci/test does)")
    text = UNIT.read_text()
    assert text.count(SHIPPED_EXEC) == 1
    # verify checks that ExecStart= exists: this checkout's echora stands in for /opt's.
    echora = Path(sys.executable).with_name("echora")
    (tmp_path / "echora@.service").write_text(text.replace(SHIPPED_EXEC, str(echora)))
    checked = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "./echora@8081.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    # Unknown keys and bad values are only warnings (exit 0): none is allowed.
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_the_stop_timeout_is_above_the_shutdown_grace() -> None:
    (timeout,) = _settings("TimeoutStopSec")
    grace = load_config({}).shutdown_grace
    assert _seconds(timeout) >= grace + 10  # drain, the grace, then closing the pool
    assert _settings("KillMode") == ["mixed"]  # SIGTERM to echora alone, not its children
    assert _settings("Restart") == ["on-failure"]
    assert _settings("User") == ["echora"]


def test_settings_come_from_root_only_files_and_the_instance_name() -> None:
    assert _settings("EnvironmentFile") == ["/etc/echora/echora.env", "-/etc/echora/%i.env"]
    environment = dict(value.split("=", 1) for value in _settings("Environment"))
    assert environment["ECHORA_LISTEN"] == "127.0.0.1:%i"


def _uncommented_credentials(text: str) -> str:
    """The unit with its commented-out credential lines turned on."""
    return re.sub(r"^#((LoadCredential|Environment)=)", r"\1", text, flags=re.MULTILINE)


def _instance_environment(text: str, instance: str, credentials: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in _settings("Environment", text):
        key, _, setting = value.partition("=")
        env[key] = setting.replace("%i", instance).replace("%d", str(credentials))
    return env


async def _admin(server: PostgresServer, sql: str) -> None:
    conn = await asyncpg.connect(server.uri())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _connections(server: PostgresServer, database: str) -> int:
    conn = await asyncpg.connect(server.uri())
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
        return int(await conn.fetchval(query, database))
    finally:
        await conn.close()


def test_an_instance_runs_with_credentials_and_stops_in_time(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    text = _uncommented_credentials(UNIT.read_text())
    credentials = tmp_path / "credentials"  # what systemd makes of LoadCredential=
    credentials.mkdir(mode=0o700)
    database = f"systemd_{os.getpid()}"
    asyncio.run(_admin(pg_server, f"CREATE DATABASE {database} TEMPLATE {TEMPLATE}"))
    loaded = {}
    for value in _settings("LoadCredential", text):
        name, _, _source = value.partition(":")
        loaded[name] = credentials / name
    assert sorted(loaded) == ["database-url", "s3-secret-access-key"]
    loaded["database-url"].write_text(pg_server.uri(database) + "\n")
    loaded["s3-secret-access-key"].write_text("unused with local storage\n")
    port = free_port()
    env = _instance_environment(text, str(port), credentials)
    assert env["ECHORA_DATABASE_URL_FILE"] == str(credentials / "database-url")
    env["ECHORA_DATA_DIR"] = str(tmp_path / "state")  # StateDirectory=, here
    log = tmp_path / "echora.log"
    with log.open("wb") as output:  # no ECHORA_DATABASE_URL: the credential is the source
        process = start_echora(
            "serve",
            env={**echora_env(ECHORA_SWEEP_INTERVAL="0"), **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the instance never became ready"
                time.sleep(0.1)
        # It uses the database the credential names (not an embedded one of its own).
        assert asyncio.run(_connections(pg_server, database)) > 0
        assert not (tmp_path / "state" / "pgdata").exists()
        (timeout,) = _settings("TimeoutStopSec", text)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=_seconds(timeout)) == 0
        assert time.monotonic() - started < _seconds(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        asyncio.run(_admin(pg_server, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    assert f"listening on http://127.0.0.1:{port};" in log.read_text()

"""Configuration from ECHORA_* variables: validated once, errors name the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.processes import echora_env, run_echora

from echora_server.config import ConfigError, load_config


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ECHORA_LISTEN": "nonsense"}, "ECHORA_LISTEN"),
        ({"ECHORA_DB_POOL_MAX": "zero"}, "ECHORA_DB_POOL_MAX"),
        ({"ECHORA_STORAGE": "ftp"}, "ECHORA_STORAGE"),
        ({"ECHORA_PUBLIC_URL": "chat.example.com"}, "ECHORA_PUBLIC_URL"),
        ({"ECHORA_S3_PART_SIZE": "1024"}, "ECHORA_S3_PART_SIZE"),
        ({"ECHORA_STORAGE": "s3"}, "ECHORA_S3_BUCKET"),
        ({"ECHORA_ORPHAN_GRACE_HOURS": "1"}, "ECHORA_ORPHAN_GRACE_HOURS"),  # < longest upload
        ({"ECHORA_SWEEP_INTERVAL_SECONDS": "-1"}, "ECHORA_SWEEP_INTERVAL_SECONDS"),
        ({"ECHORA_SWEEP_INTERVAL": "-1"}, "ECHORA_SWEEP_INTERVAL"),
        ({"ECHORA_LISTN": "127.0.0.1:1"}, "ECHORA_LISTN"),
        ({"ECHORA_DATABASE_URL_FILE": "/nonexistent/secret"}, "ECHORA_DATABASE_URL_FILE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert str(info.value).startswith(variable + ":")


def test_defaults_are_embedded_and_local() -> None:
    config = load_config({})
    assert config.database_url is None
    assert config.effective_storage == "local"
    assert config.listen == "127.0.0.1:8080"
    assert config.data_dir == Path("data")


def test_secret_from_file_and_masked(tmp_path: Path) -> None:
    secret = tmp_path / "db"
    secret.write_text("postgresql://u:hunter2@db/echora\n")
    config = load_config(
        {
            "ECHORA_DATABASE_URL_FILE": str(secret),
            "ECHORA_S3_BUCKET": "b",
            "ECHORA_S3_SECRET_ACCESS_KEY": "s3cret",
        }
    )
    assert config.database_url is not None
    assert config.database_url.get_secret_value() == "postgresql://u:hunter2@db/echora"
    assert config.effective_storage == "s3"
    shown = repr(config.masked())
    assert "hunter2" not in shown and "s3cret" not in shown


def test_serve_with_bad_value_fails_naming_the_variable(tmp_path: Path) -> None:
    result = run_echora(
        "serve", env=echora_env(ECHORA_LISTEN="127.0.0.1:99999", ECHORA_DATA_DIR=str(tmp_path))
    )
    assert result.returncode != 0
    assert "ECHORA_LISTEN" in result.stderr
    assert not (tmp_path / "pgdata").exists()  # stopped before touching anything


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    result = run_echora(
        "check-config",
        env=echora_env(
            ECHORA_DATABASE_URL="postgresql://u:hunter2@db/x", ECHORA_DATA_DIR=str(tmp_path)
        ),
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert '"ECHORA_DATABASE_URL": "********"' in result.stdout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("36h", 129_600),
        ("36.5h", 131_400),
        ("7d", 604_800),
        ("1h30m", 5_400),
        ("1500ms", 1.5),
        ("45", 45),
        (" 2 h ", 7_200),
    ],
)
def test_durations_take_units(value: str, seconds: float) -> None:
    assert load_config({"ECHORA_UNLINKED_TTL": value}).unlinked_ttl == seconds


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ECHORA_UNLINKED_TTL": "3 weeks"}, "ECHORA_UNLINKED_TTL: expected a duration"),
        ({"ECHORA_UNLINKED_TTL": "-5s"}, "ECHORA_UNLINKED_TTL: expected a duration"),
        ({"ECHORA_UNLINKED_TTL": "0s"}, "ECHORA_UNLINKED_TTL: must be between 1s and 365d"),
        ({"ECHORA_SESSION_TTL_HOURS": "0"}, "ECHORA_SESSION_TTL_HOURS: must be between 1m and"),
        ({"ECHORA_STORAGE_TIMEOUT": "0"}, "ECHORA_STORAGE_TIMEOUT: must be more than 0s and"),
        ({"ECHORA_TOKEN_CACHE_TTL": "61s"}, "ECHORA_TOKEN_CACHE_TTL: must be between 0s and 1m"),
        ({"ECHORA_ORPHAN_GRACE": "1h"}, "ECHORA_ORPHAN_GRACE: must exceed the longest upload"),
        (
            {"ECHORA_UNLINKED_TTL": "1h", "ECHORA_UNLINKED_TTL_HOURS": "1"},
            "ECHORA_UNLINKED_TTL_HOURS: replaced by ECHORA_UNLINKED_TTL",
        ),
    ],
)
def test_bad_durations_name_the_variable_and_the_range(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert str(info.value).startswith(message)


def test_old_variables_keep_their_unit() -> None:
    config = load_config(
        {
            "ECHORA_UNLINKED_TTL_HOURS": "36",
            "ECHORA_ORPHAN_GRACE_HOURS": "12",
            "ECHORA_SESSION_TTL_HOURS": "1.5",
            "ECHORA_SWEEP_INTERVAL_SECONDS": "90",
            "ECHORA_MAX_UPLOAD_SECONDS": "600",
        }
    )
    assert (config.unlinked_ttl, config.orphan_grace, config.session_ttl) == (
        36 * 3600,
        12 * 3600,
        5400,
    )
    assert (config.sweep_interval, config.max_upload_time) == (90, 600)
    # An old name may take units too.
    assert load_config({"ECHORA_UNLINKED_TTL_HOURS": "90s"}).unlinked_ttl == 90


def test_check_config_shows_durations_and_notes_old_names(tmp_path: Path) -> None:
    result = run_echora(
        "check-config",
        env=echora_env(ECHORA_DATA_DIR=str(tmp_path), ECHORA_UNLINKED_TTL_HOURS="36"),
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["ECHORA_UNLINKED_TTL"] == "1d12h"
    assert shown["ECHORA_SESSION_TTL"] == "14d"
    assert "ECHORA_UNLINKED_TTL_HOURS is deprecated: use ECHORA_UNLINKED_TTL" in result.stderr

"""Configuration from ECHORA_* variables: validated once, errors name the variable."""

from __future__ import annotations

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

"""Static checks of the deployment files: Dockerfile, .dockerignore, compose.yaml, docs.

Docker cannot run here, so the compose file is validated offline with Debian's
``docker-compose`` (1.29.2) and the Dockerfile is parsed instruction by instruction.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# Distinct sentinel values, so the rendered config shows where each one ended up.
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "pg-sentinel-0123456789abcdef",
    "S3_ACCESS_KEY_ID": "s3-id-sentinel",
    "S3_SECRET_ACCESS_KEY": "s3-secret-sentinel-fedcba9876543210",
}
OPTIONAL_ENV = (
    "ECHORA_PUBLIC_URL",
    "ECHORA_S3_BUCKET",
    "ECHORA_S3_ENDPOINT_URL",
    "ECHORA_S3_CREATE_BUCKET",
    "SEAWEEDFS_SCALE",
)
# What docs/deploy.md tells a MinIO installation to put in .env.
MINIO_ENV = {
    "COMPOSE_PROFILES": "minio",
    "ECHORA_S3_ENDPOINT_URL": "http://minio:9000",
    "SEAWEEDFS_SCALE": "0",
}
# Downloads a browser build: must never appear in the image build.
BROWSER_DOWNLOAD = re.compile(r"playwright\s+install", re.IGNORECASE)


# ---------------------------------------------------------------- compose.yaml


def _docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail(
            "docker-compose is not installed; it validates compose.yaml offline. "
            "Install it with: apt-get update && apt-get install -y docker-compose"
        )
    return path


def _compose_env(tmp_path: Path, **overrides: str | None) -> tuple[dict[str, str], Path]:
    """A clean environment (no developer .env, no COMPOSE_* settings) plus overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COMPOSE_") and k not in REQUIRED_ENV and k not in OPTIONAL_ENV
    }
    env.update(REQUIRED_ENV)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    return env, empty_env_file


def _run_config(
    tmp_path: Path, *args: str, **overrides: str | None
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f compose.yaml ARGS``, by default ``config``."""
    env, env_file = _compose_env(tmp_path, **overrides)
    return subprocess.run(
        [_docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE), *(args or ["config"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _rendered(tmp_path: Path, *args: str, **overrides: str | None) -> dict[str, Any]:
    result = _run_config(tmp_path, *args, **overrides)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def test_compose_config_validates_with_required_services(tmp_path: Path) -> None:
    services = _rendered(tmp_path)["services"]
    assert set(services) == {"echora", "postgres", "seaweedfs", "minio"}
    # SeaweedFS is the default store; MinIO runs only when its profile is on.
    assert {name for name, service in services.items() if not service.get("profiles")} == {
        "echora",
        "postgres",
        "seaweedfs",
    }
    assert services["minio"]["profiles"] == ["minio"]


def test_minio_profile_is_the_only_profile(tmp_path: Path) -> None:
    result = _run_config(tmp_path, "config", "--profiles")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["minio"]
    assert _rendered(tmp_path, "--profile", "minio", "config")["services"]["minio"]


def test_echora_waits_for_healthy_database_and_storage(tmp_path: Path) -> None:
    services = _rendered(tmp_path)["services"]
    depends_on = services["echora"]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["seaweedfs"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["seaweedfs"]["healthcheck"]["test"]
    assert services["minio"]["healthcheck"]["test"]


def test_no_service_outside_a_profile_depends_on_one_inside(tmp_path: Path) -> None:
    # Both docker-compose 1.29 and Compose v2 refuse to start such a dependency
    # when its profile is off, so the default `up` would fail.
    services = _rendered(tmp_path)["services"]
    for name, service in services.items():
        if service.get("profiles"):
            continue
        for dependency in service.get("depends_on") or {}:
            assert not services[dependency].get("profiles"), (
                f"{name} depends on {dependency}, which is in a profile"
            )


def test_images_are_pinned(tmp_path: Path) -> None:
    services = _rendered(tmp_path)["services"]
    repo, _, tag = services["seaweedfs"]["image"].rpartition(":")
    assert repo == "chrislusf/seaweedfs"
    assert re.fullmatch(r"\d+\.\d+", tag), services["seaweedfs"]["image"]
    minio = services["minio"]["image"]
    repo, _, tag = minio.rpartition(":")
    assert repo == "quay.io/minio/minio"
    assert tag.startswith("RELEASE."), minio
    assert services["postgres"]["image"] == "postgres:18"
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"


def test_echora_is_configured_from_variables(tmp_path: Path) -> None:
    services = _rendered(tmp_path)["services"]
    env = services["echora"]["environment"]
    assert env["ECHORA_DATABASE_URL"] == (
        f"postgresql://echora:{REQUIRED_ENV['POSTGRES_PASSWORD']}@postgres:5432/echora"
    )
    assert env["ECHORA_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert env["ECHORA_S3_BUCKET"]
    assert env["ECHORA_S3_ACCESS_KEY_ID"] == REQUIRED_ENV["S3_ACCESS_KEY_ID"]
    assert env["ECHORA_S3_SECRET_ACCESS_KEY"] == REQUIRED_ENV["S3_SECRET_ACCESS_KEY"]
    assert env["ECHORA_S3_CREATE_BUCKET"] == "true"
    assert services["seaweedfs"]["scale"] == 1
    # The same variables feed the database and the object stores.
    postgres_env = services["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"] == REQUIRED_ENV["POSTGRES_PASSWORD"]
    seaweedfs_env = services["seaweedfs"]["environment"]
    assert seaweedfs_env["AWS_ACCESS_KEY_ID"] == REQUIRED_ENV["S3_ACCESS_KEY_ID"]
    assert seaweedfs_env["AWS_SECRET_ACCESS_KEY"] == REQUIRED_ENV["S3_SECRET_ACCESS_KEY"]
    minio_env = services["minio"]["environment"]
    assert minio_env["MINIO_ROOT_USER"] == REQUIRED_ENV["S3_ACCESS_KEY_ID"]
    assert minio_env["MINIO_ROOT_PASSWORD"] == REQUIRED_ENV["S3_SECRET_ACCESS_KEY"]


def test_minio_installation_uses_minio_and_leaves_seaweedfs_out(tmp_path: Path) -> None:
    services = _rendered(tmp_path, **MINIO_ENV)["services"]
    assert services["echora"]["environment"]["ECHORA_S3_ENDPOINT_URL"] == "http://minio:9000"
    # Scale 0: no container, and neither Compose waits for a dependency without one.
    assert services["seaweedfs"]["scale"] == 0
    # The service, volume and credentials a MinIO installation already has, unchanged.
    assert services["minio"]["command"] == ["server", "/data"]
    assert [str(v).split(":")[:2] for v in services["minio"]["volumes"]] == [
        ["minio-data", "/data"]
    ]


def test_an_existing_store_is_reached_through_variables(tmp_path: Path) -> None:
    endpoint = "https://s3.example.net"
    services = _rendered(
        tmp_path,
        ECHORA_S3_ENDPOINT_URL=endpoint,
        ECHORA_S3_BUCKET="chat-files",
        ECHORA_S3_CREATE_BUCKET="false",
        SEAWEEDFS_SCALE="0",
    )["services"]
    env = services["echora"]["environment"]
    assert env["ECHORA_S3_ENDPOINT_URL"] == endpoint
    assert env["ECHORA_S3_BUCKET"] == "chat-files"
    assert env["ECHORA_S3_CREATE_BUCKET"] == "false"
    assert services["seaweedfs"]["scale"] == 0
    # Only echora can reach beyond the host: the stores' network is internal.
    assert "frontend" in services["echora"]["networks"]


def _flags(command: list[str]) -> dict[str, str]:
    return dict(arg.lstrip("-").split("=", 1) for arg in command if arg.startswith("-"))


def test_seaweedfs_serves_s3_where_echora_and_its_healthcheck_look(tmp_path: Path) -> None:
    services = _rendered(tmp_path)["services"]
    seaweedfs = services["seaweedfs"]
    command = seaweedfs["command"]
    assert command[0] == "mini"
    flags = _flags(command[1:])
    endpoint = urlsplit(services["echora"]["environment"]["ECHORA_S3_ENDPOINT_URL"])
    assert (endpoint.hostname, endpoint.port) == ("seaweedfs", int(flags["s3.port"]))
    probe = next(arg for arg in seaweedfs["healthcheck"]["test"] if arg.startswith("http"))
    assert urlsplit(probe).port == int(flags["s3.port"])
    # Reachable from the other containers, data on its volume.
    assert flags["ip.bind"] == "0.0.0.0"
    assert flags["dir"] == "/data"
    assert [str(v).split(":")[:2] for v in seaweedfs["volumes"]] == [["seaweedfs-data", "/data"]]
    # Its admin UI has no password, and telemetry is on unless turned off.
    assert flags["admin.ui"] == "false"
    assert flags["master.telemetry"] == "false"


def test_seaweedfs_runs_unprivileged(tmp_path: Path) -> None:
    seaweedfs = _rendered(tmp_path)["services"]["seaweedfs"]
    uid = str(seaweedfs["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert seaweedfs["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in seaweedfs["security_opt"]
    assert seaweedfs["read_only"] is True
    assert seaweedfs["tmpfs"] == ["/tmp"]


def test_stores_are_only_on_the_internal_network(tmp_path: Path) -> None:
    config = _rendered(tmp_path)
    assert config["networks"]["backend"]["internal"] is True
    for name in ("postgres", "seaweedfs", "minio"):
        assert set(config["services"][name]["networks"]) == {"backend"}, name


def test_only_echora_is_published_and_only_on_loopback(tmp_path: Path) -> None:
    services = _rendered(tmp_path)["services"]
    for name, service in services.items():
        if name != "echora":
            assert not service.get("ports"), f"{name} must not publish ports"
    ports = services["echora"]["ports"]
    assert ports
    for port in ports:
        if isinstance(port, dict):
            host_ip = port.get("host_ip")
        else:  # short syntax as rendered by docker-compose 1.x: 127.0.0.1:8080:8080/tcp
            host_ip = str(port).split(":")[0] if str(port).count(":") == 2 else None
        assert host_ip == "127.0.0.1", f"echora port {port!r} is not bound to loopback"


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_compose_refuses_to_render_without_a_required_secret(tmp_path: Path, missing: str) -> None:
    result = _run_config(tmp_path, **{missing: None})
    assert result.returncode != 0
    assert missing in result.stderr


def test_no_hard_coded_secrets_in_compose_file() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    secret_name = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|DATABASE_URL|TOKEN", re.IGNORECASE)
    for name, service in raw["services"].items():
        env = service.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        for key, value in items:
            if secret_name.search(key) and not key.endswith("_FILE"):
                assert "${" in str(value), f"{name}: {key} must come from a variable or file"


def test_deploy_doc_matches_the_compose_file(tmp_path: Path) -> None:
    services = _rendered(tmp_path)["services"]
    doc = DEPLOY_DOC.read_text()
    # A tag bump updates the guide too.
    for name in ("seaweedfs", "minio"):
        assert f"`{services[name]['image']}`" in doc, f"docs/deploy.md: {name} image"
    # The MinIO settings tested above are the ones the guide gives.
    lines = set(doc.splitlines())
    for key, value in MINIO_ENV.items():
        assert f"{key}={value}" in lines, f"docs/deploy.md: {key}={value}"


# ---------------------------------------------------------------- Dockerfile


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    if current:
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _stages(text: str) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """Global ARG defaults and the instructions of each stage (FROM first)."""
    global_args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            stages.append([(keyword, args)])
        elif stages:
            stages[-1].append((keyword, args))
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
    return global_args, stages


def _exec_form(args: str) -> str:
    """Render a JSON exec form (["a", "b"]) or a shell form as one command line."""
    if args.startswith("["):
        return " ".join(json.loads(args))
    return args


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m[1] or m[2]], value)


def _final_stage() -> list[tuple[str, str]]:
    return _stages(DOCKERFILE.read_text())[1][-1]


def test_dockerfile_is_multi_stage_on_slim_python() -> None:
    global_args, stages = _stages(DOCKERFILE.read_text())
    assert len(stages) >= 2
    for stage in stages:
        base = _expand(stage[0][1].split()[0], global_args)
        assert re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", base), base
    builder_runs = " ".join(a for k, a in stages[0] if k == "RUN")
    assert "pip wheel" in builder_runs or "-m build" in builder_runs
    final = stages[-1]
    assert any(k == "COPY" and "--from=" in a and "/opt/venv" in a for k, a in final)


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for keyword, args in _final_stage() if keyword == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0", ""}
    if user.isdigit():
        assert int(user) >= 1000


def test_dockerfile_healthcheck_uses_echora_healthcheck() -> None:
    checks = [args for keyword, args in _final_stage() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "NONE" not in options.upper().split()
    assert _exec_form(command.strip()).startswith("echora healthcheck")


def test_dockerfile_runtime_settings() -> None:
    final = _final_stage()
    env = " ".join(a for k, a in final if k == "ENV")
    assert "ECHORA_LISTEN=0.0.0.0:8080" in env
    assert "ECHORA_DATA_DIR=/data" in env
    assert ("EXPOSE", "8080") in final
    assert ("VOLUME", "/data") in final
    assert ("STOPSIGNAL", "SIGTERM") in final
    entrypoint = [_exec_form(a) for k, a in final if k == "ENTRYPOINT"]
    cmd = [_exec_form(a) for k, a in final if k == "CMD"]
    assert entrypoint[-1:] == ["echora"]
    assert cmd[-1:] == ["serve"]


@pytest.mark.parametrize("path", [DOCKERFILE, DOCKERIGNORE, COMPOSE, DEPLOY_DOC])
def test_no_browser_download_in_deploy_files(path: Path) -> None:
    assert not BROWSER_DOWNLOAD.search(path.read_text()), f"{path.name} downloads a browser"


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context() -> None:
    entries = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".git", ".venv", "data", ".env", ".pytest_cache"):
        assert required in entries, f".dockerignore should list {required}"


# ---------------------------------------------------------------- documentation links

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_in_the_docs_resolve(doc: Path) -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
    local = [link for link in links if not urlsplit(link).scheme]
    missing = [link for link in local if not (doc.parent / link).exists()]
    assert missing == []


def test_the_readme_links_every_shipped_deployment_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deployment\n") :]
    section = section[: section.index("\n## ", 1)]
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "deploy").iterdir())
    assert shipped == [
        "docs/deploy/Caddyfile",
        "docs/deploy/echora@.service",
        "docs/deploy/nginx.conf",
    ]
    for path in shipped:
        assert f"]({path})" in section, path

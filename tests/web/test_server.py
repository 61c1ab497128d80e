"""``echora serve``'s HTTP server on a raw socket: what aiohttp's parser refuses gets the error
shape and a clean close, and no response names the server's software."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from support.people import PASSWORD
from support.processes import echora_env, free_port, start_echora, stop
from support.seaweed import S3Server, direct_s3_client

from echora_server.accounts import service as accounts
from echora_server.db.migrations import migrate


@pytest.fixture
def server_port(database_url: str, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = echora_env(
        ECHORA_DATABASE_URL=database_url,
        ECHORA_DATA_DIR=str(tmp_path / "data"),
        ECHORA_STORAGE="local",
        ECHORA_LISTEN=f"127.0.0.1:{port}",
        ECHORA_SWEEP_INTERVAL="0",
    )
    process = start_echora("serve", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield port
    finally:
        stop(process)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def assert_refused(sock: socket.socket) -> None:
    """The parser's refusal in the error shape, then a clean close: a reset raises."""
    status, headers, body = read_response(sock)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert headers["connection"] == "close"
    assert "server" not in headers
    error = json.loads(body)["error"]
    assert error["code"] == "malformed_request", error
    assert sock.recv(65536) == b""


def test_a_garbage_request_line_gets_the_error_shape_and_a_clean_close(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert_refused(sock)


def test_the_rest_of_a_body_after_a_lying_content_length(server_port: int) -> None:
    lying = (
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 5\r\n\r\n{"a":'
    )
    rest = b"\x01garbage " * 200_000  # read as the next request, while it is still sent
    for _ in range(8):  # a reset under the answer came one time in four
        with socket.create_connection(("127.0.0.1", server_port), timeout=10) as sock:
            sock.sendall(lying)
            status, _, body = read_response(sock)
            assert status == 400 and json.loads(body)["error"]["code"] == "invalid_json"
            sender = threading.Thread(target=send_ignoring_refusal, args=(sock, rest))
            sender.start()
            try:
                assert_refused(sock)
            finally:
                sender.join()


def send_ignoring_refusal(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # refused and closed before the end: what we test
        sock.sendall(data)


async def test_no_response_names_the_server_software(client: TestClient) -> None:
    for path in ("/healthz", "/api/me", "/no/such/page"):
        response = await client.get(path)
        assert "Server" not in response.headers, path


MiB = 1024 * 1024
BIG = 300 * MiB


def env_of(database_url: str, data_dir: Path, port: int, **settings: Any) -> dict[str, str]:
    values = {f"ECHORA_{k.upper()}": str(v) for k, v in settings.items()}
    return echora_env(
        ECHORA_DATABASE_URL=database_url,
        ECHORA_DATA_DIR=str(data_dir),
        ECHORA_LISTEN=f"127.0.0.1:{port}",
        ECHORA_SWEEP_INTERVAL="0",
        **values,
    )


async def started(port: int, process: subprocess.Popen[Any]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            assert process.poll() is None, "the server exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not start")


async def paced(total: int, seconds: float) -> AsyncIterator[bytes]:
    chunk = b"x" * MiB
    for _ in range(total // MiB):
        yield chunk
        await asyncio.sleep(seconds / (total // MiB))


async def token_for(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        user, _ = await accounts.create_user(
            conn, workspace_slug="acme", username="alice", password=PASSWORD, role="member"
        )
        _, token = await accounts.issue_api_token(conn, user.id, "test")
    finally:
        await conn.close()
    return token


async def stored(database_url: str, server: S3Server, prefix: str) -> tuple[list[int], int, int]:
    """Attachment sizes in the database; objects and pending uploads under ``prefix``."""
    conn = await asyncpg.connect(database_url)
    try:
        sizes = [r["size"] for r in await conn.fetch("SELECT size FROM attachments")]
    finally:
        await conn.close()
    async with direct_s3_client(server) as s3:
        objects = await s3.list_objects_v2(Bucket=server.bucket, Prefix=f"{prefix}/")
        uploads = await s3.list_multipart_uploads(Bucket=server.bucket, Prefix=f"{prefix}/")
    return sizes, len(objects.get("Contents", [])), len(uploads.get("Uploads", []))


@pytest.mark.parametrize(
    ("grace", "upload_seconds", "finishes"),
    [(12, 4, True), (3, 30, False)],
    ids=["finishes-within-the-grace", "cut-at-the-grace"],
)
async def test_sigterm_during_a_big_upload(
    database_url: str,
    tmp_path: Path,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    grace: int,
    upload_seconds: float,
    finishes: bool,
) -> None:
    port = free_port()
    token = await token_for(database_url)
    env = env_of(
        database_url,
        tmp_path / "data",
        port,
        shutdown_grace=f"{grace}s",
        max_upload_bytes=BIG,
        **s3_config_values,
    )
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as log_out:
        process = start_echora("serve", env=env, stdout=subprocess.DEVNULL, stderr=log_out)
    try:
        await started(port, process)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(url) as session:
            upload = asyncio.ensure_future(
                session.put(
                    "/api/upload?filename=big.bin",
                    data=paced(BIG, upload_seconds),
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
            await asyncio.sleep(1)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession(url) as other, other.get("/readyz") as ready:
                assert ready.status == 503  # what a load balancer's probe now sees
                assert (await ready.json())["status"] == "draining"
            if finishes:
                response = await upload
                assert response.status == 201, await response.text()
            else:
                with pytest.raises(aiohttp.ClientError):
                    response = await upload
                    await response.read()
        exit_code = await asyncio.to_thread(process.wait, grace + 15)
        took = time.monotonic() - signalled
    finally:
        stop(process)
    assert exit_code == 0
    assert took < grace + 5, took
    log = log_file.read_text()
    for step in ("shutdown_started", "shutdown_stopped_accepting", "shutdown_finished"):
        assert step in log
    sizes, objects, uploads = await stored(database_url, s3_server, s3_config_values["s3_prefix"])
    if finishes:
        assert (sizes, objects, uploads) == ([BIG], 1, 0)
    else:  # cancelled at the grace: its multipart upload aborted, no row, no object
        assert (sizes, objects, uploads) == ([], 0, 0)


async def test_metrics_on_a_listener_of_their_own(database_url: str, tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = env_of(
        database_url,
        tmp_path / "data",
        port,
        storage="local",
        metrics_listen=f"127.0.0.1:{metrics_port}",
    )
    process = start_echora("serve", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await started(port, process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as main:
                assert main.status == 404  # not on the public listener
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as own:
                assert own.status == 200
                assert 'echora_http_requests_total{method="GET"' in await own.text()
            async with session.get(f"http://127.0.0.1:{metrics_port}/healthz") as other:
                assert other.status == 404  # nothing else there
    finally:
        assert stop(process) == 0


async def test_sigterm_closes_every_websocket_with_1001(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    token = await token_for(database_url)
    env = env_of(database_url, tmp_path / "data", port, storage="local", shutdown_grace="5s")
    process = start_echora("serve", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await started(port, process)
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            sockets = []
            for _ in range(40):
                ws = await session.ws_connect(f"http://127.0.0.1:{port}/api/ws", headers=auth)
                assert (await ws.receive_json())["type"] == "hello"
                sockets.append(ws)
            process.send_signal(signal.SIGTERM)
            closes = await asyncio.gather(*(ws.receive(timeout=10) for ws in sockets))
            for ws in sockets:
                await ws.close()
        assert {msg.type for msg in closes} == {aiohttp.WSMsgType.CLOSE}
        assert [msg.data for msg in closes] == [1001] * len(sockets)
        assert await asyncio.to_thread(process.wait, 15) == 0
    finally:
        stop(process)

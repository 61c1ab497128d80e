"""``echora serve``'s HTTP server on a raw socket: what aiohttp's parser refuses gets the error
shape and a clean close, and no response names the server's software."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from support.processes import echora_env, free_port, start_echora, stop


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

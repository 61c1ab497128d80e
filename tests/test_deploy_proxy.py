"""Debian's nginx and Caddy, each with its shipped file (``docs/deploy/nginx.conf``,
``docs/deploy/Caddyfile``), in front of two real Echora processes: login and HSTS over
TLS, the client's address and request id passed on, ``wss://``, a streamed upload that
the proxy never spools, Range downloads, ``/metrics`` kept private, and one process killed.

A shipped file is used as it is except for the literals its ``*_substitutions`` list
(ports, certificate and log paths), each of which must occur exactly as often as listed.
For nginx, the ``http`` block around it stands in for Debian's ``/etc/nginx/nginx.conf``;
for Caddy, a global options block moves its ports and turns its admin endpoint off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from support.postgres import TEMPLATE, PostgresServer
from support.processes import echora_env, free_port, run_echora, start_echora, stop
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "docs" / "deploy"
PROXIES = {
    "nginx": shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin"),
    "caddy": shutil.which("caddy"),
}
# The client connects from another loopback address than nginx's and Caddy's own
# (127.0.0.1), so Echora's log shows whose address it took.
CLIENT_ADDRESS = "127.0.0.2"

PASSWORD = "a long enough password"
UPLOAD_BYTES = 20 * 1024 * 1024  # under the default 25 MiB limit the shipped file assumes
CHUNK = 1024 * 1024
SPOOLED = "buffered to a temporary file"  # nginx's warning whenever it spools a body


def render(shipped: Path, subs: list[tuple[str, str, int]]) -> str:
    text = shipped.read_text()
    for old, new, count in subs:
        found = text.count(old)
        assert found == count, f"{shipped.name}: {old!r} occurs {found} times, not {count}"
        text = text.replace(old, new)
    return text


def nginx_substitutions(
    backend_ports: list[int], https_port: int, http_port: int, root: Path
) -> list[tuple[str, str, int]]:
    """(literal in the shipped file, what the test puts there, how often it occurs)."""
    return [
        ("server 127.0.0.1:8081 ", f"server 127.0.0.1:{backend_ports[0]} ", 1),
        ("server 127.0.0.1:8082 ", f"server 127.0.0.1:{backend_ports[1]} ", 1),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;", 1),
        ("listen 80;", f"listen 127.0.0.1:{http_port};", 1),
        ("/etc/letsencrypt/live/chat.example.com/", f"{root}/tls/", 2),
        ("/var/log/nginx/", f"{root}/logs/", 1),
    ]


def caddy_substitutions(
    backend_ports: list[int], https_port: int, http_port: int, root: Path
) -> list[tuple[str, str, int]]:
    # An address instead of a name, and the test's certificate instead of an ACME one.
    site = f"127.0.0.1 {{\n\ttls {root}/tls/fullchain.pem {root}/tls/privkey.pem"
    return [
        ("chat.example.com {", site, 1),
        (
            "reverse_proxy 127.0.0.1:8081 127.0.0.1:8082 {",
            f"reverse_proxy 127.0.0.1:{backend_ports[0]} 127.0.0.1:{backend_ports[1]} {{",
            1,
        ),
        ("/var/log/caddy/", f"{root}/logs/", 1),
    ]


# What Debian's /etc/nginx/nginx.conf sets around conf.d/*.conf, with this test's paths
# (nginx's compiled-in ones are under /var, which the test must not use).
NGINX_MAIN = """\
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log {root}/logs/access.log;
    gzip on;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    include {root}/conf.d/echora.conf;
}}
"""

# Caddy's own ports and no admin endpoint (its default, localhost:2019, may be taken).
CADDY_GLOBAL = """\
{{
\tadmin off
\thttp_port {http_port}
\thttps_port {https_port}
\tstorage file_system {root}/caddy
}}

"""


@dataclass
class Backend:
    port: int
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as stderr:  # the child keeps its own descriptor
            self.process = start_echora(
                "serve", env=self.env, stdout=subprocess.DEVNULL, stderr=stderr
            )

    @property
    def running(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        return self.process

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events


@dataclass
class Stack:
    root: Path
    origin: str  # https://127.0.0.1:PORT, also ECHORA_PUBLIC_URL
    http_port: int
    backends: list[Backend]
    env: dict[str, str]  # for `echora` commands against the same database
    tls: ssl.SSLContext
    token: str
    data_dir: Path
    proxy: str  # "nginx" or "caddy"
    process: subprocess.Popen[bytes] | None = None
    checked: str = ""  # what `nginx -t` or `caddy validate` printed

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.root / "logs" / "echora.access.log"

    @contextlib.asynccontextmanager
    async def session(self, **kwargs: Any) -> AsyncIterator[aiohttp.ClientSession]:
        async with aiohttp.ClientSession(
            self.origin,
            connector=aiohttp.TCPConnector(ssl=self.tls, local_addr=(CLIENT_ADDRESS, 0)),
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies for an IP address
            **kwargs,
        ) as http:
            yield http
        # A TLS connection's socket closes after its shutdown, a moment after the session
        # (aiohttp's docs, graceful shutdown): else it may be collected unclosed.
        await asyncio.sleep(0.25)

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port}")


def _wait_ready(backend: Backend) -> None:
    _wait_for_port(backend.port, backend.running, f"echora on {backend.port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{backend.port}/readyz", timeout=5):
                return
        except OSError as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # a 503 while it starts; left open, its socket leaks
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _make_certificate(tls_dir: Path) -> None:
    tls_dir.mkdir()
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(tls_dir / "privkey.pem"), "-out", str(tls_dir / "fullchain.pem")),
        ],
        check=True,
        capture_output=True,
    )


async def _admin(server: PostgresServer, sql: str) -> None:
    conn = await asyncpg.connect(server.uri())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run_checked(command: list[str], env: dict[str, str] | None = None) -> str:
    checked = subprocess.run(command, capture_output=True, text=True, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return checked.stdout + checked.stderr


def _start_nginx(stack: Stack, backend_ports: list[int], https_port: int) -> None:
    root = stack.root
    (root / "conf.d").mkdir()
    (root / "temp").mkdir()
    site = render(
        DEPLOY / "nginx.conf", nginx_substitutions(backend_ports, https_port, stack.http_port, root)
    )
    (root / "conf.d" / "echora.conf").write_text(site)
    (root / "nginx.conf").write_text(NGINX_MAIN.format(root=root))
    command = [str(PROXIES["nginx"]), "-p", str(root), "-c", str(root / "nginx.conf")]
    command += ["-e", str(root / "logs" / "error.log")]
    stack.checked = _run_checked([*command, "-t"])
    with (root / "logs" / "nginx.stderr").open("wb") as stderr:
        stack.process = subprocess.Popen(
            [*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=stderr
        )
    _wait_for_port(https_port, stack.process, "nginx")


def _start_caddy(stack: Stack, backend_ports: list[int], https_port: int) -> None:
    root = stack.root
    site = render(
        DEPLOY / "Caddyfile", caddy_substitutions(backend_ports, https_port, stack.http_port, root)
    )
    config = root / "Caddyfile"
    global_options = CADDY_GLOBAL.format(
        http_port=stack.http_port, https_port=https_port, root=root
    )
    config.write_text(global_options + site)
    env = {
        **os.environ,
        "HOME": str(root),
        "XDG_DATA_HOME": str(root / "caddy"),
        "XDG_CONFIG_HOME": str(root / "caddy"),
    }
    command = [str(PROXIES["caddy"])]
    stack.checked = _run_checked(
        [*command, "validate", "--adapter", "caddyfile", "--config", str(config)], env
    )
    with stack.error_log.open("wb") as stderr:  # Caddy logs errors to stderr
        stack.process = subprocess.Popen(
            [*command, "run", "--adapter", "caddyfile", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    _wait_for_port(https_port, stack.process, "caddy")


STARTERS = {"nginx": _start_nginx, "caddy": _start_caddy}


@pytest.fixture(scope="module", params=sorted(PROXIES))
def stack(request: pytest.FixtureRequest, pg_server: PostgresServer) -> Iterator[Stack]:
    proxy: str = request.param
    if PROXIES[proxy] is None:
        pytest.fail(f"needs {proxy} (Debian: apt-get install {proxy}; .ci/test installs it)")
    # Outside pytest's basetemp (mode 0700): nginx's workers run as nobody under root and
    # must reach the temp directories.
    root = Path(tempfile.mkdtemp(prefix=f"echora-{proxy}-test-"))
    root.chmod(0o755)
    (root / "logs").mkdir()
    database = f"proxy_{proxy}_{os.getpid()}"
    asyncio.run(_admin(pg_server, f"CREATE DATABASE {database} TEMPLATE {TEMPLATE}"))
    https_port, http_port = free_port(), free_port()
    backend_ports = [free_port(), free_port()]
    origin = f"https://127.0.0.1:{https_port}"
    data_dir = root / "data"  # one local store, shared by both processes as on one host
    base_env = echora_env(
        ECHORA_DATABASE_URL=pg_server.uri(database),
        ECHORA_STORAGE="local",
        ECHORA_DATA_DIR=str(data_dir),
        ECHORA_PUBLIC_URL=origin,
        ECHORA_TRUSTED_PROXIES="127.0.0.1",
        ECHORA_LOG_FORMAT="json",
        ECHORA_SWEEP_INTERVAL="0",
    )
    backends: list[Backend] = []
    stack: Stack | None = None
    try:
        for port in backend_ports:
            log = root / f"echora-{port}.log"
            backend = Backend(port, log, {**base_env, "ECHORA_LISTEN": f"127.0.0.1:{port}"})
            backend.start()
            backends.append(backend)
        _make_certificate(root / "tls")
        created = run_echora(
            "create-user", "-w", "acme", "alice", env=base_env, stdin=PASSWORD + "\n"
        )
        assert created.returncode == 0, created.stderr
        token = run_echora("create-token", "alice", "--name", "proxy", env=base_env)
        assert token.returncode == 0, token.stderr
        for backend in backends:
            _wait_ready(backend)
        tls = ssl.create_default_context(cafile=root / "tls" / "fullchain.pem")
        stack = Stack(
            root, origin, http_port, backends, base_env, tls, token.stdout.strip(), data_dir, proxy
        )
        STARTERS[proxy](stack, backend_ports, https_port)
        yield stack
    finally:
        if stack is not None and stack.process is not None:
            stop(stack.process)
        for backend in backends:
            if backend.process is not None:
                stop(backend.process)
        asyncio.run(_admin(pg_server, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        shutil.rmtree(root, ignore_errors=True)


async def _eventually(check: Any, what: str, timeout: float = 5) -> Any:
    """``check()`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _login(http: aiohttp.ClientSession, stack: Stack) -> aiohttp.ClientResponse:
    return await http.post(
        "/api/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"Origin": stack.origin},
    )


async def _workspace_channel(stack: Stack, http: aiohttp.ClientSession, name: str) -> int:
    async with http.get("/api/me", headers=stack.bearer) as me:
        workspace_id = (await me.json())["workspaces"][0]["id"]
    async with http.post(
        "/api/channels", json={"workspace_id": workspace_id, "name": name}, headers=stack.bearer
    ) as created:
        assert created.status == 201, await created.text()
        return int((await created.json())["id"])


async def _next_event(
    ws: aiohttp.ClientWebSocketResponse, kind: str, content: str | None = None
) -> dict[str, Any]:
    """The next frame of that type (and message content), skipping others."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame: dict[str, Any] = json.loads(msg.data)
        if frame["type"] == kind and (content is None or frame["message"]["content"] == content):
            return frame


def test_the_shipped_file_checks_clean(stack: Stack) -> None:
    # `nginx -t` / `caddy validate` passed in the fixture; not even a warning is allowed.
    assert stack.process is not None and stack.process.poll() is None
    if stack.proxy == "nginx":
        assert "test is successful" in stack.checked
        assert "[warn]" not in stack.checked and "[emerg]" not in stack.checked, stack.checked
    else:
        assert "Valid configuration" in stack.checked
        warnings = [
            line
            for line in stack.checked.splitlines()
            if line.startswith("{")
            and json.loads(line)["level"] != "info"
            # the test's self-signed certificate names no OCSP responder
            and json.loads(line)["msg"] != "stapling OCSP"
        ]
        assert warnings == []


async def test_login_over_tls_sets_a_secure_cookie_and_hsts(stack: Stack) -> None:
    async with stack.session() as http:
        async with await _login(http, stack) as login:
            assert login.status == 200, await login.text()
            assert login.headers["Strict-Transport-Security"].startswith("max-age=")
            assert "Server" not in login.headers or "nginx/" not in login.headers["Server"]
            assert "Secure" in login.headers["Set-Cookie"]
        async with http.get("/api/me") as me:  # the cookie alone
            assert me.status == 200
            assert (await me.json())["user"]["username"] == "alice"


async def test_plain_http_redirects_to_https(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{stack.http_port}/api/me?x=1"
        async with http.get(url, allow_redirects=False) as response:
            assert response.status in (301, 308)
            location = URL(response.headers["Location"])
            assert (location.scheme, location.host, location.path_qs) == (
                "https",
                "127.0.0.1",
                "/api/me?x=1",
            )


async def test_request_ids_pass_through_and_echora_logs_them(stack: Stack) -> None:
    async with stack.session() as http:
        async with http.get(
            "/api/me", headers={**stack.bearer, "X-Request-ID": "client-chosen.0001"}
        ) as given:
            assert given.status == 200
            assert given.headers["X-Request-ID"] == "client-chosen.0001"
        async with http.get("/api/me", headers=stack.bearer) as generated:
            assert generated.status == 200
            made_by_proxy = generated.headers["X-Request-ID"]
    # nginx's $request_id, Caddy's {http.request.uuid}
    made = (
        r"[0-9a-f]{32}" if stack.proxy == "nginx" else r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"
    )
    assert re.fullmatch(made, made_by_proxy)
    for request_id in ("client-chosen.0001", made_by_proxy):
        if stack.proxy == "nginx":  # its access log and Echora's name the same request
            await _eventually(
                lambda rid=request_id: f"request_id={rid} " in stack.access_log.read_text(),
                f"{request_id} not in nginx's access log",
            )
        logged = [
            event
            for backend in stack.backends
            for event in backend.log_events()
            if event.get("request_id") == request_id and event.get("event") == "request"
        ]
        assert [(e["path"], e["status"]) for e in logged] == [("/api/me", 200)]


async def test_echora_sees_the_clients_address_not_what_it_claims(stack: Stack) -> None:
    spoofed = "203.0.113.9"
    async with (
        stack.session() as http,
        http.get(
            "/api/me",
            headers={**stack.bearer, "X-Forwarded-For": spoofed, "X-Request-ID": "spoof.0001"},
        ) as response,
    ):
        assert response.status == 200
    (logged,) = [
        event
        for backend in stack.backends
        for event in backend.log_events()
        if event.get("request_id") == "spoof.0001" and event.get("event") == "request"
    ]
    # Echora's peer is the proxy (127.0.0.1), which names the client; what the client
    # claimed does not count.
    assert logged["remote"] == CLIENT_ADDRESS


async def test_websocket_over_wss_with_the_session_cookie(stack: Stack) -> None:
    async with stack.session() as http:
        channel_id = await _workspace_channel(stack, http, "wss")
        async with await _login(http, stack) as login:
            assert login.status == 200
        async with http.ws_connect("/api/ws", origin=stack.origin) as ws:
            hello = await _next_event(ws, "hello")
            assert channel_id in hello["channel_ids"]
            await ws.send_json(
                {"type": "message.send", "channel_id": channel_id, "content": "hi", "ref": 1}
            )
            ack = await _next_event(ws, "message.ack")
            assert ack["message"]["content"] == "hi"
            # Posted over HTTP, through whichever process nginx picks: the event reaches
            # this socket either way.
            async with http.post(
                f"/api/channels/{channel_id}/messages",
                json={"content": "over http"},
                headers=stack.bearer,
            ) as posted:
                assert posted.status == 201, await posted.text()
            await _next_event(ws, "message.created", "over http")


def _part_files(stack: Stack) -> list[Path]:
    temp = stack.data_dir / "files" / ".tmp"  # local storage's temp files, while storing
    return list(temp.glob("*.part")) if temp.is_dir() else []


def _proxy_temp_files(stack: Stack) -> list[Path]:
    """nginx's body and proxy temp files; Caddy has none (nor a setting to buffer to disk)."""
    return [p for p in (stack.root / "temp").rglob("*") if p.is_file()]


async def test_a_large_upload_streams_through_and_downloads_by_range(stack: Stack) -> None:
    data = os.urandom(UPLOAD_BYTES)
    half = UPLOAD_BYTES // 2
    seen: dict[str, Any] = {}

    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, UPLOAD_BYTES, CHUNK):
            yield data[offset : offset + CHUNK]
            if offset + CHUNK == half:
                # The client pauses halfway: Echora already writes what it got. Had nginx
                # buffered the body, Echora would not even have been asked yet.
                deadline, sizes = time.monotonic() + 10, []
                while time.monotonic() < deadline:
                    sizes = [p.stat().st_size for p in _part_files(stack)]
                    if sizes and max(sizes) >= half // 2:
                        break
                    await asyncio.sleep(0.05)
                seen["stored_while_sending"] = max(sizes, default=0)
                seen["proxy_temp"] = _proxy_temp_files(stack)

    async with stack.session() as http:
        async with http.put(
            "/api/upload?filename=big.bin",
            data=body(),
            headers={**stack.bearer, "Content-Length": str(UPLOAD_BYTES)},
        ) as uploaded:
            assert uploaded.status == 201, await uploaded.text()
            attachment = (await uploaded.json())["attachments"][0]
        assert seen["stored_while_sending"] >= half // 2, (
            "Echora had not received the first half while the client waited: nginx "
            f"buffered the upload ({seen['stored_while_sending']} bytes stored)"
        )
        assert seen["proxy_temp"] == []
        assert attachment["size"] == UPLOAD_BYTES
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()

        url = attachment["url"]
        async with http.get(url, headers={**stack.bearer, "Range": "bytes=1000000-1999999"}) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 1000000-1999999/{UPLOAD_BYTES}"
            assert await r.read() == data[1000000:2000000]
        async with http.get(url, headers={**stack.bearer, "Range": "bytes=-100"}) as r:
            assert r.status == 206
            assert await r.read() == data[-100:]
        async with http.get(url, headers={**stack.bearer, "Range": "bytes=99999999-"}) as r:
            assert r.status == 416
        async with http.get(url, headers=stack.bearer) as whole:
            assert whole.status == 200
            assert whole.headers["Content-Length"] == str(UPLOAD_BYTES)
            # A client that reads nothing for a while: with response buffering, nginx
            # would spool the rest of the file to its temp directory meanwhile.
            await asyncio.sleep(1)
            spooled_download = _proxy_temp_files(stack)
            assert hashlib.sha256(await whole.read()).hexdigest() == attachment["sha256"]
    assert spooled_download == []
    assert SPOOLED not in stack.error_log.read_text()


async def test_metrics_is_not_public(stack: Stack) -> None:
    direct = f"http://127.0.0.1:{stack.backends[0].port}/metrics"
    with urllib.request.urlopen(direct, timeout=5) as response:
        assert b"echora_" in response.read()  # there to hide
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=stack.tls)) as http:
        for path in ("/metrics", "/metrics?x=1", "//metrics", "/%6Detrics", "/metrics/"):
            # Sent as written: nginx matches locations on the decoded, merged path.
            async with http.get(URL(stack.origin + path, encoded=True)) as response:
                assert response.status == 404, path
                assert "echora_" not in await response.text(), path


async def test_a_stopped_backend_closes_its_websockets_with_1001_through_the_proxy(
    stack: Stack,
) -> None:
    async with stack.session() as http:
        sockets = [await http.ws_connect("/api/ws", headers=stack.bearer) for _ in range(40)]
        for ws in sockets:
            await _next_event(ws, "hello")
        stopped = stack.backends[1]
        stopped.running.send_signal(signal.SIGTERM)

        async def close_of(ws: aiohttp.ClientWebSocketResponse) -> tuple[Any, Any]:
            while (msg := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
                pass  # events still in flight
            return msg.type, msg.data

        pending = {asyncio.ensure_future(close_of(ws)) for ws in sockets}
        done: set[asyncio.Future[tuple[Any, Any]]] = set()
        deadline = time.monotonic() + 10
        while len(done) < 20 and time.monotonic() < deadline:
            finished, pending = await asyncio.wait(
                pending, timeout=deadline - time.monotonic(), return_when=asyncio.FIRST_COMPLETED
            )
            done |= finished
        finished, pending = await asyncio.wait(pending, timeout=1)  # and no more than 20
        done |= finished
        # least_conn spread them evenly; each on the stopped process got a clean going-away
        # close (1001), relayed by the proxy, and none an abnormal one (1006).
        assert [task.result() for task in done] == [(aiohttp.WSMsgType.CLOSE, 1001)] * 20
        assert len(pending) == 20
        for task in pending:
            task.cancel()
        for ws in sockets:
            await ws.close()
    assert await asyncio.to_thread(stopped.running.wait, 30) == 0
    stopped.start()  # back for the next test
    _wait_ready(stopped)


# Last: it kills one of the two processes.
async def test_a_killed_backend_is_skipped_and_websockets_reconnect(stack: Stack) -> None:
    async with stack.session() as http:
        channel_id = await _workspace_channel(stack, http, "failover")
        sockets = [await http.ws_connect("/api/ws", headers=stack.bearer) for _ in range(2)]
        for ws in sockets:
            await _next_event(ws, "hello")
        victim = stack.backends[0]
        victim.running.send_signal(signal.SIGKILL)
        victim.running.wait()

        # least_conn put one socket on each process: exactly one goes down with it. Frames
        # still in flight (the channel's member_added) may come first; they are kept.
        frames: list[list[dict[str, Any]]] = [[], []]

        async def until_closed(index: int) -> aiohttp.WSMsgType:
            while (msg := await sockets[index].receive()).type == aiohttp.WSMsgType.TEXT:
                frames[index].append(json.loads(msg.data))
            return msg.type

        watchers = [asyncio.ensure_future(until_closed(i)) for i in range(2)]
        done, pending = await asyncio.wait(watchers, timeout=5)
        assert len(done) == 1 and len(pending) == 1
        (closed,), (watching,) = done, pending
        assert closed.result() in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )
        survivor = watchers.index(watching)
        await sockets[1 - survivor].close()

        # Every request still succeeds: GETs, a login (POST) and an upload (streamed PUT).
        for _ in range(6):
            async with http.get("/api/me", headers=stack.bearer) as me:
                assert me.status == 200
        async with await _login(http, stack) as login:
            assert login.status == 200
        async with http.put(
            "/api/upload?filename=small.txt", data=b"after the kill", headers=stack.bearer
        ) as uploaded:
            assert uploaded.status == 201

        # A reconnect lands on the live process and gets the events again.
        async with http.ws_connect("/api/ws", headers=stack.bearer) as again:
            await _next_event(again, "hello")
            async with http.post(
                f"/api/channels/{channel_id}/messages",
                json={"content": "still here"},
                headers=stack.bearer,
            ) as posted:
                assert posted.status == 201
            await _next_event(again, "message.created", "still here")
            # The socket that was on the live process all along gets it too.
            await _eventually(
                lambda: [
                    f
                    for f in frames[survivor]
                    if f["type"] == "message.created" and f["message"]["content"] == "still here"
                ],
                "the surviving socket missed the message",
                timeout=10,
            )
        await sockets[survivor].close()
        await watching  # ends with the close

    if stack.proxy == "nginx":  # it did try the dead process, and moved on to the live one
        errors = stack.error_log.read_text()
        assert f'upstream: "http://127.0.0.1:{victim.port}' in errors
        assert "Connection refused" in errors
        assert "no live upstreams" not in errors

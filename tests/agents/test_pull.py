"""``echora agent pull`` end to end, as an agent on a laptop runs it: a real puller process
long-polls the test server, writes each entry and its files, then acknowledges. Killed in
the middle of a download and started again, it loses nothing and writes nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shlex
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from support.bots import make_bot
from support.chat import fetch, make_channel
from support.faultproxy import FaultProxy
from support.people import People, Person
from support.processes import ECHORA, echora_env

BACKENDS = ("local", "s3")


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"inbox_lease": 1.0}  # what a killed puller held comes back within a second


async def bot_in_channel(owner: Person) -> tuple[int, Person]:
    bot = await make_bot(owner, "puller-bot", "poll")
    channel_id = (await make_channel(owner, "drop"))["id"]
    added = await owner.post(f"/api/channels/{channel_id}/members", json={"user_id": bot.user_id})
    assert added.status == 201
    return channel_id, bot


async def drop(owner: Person, channel_id: int, name: str, data: bytes) -> dict[str, Any]:
    """A message carrying one file, sent as a user drops a file into the channel."""
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("file", io.BytesIO(data), filename=name)
    sent = await owner.post(f"/api/channels/{channel_id}/messages", data=form)
    body = await sent.json()
    assert sent.status == 201, body
    (attachment,) = body["attachments"]
    return attachment  # type: ignore[no-any-return]


def puller_args(server: str, token_file: Path, out: Path, *extra: str) -> list[str]:
    return [*ECHORA, "agent", "pull", "--server", server, "--token-file", str(token_file),
            "--to", str(out), "--log-format", "json", *extra]  # fmt: skip


async def run_puller(*args: str, timeout: float = 60) -> tuple[int, str]:
    status, _, log = await run_puller_for_lines(*args, timeout=timeout)
    return status, log


async def run_puller_for_lines(*args: str, timeout: float = 60) -> tuple[int, list[str], str]:
    """Its status, the lines it printed (one per entry done) and its log."""
    process = await asyncio.create_subprocess_exec(
        *args, env=echora_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    return int(process.returncode or 0), stdout.decode().splitlines(), stderr.decode()


def token_file(tmp_path: Path, bot: Person) -> Path:
    path = tmp_path / "bot.token"
    path.write_text(bot.token + "\n")
    path.chmod(0o600)
    return path


async def unacked(client: TestClient, bot: Person) -> int:
    sql = "SELECT count(*) FROM inbox_entries WHERE bot_id = $1 AND acked_at IS NULL"
    return int(await fetch(client, sql, bot.user_id))


def written_files(out: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(out / "files")): path.read_bytes()
        for path in sorted((out / "files").rglob("*"))
        if path.is_file()
    }


async def test_three_dropped_files_are_written_identically_and_acknowledged(
    client: TestClient, people: People, tmp_path: Path
) -> None:
    owner = await people.create("olive")
    channel_id, bot = await bot_in_channel(owner)
    payloads = {
        "notes.txt": b"meeting at noon\n",
        "blob.dat": os.urandom(300 * 1024),
        "data/../../escape.bin": os.urandom(3 * 1024 * 1024 + 7),
    }
    dropped = [await drop(owner, channel_id, name, data) for name, data in payloads.items()]
    out = tmp_path / "inbox"
    server = str(client.make_url("")).rstrip("/")
    status, lines, log = await run_puller_for_lines(
        *puller_args(server, token_file(tmp_path, bot), out, "--once")
    )
    assert status == 0, log
    # One JSON line per entry: its id, its type, the files written.
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "type": "channel.member_added", "files": []}
    ] + [
        {
            "id": n,
            "type": "message.created",
            "files": [str(out / "files" / a["id"] / a["filename"])],
        }
        for n, a in enumerate(dropped, 2)
    ]
    expected = {
        f"{a['id']}/{a['filename']}": data
        for a, data in zip(dropped, payloads.values(), strict=True)
    }
    assert written_files(out) == expected
    assert all("/" not in a["filename"] for a in dropped)  # the server's name rules held
    entries = sorted((out / "entries").iterdir())
    records = [json.loads(path.read_text()) for path in entries]
    assert [r["type"] for r in records] == ["channel.member_added"] + ["message.created"] * 3
    assert [r["id"] for r in records] == [int(p.stem) for p in entries]
    assert await unacked(client, bot) == 0
    assert not list((out / ".partial").iterdir())
    # A second run finds nothing to do, changes nothing and prints nothing.
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    status, lines, log = await run_puller_for_lines(
        *puller_args(server, token_file(tmp_path, bot), out, "--once")
    )
    assert status == 0, log
    assert lines == []
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == before


class StallingProxy:
    """Forwards to the server, but stops passing its answers on once ``after`` bytes of
    them went through on one connection: a download stuck half way. With ``cut``, that
    connection is reset instead, once, and later ones pass untouched."""

    def __init__(self, port: int, after: int, *, cut: bool = False) -> None:
        self.port, self.after, self.cut = port, after, cut
        self.server: asyncio.Server | None = None
        self.stalled = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            sent, tripped = 0, False
            while data := await up_reader.read(65536):
                if not (self.cut and self.stalled.is_set()) and sent + len(data) > self.after:
                    data, tripped = data[: self.after - sent], True
                    self.stalled.set()
                writer.write(data)
                await writer.drain()
                sent += len(data)
                if tripped and self.cut:
                    return  # the connection is reset below
                if tripped:
                    await asyncio.Event().wait()  # hold the connection open, silent

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            writer.transport.abort()
            up_writer.transport.abort()


async def test_a_puller_killed_mid_download_resumes_and_duplicates_nothing(
    client: TestClient, people: People, tmp_path: Path
) -> None:
    owner = await people.create("olive")
    channel_id, bot = await bot_in_channel(owner)
    payloads = {
        "first.txt": b"first file",
        "big.bin": os.urandom(6 * 1024 * 1024),
        "last.txt": b"last file",
    }
    dropped = [await drop(owner, channel_id, name, data) for name, data in payloads.items()]
    out, token = tmp_path / "inbox", token_file(tmp_path, bot)
    assert client.server.port is not None
    stalling = StallingProxy(client.server.port, after=2 * 1024 * 1024)
    async with stalling.running() as via_proxy:
        process = await asyncio.create_subprocess_exec(
            *puller_args(via_proxy, token, out), env=echora_env(), stderr=asyncio.subprocess.PIPE
        )
        try:
            await asyncio.wait_for(stalling.stalled.wait(), 30)
            partial = out / ".partial" / dropped[1]["id"]
            for _ in range(100):  # the bytes that passed reach the disk
                if partial.exists() and partial.stat().st_size > 1024 * 1024:
                    break
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGKILL)  # no chance to tidy up
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    first_entry = out / "entries"
    assert partial.stat().st_size > 1024 * 1024
    assert written_files(out) == {f"{dropped[0]['id']}/first.txt": b"first file"}
    done_before = sorted(p.name for p in first_entry.iterdir())
    assert len(done_before) == 2  # joining the channel, the first file; the big one was not
    assert await unacked(client, bot) == 2

    # Started again (through a tap, to see what it asks for) once the lease has run out.
    await asyncio.sleep(1.2)
    seen = bytearray()
    upstream = ("127.0.0.1", client.server.port)
    async with FaultProxy(upstream, tap=lambda: seen.extend) as proxy:
        status, log = await run_puller(*puller_args(proxy.url, token, out, "--once"))
    assert status == 0, log
    assert f"Range: bytes={partial_size(seen)}-".encode() in seen
    assert dropped[0]["id"].encode() not in seen  # the file in place is not fetched again
    expected = {
        f"{a['id']}/{a['filename']}": data
        for a, data in zip(dropped, payloads.values(), strict=True)
    }
    assert written_files(out) == expected
    assert (
        hashlib.sha256(expected[f"{dropped[1]['id']}/big.bin"]).hexdigest() == dropped[1]["sha256"]
    )
    entries = sorted(p.name for p in first_entry.iterdir())
    assert len(entries) == 4 and entries[:2] == done_before
    assert await unacked(client, bot) == 0
    assert not list((out / ".partial").iterdir())


def partial_size(seen: bytearray) -> int:
    """The offset the restarted puller asked the big file from (whatever had reached disk)."""
    marker = b"Range: bytes="
    start = seen.index(marker) + len(marker)
    return int(seen[start : seen.index(b"-", start)])


async def test_an_entry_whose_command_fails_is_not_acknowledged_and_its_files_are_kept(
    client: TestClient, people: People, tmp_path: Path
) -> None:
    owner = await people.create("olive")
    channel_id, bot = await bot_in_channel(owner)
    dropped = await drop(owner, channel_id, "report.txt", b"quarterly")
    out, token = tmp_path / "inbox", token_file(tmp_path, bot)
    server = str(client.make_url("")).rstrip("/")
    seen = tmp_path / "seen.log"
    failing = ["sh", "-c", f'cat >/dev/null; echo "$ECHORA_ENTRY_ID" >> {seen}; exit 3']
    status, log = await run_puller(*puller_args(server, token, out, "--once", "--", *failing))
    assert status == 0, log
    assert seen.read_text().split() == ["1", "2"]
    assert written_files(out) == {f"{dropped['id']}/report.txt": b"quarterly"}
    assert not (out / "entries").exists()
    assert await unacked(client, bot) == 2
    await asyncio.sleep(1.2)  # the leases run out
    mtime = (out / "files" / dropped["id"] / "report.txt").stat().st_mtime_ns
    script = (
        f'echo "$ECHORA_ENTRY_ID $ECHORA_ENTRY_TYPE" >> {seen}; '
        f'[ -z "$ECHORA_ENTRY_FILES" ] || cat "$ECHORA_ENTRY_FILES" >> {seen}; '
        "python3 -c 'import json,sys; json.load(sys.stdin)'"
    )
    status, log = await run_puller(
        *puller_args(server, token, out, "--once", "--exec", f"sh -c {shlex.quote(script)}")
    )
    assert status == 0, log
    lines = seen.read_text().splitlines()
    assert lines[2:] == ["1 channel.member_added", "2 message.created", "quarterly"]
    assert (out / "files" / dropped["id"] / "report.txt").stat().st_mtime_ns == mtime
    assert await unacked(client, bot) == 0


async def test_a_connection_lost_mid_download_is_retried_without_a_restart(
    client: TestClient, people: People, tmp_path: Path
) -> None:
    owner = await people.create("olive")
    channel_id, bot = await bot_in_channel(owner)
    data = os.urandom(4 * 1024 * 1024)
    dropped = await drop(owner, channel_id, "big.bin", data)
    out, token = tmp_path / "inbox", token_file(tmp_path, bot)
    assert client.server.port is not None
    cutting = StallingProxy(client.server.port, after=1024 * 1024, cut=True)
    async with cutting.running() as via_proxy:
        process = await asyncio.create_subprocess_exec(
            *puller_args(via_proxy, token, out, "--wait", "1"),
            env=echora_env(),
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(cutting.stalled.wait(), 30)
            for _ in range(200):  # the same process carries on once the lease is over
                if await unacked(client, bot) == 0:
                    break
                await asyncio.sleep(0.1)
            assert process.returncode is None  # it did not exit on the lost connection
        finally:
            process.kill()
            _, stderr = await process.communicate()
    assert await unacked(client, bot) == 0, stderr.decode()
    assert b"agent_server_unreachable" in stderr
    assert written_files(out) == {f"{dropped['id']}/big.bin": data}

"""The agent side of poll delivery: long-poll a bot's inbox, write each entry and its files
into a directory, optionally hand it to a command, then acknowledge it.

Nothing is acknowledged before it is on disk (fsync, then rename into place), and what is on
disk is never written twice: a file's path is its attachment id and name, an entry's is its
id, and a file already in place with the right size and SHA-256 is not fetched again. So a
puller killed at any point and started again loses nothing and duplicates nothing; the
entry it held comes back once its lease runs out. A download cut short resumes with a Range
request from the bytes already received."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

log = structlog.get_logger("echora.agent")

READ_SIZE = 1 << 20
# Waits after a failure to reach the server: growing, then steady.
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
# Attachment ids are the server's; refuse anything that could leave the directory.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
MAX_NAME = 100


class PullError(Exception):
    """A problem the puller cannot get past by waiting (a refused token, a bad answer)."""


@dataclass(frozen=True)
class PullSettings:
    server: str
    token: str
    out: Path
    command: Sequence[str] | None = None
    limit: int = 10
    wait: int = 30
    once: bool = False
    cacert: str | None = None
    # Told one JSON line per entry done by this run: its id, type and the files written.
    done: Callable[[str], None] | None = None


def entry_path(out: Path, entry_id: int) -> Path:
    return out / "entries" / f"{entry_id:012d}.json"


def file_path(out: Path, attachment: dict[str, Any]) -> Path:
    attachment_id = str(attachment.get("id", ""))
    if not _SAFE_ID.fullmatch(attachment_id):
        raise PullError(f"unexpected attachment id {attachment_id!r}")
    name = _UNSAFE_NAME.sub("_", str(attachment.get("filename") or "file"))[:MAX_NAME]
    if name in ("", ".", ".."):
        name = "file"
    return out / "files" / attachment_id / name


def attachments_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    message = entry.get("body", {}).get("message") or {}
    return list(message.get("attachments") or ())


class Puller:
    def __init__(self, settings: PullSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._session = session
        self._base = settings.server.rstrip("/")
        self._auth = {"Authorization": f"Bearer {settings.token}"}

    async def run(self) -> None:
        """Until stopped (or, with ``once``, until the inbox has nothing more)."""
        failures = 0
        while True:
            try:
                entries = await self._poll()
                for entry in entries:  # in order; after a failure they come back after the lease
                    await self.handle(entry)
                failures = 0
            except (aiohttp.ClientError, TimeoutError) as exc:
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                log.warning(
                    "agent_server_unreachable", error=str(exc) or type(exc).__name__, retry_in=delay
                )
                await asyncio.sleep(delay)
                continue
            if self.settings.once and not entries:
                return

    async def _poll(self) -> list[dict[str, Any]]:
        wait = 0 if self.settings.once else self.settings.wait
        params = {"limit": str(self.settings.limit), "wait": str(wait)}
        timeout = aiohttp.ClientTimeout(total=wait + 30)
        async with self._session.get(
            f"{self._base}/api/inbox", params=params, headers=self._auth, timeout=timeout
        ) as response:
            body = await self._json(response)
        entries: list[dict[str, Any]] = body["entries"]
        return entries

    async def handle(self, entry: dict[str, Any]) -> None:
        """Everything the entry carries, on disk; then the command; then the acknowledgement."""
        out = self.settings.out
        done = entry_path(out, int(entry["id"]))
        written: list[str] | None = None  # None: done by an earlier run
        if not done.exists():
            missing = []
            for attachment in attachments_of(entry):
                if not await self._fetch_file(attachment):
                    missing.append(attachment["id"])
            record = {**entry, "unavailable_files": missing} if missing else entry
            if self.settings.command and not await self._run_command(record):
                return  # not acknowledged: it comes back after its lease
            _write_atomically(done, json.dumps(record, indent=1).encode())
            written = [
                str(file_path(out, a)) for a in attachments_of(entry) if a["id"] not in missing
            ]
        await self._ack(int(entry["id"]))
        if self.settings.done is not None and written is not None:
            line = {"id": entry["id"], "type": entry["type"], "files": written}
            self.settings.done(json.dumps(line, ensure_ascii=False))

    async def _fetch_file(self, attachment: dict[str, Any]) -> bool:
        """The file in place, verified; False when the server no longer has it for us."""
        final = file_path(self.settings.out, attachment)
        size, digest = int(attachment["size"]), str(attachment["sha256"])
        in_place = final.exists() and final.stat().st_size == size
        if in_place and await asyncio.to_thread(_sha256, final) == digest:
            return True
        partial = self.settings.out / ".partial" / final.parent.name
        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            partial.unlink()
            have = 0
        headers = dict(self._auth)
        if have:
            headers["Range"] = f"bytes={have}-"
        url = attachment["url"]
        url = url if "://" in url else f"{self._base}{url}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
        async with self._session.get(url, headers=headers, timeout=timeout) as response:
            if response.status == 404:
                log.warning("agent_file_unavailable", attachment_id=attachment["id"])
                return False
            if response.status == 200:
                have = 0  # a whole body: start again
            elif response.status != 206:
                await self._json(response)  # raises with the server's error
            elif not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                raise PullError(f"file {attachment['id']}: a range other than the one asked")
            with partial.open("ab" if have else "wb") as sink:
                async for chunk in response.content.iter_chunked(READ_SIZE):
                    sink.write(chunk)
                sink.flush()
                os.fsync(sink.fileno())
        got_size = partial.stat().st_size
        got = await asyncio.to_thread(_sha256, partial)
        if got_size != size or got != digest:
            partial.unlink()
            raise PullError(f"file {attachment['id']}: got {got_size} bytes, sha256 {got}")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
        _fsync_dir(final.parent)
        log.info("agent_file_written", attachment_id=attachment["id"], size=size, path=str(final))
        return True

    async def _run_command(self, entry: dict[str, Any]) -> bool:
        assert self.settings.command
        files = [str(file_path(self.settings.out, a)) for a in attachments_of(entry)]
        env = {
            **os.environ,
            "ECHORA_ENTRY_ID": str(entry["id"]),
            "ECHORA_ENTRY_TYPE": str(entry["type"]),
            "ECHORA_ENTRY_FILES": "\n".join(files),
        }
        process = await asyncio.create_subprocess_exec(
            *self.settings.command, stdin=asyncio.subprocess.PIPE, env=env
        )
        await process.communicate(json.dumps(entry).encode())
        if process.returncode != 0:
            log.warning("agent_command_failed", entry_id=entry["id"], status=process.returncode)
            return False
        return True

    async def _ack(self, entry_id: int) -> None:
        async with self._session.post(
            f"{self._base}/api/inbox/ack", json={"ids": [entry_id]}, headers=self._auth
        ) as response:
            if response.status == 404:  # expired meanwhile: nothing more to do with it
                log.warning("agent_entry_expired", entry_id=entry_id)
                return
            await self._json(response)
        log.info("agent_entry_acknowledged", entry_id=entry_id)

    async def _json(self, response: aiohttp.ClientResponse) -> Any:
        if response.status in (401, 403):
            raise PullError(
                f"the server refused the token ({response.status}): {await _error(response)}"
            )
        if response.status >= 500:
            raise aiohttp.ClientResponseError(
                response.request_info, (), status=response.status, message=await _error(response)
            )
        if response.status >= 300:
            raise PullError(
                f"{response.method} {response.url.path}: {response.status} {await _error(response)}"
            )
        return await response.json()


async def _error(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return f"{body['error']['code']}: {body['error']['message']}"
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return response.reason or ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(READ_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("wb") as sink:
        sink.write(data)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def pull(settings: PullSettings) -> None:
    ssl_context: ssl.SSLContext | bool = True
    if settings.cacert:
        ssl_context = ssl.create_default_context(cafile=settings.cacert)
    connector = aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(connector=connector) as session:
        await Puller(settings, session).run()

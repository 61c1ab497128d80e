"""Subscriber sockets spread over client processes, so the load generator is never the limit.

Each client process (this file run as a script) holds a share of the subscriber sockets in
one asyncio loop and is driven by the benchmark over its stdin/stdout, one JSON object a
line. Receive times are ``time.monotonic()``: CLOCK_MONOTONIC on Linux, one clock for every
process on the machine, so a receiver's timestamp and the sender's (carried in each
message's content) compare across processes. Latencies are computed in the client process
after each phase and handed back as packed doubles.

    {"cmd": "connect", ...}  -> {"first_start", "last_hello", "slowest", "over_1s"}
    {"cmd": "clear"}         -> {}                 (forget the frames received so far)
    {"cmd": "count"}         -> {"count"}          (text frames received since "clear")
    {"cmd": "collect", "tag"} -> {"received", "bytes", "last", "latencies" (base64 doubles)}
    {"cmd": "close"}         -> {"closed_by_server"}, then the process exits
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import WsClient, open_ws

LINE_LIMIT = 256 * 1024 * 1024  # a collect answer carries every latency of the process
# Sockets a client process needs beside its subscribers (stdio, the loop's own).
SPARE_FDS = 64


def raise_nofile(needed: int, who: str) -> int:
    """Raise the soft descriptor limit to the hard one; refuse clearly when that is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"{who} needs {needed} file descriptors but the hard limit (ulimit -Hn) is {hard}: "
            "raise it, or use fewer subscribers or more --client-procs"
        )
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def content_of(payload: bytes) -> str | None:
    """The content of a broadcast: Echora's message.created, or the bare echo."""
    body: dict[str, Any] = json.loads(payload)
    kind = body.get("type")
    if kind == "message.created":
        return str(body["message"]["content"])
    if kind == "message.send":
        return str(body["content"])
    return None


class Share:
    """This process's subscribers."""

    def __init__(self) -> None:
        self.clients: list[WsClient] = []

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        ports: list[int] = cmd["ports"]
        gate = asyncio.Semaphore(cmd["concurrency"])
        channel_id: int | None = cmd.get("channel_id")
        slowest, over_1s = 0.0, 0

        async def one(index: int, token: str) -> tuple[WsClient, float]:
            nonlocal slowest, over_1s
            async with gate:
                started = time.monotonic()
                client, hello = await open_ws(
                    "127.0.0.1",
                    ports[index % len(ports)],
                    cmd["path"],
                    {"Authorization": f"Bearer {token}"},
                    timeout=120.0,
                    compress=cmd["compress"],
                )
                done = time.monotonic()
            took = done - started
            slowest = max(slowest, took)
            over_1s += took > 1.0  # a dropped SYN is retried after 1 s: a full backlog
            if channel_id is not None:
                body = json.loads(hello)
                if body.get("type") != "hello" or channel_id not in body["channel_ids"]:
                    raise RuntimeError(f"unexpected hello: {body}")
            return client, done

        first_start = time.monotonic()
        tasks = [
            asyncio.ensure_future(one(cmd["first_index"] + i, t))
            for i, t in enumerate(cmd["tokens"])
        ]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    (await task)[0].close()
            raise
        self.clients = [client for client, _ in results]
        return {
            "first_start": first_start,
            "last_hello": max(done for _, done in results),
            "slowest": slowest,
            "over_1s": over_1s,
        }

    def clear(self) -> dict[str, Any]:
        for client in self.clients:
            client.frames.clear()
        return {}

    def count(self) -> dict[str, Any]:
        return {"count": sum(len(client.frames) for client in self.clients)}

    def collect(self, tag: str) -> dict[str, Any]:
        latencies = array.array("d")
        received = payload_bytes = 0
        last = 0.0
        for client in self.clients:
            seen: set[str] = set()
            for received_at, payload in client.frames:
                content = content_of(payload)
                if content is None:
                    continue
                frame_tag, seq_text, sent_at = content.split(" ")
                if frame_tag != tag or seq_text in seen:
                    continue
                seen.add(seq_text)
                payload_bytes += len(payload)
                latencies.append((received_at - float(sent_at)) * 1000.0)
                last = max(last, received_at)
            received += len(seen)
        return {
            "received": received,
            "bytes": payload_bytes,
            "last": last,
            "latencies": base64.b64encode(latencies.tobytes()).decode(),
        }

    def close(self) -> dict[str, Any]:
        closed = sum(1 for client in self.clients if client.disconnected)
        for client in self.clients:
            client.close()
        return {"closed_by_server": closed}


async def serve_commands() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    share = Share()
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            match cmd["cmd"]:
                case "connect":
                    answer = await share.connect(cmd)
                case "clear":
                    answer = share.clear()
                case "count":
                    answer = share.count()
                case "collect":
                    answer = share.collect(cmd["tag"])
                case "close":
                    answer = share.close()
                case other:
                    raise ValueError(f"unknown command {other!r}")
        except Exception as exc:  # reported to the benchmark, which stops
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
        if cmd["cmd"] == "close":
            await asyncio.sleep(0.2)  # let the close frames go out
            return
    share.close()  # stdin closed: the benchmark is gone


# --- the benchmark's side ----------------------------------------------------------------


@dataclass
class Collected:
    received: int
    payload_bytes: int
    last_delivery: float
    latencies_ms: list[float]


class ClientProcess:
    """One client process and its command pipe."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, sockets: int, log: Path) -> ClientProcess:
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).resolve()),
                str(sockets + SPARE_FDS),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                limit=LINE_LIMIT,
                start_new_session=True,
            )
        return cls(proc)

    async def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process {self.pid} exited ({self.proc.returncode})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"client process {self.pid}: {answer['error']}")
        return answer

    async def collect(self, tag: str) -> Collected:
        answer = await self.call("collect", tag=tag)
        latencies = array.array("d")
        latencies.frombytes(base64.b64decode(answer["latencies"]))
        return Collected(answer["received"], answer["bytes"], answer["last"], latencies.tolist())

    async def stop(self) -> int:
        """Close its sockets (the number the server had closed first) and wait for the exit."""
        closed = 0
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    closed = int((await self.call("close"))["closed_by_server"])
                    await self.proc.wait()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        return closed


def main() -> None:
    raise_nofile(int(sys.argv[1]), "a client process")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_commands())
    sys.stdout.flush()
    os._exit(0)  # skip closing thousands of transports one by one at exit


if __name__ == "__main__":
    main()

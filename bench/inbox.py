"""The bots' inbox under load: 100 agents in one channel, by poll and by push, in one run.

One user posts into a channel holding ``--agents`` bots; every message stages one entry per
bot in the message's transaction. Two phases per round, each with its own bots:

- **poll**: every bot keeps a long poll open (``GET /api/inbox?wait=30``) and acknowledges
  what it gets at once. Paced at ``--rate`` messages/s (``rate x agents`` entries/s): the
  latency from the message's commit to the poll that returns it; then a burst of
  ``--burst`` messages back to back: entries staged, polled and acknowledged per second.
- **push**: every bot has a callback URL on one local aiohttp receiver (127.0.0.1,
  ``ECHORA_WEBHOOK_ALLOW_PRIVATE``) that answers 200 at once. The same pacing: latency from
  commit to the receiver's hand, deliveries per second; then the burst.

The commit time is the message's ``created_at`` (the transaction's start: a few ms before
its commit, so the latencies are upper bounds). Client and server share this host's clock.

    .venv/bin/python bench/inbox.py                           # 100 agents, 2 msg/s, 3 rounds
    .venv/bin/python bench/inbox.py --rounds 5 --rate 2 --seconds 20 -v

Targets (issue 14): push p99 under 100 ms at 200 events/s; a long poll sees an entry within
100 ms of its commit (p99).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from common import Processes, percentile, setup_cli
from files_infra import (
    DATABASE,
    Account,
    EchoraServer,
    make_account,
    remove_tree,
    start_echora,
    start_postgres,
)

log = logging.getLogger("bench.inbox")
TARGET_P99_MS = 100.0


@dataclass
class Phase:
    latencies_ms: list[float] = field(default_factory=list)
    entries: int = 0
    seconds: float = 0.0
    lost: int = 0
    duplicates: int = 0  # push: a webhook-id delivered again (at-least-once, not an error)

    def rate(self) -> float:
        return self.entries / self.seconds if self.seconds else float("nan")


def created_at(body: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(body["message"]["created_at"]).timestamp()


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session, self.base, self.auth = session, base, {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        async with self.session.request(
            method, f"{self.base}{path}", headers=self.auth, **kw
        ) as response:
            body = await response.json()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {body}")
            return body


async def make_bots(
    api: Api, workspace_id: int, channel_id: int, prefix: str, count: int, **extra: Any
) -> list[tuple[int, str]]:
    bots = []
    for n in range(count):
        fields = {k: (v.format(n=n) if isinstance(v, str) else v) for k, v in extra.items()}
        created = await api.call(
            "POST",
            f"/api/workspaces/{workspace_id}/bots",
            json={"username": f"{prefix}-{n}", **fields},
        )
        bot_id = created["bot"]["id"]
        await api.call("POST", f"/api/channels/{channel_id}/members", json={"user_id": bot_id})
        bots.append((bot_id, created["token"]))
    return bots


async def post_paced(api: Api, channel_id: int, count: int, rate: float) -> None:
    start = time.monotonic()
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await api.call("POST", f"/api/channels/{channel_id}/messages", json={"content": f"m{n}"})


async def post_burst(api: Api, channel_id: int, count: int, concurrency: int = 4) -> None:
    queue = iter(range(count))

    async def worker() -> None:
        for n in queue:
            await api.call(
                "POST", f"/api/channels/{channel_id}/messages", json={"content": f"b{n}"}
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class Pollers:
    """One long poll per bot, acknowledging at once; receipt times per message content."""

    def __init__(self, session: aiohttp.ClientSession, base: str, bots: list[tuple[int, str]]):
        self.session, self.base, self.bots = session, base, bots
        self.seen: list[tuple[str, float, float]] = []  # content, commit, receipt
        self.acked = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll(token)) for _, token in self.bots]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _poll(self, token: str) -> None:
        auth = {"Authorization": f"Bearer {token}"}
        while True:
            async with self.session.get(
                f"{self.base}/api/inbox", params={"limit": "100", "wait": "30"}, headers=auth
            ) as response:
                entries = (await response.json())["entries"]
            now = time.time()
            ids = []
            for entry in entries:
                ids.append(entry["id"])
                if entry["type"] == "message.created":
                    body = entry["body"]
                    self.seen.append((body["message"]["content"], created_at(body), now))
            if ids:
                async with self.session.post(
                    f"{self.base}/api/inbox/ack", json={"ids": ids}, headers=auth
                ) as response:
                    assert response.status == 200, await response.text()
                self.acked += len(ids)


class Receiver:
    """The push callbacks of every bot: answers 200 at once, notes when each entry came."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float, float]] = []
        self.ids: set[str] = set()
        self.duplicates = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{n}", self._hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _hook(self, request: web.Request) -> web.Response:
        now = time.time()
        payload = await request.json()
        webhook_id = request.headers["webhook-id"]
        if webhook_id in self.ids:
            self.duplicates += 1
        self.ids.add(webhook_id)
        if payload["type"] == "message.created":
            data = payload["data"]
            self.seen.append((data["message"]["content"], created_at(data), now))
        return web.Response(status=200)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def wait_for(seen: list[Any], expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(seen) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def summarize(seen: list[tuple[str, float, float]], prefix: str, expected: int) -> Phase:
    mine = [(c, t0, t1) for c, t0, t1 in seen if c.startswith(prefix)]
    phase = Phase(entries=len(mine), lost=max(0, expected - len(mine)))
    phase.latencies_ms = sorted((t1 - t0) * 1000 for _, t0, t1 in mine)
    if mine:
        phase.seconds = max(t1 for *_, t1 in mine) - min(t0 for _, t0, _ in mine)
    return phase


async def measure_round(
    args: argparse.Namespace, server: EchoraServer, account: Account, round_no: int
) -> dict[str, Phase]:
    results: dict[str, Phase] = {}
    paced = int(args.rate * args.seconds)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.agents * 2 + 20)
    ) as session:
        api = Api(session, server.base_url, account.token)
        ws = account.workspace_id
        # poll
        channel = await api.call(
            "POST", "/api/channels", json={"workspace_id": ws, "name": f"poll-{round_no}"}
        )
        bots = await make_bots(
            api, ws, channel["id"], f"poll{round_no}", args.agents, delivery="poll"
        )
        pollers = Pollers(session, server.base_url, bots)
        pollers.start()
        await asyncio.sleep(1.0)  # every long poll open (the joins acknowledged)
        await post_paced(api, channel["id"], paced, args.rate)
        await wait_for(pollers.seen, paced * args.agents, 30)
        results["poll paced"] = summarize(pollers.seen, "m", paced * args.agents)
        started = time.time()
        await post_burst(api, channel["id"], args.burst)
        await wait_for(pollers.seen, (paced + args.burst) * args.agents, 60)
        burst = summarize(pollers.seen, "b", args.burst * args.agents)
        burst.seconds = max((t1 for _, _, t1 in pollers.seen), default=started) - started
        results["poll burst"] = burst
        await pollers.stop()
        # push
        receiver = Receiver()
        await receiver.start()
        try:
            channel = await api.call(
                "POST", "/api/channels", json={"workspace_id": ws, "name": f"push-{round_no}"}
            )
            url = f"http://127.0.0.1:{receiver.port}/hook/{{n}}"
            await make_bots(
                api, ws, channel["id"], f"push{round_no}", args.agents,
                delivery="push", callback_url=url,
            )  # fmt: skip
            await asyncio.sleep(1.0)
            await post_paced(api, channel["id"], paced, args.rate)
            await wait_for(receiver.seen, paced * args.agents, 30)
            results["push paced"] = summarize(receiver.seen, "m", paced * args.agents)
            started = time.time()
            await post_burst(api, channel["id"], args.burst)
            await wait_for(receiver.seen, (paced + args.burst) * args.agents, 120)
            burst = summarize(receiver.seen, "b", args.burst * args.agents)
            burst.seconds = max((t1 for _, _, t1 in receiver.seen), default=started) - started
            results["push burst"] = burst
            results["push burst"].duplicates = receiver.duplicates  # both phases' repeats
        finally:
            await receiver.stop()
    return results


def report(args: argparse.Namespace, rounds: list[dict[str, Phase]]) -> bool:
    ok = True
    print(
        f"# inbox: {args.agents} agents, paced {args.rate:g} msg/s "
        f"({args.rate * args.agents:g} entries/s) for {args.seconds:g} s, "
        f"burst {args.burst} messages; {len(rounds)} rounds"
    )
    for name in ("poll paced", "poll burst", "push paced", "push burst"):
        runs = [r[name] for r in rounds]
        p50 = [percentile(p.latencies_ms, 50) for p in runs]
        p99 = [percentile(p.latencies_ms, 99) for p in runs]
        rates = [p.rate() for p in runs]
        lost = [p.lost for p in runs]

        def runs_of(values: list[float]) -> str:
            return ", ".join(f"{v:.1f}" for v in values)

        print(
            f"{name:11s} entries/s median {statistics.median(rates):8.0f} "
            f"(runs {', '.join(f'{r:.0f}' for r in rates)}); "
            f"p50 ms median {statistics.median(p50):7.1f} (runs {runs_of(p50)}); "
            f"p99 ms median {statistics.median(p99):7.1f} (runs {runs_of(p99)}); "
            f"lost {lost}"
            + (
                f"; repeated deliveries {[p.duplicates for p in runs]}"
                if name == "push burst"
                else ""
            )
        )
        if name.endswith("paced"):
            median_p99 = statistics.median(p99)
            verdict = "PASS" if median_p99 < TARGET_P99_MS and not any(lost) else "FAIL"
            ok &= verdict == "PASS"
            what = "push" if name.startswith("push") else "long poll"
            print(
                f"{verdict}: {what} p99 from commit {median_p99:.1f} ms at "
                f"{args.rate * args.agents:g} entries/s (target < {TARGET_P99_MS:g} ms, none lost)"
            )
    return ok


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2.0, help="paced messages/s; default 2")
    parser.add_argument("--seconds", type=float, default=15.0, help="paced phase length")
    parser.add_argument("--burst", type=int, default=50, help="messages back to back")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="an ECHORA_* setting for the server (repeatable), e.g. ECHORA_DB_POOL_MAX=40",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    setup_cli(log, args.verbose)
    workdir = Path(tempfile.mkdtemp(prefix="echora-bench-inbox-"))
    procs = Processes()
    pg: Any = None
    try:
        pg = start_postgres(workdir)

        async def run() -> bool:
            account = await make_account(pg.get_uri(), pg.get_uri(DATABASE))
            settings = {
                "ECHORA_STORAGE": "local",
                "ECHORA_WEBHOOK_ALLOW_PRIVATE": "true",
                "ECHORA_MESSAGE_RATE_PER_MINUTE": "100000",
                "ECHORA_MESSAGE_RATE_BURST": "1000",
                **dict(item.split("=", 1) for item in args.server_env),
            }
            server = await start_echora("inbox", procs, workdir, account, settings)
            rounds = []
            for n in range(args.rounds):
                log.info("round %d", n + 1)
                rounds.append(await measure_round(args, server, account, n))
            return report(args, rounds)

        return 0 if asyncio.run(run()) else 1
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if pg is not None:
            pg.cleanup()
        remove_tree(workdir)


if __name__ == "__main__":
    sys.exit(main())

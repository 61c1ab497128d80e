"""What bench/ws_fanout.py measured: the result types, the tables and the targets."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from common import percentile

# The targets: p99 under 50 ms at 1,000 subscribers (50/s), under 100 ms at 10,000
# (5/s); back-to-back at least 0.9x the bare loop; 10,000 connected in under 20 s with at
# most 25 KiB of server RSS per idle socket.
P99_TARGET_MS = 50.0
P99_TARGET_MS_LARGE = 100.0  # above LARGE subscribers
LARGE = 1000
THROUGHPUT_TARGET = 0.9
CONNECT_TARGET_S = 20.0
KIB_PER_SOCKET_TARGET = 25.0


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
    cpu: dict[str, float]  # % of one core: client, sender, server, postgres, other
    client_cpu: list[float]  # % of one core, per client process
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


@dataclass(frozen=True)
class ConnectResult:
    seconds: float  # first connect -> last hello, over every client process
    slowest: float  # the longest single connect (handshake to hello)
    over_1s: int  # connects that took over a second
    listen_drops: int  # SYNs the kernel dropped meanwhile (a full listen queue; machine-wide)
    server_ms: float  # server CPU per connect
    postgres_ms: float  # PostgreSQL CPU per connect


@dataclass
class ScenarioResult:
    scenario: Scenario
    subscribers: int
    messages: int
    connect: ConnectResult
    rss_before: int  # the servers' RSS with only the sender connected
    rss_idle: int  # ... with every subscriber connected and idle
    paced: PhaseResult
    b2b: PhaseResult
    closed_sockets: int
    notes: list[str]
    round: int = 1

    @property
    def kib_per_socket(self) -> float:
        return (self.rss_idle - self.rss_before) / 1024 / self.subscribers


def p99_target(subscribers: int) -> float:
    return P99_TARGET_MS_LARGE if subscribers > LARGE else P99_TARGET_MS


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
    """Print the tables and the PASS/FAIL lines; True when every target is met."""
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
        f"Client: {args.client_procs} client process(es) holding the {n} subscriber sockets "
        f"(lean asyncio.Protocol WebSocket clients, {wire}; JSON decoded after each phase), "
        "the sender in the benchmark's process; receive and send times are time.monotonic() "
        f"(CLOCK_MONOTONIC, system-wide). Connects: {args.connect_concurrency} in flight in "
        "all. Servers in subprocesses; Echora: ECHORA_WS_SEND_BUFFER default, rate limits "
        "raised, log level warning; embedded PostgreSQL (default settings) over a unix socket."
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
        "Connecting and idle memory: first connect to last hello, the slowest single "
        "connect, connects over 1 s, SYNs the kernel dropped at a full listen queue, server "
        "and PostgreSQL CPU ms per connect; server RSS with only the sender connected and "
        "with every subscriber idle (settled), and the difference per subscriber socket:"
    )
    mem_header = (
        f"{'scenario':<{width}} | {'connect s':>9} {'slowest s':>9} {'>1s':>5} "
        f"{'drops':>5} {'srv ms':>6} {'pg ms':>5} | "
        f"{'RSS before MB':>13} {'idle MB':>8} {'KiB/socket':>10}"
    )
    print(mem_header)
    print("-" * len(mem_header))
    for r in results:
        c = r.connect
        print(
            f"{_row_label(r, rounds):<{width}} | {c.seconds:>9.2f} {c.slowest:>9.2f} "
            f"{c.over_1s:>5} {c.listen_drops:>5} {c.server_ms:>6.2f} {c.postgres_ms:>5.2f} | "
            f"{r.rss_before / 2**20:>13.1f} {r.rss_idle / 2**20:>8.1f} "
            f"{r.kib_per_socket:>10.1f}"
        )
    print()
    print(
        "CPU in % of one core over each phase (client = the client processes together, "
        "max = the busiest one, server = the server process(es), pg = all PostgreSQL "
        "backends, other = the rest of the machine), server CPU µs per delivery; b2b "
        "latency and seconds from the first send to the last ack and to the last delivery; "
        "mean frame size:"
    )
    cpu_header = (
        f"{'scenario':<{width}} | {'paced: client':>13} {'max':>4} {'server':>6} {'pg':>4} "
        f"{'other':>5} {'µs/dlv':>6} | {'b2b: client':>11} {'max':>4} {'server':>6} "
        f"{'pg':>4} {'other':>5} {'µs/dlv':>6} | {'b2b p50/p99 ms':>14} {'acks s':>6} "
        f"{'span s':>6} {'frame B':>7}"
    )
    print(cpu_header)
    print("-" * len(cpu_header))

    def cpu_columns(phase: PhaseResult, first: int) -> str:
        pg = f"{phase.cpu['postgres']:.0f}" if "postgres" in phase.cpu else "-"
        return (
            f"{phase.cpu['client']:>{first}.0f} {max(phase.client_cpu):>4.0f} "
            f"{phase.cpu['server']:>6.0f} {pg:>4} {phase.cpu['other']:>5.0f} "
            f"{phase.server_us_per_delivery:>6.1f}"
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
            if max(phase.client_cpu) > 70:
                cautions.append(
                    f"warning: a client process used {max(phase.client_cpu):.0f}% of a core "
                    f"in {_row_label(r, rounds)}, {name}: that measurement may be client-bound "
                    "(more --client-procs)."
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


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def check_targets(results: list[ScenarioResult], args: argparse.Namespace) -> bool:
    """The issue's targets for Echora in one process (medians over rounds)."""
    ones = [r for r in results if r.scenario.key == "echora-1p"]
    bares = [r for r in results if r.scenario.kind == "bare"]
    of_rounds = " (median of rounds)" if args.repeat > 1 else ""
    print()
    if not ones:
        print("targets: not checked (the echora-1p scenario was not run)")
        return True
    n = args.subscribers
    target = p99_target(n)
    p99 = statistics.median(r.paced.latency(99) for r in ones)
    lost = sum(r.paced.lost for r in ones)
    latency_ok = p99 < target and lost == 0
    print(
        f"{_verdict(latency_ok)}: echora 1 process, {n} subscribers at {args.rate:g}/s: "
        f"p99 {p99:.1f} ms{of_rounds} (target < {target:g} ms), {lost} lost (target 0); "
        f"every round: {', '.join(f'{r.paced.latency(99):.1f}' for r in ones)}"
    )
    connect = statistics.median(r.connect.seconds for r in ones)
    kib = statistics.median(r.kib_per_socket for r in ones)
    connect_ok = connect < CONNECT_TARGET_S * n / 10000
    memory_ok = kib <= KIB_PER_SOCKET_TARGET
    print(
        f"{_verdict(connect_ok)}: {n} connected in {connect:.2f} s{of_rounds} (target < "
        f"{CONNECT_TARGET_S * n / 10000:g} s, i.e. 20 s per 10,000); every round: "
        f"{', '.join(f'{r.connect.seconds:.2f}' for r in ones)}"
    )
    print(
        f"{_verdict(memory_ok)}: {kib:.1f} KiB of server RSS per idle socket{of_rounds} "
        f"(target <= {KIB_PER_SOCKET_TARGET:g}); every round: "
        f"{', '.join(f'{r.kib_per_socket:.1f}' for r in ones)}"
    )
    ok = latency_ok and connect_ok and memory_ok
    ratios = [x for x in (_ratio(results, r) for r in ones) if x is not None]
    if not ratios:
        print("throughput target: not checked (the bare scenario was not run)")
        return ok
    ratio = statistics.median(ratios)
    rate = statistics.median(r.b2b.deliveries_per_second for r in ones)
    bare_rate = statistics.median(r.b2b.deliveries_per_second for r in bares)
    lost = sum(r.b2b.lost for r in ones)
    throughput_ok = ratio >= THROUGHPUT_TARGET and lost == 0
    print(
        f"{_verdict(throughput_ok)}: echora 1 process back-to-back {rate:,.0f} deliveries/s "
        f"= {ratio:.2f}x bare{of_rounds} ({bare_rate:,.0f}/s; target >= {THROUGHPUT_TARGET}x), "
        f"{lost} lost; every round: {', '.join(f'{x:.2f}x' for x in ratios)}"
    )
    cost = statistics.median(r.b2b.server_us_per_delivery for r in ones)
    bare_cost = statistics.median(r.b2b.server_us_per_delivery for r in bares)
    if cost > 0 and bare_cost > 0:
        print(
            f"info: server CPU per delivery (b2b) {cost:.1f} µs vs bare {bare_cost:.1f} µs, "
            f"i.e. {bare_cost / cost:.2f}x bare's throughput per CPU second"
        )
    return ok and throughput_ok

"""Results of bench/files.py and the tables and PASS/FAIL lines printed from them."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
from dataclasses import dataclass, field
from typing import Literal

from files_infra import MB, CpuUsage, Window
from files_transfers import Timed

MiB = 1024 * 1024
UPLOAD_TARGET = 0.95
DOWNLOAD_TARGET = 0.9
RSS_RATIO_TARGET = 1.1
RSS_ABOVE_IDLE_TARGET_MB = 48.0

Backend = Literal["s3", "local"]
Direction = Literal["upload", "download"]
Path_ = Literal["echora", "baseline", "reference", "relay", "disk"]
# The paths beside the baseline (--reference; the bare raw read of local downloads), with
# their labels in the tables.
EXTRA_PATHS: tuple[tuple[Path_, str], ...] = (
    ("reference", "minimal"),
    ("relay", "relay"),
    ("disk", "raw read"),
)
ROLES = ("client", "server", "store", "db")


@dataclass(frozen=True)
class Run:
    """One timed transfer and the CPU every party used meanwhile."""

    timed: Timed
    cpu: CpuUsage


@dataclass
class SizeResult:
    """Every run of one file size on one backend (warm-up rounds not included)."""

    size: int
    runs: dict[tuple[Direction, Path_], list[Run]] = field(default_factory=dict)
    upload_windows: list[Window] = field(default_factory=list)  # warm-up included

    def add(self, direction: Direction, path: Path_, run: Run) -> None:
        self.runs.setdefault((direction, path), []).append(run)

    def rate(self, direction: Direction, path: Path_) -> float:
        """Median MB/s."""
        return statistics.median(r.timed.mb_per_s for r in self.runs[(direction, path)])

    def has(self, path: Path_, direction: Direction | None = None) -> bool:
        return any(p == path and direction in (None, d) for d, p in self.runs)

    def ratio(
        self, direction: Direction, path: Path_ = "echora", base: Path_ = "baseline"
    ) -> float:
        """The median over rounds of ``path``'s speed / ``base``'s in the same round:
        pairs taken minutes apart would mostly measure the machine's changing load."""
        pairs = zip(self.runs[(direction, path)], self.runs[(direction, base)], strict=True)
        return statistics.median(p.timed.mb_per_s / b.timed.mb_per_s for p, b in pairs)

    @property
    def peak_upload_rss(self) -> int:
        return max(w.peak_rss for w in self.upload_windows)


@dataclass
class SmallResult:
    """Requests per second, and CPU ms per request by role (echora's runs)."""

    concurrency: int
    echora_up: float
    echora_down: float
    base_up: float | None
    base_down: float | None
    up_cpu_ms: dict[str, float] = field(default_factory=dict)
    down_cpu_ms: dict[str, float] = field(default_factory=dict)
    base_up_cpu_ms: dict[str, float] = field(default_factory=dict)
    base_down_cpu_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class BackendResult:
    backend: Backend
    idle_rss: int = 0
    after_rss: int = 0
    sizes: dict[int, SizeResult] = field(default_factory=dict)
    small: list[SmallResult] = field(default_factory=list)

    @property
    def baseline(self) -> str:
        return "direct S3" if self.backend == "s3" else "raw disk"

    @property
    def big(self) -> SizeResult:
        return self.sizes[max(self.sizes)]

    @property
    def small_size(self) -> SizeResult:
        return self.sizes[min(self.sizes)]


def _median_cpu(runs: list[Run], role: str, nbytes: int) -> float:
    return statistics.median(r.cpu.per_gb(role, nbytes) for r in runs)


def _print_table(title: str, header: str, rows: list[str]) -> None:
    print(title)
    print(header)
    print("-" * max(len(header), *(len(r) for r in rows)))
    for row in rows:
        print(row)
    print()


def report(results: list[BackendResult], args: argparse.Namespace, elapsed: float) -> bool:
    print()
    print(
        f"Echora file transfer benchmark, {dt.datetime.now():%Y-%m-%d %H:%M}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {elapsed:.0f} s"
    )
    print(
        f"Throughput: median of {args.repeat} timed runs after {args.warmup} warm-up round(s), "
        "echora and its baseline interleaved; MB = 10^6 bytes, file sizes in MiB"
    )
    print(
        "s3: SeaweedFS weed mini on 127.0.0.1, 8 MiB parts; baseline: aiobotocore sequential "
        "multipart upload / GetObject iter_chunked(1 MiB)"
    )
    reads = "page cache (hot)" if args.hot_reads else "disk (pages dropped before each read)"
    print(
        "local: baseline: 1 MiB copy to the same filesystem + fsync / 1 MiB reads sent over "
        "a loopback socket to the same client (bench/files_rawserve.py); raw read = the "
        f"bare reads; every download reads from the {reads}"
    )
    print()
    throughput(results)
    cpu_table(results)
    rss_table(results)
    small_table(results, args)
    return targets(results)


def throughput(results: list[BackendResult]) -> None:
    extras = [
        (path, label)
        for path, label in EXTRA_PATHS
        if any(size.has(path) for r in results for size in r.sizes.values())
    ]
    header = (
        f"{'backend':<7} {'transfer':<8} {'size':>8}  {'echora':>7}  {'baseline':>8}  "
        f"{'ratio':>6}"
        + "".join(f"  {label:>7} {'ratio':>6}" for _, label in extras)
        + "  runs, MB/s: echora | baseline"
        + "".join(f" | {label}" for _, label in extras)
    )
    rows = []
    for result in results:
        for size, sizes in result.sizes.items():
            for direction in ("upload", "download"):
                paths: list[Path_] = ["echora", "baseline"]
                extra = ""
                for path, _ in extras:
                    if sizes.has(path, direction):
                        paths.append(path)
                        extra += (
                            f"  {sizes.rate(direction, path):>7.1f} "
                            f"{sizes.ratio(direction, path):>5.2f}x"
                        )
                    else:
                        extra += f"  {'-':>7} {'-':>6}"
                runs = " | ".join(
                    " ".join(f"{r.timed.mb_per_s:.0f}" for r in sizes.runs[(direction, p)])
                    for p in paths
                )
                rows.append(
                    f"{result.backend:<7} {direction:<8} {size // MiB:>4} MiB  "
                    f"{sizes.rate(direction, 'echora'):>7.1f}  "
                    f"{sizes.rate(direction, 'baseline'):>8.1f}  "
                    f"{sizes.ratio(direction):>5.2f}x{extra}  {runs}"
                )
    notes = {
        "disk": "raw read = the bare 1 MiB reads, no socket (local downloads)",
        "reference": "minimal = bench/files_minimal.py",
        "relay": "relay = the direct client through bench/files_relay.py (a byte relay)",
    }
    _print_table(
        "Throughput, MB/s, median of the runs; ratio = median over rounds of the speed / the "
        "baseline's in the same round" + "".join(f"; {notes[path]}" for path, _ in extras),
        header,
        rows,
    )


def cpu_table(results: list[BackendResult]) -> None:
    header = (
        f"{'backend':<7} {'transfer':<8} {'size':>8}  {'path':<9}  {'client':>6} "
        f"{'server':>6} {'store':>6} {'db':>5}  {'others':>6}"
    )
    rows = []
    for result in results:
        for size, sizes in result.sizes.items():
            for direction in ("upload", "download"):
                for path in ("echora", "baseline", "reference", "relay", "disk"):
                    if not sizes.has(path, direction):
                        continue
                    runs = sizes.runs[(direction, path)]
                    server = {"echora": "server", "reference": "reference", "relay": "relay"}.get(
                        path
                    )
                    if path == "baseline" and result.backend == "local" and direction == "download":
                        server = "rawserve"
                    server_cell = f"{_median_cpu(runs, server, size):.2f}" if server else "-"
                    db = f"{_median_cpu(runs, 'db', size):.2f}" if path == "echora" else "-"
                    others = statistics.median(r.cpu.other_share for r in runs)
                    label = {"baseline": result.baseline, **dict(EXTRA_PATHS)}.get(path, path)
                    rows.append(
                        f"{result.backend:<7} {direction:<8} {size // MiB:>4} MiB  {label:<9}  "
                        f"{_median_cpu(runs, 'client', size):>6.2f} {server_cell:>6} "
                        f"{_median_cpu(runs, 'store', size):>6.2f} {db:>5}  {others:>6.0%}"
                    )
    _print_table(
        "CPU seconds per GB moved (median run): client = this process (load generator or "
        "direct client), server = echora (or the minimal server, or the relay), store = weed, db = "
        "PostgreSQL; others = share of the whole machine used by other processes meanwhile",
        header,
        rows,
    )


def rss_table(results: list[BackendResult]) -> None:
    sizes = sorted({size for result in results for size in result.sizes})
    header = (
        f"{'backend':<7} {'idle':>6}  "
        + "  ".join(f"{f'peak {s // MiB} MiB upload (+idle)':>28}" for s in sizes)
        + f"  {'big/small':>9}  {'after':>6}"
    )
    rows = []
    for result in results:
        cells = []
        for size in sizes:
            peak = result.sizes[size].peak_upload_rss
            cells.append(f"{f'{peak / MB:.1f} (+{(peak - result.idle_rss) / MB:.1f})':>28}")
        ratio = result.big.peak_upload_rss / result.small_size.peak_upload_rss
        rows.append(
            f"{result.backend:<7} {result.idle_rss / MB:>6.1f}  "
            + "  ".join(cells)
            + f"  {ratio:>8.3f}x  {result.after_rss / MB:>6.1f}"
        )
    _print_table(
        "Echora server RSS, MB (sampled every 10 ms; peak over every upload of that size, "
        "warm-up included; after = at the end)",
        header,
        rows,
    )


def small_table(results: list[BackendResult], args: argparse.Namespace) -> None:
    header = (
        f"{'backend':<7} {'conc':>4}  {'upload: echora':>14} {'direct':>6} {'ratio':>6}  "
        f"{'download: echora':>16} {'direct':>6} {'ratio':>6}  "
        f"{'CPU ms/upload: server':>21} {'db':>4} {'store':>5} {'direct client':>13}  "
        f"{'ms/download: server':>19} {'db':>4} {'store':>5} {'direct client':>13}"
    )

    def ms(values: dict[str, float], role: str) -> str:
        return f"{values[role]:.1f}" if role in values else "-"

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    def ratio(echora: float, base: float | None) -> str:
        return "-" if not base else f"{echora / base:.2f}x"

    rows = [
        f"{result.backend:<7} {s.concurrency:>4}  {s.echora_up:>14.0f} {cell(s.base_up):>6} "
        f"{ratio(s.echora_up, s.base_up):>6}  {s.echora_down:>16.0f} {cell(s.base_down):>6} "
        f"{ratio(s.echora_down, s.base_down):>6}  "
        f"{ms(s.up_cpu_ms, 'server'):>21} {ms(s.up_cpu_ms, 'db'):>4} "
        f"{ms(s.up_cpu_ms, 'store'):>5} {ms(s.base_up_cpu_ms, 'client'):>13}  "
        f"{ms(s.down_cpu_ms, 'server'):>19} {ms(s.down_cpu_ms, 'db'):>4} "
        f"{ms(s.down_cpu_ms, 'store'):>5} {ms(s.base_down_cpu_ms, 'client'):>13}"
        for result in results
        for s in result.small
    ]
    _print_table(
        f"Small files: {args.small_kb} KiB, {args.count} requests per figure, requests/s "
        "(direct = aiobotocore PutObject / GetObject); CPU ms per echora request",
        header,
        rows,
    )


def targets(results: list[BackendResult]) -> bool:
    ok = True
    for result in results:
        big, small = result.big, result.small_size
        label = f"{result.backend}: {big.size // MiB} MiB"
        up, down = big.ratio("upload"), big.ratio("download")
        ratio = big.peak_upload_rss / small.peak_upload_rss
        above = (big.peak_upload_rss - result.idle_rss) / MB
        checks = [
            (
                up >= UPLOAD_TARGET,
                f"{label} upload {up:.3f}x {result.baseline} (target >= {UPLOAD_TARGET}x)",
            ),
            (
                down >= DOWNLOAD_TARGET,
                f"{label} download {down:.3f}x {result.baseline} (target >= {DOWNLOAD_TARGET}x)",
            ),
            (
                ratio <= RSS_RATIO_TARGET,
                f"{result.backend}: peak RSS of a {big.size // MiB} MiB upload / "
                f"{small.size // MiB} MiB upload {ratio:.3f}x "
                f"({big.peak_upload_rss / MB:.1f} / {small.peak_upload_rss / MB:.1f} MB; "
                f"target <= {RSS_RATIO_TARGET}x)",
            ),
            (
                above < RSS_ABOVE_IDLE_TARGET_MB,
                f"{result.backend}: peak RSS above idle during a {big.size // MiB} MiB upload "
                f"{above:.1f} MB (target < {RSS_ABOVE_IDLE_TARGET_MB:.0f} MB)",
            ),
        ]
        for passed, text in checks:
            ok &= passed
            print(f"{'PASS' if passed else 'FAIL'}: {text}")
        reference_names: tuple[tuple[Path_, str], ...] = (
            ("reference", "the minimal server"),
            ("relay", "the byte relay"),
        )
        if big.has("disk", "download"):
            print(
                f"info: {label} download {big.ratio('download', base='disk'):.2f}x the bare raw "
                "read (no socket) in the same rounds"
            )
        for path, name in reference_names:
            if big.has(path):
                print(
                    f"info: {label} {name} in the same rounds: upload "
                    f"{big.ratio('upload', path):.2f}x, download "
                    f"{big.ratio('download', path):.2f}x {result.baseline}"
                )
    return ok

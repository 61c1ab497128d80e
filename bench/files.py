"""Upload/download benchmark: Echora against direct S3 (SeaweedFS) and raw disk.

    .venv/bin/python bench/files.py [--big-mb 512] [--small-kb 10] [--count 200]

One run starts an embedded PostgreSQL and a SeaweedFS ``weed mini`` (temporary
directories, free 127.0.0.1 ports), creates a user with an API token, then for each
backend starts ``python -m echora_server serve`` as a subprocess (S3 first, then
ECHORA_STORAGE=local; default part size, upload limit above the big file) and measures,
side by side and interleaved round by round (the order rotates):

1. upload of a --mid-mb and a --big-mb random file, streamed from disk by an aiohttp
   client (raw body with Content-Length, 1 MiB reads), against a direct aiobotocore
   sequential multipart upload of the same file (same part size) -- or, for the local
   backend, a raw copy in 1 MiB chunks to a file in the same filesystem, then fsync;
2. download of each path's last upload (read in 1 MiB chunks and discarded), in rounds
   of their own after the upload rounds, against a direct GetObject read with
   ``iter_chunked(1 MiB)`` -- or a raw read in 1 MiB chunks (on the local backend both
   read from the disk: their pages are dropped first);
3. the server's RSS, sampled every 10 ms by a thread: idle (after a few small requests)
   and the peak during every upload of each size; and every party's CPU time;
4. the rate of --small-kb uploads and downloads at each --concurrency (Echora, and
   direct PutObject/GetObject for reference).

Throughputs are medians over --repeat runs after --warmup untimed rounds. The exit
status is 0 only when every target passes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from common import Processes, setup_cli
from files_infra import (
    DATABASE,
    MB,
    Account,
    CpuMeter,
    EchoraServer,
    RssSampler,
    S3Target,
    evict_from_page_cache,
    make_account,
    process_tree,
    remove_tree,
    start_echora,
    start_postgres,
    start_rawserve,
    start_reference,
    start_relay,
    start_seaweedfs,
)
from files_report import (
    Backend,
    BackendResult,
    Direction,
    MiB,
    Path_,
    Run,
    SizeResult,
    SmallResult,
    report,
)
from files_transfers import (
    DirectS3,
    EchoraClient,
    RawServedClient,
    ReferenceClient,
    Timed,
    Uploaded,
    rate,
    raw_read,
    raw_write,
)

PART_SIZE = 8 * MiB  # Echora's default ECHORA_S3_PART_SIZE; the direct client uses it too
T = TypeVar("T")
log = logging.getLogger("bench.files")


@dataclass(frozen=True)
class SourceFile:
    path: Path
    size: int
    sha256: str


def make_source(path: Path, size: int) -> SourceFile:
    """A file of ``size`` random bytes (left in the page cache by the writing)."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MiB))
            digest.update(chunk)
            file.write(chunk)
            left -= len(chunk)
    return SourceFile(path, size, digest.hexdigest())


class Bench:
    """The measurements of one backend (one Echora server) against its baseline (and,
    with --reference, the minimal server of bench/files_minimal.py and, for S3, the
    direct client through the byte relay of bench/files_relay.py)."""

    def __init__(
        self,
        args: argparse.Namespace,
        backend: Backend,
        server: EchoraServer,
        client: EchoraClient,
        direct: DirectS3,
        reference: ReferenceClient | None,
        relay: DirectS3 | None,
        raw: RawServedClient | None,
        rss: RssSampler,
        cpu: CpuMeter,
    ) -> None:
        self.args = args
        self.raw = raw
        self.backend = backend
        self.server = server
        self.client = client
        self.direct = direct
        self.reference = reference
        self.relay = relay
        self.rss = rss
        self.cpu = cpu
        self.scratch = server.data_dir / "raw"  # same filesystem as the server's files
        self.scratch.mkdir()
        self.result = BackendResult(backend)
        self._serial = 0

    def _name(self, stem: str) -> str:
        self._serial += 1
        return f"{stem}-{self._serial:04d}"

    @staticmethod
    async def _timed(value: T, work: Awaitable[Timed]) -> tuple[T, Timed]:
        return value, await work

    async def _settle(self) -> None:
        """Every timed transfer starts with SeaweedFS idle (see CpuMeter.settle)."""
        if self.backend == "s3":
            waited = await self.cpu.settle("store")
            log.debug("  store idle after %.1f s", waited)

    async def _measured(self, work: Awaitable[tuple[T, Timed]]) -> tuple[T, Run]:
        await self._settle()
        before = self.cpu.snapshot()
        value, timed = await work
        return value, Run(timed, self.cpu.since(before))

    def _drop_caches(self, path: Path) -> None:
        if self.backend == "local" and not self.args.hot_reads:
            evict_from_page_cache(path)

    # --- one path's upload and download ----------------------------------------------------

    async def _upload(self, path: Path_, source: SourceFile, sizes: SizeResult) -> tuple[Any, Run]:
        """Upload ``source`` along ``path``; (what its download needs, the run)."""
        if path == "echora":
            self.rss.begin()
            try:
                name = self._name("big") + ".bin"
                uploaded, run = await self._measured(self.client.upload_file(source.path, name))
            finally:
                window = self.rss.end()
            sizes.upload_windows.append(window)
            if uploaded.sha256 != source.sha256:
                raise RuntimeError(f"echora stored a different SHA-256 for {source.path.name}")
            log.info(
                "  %-18s %7.1f MB/s  peak RSS %.1f MB",
                "echora up",
                run.timed.mb_per_s,
                window.peak_rss / MB,
            )
            return uploaded, run
        if path == "reference":
            assert self.reference is not None
            name = self._name("ref")
            sha256, run = await self._measured(self.reference.upload_file(source.path, name))
            if sha256 != source.sha256:
                raise RuntimeError("the reference server saw different bytes")
            log.info("  %-18s %7.1f MB/s", "reference up", run.timed.mb_per_s)
            return name, run
        if path == "relay":
            assert self.relay is not None
            key = f"relay/{self._name('big')}"
            upload = self.relay.upload_file(source.path, key)
            _, run = await self._measured(self._timed(key, upload))
            log.info("  %-18s %7.1f MB/s", "relay up", run.timed.mb_per_s)
            return key, run

        async def baseline() -> tuple[str | Path, Timed]:
            if self.backend == "s3":
                key = f"direct/{self._name('big')}"
                return key, await self.direct.upload_file(source.path, key)
            copy = self.scratch / self._name("raw")
            return copy, await asyncio.to_thread(raw_write, source.path, copy)

        where, run = await self._measured(baseline())
        log.info("  %-18s %7.1f MB/s", f"{self.result.baseline} up", run.timed.mb_per_s)
        return where, run

    async def _download(self, path: Path_, handle: Any, size: int) -> list[tuple[Path_, Run]]:
        """The runs of ``path``'s download: on the local backend the baseline's is the raw
        read served to this client, and the bare raw read ("disk") follows it."""

        async def download() -> tuple[None, Timed]:
            if path == "echora":
                self._drop_caches(self.server.data_dir / "files")
                return None, await self.client.download(handle.url, size)
            if path == "reference":
                assert self.reference is not None
                self._drop_caches(self.server.data_dir / "minimal" / handle)
                return None, await self.reference.download(handle, size)
            if path == "relay":
                assert self.relay is not None
                return None, await self.relay.download(handle, size)
            if isinstance(handle, str):
                return None, await self.direct.download(handle, size)
            assert self.raw is not None
            self._drop_caches(handle)
            return None, await self.raw.download(handle.name, size)

        async def disk() -> tuple[None, Timed]:
            self._drop_caches(handle)
            return None, await asyncio.to_thread(raw_read, handle)

        _, run = await self._measured(download())
        label = self.result.baseline if path == "baseline" else path
        log.info("  %-18s %7.1f MB/s", f"{label} down", run.timed.mb_per_s)
        runs: list[tuple[Path_, Run]] = [(path, run)]
        if path == "baseline" and self.backend == "local":
            _, bare = await self._measured(disk())
            log.info("  %-18s %7.1f MB/s", "raw read (bare)", bare.timed.mb_per_s)
            runs.append(("disk", bare))
        return runs

    async def _check_served(self, uploaded: Uploaded, source: SourceFile) -> None:
        if await self.client.sha256(uploaded.url) != source.sha256:
            raise RuntimeError("echora served different bytes than were uploaded")

    async def _discard(self, path: Path_, handle: Any) -> None:
        """Remove a copy the baseline or the relay stored (Echora's stay, unlinked)."""
        if path not in ("baseline", "relay"):
            return
        if isinstance(handle, str):
            await self.direct.delete(handle)
        else:
            handle.unlink()

    async def transfers(self, source: SourceFile) -> None:
        """--warmup untimed rounds then --repeat timed ones of uploads along every path,
        then as many rounds of downloads of each path's last upload; the order of the
        paths rotates from round to round.

        Uploads and downloads are not interleaved: right after serving downloads,
        SeaweedFS spent 30-50% more CPU per GB on the next 512 MiB upload, whichever path
        made it, so every round's first upload was the slow one."""
        sizes = SizeResult(source.size)
        paths: list[Path_] = ["baseline", "echora"]
        if self.reference is not None:
            paths.append("reference")
        if self.relay is not None:
            paths.append("relay")
        rounds = self.args.warmup + self.args.repeat
        handles: dict[Path_, Any] = {}
        directions: tuple[Direction, ...] = ("upload", "download")
        for direction in directions:
            for round_ in range(rounds):
                warm_up = round_ < self.args.warmup
                log.info(
                    "%s %d MiB %ss, round %d/%d%s",
                    self.backend,
                    source.size // MiB,
                    direction,
                    round_ + 1,
                    rounds,
                    " (warm-up)" if warm_up else "",
                )
                shift = round_ % len(paths)
                for path in paths[shift:] + paths[:shift]:
                    if direction == "upload":
                        handle, run = await self._upload(path, source, sizes)
                        if path in handles:
                            await self._discard(path, handles[path])
                        handles[path] = handle
                        if not warm_up:
                            sizes.add(direction, path, run)
                    else:
                        for measured, run in await self._download(path, handles[path], source.size):
                            if not warm_up:
                                sizes.add(direction, measured, run)
            if direction == "upload":  # what the downloads will fetch, checked once
                await self._check_served(handles["echora"], source)
        for path, handle in handles.items():
            await self._discard(path, handle)
        self.result.sizes[source.size] = sizes

    # --- small files -------------------------------------------------------------------------

    async def warm_up_small(self, data: bytes, count: int = 5) -> None:
        for _ in range(count):
            uploaded = await self.client.upload_bytes(data, self._name("warm") + ".bin")
            await self.client.download(uploaded.url, len(data))
            key = f"direct/{self._name('warm')}"
            await self.direct.put(key, data)
            await self.direct.get(key)

    async def small_files(self, data: bytes) -> None:
        for concurrency in self.args.concurrency:
            small = await self._small_files_at(data, concurrency)
            log.info(
                "%s small c=%d: echora up %.0f/s down %.0f/s; direct up %s down %s",
                self.backend,
                concurrency,
                small.echora_up,
                small.echora_down,
                small.base_up,
                small.base_down,
            )
            self.result.small.append(small)

    def _small_requests(
        self, data: bytes, count: int
    ) -> tuple[Callable[[int], Awaitable[None]], ...]:
        """(echora upload, echora download, direct put, direct get) of request ``i``; each
        download fetches what the same ``i`` uploaded."""
        urls = [""] * count
        prefix = f"direct/{self._name('small')}"

        async def up(i: int) -> None:
            urls[i] = (await self.client.upload_bytes(data, f"small-{i}.bin")).url

        async def down(i: int) -> None:
            await self.client.download(urls[i], len(data))

        async def put(i: int) -> None:
            await self.direct.put(f"{prefix}/{i}", data)

        async def get(i: int) -> None:
            await self.direct.get(f"{prefix}/{i}")

        return up, down, put, get

    async def _small_files_at(self, data: bytes, concurrency: int) -> SmallResult:
        count = self.args.count
        up, down, put, get = self._small_requests(data, count)

        async def measured(request: Callable[[int], Awaitable[None]]) -> tuple[float, Run]:
            await self._settle()
            before = self.cpu.snapshot()
            per_second = await rate(count, concurrency, request)
            usage = self.cpu.since(before)
            return per_second, Run(Timed(count, usage.wall), usage)

        echora_up, up_run = await measured(up)
        echora_down, down_run = await measured(down)

        def ms(run: Run) -> dict[str, float]:
            return {role: 1000 * sec / count for role, sec in run.cpu.seconds.items()}

        small = SmallResult(
            concurrency, echora_up, echora_down, None, None, ms(up_run), ms(down_run)
        )
        if self.backend == "s3":
            small.base_up, put_run = await measured(put)
            small.base_down, get_run = await measured(get)
            small.base_up_cpu_ms, small.base_down_cpu_ms = ms(put_run), ms(get_run)
        return small

    # --- profiling ---------------------------------------------------------------------------

    async def profile(self, source: SourceFile, small: bytes, out_dir: Path) -> None:
        """Untimed extra work under ``py-spy record``: one big upload, its download, and
        --count small uploads and downloads at the highest --concurrency."""
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(py_spy).exists():
            log.warning("--profile: py-spy not found (pip install py-spy); not profiling")
            return
        ext = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[self.args.profile_format]
        scratch = SizeResult(source.size)
        uploaded: list[Uploaded] = []
        concurrency = max(self.args.concurrency)
        up, down, _, _ = self._small_requests(small, self.args.count)

        async def big_upload() -> None:
            uploaded.append((await self._upload("echora", source, scratch))[0])

        async def big_download() -> None:
            await self._download("echora", uploaded[0], source.size)

        async def small_uploads() -> None:
            await rate(self.args.count, concurrency, up)

        async def small_downloads() -> None:
            await rate(self.args.count, concurrency, down)

        for what, work in (
            ("upload", big_upload),
            ("download", big_download),
            ("small-upload", small_uploads),
            ("small-download", small_downloads),
        ):
            out = out_dir / f"{self.backend}-{what}.{ext}"
            argv = [py_spy, "record", "--pid", str(self.server.pid), "--rate", "250"]
            argv += ["--format", self.args.profile_format, "--output", str(out)]
            spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                await asyncio.sleep(1.0)  # py-spy attaches
                await work()
            finally:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    await asyncio.to_thread(spy.wait, 60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
        log.info("profiles written to %s", out_dir)


def server_settings(backend: Backend, target: S3Target, max_bytes: int) -> dict[str, str]:
    settings = {"ECHORA_STORAGE": backend, "ECHORA_MAX_UPLOAD_BYTES": str(max_bytes)}
    if backend == "s3":
        settings |= {
            "ECHORA_S3_ENDPOINT_URL": target.endpoint_url,
            "ECHORA_S3_REGION": target.region,
            "ECHORA_S3_BUCKET": target.bucket,
            "ECHORA_S3_PREFIX": "echora",
            "ECHORA_S3_ACCESS_KEY_ID": target.access_key,
            "ECHORA_S3_SECRET_ACCESS_KEY": target.secret_key,
        }
    return settings


async def run_backend(
    args: argparse.Namespace,
    backend: Backend,
    procs: Processes,
    workdir: Path,
    account: Account,
    target: S3Target,
    cpu: CpuMeter,
    sources: list[SourceFile],
    small: bytes,
) -> BackendResult:
    max_bytes = 2 * max(s.size for s in sources) + 2**30
    settings = server_settings(backend, target, max_bytes)
    server = await start_echora(backend, procs, workdir, account, settings, args.server_cmd)
    log.info("echora (%s) ready: pid %d, %s", backend, server.pid, server.base_url)
    cpu.watch("server", lambda: [server.pid])
    minimal = relay = rawserve = None
    try:
        if backend == "local":  # the local download baseline: the raw read, served
            rawserve = await start_rawserve(procs, workdir, server.data_dir / "raw")
            cpu.watch("rawserve", lambda: [rawserve.pid] if rawserve else [])
        if args.reference:
            minimal = await start_reference(backend, procs, workdir, target, server.data_dir)
            cpu.watch("reference", lambda: [minimal.pid] if minimal else [])
            if backend == "s3":
                relay = await start_relay(procs, workdir, target)
                cpu.watch("relay", lambda: [relay.pid] if relay else [])
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout))
            direct = await stack.enter_async_context(DirectS3.connect(target, PART_SIZE))
            relayed = None
            if relay is not None:
                relayed = await stack.enter_async_context(DirectS3.connect(relay.target, PART_SIZE))
            client = EchoraClient(session, server.base_url, account.token, account.workspace_id)
            reference = ReferenceClient(session, minimal.base_url) if minimal else None
            raw = RawServedClient(session, rawserve.base_url) if rawserve else None
            with RssSampler(server.pid, interval=args.rss_interval) as rss:
                bench = Bench(
                    args, backend, server, client, direct, reference, relayed, raw, rss, cpu
                )
                await bench.warm_up_small(small)
                bench.result.idle_rss = rss.idle(1.0)
                log.info("%s idle RSS %.1f MB", backend, bench.result.idle_rss / MB)
                for source in sources:  # the smaller first: its peak comes before any bigger
                    await bench.transfers(source)
                await bench.small_files(small)
                bench.result.after_rss = rss.last_rss
                if args.profile:
                    await bench.profile(sources[-1], small, args.profile)
                return bench.result
    finally:
        cpu.forget("server")
        cpu.forget("reference")
        cpu.forget("relay")
        cpu.forget("rawserve")
        for helper in (minimal, relay, rawserve):
            if helper is not None:
                procs.stop(helper.proc)
        procs.stop(server.proc)
        remove_tree(server.data_dir)


async def bench(
    args: argparse.Namespace, procs: Processes, workdir: Path, pg: Any, target: S3Target
) -> bool:
    started = time.perf_counter()
    account = await make_account(pg.get_uri(), pg.get_uri(DATABASE))
    cpu = CpuMeter()
    cpu.watch("store", lambda: [target.pid])
    cpu.watch("db", process_tree(pg.get_pid()))
    sources = [
        make_source(workdir / f"source-{mb}.bin", mb * MiB)
        for mb in sorted({args.mid_mb, args.big_mb})
    ]
    small = os.urandom(args.small_kb * 1024)
    results = [
        await run_backend(args, backend, procs, workdir, account, target, cpu, sources, small)
        for backend in args.backends
    ]
    return report(results, args, time.perf_counter() - started)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Echora upload/download benchmark against direct S3 and raw disk."
    )
    parser.add_argument("--big-mb", type=int, default=512, help="big file, MiB; default 512")
    parser.add_argument(
        "--mid-mb", type=int, default=16, help="the file the big one is compared to; default 16"
    )
    parser.add_argument("--small-kb", type=int, default=10, help="small files, KiB; default 10")
    parser.add_argument(
        "--count", type=int, default=200, help="small requests per figure; default 200"
    )
    parser.add_argument(
        "--concurrency", default="1,16", help="small-file concurrencies; default 1,16"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure; default 3")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first; default 1")
    parser.add_argument(
        "--backends", default="s3,local", help="comma-separated: s3, local; default both"
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also run bench/files_minimal.py (a minimal streaming server) in every round",
    )
    parser.add_argument(
        "--hot-reads",
        action="store_true",
        help="local backend: read from the page cache (default: drop the file's pages first)",
    )
    parser.add_argument(
        "--rss-interval", type=float, default=0.01, help="RSS sampling period, s; default 0.01"
    )
    parser.add_argument(
        "--server-cmd",
        default=f"{shlex.quote(sys.executable)} -m echora_server serve",
        help="command that starts an Echora server (to compare a variant); "
        "default: this python -m echora_server serve",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="at the end, one more big upload and download and a small-file burst per "
        "backend under py-spy record, written to this directory",
    )
    parser.add_argument(
        "--profile-format", choices=("flamegraph", "speedscope", "raw"), default="flamegraph"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.server_cmd = shlex.split(args.server_cmd)
    if set(args.backends) - {"s3", "local"} or not args.backends:
        parser.error("--backends takes s3 and/or local")
    if args.big_mb <= args.mid_mb or args.mid_mb < 1:
        parser.error("need --big-mb > --mid-mb >= 1")
    if args.repeat < 1 or args.warmup < 0 or args.count < 1 or not args.concurrency:
        parser.error("need --repeat >= 1, --warmup >= 0, --count >= 1, a concurrency")
    return args


def main() -> int:
    args = parse_args()
    setup_cli(log, args.verbose)  # Ctrl+C and SIGTERM both end in the cleanup below
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="echora-bench-files-"))
    procs = Processes()
    pg: Any = None
    try:
        log.info("starting PostgreSQL and SeaweedFS in %s", workdir)
        pg = start_postgres(workdir)
        # In the main thread: weed gets SIGTERM when the thread that started it ends.
        target = start_seaweedfs(workdir, procs)
        log.info("SeaweedFS at %s (pid %d)", target.endpoint_url, target.pid)
        ok = asyncio.run(bench(args, procs, workdir, pg, target))
        return 0 if ok else 1
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

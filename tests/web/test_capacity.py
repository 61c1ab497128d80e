"""``echora serve`` holds many connections: its descriptor limit is raised to the hard limit
(and logged), its listen queue takes a burst of connects, and the startup heap is frozen out
of the garbage collector's full passes."""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import time
import urllib.request
from pathlib import Path

from support.processes import echora_env, free_port, start_echora, stop

from echora_server.web.capacity import FULL_PASS_EVERY, LISTEN_BACKLOG, tune_collector

LOW_SOFT_LIMIT = 256


def _low_soft_limit() -> None:  # in the child, before exec
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))


def _open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def _listen_queue(port: int) -> int:
    """The backlog of the socket listening on ``port`` (ss shows it as Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])


def test_serve_raises_its_descriptor_limit_and_listens_with_a_deep_queue(
    database_url: str, tmp_path: Path
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > LOW_SOFT_LIMIT, "the test needs a hard limit above the low soft one"
    port = free_port()
    env = echora_env(
        ECHORA_DATABASE_URL=database_url,
        ECHORA_DATA_DIR=str(tmp_path / "data"),
        ECHORA_STORAGE="local",
        ECHORA_LISTEN=f"127.0.0.1:{port}",
        ECHORA_SWEEP_INTERVAL="0",
        ECHORA_LOG_FORMAT="json",
        ECHORA_LOG_LEVEL="info",
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = start_echora(
            "serve", env=env, stdout=subprocess.DEVNULL, stderr=log_file, preexec_fn=_low_soft_limit
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert _open_files_limits(process.pid) == (hard, hard)
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert _listen_queue(port) == min(LISTEN_BACKLOG, somaxconn) > 128
    finally:
        stop(process)
    lines = log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    limits = [e for e in events if e.get("event") == "open_files_limit"]
    assert len(limits) == 1
    assert limits[0]["limit"] == hard
    assert limits[0]["connections"] == hard - 256


def test_startup_objects_leave_the_collectors_full_passes() -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        survivor = [object()]  # alive from "startup" on
        tune_collector()
        assert gc.get_threshold() == (*thresholds[:2], FULL_PASS_EVERY)
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert not any(o is survivor for o in gc.get_objects(generation=2))
        later = [object()]  # what connections allocate stays collectable
        assert any(o is later for o in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)

"""Real processes for the tests: free ports, and the ``echora`` command run or started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

ECHORA = (sys.executable, "-m", "echora_server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def echora_env(**settings: str) -> dict[str, str]:
    """This environment without any ECHORA_* variable of its own, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHORA_")}
    env.update(settings)
    return env


def run_echora(
    *args: str, env: dict[str, str], stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``echora ARGS`` to its end, with ``env`` (see ``echora_env``)."""
    return subprocess.run(
        [*ECHORA, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def start_echora(*args: str, env: dict[str, str], **popen: Any) -> subprocess.Popen[Any]:
    return subprocess.Popen([*ECHORA, *args], env=env, **popen)


def stop(process: subprocess.Popen[Any], timeout: float = 30) -> int:
    """SIGTERM, then SIGKILL if it lingers; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)

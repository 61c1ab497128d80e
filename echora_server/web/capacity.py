"""What one process needs to hold many connections: descriptors, a listen backlog for a
burst of connects, and a garbage collector that does not rescan what lives for ever."""

from __future__ import annotations

import gc
import resource

import structlog

log = structlog.get_logger("echora.http")

# Connects waiting to be accepted (the kernel caps it at net.core.somaxconn): aiohttp's
# 128 overflows when thousands of sockets reconnect at once, and a dropped SYN waits 1 s.
LISTEN_BACKLOG = 4096
# Descriptors kept for everything but client sockets (database, storage, logs, files).
RESERVED_FDS = 256
# Young collections between two full passes (CPython's default is 10). Each full pass walks
# every live object, some 35 per idle WebSocket: at 10,000 sockets the default made 13
# passes of up to 0.9 s during one burst of connects, this makes 2. Cyclic garbage that
# reached the oldest generation waits longer, still bounded by the collector's own rule
# (a full pass once a quarter more objects have survived).
FULL_PASS_EVERY = 100


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one (every socket is a descriptor);
    returns the limit now in force, and says how many connections it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            log.warning("open_files_limit_not_raised", soft=soft, hard=hard, exc_info=True)
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    log.info("open_files_limit", limit=limit, connections=max(0, limit - RESERVED_FDS))
    return limit


def tune_collector() -> None:
    """Once the application has started: move every object alive now (modules, the app,
    the pool) out of the collector's sight, and make full passes rarer. A full pass walks
    every tracked object and stops the loop meanwhile: its pause grows with the number of
    connections, and without this the startup heap was rescanned by every one."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_PASS_EVERY)

"""Running the application: aiohttp's runner with two changes it has no option for (errors its
HTTP parser raises answer in the API's error shape, then close cleanly; no response names the
server's software), and a graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from echora_server.config import CONFIG
from echora_server.core.errors import error_body
from echora_server.core.metrics import METRICS
from echora_server.web.capacity import (
    LISTEN_BACKLOG,
    raise_open_files_limit,
    tune_collector,
)
from echora_server.web.ops import LIFECYCLE, METRICS_LISTENER, get_metrics

log = structlog.get_logger("echora.http")

# After SIGTERM, new connections are still taken this long (at most a third of the grace):
# a load balancer's next health check sees /readyz answer 503 and stops sending.
DRAIN_SECONDS = 2.0
CANCEL_SECONDS = 1.0
# After a refused request the client may still be sending: closing at once would reset the
# connection under the answer (RST), so read and drop its bytes for this long first.
LINGER_SECONDS = 2.0


async def drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: runs after aiohttp set ``Server: Python/x aiohttp/y``."""
    response.headers.popall(hdrs.SERVER, None)


class _Unbranded(web.Response):
    """For answers no application signal sees (the parser's): aiohttp adds ``Server`` here."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


class ShapedErrorHandler(RequestHandler):
    """aiohttp's connection handler; what its parser refuses gets the error shape."""

    _refused = False
    _peer_done: asyncio.Event | None = None

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):  # a handler's failure: aiohttp's own path
            plain = super().handle_error(request, status, exc, message)
            assert isinstance(plain, web.Response)
            response = _Unbranded(status=plain.status, body=plain.body, headers=plain.headers)
            response.force_close()
            return response
        # Never the parser's message: it quotes the offending bytes, up to the whole buffer.
        reason = type(exc).__name__
        log.info("http_request_refused", status=status, reason=reason)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already under way")
        self._refused = True
        self._peer_done = asyncio.Event()
        body = error_body("malformed_request", "The request is not valid HTTP.", {"reason": reason})
        response = _Unbranded(
            status=status,
            text=json.dumps(body),
            content_type="application/json",
            headers={hdrs.CACHE_CONTROL: "no-store", hdrs.CONNECTION: "close"},
        )
        response.force_close()
        return response

    async def finish_response(
        self, request: Any, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        finished = await super().finish_response(request, resp, start_time)
        if self._refused:
            await self._linger()
        return finished

    async def _linger(self) -> None:
        """Half-close once the answer is written, then drop what the client still sends
        until it closes too (or LINGER_SECONDS pass): a close with unread bytes is a reset."""
        transport = self.transport
        if transport is None or transport.is_closing() or not transport.can_write_eof():
            return
        self._close = True  # data_received drops what follows
        transport.write_eof()  # after the buffered answer
        assert self._peer_done is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                await self._peer_done.wait()

    def eof_received(self) -> None:
        if self._peer_done is not None:
            self._peer_done.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._peer_done is not None:
            self._peer_done.set()
        super().connection_lost(exc)


class ShapedErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ShapedErrorHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The same server aiohttp built, with our connection handler.
        return ShapedErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    grace: float,
    announce: Callable[[str], None],
) -> None:
    """``web.run_app`` with our runner; on SIGINT or SIGTERM, the shutdown described at
    ``shut_down``, done within ``grace`` seconds."""
    asyncio.run(_serve(app, host, port, grace, announce))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    grace: float,
    announce: Callable[[str], None],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # What cancelled handlers get to unwind once the grace is over (their storage cleanups
    # are owned tasks: closing the storage waits for them).
    raise_open_files_limit()
    runner = Runner(app, access_log=None, shutdown_timeout=CANCEL_SECONDS)
    await runner.setup()
    metrics = metrics_runner(app)
    try:
        tune_collector()
        site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
        await site.start()
        announce(site.name)
        if metrics is not None:
            await metrics.setup()
            config = app[CONFIG]
            assert config.metrics_listen is not None
            metrics_host, _, metrics_port = config.metrics_listen.rpartition(":")
            metrics_site = web.TCPSite(metrics, metrics_host.strip("[]"), int(metrics_port))
            await metrics_site.start()
            log.info("metrics_listening", address=metrics_site.name)
        await stop.wait()
        await shut_down(app, runner, grace)
    finally:
        await runner.cleanup()  # a no-op after shut_down
        if metrics is not None:
            await metrics.cleanup()


def metrics_runner(app: web.Application) -> web.AppRunner | None:
    """ECHORA_METRICS_LISTEN: /metrics alone, on an address of its own (the main listener
    then answers it 404), sharing the application's registry."""
    config = app[CONFIG]
    if not config.metrics_listen:
        return None

    async def metrics(request: web.Request) -> web.StreamResponse:
        request[METRICS_LISTENER] = True
        return await get_metrics(request)

    only = web.Application()
    only[CONFIG], only[METRICS] = config, app[METRICS]
    only.router.add_get("/metrics", metrics)
    return web.AppRunner(only, access_log=None)


async def shut_down(app: web.Application, runner: web.AppRunner, grace: float) -> None:
    """/readyz answers 503 at once; new connections are still taken for a moment, while load
    balancers notice; then no more, WebSockets close with 1001, and in-flight requests have
    the rest of ``grace`` before they are cancelled (a cancelled upload leaves nothing: its
    cleanup is shielded). Each step is logged.
    aiohttp's own shutdown would stop reading request bodies at once (a closing connection
    drops what arrives), so uploads could never finish: idle connections are closed here,
    busy ones left to finish, and only then does aiohttp's shutdown run."""
    started = time.monotonic()
    deadline = started + grace
    app[LIFECYCLE].draining = True
    log.info("shutdown_started", grace_seconds=grace)
    await asyncio.sleep(min(DRAIN_SECONDS, grace / 3))
    for site in list(runner.sites):
        await site.stop()
    await runner.shutdown()  # on_shutdown: WebSockets close with 1001
    log.info("shutdown_stopped_accepting", requests_in_flight=len(_busy(runner)))
    # Polled: aiohttp's connections signal nothing when their request ends.
    while _busy(runner) and time.monotonic() < deadline - CANCEL_SECONDS:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    left = len(_busy(runner))
    log.info("shutdown_requests_done", cancelled=left)
    await runner.cleanup()
    log.info("shutdown_finished", seconds=round(time.monotonic() - started, 2))


def _busy(runner: web.AppRunner) -> list[RequestHandler]:
    """Connections in the middle of a request; the idle ones are closed on the way."""
    server = runner.server
    if server is None:
        return []
    busy = []
    for handler in server.connections:
        if handler._request_in_progress:
            busy.append(handler)
        else:
            handler.close()
    return busy

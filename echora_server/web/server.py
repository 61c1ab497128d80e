"""Running the application: aiohttp's runner with two changes it has no option for. Errors its
HTTP parser raises (garbage, a lying ``Content-Length``) answer in the API's error shape, then
close cleanly; and no response names the server's software or versions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from echora_server.core.errors import error_body

log = structlog.get_logger("echora.http")

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
    shutdown_timeout: float,
    announce: Callable[[], None],
) -> None:
    """``web.run_app`` with our runner: serve until SIGINT or SIGTERM, then shut down."""
    asyncio.run(_serve(app, host, port, shutdown_timeout, announce))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    shutdown_timeout: float,
    announce: Callable[[], None],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = Runner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        announce()
        await stop.wait()
    finally:
        await runner.cleanup()

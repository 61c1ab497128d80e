"""A reverse proxy in front of the store with CORS rules of its own, as a self-hoster's nginx
or a bucket's CORS configuration would have them (SeaweedFS lets every origin in).

    async with CorsGate(s3_server.endpoint_url, allowed={"http://127.0.0.1:8080"}) as gate:
        gate.url          # what ECHORA_S3_PUBLIC_URL points at
        gate.preflights   # the origins of the preflights answered, in order
        gate.methods      # what allowed origins may send: POST and PUT unless changed

Requests other than a preflight go to the store as they came, their Host header included
(a presigned PUT signs the host its URL names: the gate's); the store's own CORS headers are
replaced by the gate's.
"""

from __future__ import annotations

from types import TracebackType

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}


class CorsGate:
    def __init__(self, upstream: str, *, allowed: set[str]) -> None:
        self.upstream = upstream.rstrip("/")
        self.allowed = allowed
        self.preflights: list[str] = []
        self.methods = {"POST", "PUT"}
        self.forwarded: list[str] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def _cors(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin", "")
        if origin not in self.allowed:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(sorted(self.methods)),
            "Access-Control-Allow-Headers": "*",
            "Vary": "Origin",
        }

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            self.preflights.append(request.headers.get("Origin", ""))
            cors = self._cors(request)
            return web.Response(status=200 if cors else 403, headers=cors)
        assert self._session is not None
        self.forwarded.append(f"{request.method} {request.path}")
        headers = CIMultiDict(
            (name, value) for name, value in request.headers.items() if name.lower() not in _HOP
        )
        headers["Host"] = request.host
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            kept = {
                name: value
                for name, value in answer.headers.items()
                if name.lower() not in _HOP and not name.lower().startswith("access-control-")
            }
            return web.Response(
                status=answer.status, body=body, headers={**kept, **self._cors(request)}
            )

    async def __aenter__(self) -> CorsGate:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

"""The baseline for bench/ws_fanout.py: the simplest aiohttp broadcast server.

One route, ``/ws``: every socket joins a set; every text frame received from any socket is
sent to every socket in the set with a plain ``await ws.send_str(data)`` loop. The only
addition is a ``{"type":"hello"}`` frame on connect, sent after the socket joined the set,
so the benchmark knows when a subscriber is ready (as Echora's ``hello`` tells it).

    python bench/bare_broadcast.py --port 8090
"""

from __future__ import annotations

import argparse

from aiohttp import WSMsgType, web

SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])
HELLO = '{"type":"hello"}'


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    sockets = request.app[SOCKETS]
    ws = web.WebSocketResponse(max_msg_size=64 * 1024)
    await ws.prepare(request)
    sockets.add(ws)
    try:
        await ws.send_str(HELLO)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                for peer in list(sockets):
                    await peer.send_str(msg.data)
    finally:
        sockets.discard(ws)
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    app = web.Application()
    app[SOCKETS] = set()
    app.router.add_get("/ws", ws_handler)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

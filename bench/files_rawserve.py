"""The raw read served: the local-disk download baseline of ``bench/files.py``.

    python bench/files_rawserve.py --port P --root DIR

``GET /<name>`` answers the file ``DIR/<name>`` with a Content-Length and its bytes read
in 1 MiB reads, each written to the socket with ``sendall``: a thread per connection,
blocking calls, no event loop, no framework. It is the raw read of the disk plus the one
thing any download must add, the bytes crossing a loopback socket to the same client that
reads Echora's downloads (as the S3 baseline's GetObject crosses one from SeaweedFS).
"""

from __future__ import annotations

import argparse
import re
import socket
import threading
from pathlib import Path

CHUNK = 1024 * 1024
_REQUEST = re.compile(rb"GET /([A-Za-z0-9_.-]+) HTTP/1\.1\r\n")


def serve(conn: socket.socket, root: Path) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:  # one request per connection, as the client is told
            data = conn.recv(65536)
            if not data:
                return
            head += data
        match = _REQUEST.match(head)
        path = root / match[1].decode() if match else None
        if path is None or not path.is_file():
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        with path.open("rb", buffering=0) as file:
            size = path.stat().st_size
            conn.sendall(
                f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode()
            )
            while chunk := file.read(CHUNK):
                conn.sendall(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    with socket.create_server(("127.0.0.1", args.port)) as listener:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn, args.root), daemon=True).start()


if __name__ == "__main__":
    main()

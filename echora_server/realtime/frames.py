"""Server-to-client text frames as bytes (RFC 6455 5.2), so the hub encodes an event once. Valid
only without extensions: the endpoint never negotiates permessage-deflate; servers never mask."""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81  # FIN bit set, opcode 0x1 (text)


def text_frame(payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        header = bytes((_FIN_TEXT, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, size)
    return header + payload

"""WebSocket frames as bytes on the wire (RFC 6455, section 5.2), for server-to-client text.

The hub encodes an event once and writes the same bytes to every subscribed socket, and can
write several frames to one socket in a single call. This is only valid on sockets without
an extension: the endpoint never negotiates permessage-deflate, and a server never masks.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81  # FIN bit set, opcode 0x1 (text)


def text_frame(payload: bytes) -> bytes:
    """One complete, unmasked, final text frame carrying ``payload`` (UTF-8)."""
    size = len(payload)
    if size < 126:
        header = bytes((_FIN_TEXT, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, size)
    return header + payload

"""JSON shape of a read position's answer (also the ``channel.read`` event's body)."""

from __future__ import annotations

from typing import Any

from echora_server.channels.shapes import ReadStateFields, read_state_json
from echora_server.db.records import ReadState


class ChannelReadState(ReadStateFields):
    """My read state of one channel, after the request."""

    channel_id: int


def channel_read_state_json(channel_id: int, state: ReadState) -> dict[str, Any]:
    return {"channel_id": channel_id, **read_state_json(state)}

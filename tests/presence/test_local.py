"""The pure parts of presence: what one process's sockets say of a user, and coalescing."""

from __future__ import annotations

import asyncio

from echora_server.presence.local import LocalSockets
from echora_server.presence.throttle import Throttle


def test_online_while_one_socket_is_active_away_when_all_are_idle() -> None:
    here = LocalSockets()
    a, b = object(), object()
    assert here.add(1, a) and here.status(1) == "online"
    assert not here.add(1, b)  # a second socket changes nothing
    assert not here.set_away(1, a, True)  # b is still active
    assert here.set_away(1, b, True) and here.status(1) == "away"
    assert here.set_away(1, a, False) and here.status(1) == "online"
    assert not here.set_away(1, object(), True)  # not one of its sockets
    assert here.status(2) is None and here.users() == [1]


def test_a_closed_socket_lingers_with_the_state_it_had() -> None:
    here = LocalSockets()
    active, idle = object(), object()
    here.add(1, active)
    here.add(1, idle)
    here.set_away(1, idle, True)
    assert here.remove(1, active) is False  # it was active: online until the grace is over
    assert here.status(1) == "online"
    assert here.remove(1, active) is None  # only once
    assert here.linger_over(1, False) and here.status(1) == "away"
    assert here.remove(1, idle) is True and here.status(1) == "away"
    new = object()
    assert here.add(1, new) and here.status(1) == "online"  # a reload: back meanwhile
    assert here.remove(1, new) is False
    assert not here.linger_over(1, True)  # the idle socket's grace ends: still lingering online
    assert here.linger_over(1, False) and here.status(1) is None
    assert here.users() == []  # nothing kept of a user who is gone


async def test_the_first_value_goes_at_once_then_the_latest_per_interval() -> None:
    sent: list[tuple[int, str]] = []
    throttle: Throttle[int, str] = Throttle(0.05, lambda k, v: sent.append((k, v)))
    throttle.push(1, "online")
    throttle.push(2, "online")
    assert sent == [(1, "online"), (2, "online")]
    throttle.push(1, "away")
    throttle.push(1, "online")
    throttle.push(1, "away")
    assert len(sent) == 2
    await asyncio.sleep(0.08)
    assert sent[2:] == [(1, "away")]  # one, the latest
    await asyncio.sleep(0.08)
    assert len(sent) == 3 and len(throttle) == 0  # quiet: the windows closed
    throttle.push(1, "offline")
    assert sent[3:] == [(1, "offline")]
    throttle.close()
    assert len(throttle) == 0


async def test_no_interval_sends_every_value() -> None:
    sent: list[str] = []
    throttle: Throttle[int, str] = Throttle(0, lambda k, v: sent.append(v))
    for value in ("online", "away", "online"):
        throttle.push(1, value)
    assert sent == ["online", "away", "online"] and len(throttle) == 0

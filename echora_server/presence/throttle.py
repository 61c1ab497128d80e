"""Coalescing per key: the first value goes out at once, then at most one per ``interval``
(the latest pushed meanwhile). A user flickering between states costs their observers one
frame a second, and the last state always arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Window(Generic[V]):
    handle: asyncio.TimerHandle
    pending: V | None = None
    waiting: bool = False


class Throttle(Generic[K, V]):
    def __init__(self, interval: float, deliver: Callable[[K, V], None]) -> None:
        self.interval = interval
        self._deliver = deliver
        self._windows: dict[K, _Window[V]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def push(self, key: K, value: V) -> None:
        if self.interval <= 0:
            self._deliver(key, value)
            return
        window = self._windows.get(key)
        if window is None:
            self._open(key)
            self._deliver(key, value)
        else:
            window.pending, window.waiting = value, True

    def _open(self, key: K) -> None:
        loop = asyncio.get_running_loop()
        self._windows[key] = _Window(loop.call_later(self.interval, self._close, key))

    def _close(self, key: K) -> None:
        window = self._windows.pop(key)
        if window.waiting:
            self._open(key)  # the next one waits a whole interval again
            self._deliver(key, window.pending)  # type: ignore[arg-type]

    def close(self) -> None:
        for window in self._windows.values():
            window.handle.cancel()
        self._windows.clear()

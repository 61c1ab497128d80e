"""What this process's sockets say of their users. A user is online here while one of their
sockets is active, away while every one of them said it was idle, and neither once the last
has been gone for the grace: a socket that closes lingers, with the state it had, so a
reload or a short cut changes nothing anywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Here = Literal["online", "away"] | None


@dataclass
class _User:
    sockets: dict[object, bool] = field(default_factory=dict)  # socket -> away
    lingering_online: int = 0
    lingering_away: int = 0

    def status(self) -> Here:
        if self.lingering_online or any(not away for away in self.sockets.values()):
            return "online"
        if self.lingering_away or self.sockets:
            return "away"
        return None


class LocalSockets:
    """Each method answers whether the user's status here changed."""

    def __init__(self) -> None:
        self._users: dict[int, _User] = {}

    def status(self, user_id: int) -> Here:
        user = self._users.get(user_id)
        return user.status() if user is not None else None

    def users(self) -> list[int]:
        return list(self._users)

    def add(self, user_id: int, socket: object) -> bool:
        user = self._users.setdefault(user_id, _User())
        before = user.status()
        user.sockets[socket] = False  # a new socket is active until it says otherwise
        return user.status() != before

    def set_away(self, user_id: int, socket: object, away: bool) -> bool:
        user = self._users.get(user_id)
        if user is None or socket not in user.sockets:
            return False
        before = user.status()
        user.sockets[socket] = away
        return user.status() != before

    def remove(self, user_id: int, socket: object) -> bool | None:
        """The socket closed: it lingers (nothing changes) until ``linger_over`` is called
        with what this returns, its away state; None: it was not here."""
        user = self._users.get(user_id)
        if user is None or socket not in user.sockets:
            return None
        away = user.sockets.pop(socket)
        if away:
            user.lingering_away += 1
        else:
            user.lingering_online += 1
        return away

    def linger_over(self, user_id: int, away: bool) -> bool:
        user = self._users.get(user_id)
        if user is None:
            return False
        before = user.status()
        if away:
            user.lingering_away = max(0, user.lingering_away - 1)
        else:
            user.lingering_online = max(0, user.lingering_online - 1)
        self._forget_if_empty(user_id, user)
        return user.status() != before

    def _forget_if_empty(self, user_id: int, user: _User) -> None:
        if user.status() is None:
            del self._users[user_id]

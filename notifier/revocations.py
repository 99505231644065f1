"""Users disconnected on demand: their tokens issued up to that moment are refused for a while.

A revocation is stored first (it must outlast a restart and reach nodes started later), then
signalled to every node, which closes the user's connections there and keeps the revocation
in memory: checking a token on connect is one dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .auth import Claims
from .broker import Broker
from .clock import Clock, millis
from .errors import ErrorCode, NotifierError
from .logs import get_logger
from .store import Store

log = get_logger("notifier.revocations")

SIGNAL = "revoke"


class Revocations:
    def __init__(
        self, store: Store, broker: Broker, clock: Clock, duration_seconds: float, leeway_seconds: float = 0.0
    ) -> None:
        self._store = store
        # A token may say it was issued up to the leeway ahead of our clock (skew): one issued
        # before the revocation by its issuer's clock is refused too.
        self._leeway_ms = int(leeway_seconds * 1000)
        self._broker = broker
        self._clock = clock
        self._duration_ms = int(duration_seconds * 1000)
        self._revoked: dict[str, tuple[int, int]] = {}  # user -> (revoked_at, until), in ms
        # Told which user's connections here must be checked again (and closed if revoked).
        self.on_revoked: Callable[[str], None] = lambda user_id: None

    async def load(self) -> None:
        now = millis(self._clock.now())
        until = now + self._duration_ms  # an upper bound: entries are rechecked when used
        self._revoked = {user: (at, until) for user, at in (await self._store.revocations(now)).items()}

    async def revoke(self, user_id: str) -> dict[str, Any]:
        """Close the user's connections everywhere; refuse their older tokens for a while."""
        revoked_at = millis(self._clock.now())
        until = revoked_at + self._duration_ms
        await self._store.revoke_user(user_id, revoked_at, until)  # durable before anything
        await self._broker.signal(SIGNAL, {"user_id": user_id, "revoked_at": revoked_at, "until": until})
        log.info("user_revoked", user=user_id, until=until)
        return {"user_id": user_id, "revoked_at": revoked_at, "revoked_until": until}

    def received(self, data: dict[str, Any]) -> None:
        """The signal, on every node."""
        user_id = str(data["user_id"])
        self._revoked[user_id] = (int(data["revoked_at"]), int(data["until"]))
        self.on_revoked(user_id)

    async def reload(self) -> None:
        """After signals may have been missed: the store has every revocation."""
        before = dict(self._revoked)
        await self.load()
        for user_id, entry in self._revoked.items():
            if before.get(user_id, (0, 0))[0] != entry[0]:
                self.on_revoked(user_id)

    def revoked(self, claims: Claims) -> bool:
        entry = self._revoked.get(claims.sub)
        if entry is None:
            return False
        revoked_at, until = entry
        if millis(self._clock.now()) >= until:
            del self._revoked[claims.sub]
            return False
        # Tokens carry whole seconds: one issued in the revocation's own second is refused.
        return claims.issued_at is None or claims.issued_at * 1000 - self._leeway_ms <= revoked_at

    def check(self, claims: Claims) -> None:
        if self.revoked(claims):
            raise NotifierError(
                ErrorCode.AUTH_REVOKED, "this token was revoked (the user was disconnected); get a new one"
            )

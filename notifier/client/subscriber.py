"""`Subscriber`: an end user's connection to `/`, which rejoins its rooms from where it was
and drops duplicates."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .connection import (
    ClientConnection,
    EventHandler,
    NotifierClientError,
    TokenSource,
    log,
    maybe_await,
)

# How many recent event ids a client remembers to drop duplicates.
_SEEN_IDS = 4096
# A report of receipts refused over the connection's rate limit goes again after this long.
_RATE_LIMITED_PAUSE = 0.5


class Subscriber(ClientConnection):
    """An end-user connection that never misses an event in the rooms it follows.

    It keeps each room's last position; every (re)connect sends those positions in the auth
    payload, so the server rejoins the rooms and replays what was missed before live events.
    A room whose history could not be replayed is reported to `on_reset` handlers: reload
    that room's state from the REST API (or `task.get`, `notifications.list`).
    """

    namespace = "/"

    def __init__(self, url: str, token: TokenSource, *, receipts: bool = True, **options: Any) -> None:
        """`receipts`: report each notification received (`notifications.delivered`), the
        ids of one loop iteration in one call."""
        super().__init__(url, token, **options)
        self._receipts = receipts
        self._delivered: list[str] = []
        self._reporting = False  # a report of delivered receipts is on its way
        self._reports: set[asyncio.Task[None]] = set()
        # Each room followed, with the last position seen (None: a live-only room).
        self.positions: dict[str, dict[str, Any] | None] = {}
        self.presence_rooms: set[str] = set()  # rooms whose presence changes we follow
        self.session: dict[str, Any] | None = None
        self._handlers: dict[str, list[EventHandler]] = {}
        self._reset_handlers: list[Callable[[str, str], Any]] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.sio.on("*", self._on_event, namespace=self.namespace)

    async def _auth(self) -> dict[str, Any]:
        auth = await super()._auth()
        if self.positions:
            auth["positions"] = {room: dict(pos) if pos else None for room, pos in self.positions.items()}
        if self.presence_rooms:
            auth["presence"] = sorted(self.presence_rooms)
        return auth

    def on(self, event_type: str, handler: EventHandler) -> Callable[[], None]:
        """Call `handler(envelope)` for each event of the type ('*' for all); returns an off()."""
        self._handlers.setdefault(event_type, []).append(handler)
        return lambda: self._handlers[event_type].remove(handler)

    def on_reset(self, handler: Callable[[str, str], Any]) -> None:
        """`handler(room, reason)` when a room's missed events could not be replayed."""
        self._reset_handlers.append(handler)

    async def subscribe(self, rooms: list[str], *, presence: bool = False) -> dict[str, Any]:
        """Join rooms; returns the per-room results (joined, position, task state or error).
        `presence`: also receive `presence.joined` / `presence.left` for them."""
        since = {room: self.positions[room] for room in rooms if self.positions.get(room)}
        payload: dict[str, Any] = {"rooms": rooms}
        if since:
            payload["since"] = since
        if presence:
            payload["presence"] = True
        reply = await self.call("subscribe", payload)
        await self._apply_room_results(reply["rooms"])
        if presence:
            self.presence_rooms.update(
                room for room, result in reply["rooms"].items() if result.get("joined")
            )
        results: dict[str, Any] = reply["rooms"]
        return results

    async def unsubscribe(self, rooms: list[str]) -> dict[str, Any]:
        reply = await self.call("unsubscribe", {"rooms": rooms})
        for room in rooms:
            self.positions.pop(room, None)
            self.presence_rooms.discard(room)
        results: dict[str, Any] = reply["rooms"]
        return results

    async def _apply_room_results(self, results: dict[str, Any]) -> None:
        for room, result in results.items():
            if not result.get("joined"):
                continue
            if result.get("live_only"):
                self.positions[room] = None
                continue
            known = self.positions.get(room)
            server = {"epoch": result["epoch"], "offset": result["offset"]}
            if result.get("recovered") is False:
                self.positions[room] = server
                for handler in self._reset_handlers:
                    await maybe_await(handler(room, result.get("reason", "")))
            elif known is None or known["epoch"] != server["epoch"]:
                self.positions[room] = server

    async def _on_expiring(self, envelope: Any = None) -> None:
        await super()._on_expiring(envelope)
        await self._on_event("auth.expiring", envelope)  # handlers see it too

    async def _on_event(self, event: str, envelope: Any = None) -> None:
        if not isinstance(envelope, dict):
            return
        if event == "session":
            self.session = envelope.get("data")
            await self._apply_room_results((self.session or {}).get("rooms", {}))
        elif not self._accept(envelope):
            return
        if event == "notification" and self._receipts and isinstance(envelope.get("data"), dict):
            self._received(str(envelope["data"].get("id", "")))
        if event == "rooms.revoked":  # not ours any more: not rejoined on reconnect
            for room in (envelope.get("data") or {}).get("rooms", []):
                self.positions.pop(room, None)
                self.presence_rooms.discard(room)
        for handler in [*self._handlers.get(event, ()), *self._handlers.get("*", ())]:
            try:
                await maybe_await(handler(envelope))
            except Exception:
                log.exception("subscriber_handler_failed", type=event)

    async def close(self) -> None:
        for task in list(self._reports):
            task.cancel()
        await asyncio.gather(*self._reports, return_exceptions=True)
        await super().close()

    async def seen(self, ids: list[str]) -> dict[str, Any]:
        """This device displayed them: their escalations are cancelled."""
        return await self.call("notifications.seen", {"ids": ids})

    async def read(self, ids: list[str]) -> dict[str, Any]:
        return await self.call("notifications.mark_read", {"ids": ids})

    async def actioned(self, notification_id: str, action: str) -> dict[str, Any]:
        return await self.call("notifications.actioned", {"id": notification_id, "action": action})

    def _received(self, notification_id: str) -> None:
        if not notification_id:
            return
        self._delivered.append(notification_id)
        if len(self._delivered) == 1 and not self._reporting:
            asyncio.get_running_loop().call_soon(self._send_delivered)

    def _send_delivered(self) -> None:
        """One report in flight at a time: what arrives meanwhile goes in the next, so a
        burst of notifications costs a few calls, not one per loop iteration (which a
        connection's rate limit would refuse)."""
        if self._reporting or not self._delivered:
            return
        ids, self._delivered = self._delivered[:1000], self._delivered[1000:]
        self._reporting = True
        task = asyncio.ensure_future(self._report_delivered(ids))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report_delivered(self, ids: list[str]) -> None:
        try:
            await self.call("notifications.delivered", {"ids": ids})
        except NotifierClientError as exc:
            if exc.code == "RATE_LIMITED":  # later, with what came since
                self._delivered[:0] = ids
                await asyncio.sleep(_RATE_LIMITED_PAUSE)
            else:  # a receipt is best effort: the event itself was handled
                log.debug("receipt_not_sent", error=str(exc))
        except Exception as exc:
            log.debug("receipt_not_sent", error=str(exc))
        finally:
            self._reporting = False
        self._send_delivered()

    def _accept(self, envelope: dict[str, Any]) -> bool:
        """Drop what was seen already (by id, and by offset within a room's epoch)."""
        event_id = envelope.get("id")
        if event_id in self._seen:
            return False
        if event_id:
            self._seen[event_id] = None
            if len(self._seen) > _SEEN_IDS:
                self._seen.popitem(last=False)
        room, offset = envelope.get("room"), envelope.get("offset")
        known = self.positions.get(room) if room is not None else None
        if offset is None or not known:
            return True  # not kept, or a room seen through project:* (ids deduplicate)
        if known["epoch"] == envelope.get("epoch") and offset <= known["offset"]:
            # Behind our position: a duplicate, unless it is a replay of something we never had
            # (a room we were in already, recovered with `since` after live events came).
            return envelope.get("replayed") is True
        self.positions[str(room)] = {"epoch": envelope["epoch"], "offset": offset}
        return True

"""Python clients for other processes: `Subscriber` (the `/` namespace) and `Worker` (`/workers`).

Both sit on `socketio.AsyncClient`, which already reconnects with backoff; what they add is
what everyone hand-writes: a fresh token on every reconnect, rejoining rooms from where they
were, dropping duplicates, and typed errors that carry the server's code.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

log = logging.getLogger("notifier.client")

TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
EventHandler = Callable[[dict[str, Any]], Any]

# How many recent event ids a client remembers to drop duplicates.
_SEEN_IDS = 4096


class NotifierClientError(Exception):
    """The server answered with `{ok: false, error: {code, message}}` or refused the connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def _resolve_token(source: TokenSource) -> str:
    if isinstance(source, str):
        return source
    value = source()
    if inspect.isawaitable(value):
        value = await value
    return str(value)


def _raise_for_error(reply: Any) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise NotifierClientError("INTERNAL", f"unexpected reply {reply!r}")
    if not reply.get("ok"):
        error = reply.get("error") or {}
        raise NotifierClientError(error.get("code", "INTERNAL"), error.get("message", ""))
    return reply


class _Connection:
    """What both clients share: connecting with a token and surfacing refusals as errors."""

    namespace = "/"

    def __init__(self, url: str, token: TokenSource, *, transports: list[str] | None = None,
                 reconnection_delay: float = 0.5, reconnection_delay_max: float = 5.0) -> None:
        self.url = url
        self._token = token
        self._transports = transports
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max,
        )
        self._refusal: dict[str, Any] | None = None
        self.sio.on("connect_error", self._on_connect_error, namespace=self.namespace)

    async def _auth(self) -> dict[str, Any]:
        return {"token": await _resolve_token(self._token)}

    def _on_connect_error(self, data: Any) -> None:
        self._refusal = data if isinstance(data, dict) else {"message": str(data)}

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, or raise NotifierClientError with the server's refusal code."""
        self._refusal = None
        try:
            await self.sio.connect(
                self.url, auth=self._auth, namespaces=[self.namespace],
                transports=self._transports, wait_timeout=timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            await self.sio.disconnect()
            refusal = self._refusal or {}
            detail = refusal.get("data") or {}
            raise NotifierClientError(
                detail.get("code", "UNAVAILABLE"), detail.get("message") or str(exc)
            ) from exc

    async def close(self) -> None:
        await self.sio.disconnect()

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected) and self.namespace in self.sio.namespaces

    async def call(self, event: str, data: dict[str, Any] | None = None,
                   timeout: float = 10.0) -> dict[str, Any]:
        """Emit with an ack; return the reply or raise NotifierClientError with its code."""
        reply = await self.sio.call(event, data or {}, namespace=self.namespace, timeout=timeout)
        return _raise_for_error(reply)


class Subscriber(_Connection):
    """An end-user connection that never misses an event in the rooms it follows.

    It keeps each room's last position; every (re)connect sends those positions in the auth
    payload, so the server rejoins the rooms and replays what was missed before live events.
    A room whose history could not be replayed is reported to `on_reset` handlers: reload
    that room's state from the REST API (or `task.get`, `notifications.list`).
    """

    namespace = "/"

    def __init__(self, url: str, token: TokenSource, **options: Any) -> None:
        super().__init__(url, token, **options)
        self.positions: dict[str, dict[str, Any]] = {}
        self.session: dict[str, Any] | None = None
        self._handlers: dict[str, list[EventHandler]] = {}
        self._reset_handlers: list[Callable[[str, str], Any]] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.sio.on("*", self._on_event, namespace=self.namespace)

    async def _auth(self) -> dict[str, Any]:
        auth = await super()._auth()
        if self.positions:
            auth["positions"] = {room: dict(pos) for room, pos in self.positions.items()}
        return auth

    def on(self, event_type: str, handler: EventHandler) -> Callable[[], None]:
        """Call `handler(envelope)` for each event of the type ('*' for all); returns an off()."""
        self._handlers.setdefault(event_type, []).append(handler)
        return lambda: self._handlers[event_type].remove(handler)

    def on_reset(self, handler: Callable[[str, str], Any]) -> None:
        """`handler(room, reason)` when a room's missed events could not be replayed."""
        self._reset_handlers.append(handler)

    async def subscribe(self, rooms: list[str]) -> dict[str, Any]:
        """Join rooms; returns the per-room results (joined, position, task state or error)."""
        since = {room: self.positions[room] for room in rooms if room in self.positions}
        payload: dict[str, Any] = {"rooms": rooms}
        if since:
            payload["since"] = since
        reply = await self.call("subscribe", payload)
        await self._apply_room_results(reply["rooms"])
        return reply["rooms"]

    async def unsubscribe(self, rooms: list[str]) -> dict[str, Any]:
        reply = await self.call("unsubscribe", {"rooms": rooms})
        for room in rooms:
            self.positions.pop(room, None)
        return reply["rooms"]

    async def _apply_room_results(self, results: dict[str, Any]) -> None:
        for room, result in results.items():
            if not result.get("joined"):
                continue
            known = self.positions.get(room)
            server = {"epoch": result["epoch"], "offset": result["offset"]}
            if result.get("recovered") is False:
                self.positions[room] = server
                for handler in self._reset_handlers:
                    await _maybe_await(handler(room, result.get("reason", "")))
            elif known is None or known["epoch"] != server["epoch"]:
                self.positions[room] = server

    async def _on_event(self, event: str, envelope: Any = None) -> None:
        if not isinstance(envelope, dict):
            return
        if event == "session":
            self.session = envelope.get("data")
            await self._apply_room_results((self.session or {}).get("rooms", {}))
        elif not self._accept(envelope):
            return
        for handler in [*self._handlers.get(event, ()), *self._handlers.get("*", ())]:
            try:
                await _maybe_await(handler(envelope))
            except Exception:
                log.exception("event=subscriber_handler_failed type=%s", event)

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
        if room is None or offset is None:
            return True
        known = self.positions.get(room)
        if known is not None and known["epoch"] == envelope.get("epoch"):
            if offset <= known["offset"]:
                return False
        self.positions[room] = {"epoch": envelope["epoch"], "offset": offset}
        return True


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


__all__ = ["NotifierClientError", "Subscriber"]

"""What both clients share: typed errors carrying the server's code, tokens from a string or
a callable, and one Socket.IO connection that reconnects with a fresh token."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from ..logs import get_logger

log = get_logger("notifier.client")

TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
EventHandler = Callable[[dict[str, Any]], Any]


class NotifierClientError(Exception):
    """The server answered with `{ok: false, error: {code, message}}` or refused the connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def resolve_token(source: TokenSource) -> str:
    if isinstance(source, str):
        return source
    value = source()
    if inspect.isawaitable(value):
        value = await value
    return str(value)


def raise_for_error(reply: Any) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise NotifierClientError("INTERNAL", f"unexpected reply {reply!r}")
    if not reply.get("ok"):
        error = reply.get("error") or {}
        raise NotifierClientError(error.get("code", "INTERNAL"), error.get("message", ""))
    return reply


class ClientConnection:
    """What both clients share: connecting with a token and surfacing refusals as errors."""

    namespace = "/"

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        transports: list[str] | None = None,
        reconnection_delay: float = 0.5,
        reconnection_delay_max: float = 5.0,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        """`client_options` go to `socketio.AsyncClient` (for instance `http_session`)."""
        self.url = url
        self._token = token
        self._transports = transports
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max,
            **(client_options or {}),
        )
        self._refusal: dict[str, Any] | None = None
        self._renewal: asyncio.Task[None] | None = None
        # When the server will end the connection unless the token is renewed (ms), once told.
        self.token_expires_at: int | None = None
        self.sio.on("connect_error", self._on_connect_error, namespace=self.namespace)
        self.sio.on("auth.expiring", self._on_expiring, namespace=self.namespace)

    async def _auth(self) -> dict[str, Any]:
        return {"token": await resolve_token(self._token)}

    def _on_connect_error(self, data: Any) -> None:
        self._refusal = data if isinstance(data, dict) else {"message": str(data)}

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, or raise NotifierClientError with the server's refusal code."""
        self._refusal = None
        try:
            await self.sio.connect(
                self.url,
                auth=self._auth,
                namespaces=[self.namespace],
                transports=self._transports,
                wait_timeout=timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            await self.sio.disconnect()
            refusal: dict[str, Any] = self._refusal or {}
            detail = refusal.get("data") or {}
            raise NotifierClientError(
                detail.get("code", "UNAVAILABLE"), detail.get("message") or str(exc)
            ) from exc

    async def close(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
        await self.sio.disconnect()

    async def _on_expiring(self, envelope: Any = None) -> None:
        """The token is about to expire: get a new one from the token callable and send it."""
        if isinstance(envelope, dict):
            self.token_expires_at = (envelope.get("data") or {}).get("expires_at")
        if isinstance(self._token, str):
            log.warning("token_not_renewable", detail="give a callable token to renew in-band")
            return
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.ensure_future(self.renew_token())

    async def renew_token(self) -> None:
        """Send a fresh token on this connection (`auth.refresh`); on failure the connection
        ends at expiry and the reconnect asks for a token again."""
        try:
            reply = await self.call("auth.refresh", {"token": await resolve_token(self._token)})
        except (NotifierClientError, socketio.exceptions.SocketIOError) as exc:
            log.warning("token_renewal_failed", detail=str(exc))
            return
        self.token_expires_at = reply["expires_at"]

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected) and self.namespace in self.sio.namespaces

    async def call(
        self, event: str, data: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Emit with an ack; return the reply or raise NotifierClientError with its code."""
        reply = await self.sio.call(event, data or {}, namespace=self.namespace, timeout=timeout)
        return raise_for_error(reply)


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value

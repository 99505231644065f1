"""Fixtures: the real service on an ephemeral port, and real Socket.IO clients in one line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from notifier import NOTIFIER, Notifier, Settings, create_app
from notifier.app import make_runner
from notifier.auth import Role, issue_token

SECRET = "test-secret-" + "x" * 40
# Headers for admin-only endpoints (status, metrics), valid for a day.
ADMIN = {"Authorization": "Bearer " + issue_token(SECRET, "HS256", "ops", role=Role.ADMIN, ttl_seconds=86400)}
WAIT = 5.0
_HANDSHAKE_ATTEMPTS = 3


class ConnectRefused(Exception):
    def __init__(self, payload: dict[str, Any]) -> None:
        # python-socketio hands over {message, data}; data is the server's {code, message}.
        super().__init__(payload)
        self.message = payload.get("message")
        self.data = payload.get("data") or {}
        self.code = self.data.get("code")


@dataclass
class Client:
    """A real socketio.AsyncClient that records every event it receives, in order."""

    sio: socketio.AsyncClient
    namespace: str
    events: list[tuple[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if args else None))
        self.changed.set()

    async def call(self, event: str, data: Any = None, timeout: float = WAIT) -> Any:
        """Emit with an ack and return the ack's payload."""
        if data is None:
            return await self.sio.call(event, namespace=self.namespace, timeout=timeout)
        return await self.sio.call(event, data, namespace=self.namespace, timeout=timeout)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == event_type]

    async def wait_until(
        self, condition: Callable[[], Any], timeout: float = WAIT, what: str = "condition"
    ) -> Any:
        async def poll() -> Any:
            while True:
                result = condition()
                if result:
                    return result
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {self.events!r}") from None

    async def next_event(self, event_type: str, count: int = 1, timeout: float = WAIT) -> Any:
        """Wait until `count` events of the type have arrived; return the last of them."""
        found = await self.wait_until(
            lambda: len(self.of_type(event_type)) >= count and self.of_type(event_type),
            timeout,
            f"{count} x {event_type}",
        )
        return found[count - 1]

    async def disconnect(self) -> None:
        await self.sio.disconnect()


@dataclass
class RunningServer:
    app: web.Application
    url: str
    settings: Settings
    clients: list[Client] = field(default_factory=list)

    @property
    def notifier(self) -> Notifier:
        return self.app[NOTIFIER]

    def token(
        self,
        user: str = "alice",
        projects: list[str] | None = None,
        role: Role | str = Role.USER,
        ttl: float = 3600,
        secret: str = SECRET,
    ) -> str:
        return issue_token(secret, "HS256", user, role=Role(role), projects=projects or [], ttl_seconds=ttl)

    async def connect(
        self,
        user: str = "alice",
        projects: list[str] | None = None,
        role: Role | str = Role.USER,
        namespace: str = "/",
        auth: Any = ...,
        headers: dict[str, str] | None = None,
        transports: list[str] | None = None,
        reconnection: bool = False,
        ttl: float = 3600,
    ) -> Client:
        """Connect a real client; raise ConnectRefused with the server's {code, message}.

        A handshake refused at the transport (503 while the server's loop is late: admission)
        is tried again after a moment, as every Socket.IO client does."""
        if auth is ...:
            auth = {"token": self.token(user, projects, role, ttl)}
        for attempt in range(_HANDSHAKE_ATTEMPTS):
            sio = socketio.AsyncClient(
                reconnection=reconnection, reconnection_delay=0.1, reconnection_delay_max=0.2
            )
            client = Client(sio, namespace)
            refused: list[Any] = []
            sio.on("*", client._record, namespace=namespace)
            sio.on("connect_error", lambda data, r=refused: r.append(data or {}), namespace=namespace)
            try:
                await sio.connect(
                    self.url,
                    auth=auth,
                    headers=headers or {},
                    namespaces=[namespace],
                    transports=transports or ["websocket"],
                    wait_timeout=WAIT,
                )
            except socketio.exceptions.ConnectionError as exc:
                await sio.disconnect()
                if refused and isinstance(refused[-1], dict):
                    raise ConnectRefused(refused[-1]) from exc
                if attempt + 1 == _HANDSHAKE_ATTEMPTS:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            self.clients.append(client)
            return client
        raise AssertionError("unreachable")

    async def worker(self, user: str = "worker-1", role: Role | str = Role.PUBLISHER) -> Client:
        return await self.connect(user, role=role, namespace="/workers")

    async def http(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, headers=headers, json=json, data=data) as response,
        ):
            return response.status, await response.json()


async def until(condition: Callable[[], Any], timeout: float = 15.0) -> None:
    """Wait, bounded, for state that client callbacks change (no event to await for it)."""

    async def wait() -> None:
        while not condition():  # noqa: ASYNC110 - state changes inside client callbacks
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Ask again (bounded) until `check()` answers something true: for state that only a
    request shows, such as another process's."""

    async def wait() -> Any:
        while not (answer := await check()):  # noqa: ASYNC110 - nothing to wait on but asking
            await asyncio.sleep(0.05)
        return answer

    return await asyncio.wait_for(wait(), timeout)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "store_url": "memory://",
        "data_dir": tmp_path / "data",
        "refresh_interval_seconds": 0,
        "jwt_leeway_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)


async def start_server(
    settings: Settings, customize: Callable[[web.Application], None] | None = None
) -> tuple[RunningServer, web.AppRunner]:
    app = create_app(settings)
    if customize is not None:
        customize(app)
    runner = make_runner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return RunningServer(app=app, url=f"http://127.0.0.1:{port}", settings=settings), runner


async def stop_server(server: RunningServer, runner: web.AppRunner) -> None:
    for client in server.clients:
        await client.sio.disconnect()
    await runner.cleanup()


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    """Override in a test module to start the server with other settings."""
    return make_settings(tmp_path)


@pytest.fixture
async def server(server_settings: Settings) -> AsyncIterator[RunningServer]:
    running, runner = await start_server(server_settings)
    yield running
    await stop_server(running, runner)
    await _assert_no_leaked_tasks()


async def _assert_no_leaked_tasks() -> None:
    """Every task the service started is stopped by its owner when the server stops."""
    current = asyncio.current_task()
    for _ in range(50):
        leftover = [
            task for task in asyncio.all_tasks() if task is not current and not task.done() and _is_ours(task)
        ]
        if not leftover:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"tasks leaked after shutdown: {leftover!r}")


def _is_ours(task: asyncio.Task[Any]) -> bool:
    code = task.get_coro()
    module = getattr(getattr(code, "cr_code", None), "co_filename", "")
    return "/notifier/" in module and "/tests/" not in module

"""create_app(settings) -> aiohttp Application with the Socket.IO server, REST and the service."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .auth import TokenVerifier, verification_key
from .clock import Clock
from .keys import GATEWAY, NOTIFIER, SETTINGS, VERIFIER
from .service import Notifier
from .settings import Settings
from .store import open_store
from .transport import dashboard
from .transport.fanout import SocketFanOut
from .transport.http import draining_middleware, error_middleware, routes
from .transport.server import NotifierServer
from .transport.sockets import SocketGateway

log = logging.getLogger("notifier.app")


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> web.Application:
    """Build the whole service. Run it with `web.run_app`, or mount it in an app of your own."""
    settings = settings or Settings()
    store = open_store(settings.resolved_store_url, max_events_per_room=settings.history_max_events)
    notifier = Notifier(settings, store, clock)
    verifier = TokenVerifier(settings, verification_key(settings))
    sio = NotifierServer(
        max_event_bytes=settings.max_payload_bytes,
        async_mode="aiohttp",
        cors_allowed_origins=_engineio_origins(settings.cors_origins),
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
        # A hard cap per transport message; events between the two limits get a clear ack.
        max_http_buffer_size=settings.max_payload_bytes * 4,
        logger=False,
        engineio_logger=False,
    )
    sio.eio.batcher.before_write = store.commit
    fanout = SocketFanOut(sio, max_backlog=settings.max_backlog_events)
    notifier.attach(fanout)
    gateway = SocketGateway(sio, notifier, verifier, settings, fanout)

    app = web.Application(
        middlewares=[draining_middleware, error_middleware], client_max_size=settings.max_payload_bytes
    )
    app[SETTINGS] = settings
    app[NOTIFIER] = notifier
    app[VERIFIER] = verifier
    app[GATEWAY] = gateway
    sio.attach(app)
    app.add_routes(routes)
    app.add_routes(dashboard.routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        await notifier.start()
        if settings.jwt_secret is None and not settings.uses_public_key:
            log.warning(
                "event=development_mode detail=%s",
                f"tokens are signed with a generated secret in {settings.data_dir}; "
                "set NOTIFIER_JWT_SECRET or NOTIFIER_JWT_PUBLIC_KEY in production",
            )
        log.info("event=started store=%s", settings.resolved_store_url)
        yield
        await notifier.stop()
        await store.close()
        log.info("event=stopped")

    async def disconnect_clients(app: web.Application) -> None:
        # Before the web server stops waiting for open websockets, so SIGTERM exits promptly.
        await gateway.disconnect_all()
        await sio.shutdown()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(disconnect_clients)
    return app


def _engineio_origins(origins: list[str]) -> Any:
    """Our setting to engineio's: [] means same-origin only (engineio's None), never 'no check'."""
    if not origins:
        return None
    if origins == ["*"]:
        return "*"
    return origins


async def serve(settings: Settings, host: str, port: int) -> None:
    """Run the service until SIGTERM or SIGINT, then close connections and exit promptly."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("event=listening url=http://%s:%s", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        # Goodbyes go out while the listener still runs. After aiohttp stops the site, the
        # clients' closing handshakes were measured to hang until the shutdown timeout (5 s
        # instead of 10 ms), so the connections are closed here, first.
        await app[GATEWAY].disconnect_all()
        await runner.cleanup()

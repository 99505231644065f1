"""create_app(settings) -> aiohttp Application with the Socket.IO endpoint, REST and the service."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import resource
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .auth import TokenVerifier, verification_key
from .broker import open_broker
from .clock import Clock, SystemClock
from .destinations import UnsafeURL, check_destination
from .errors import StartupError
from .health import Health
from .keys import ENGINE, GATEWAY, HEALTH, METRICS, NOTIFIER, REST_LIMIT, SETTINGS, SIBLINGS, VERIFIER
from .logs import ClientErrorLog, get_logger
from .metrics import Metrics
from .service import Notifier
from .settings import Settings, masked_url
from .store import open_store
from .transport import dashboard, metrics_view
from .transport.access_log import AccessLog
from .transport.fanout import SocketFanOut
from .transport.http import error_middleware, health_routes, routes
from .transport.rest_limits import RestRateLimit
from .transport.socket_api import SocketGateway
from .transport.webhook_poster import HttpPoster
from .transport.wire_errors import NotifierErrorShapes, http_error_body
from .transport.workers import HandedConnections, Siblings
from .wire import EngineOptions, EngineServer, GuardedRunner, SocketServer, TokenBucket
from .wire.limits import ConnectionLimits, OpenConnections
from .worker_routing import WorkerRole

log = get_logger("notifier.app")

SOCKETIO_PATH = "/socket.io/"

# How much bigger than the largest event one Engine.IO message may be: events between the two
# get a PAYLOAD_TOO_LARGE ack (read from their header alone); bigger ones close the session.
_MESSAGE_SLACK = 4
# Allocations (net) between two collections of the youngest generation.
_GC_THRESHOLD = 20_000
# Connections waiting to be accepted. The kernel caps it at net.core.somaxconn, so asking for
# the most lets a host that raises that sysctl get a longer queue. Beyond the queue, SYNs of a
# reconnect burst are dropped and retried by the client's kernel 1, 3, 7... seconds later.
_LISTEN_BACKLOG = 65535
# Background jobs pause while the event loop runs this late (seconds).
_JOBS_YIELD_LAG = 0.01


def create_app(
    settings: Settings | None = None, *, clock: Clock | None = None, worker: WorkerRole | None = None
) -> web.Application:
    """Build the whole service. Run it with `serve`, or mount it in an app of your own.
    `worker`: this process is one of `serve --workers N`."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    health = Health()
    store = open_store(
        settings.resolved_store_url,
        health,
        sqlite_synchronous=settings.sqlite_synchronous,
        # The default database lives in the data directory: its problems are that setting's.
        variable="NOTIFIER_STORE_URL" if settings.store_url else "NOTIFIER_DATA_DIR",
        postgres_schema=settings.postgres_schema,
    )
    broker = open_broker(
        settings.broker_url,
        store,
        health,
        max_events_per_room=settings.history_max_events,
        max_age_seconds=settings.history_max_age_seconds,
        postgres_schema=settings.postgres_schema,
    )
    if settings.webhook_url:
        try:
            check_destination(settings.webhook_url, settings.webhook_allow_private)
        except UnsafeURL as exc:
            raise StartupError(
                f"NOTIFIER_WEBHOOK_URL: {exc}; set NOTIFIER_WEBHOOK_ALLOW_PRIVATE=true to allow it"
            ) from None
    poster = HttpPoster()
    notifier = Notifier(settings, store, broker, health, clock, poster=poster)
    verifier = TokenVerifier(settings, verification_key(settings))
    client_errors = ClientErrorLog(get_logger("notifier.clients"))

    metrics = Metrics(worker.index if worker is not None else None)
    # Escalations, webhooks, pushes and mails wait while the loop is late: live delivery first.
    notifier.loop_is_busy = lambda: metrics.latest_lag > _JOBS_YIELD_LAG
    receipt_seconds = metrics.receipt_seconds
    notifier.receipts.observe = lambda kind, seconds: receipt_seconds.labels(kind.value).observe(seconds)
    max_lag = settings.admission_max_lag_ms / 1000
    sockets = SocketServer(settings.max_payload_bytes, NotifierErrorShapes())
    options = EngineOptions(
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
        max_message_bytes=settings.max_payload_bytes * _MESSAGE_SLACK,
        max_backlog=settings.max_backlog_events,
        connect_timeout=settings.connect_timeout_seconds,
        polling_gap=settings.polling_gap_seconds,
        cors_origins=settings.cors_origins,
        trusted_proxies=frozenset(settings.trusted_proxies),
        limits=ConnectionLimits(
            max_connections=settings.connection_limit,
            max_http_per_peer=settings.max_http_connections_per_peer,
            max_pending_per_peer=settings.max_pending_sessions_per_peer,
            exempt=frozenset(settings.trusted_proxies),
        ),
        sid_prefix=worker.sid_prefix if worker is not None else "",
    )
    engine = EngineServer(
        options,
        listen=sockets.listen,
        new_bucket=lambda: TokenBucket(
            settings.user_rate_per_second,
            settings.user_rate_burst,
            settings.flood_disconnect_seconds,
            clock,
        ),
        report=client_errors.note,
        error_body=http_error_body,
        # New sessions wait (503, the client retries) while the event loop is late: a
        # reconnect storm must not hold up the connections already here.
        admit=(lambda: metrics.latest_lag <= max_lag) if max_lag else (lambda: True),
        open_connections=OpenConnections(),
    )
    fanout = SocketFanOut()
    fanout.on_room_empty = notifier.unfollow
    notifier.attach(fanout)
    gateway = SocketGateway(sockets, notifier, verifier, settings, fanout, client_errors)
    metrics_view.read_service(
        metrics, engine=engine, fanout=fanout, gateway=gateway, notifier=notifier, client_errors=client_errors
    )

    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_payload_bytes)
    app[SETTINGS] = settings
    app[NOTIFIER] = notifier
    app[VERIFIER] = verifier
    app[GATEWAY] = gateway
    app[ENGINE] = engine
    app[HEALTH] = health
    app[METRICS] = metrics
    app[REST_LIMIT] = RestRateLimit(settings, clock)
    siblings = Siblings(worker) if worker is not None else None
    if siblings is not None:
        app[SIBLINGS] = siblings
    socketio_route = siblings.engine_route(engine.handle) if siblings is not None else engine.handle
    app.router.add_route("*", SOCKETIO_PATH, socketio_route)
    app.router.add_get("/metrics", metrics_view.public_metrics)
    app.add_routes(health_routes)
    app.add_routes(routes)
    app.add_routes(dashboard.routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await notifier.start()
        if siblings is not None:
            await siblings.start()
        engine.start()
        gateway.start()
        metrics.start()
        if settings.jwt_secret is None and not settings.uses_public_key:
            log.warning(
                "development_mode",
                detail=f"tokens are signed with a generated secret in {settings.data_dir}; "
                "set NOTIFIER_JWT_SECRET or NOTIFIER_JWT_PUBLIC_KEY in production",
            )
        log.info("started", store=masked_url(settings.resolved_store_url))
        yield
        await metrics.stop()
        gateway.stop()
        engine.stop()
        await sockets.settle(timeout=2.0)
        await notifier.stop()
        if siblings is not None:
            await siblings.stop()
        await poster.close()
        log.info("stopped")

    async def disconnect_clients(app: web.Application) -> None:
        # Before the web server stops, so SIGTERM exits promptly.
        health.draining = True
        await engine.drop_all()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(disconnect_clients)
    return app


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner `serve` uses: JSON answers to malformed HTTP, a header read timeout."""
    settings = app[SETTINGS]
    engine = app[ENGINE]
    if settings.access_log:
        kwargs.update(access_log=logging.getLogger("notifier.access"), access_log_class=AccessLog)
    else:
        kwargs.setdefault("access_log", None)
    return GuardedRunner(
        app,
        header_timeout=settings.http_header_timeout_seconds,
        on_protocol_error=lambda reason, detail, peer: engine.report(reason, detail, str(peer)),
        error_body=http_error_body,
        open_connections=engine.open_connections,
        limits=engine.options.limits,
        **kwargs,
    )


def tune_garbage_collector() -> None:
    """Fewer cyclic collections. Every connection allocates hundreds of objects, and at the
    default threshold (700) a burst of connections triggered collections that scan every live
    connection's objects again and again: measured at 9% of the CPU of set-ups. What exists
    at start is frozen (never scanned); collections run a fraction as often."""
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 20, 20)


def raise_open_files_limit() -> None:
    """Every connection is a file: the soft limit is raised to the hard one (as systemd's
    LimitNOFILE would set both)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _listen(
    host_variable: str, port_variable: str, host: str, port: int, *, shared: bool = False
) -> socket.socket:
    """A listening socket; a failure names the variable at fault: the address when it does
    not resolve or is not this machine's, the port otherwise (taken, privileged). `shared`:
    every worker of `serve --workers` binds it (SO_REUSEPORT)."""
    try:
        return socket.create_server((host, port), backlog=_LISTEN_BACKLOG, reuse_port=shared)
    except socket.gaierror as exc:
        raise StartupError(f"{host_variable}: {host!r} is not an address here: {exc.strerror}") from exc
    except OSError as exc:
        variable = host_variable if exc.errno == errno.EADDRNOTAVAIL else port_variable
        raise StartupError(f"{variable}: cannot listen on {host}:{port}: {exc.strerror}") from exc


def listen_public(host: str, port: int) -> socket.socket:
    return _listen("NOTIFIER_HOST", "NOTIFIER_PORT", host, port)


async def serve(settings: Settings, host: str, port: int, worker: WorkerRole | None = None) -> None:
    """Run the service until SIGTERM or SIGINT, then close connections and exit promptly.
    `worker`: one of `serve --workers N`, whose connections the supervisor hands over."""
    # Bound before anything starts, so a taken port is the only thing reported.
    listener = listen_public(host, port) if worker is None else None
    internal = None
    if settings.internal_port is not None:
        internal = _listen(
            "NOTIFIER_INTERNAL_HOST",
            "NOTIFIER_INTERNAL_PORT",
            settings.internal_host,
            settings.internal_port,
            shared=worker is not None,
        )
    app = create_app(settings, worker=worker)
    runner = make_runner(app, shutdown_timeout=5.0)
    await runner.setup()
    tune_garbage_collector()
    raise_open_files_limit()
    if listener is not None:
        await web.SockSite(runner, listener, backlog=_LISTEN_BACKLOG).start()
        log.info("listening", url=f"http://{host}:{port}")
    internal_runners = []
    if internal is not None:
        internal_runner = web.AppRunner(metrics_view.internal_app(app), access_log=None)
        await internal_runner.setup()
        await web.SockSite(internal_runner, internal).start()
        internal_runners.append(internal_runner)
        log.info(
            "listening_internal",
            url=f"http://{settings.internal_host}:{settings.internal_port}",
            serves="/metrics /healthz /readyz",
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handed = None
    if worker is not None:
        handed, scrape_runner = await _take_handed_connections(app, runner, worker)
        internal_runners.append(scrape_runner)
        handed.closed_callback = stop.set  # the supervisor is gone: so is this worker
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        app[HEALTH].draining = True
        if settings.drain_seconds:
            log.info("draining", seconds=settings.drain_seconds)
            await asyncio.sleep(settings.drain_seconds)
    finally:
        # Goodbyes go out while the listener still runs: after aiohttp stops the site, the
        # clients' closing handshakes were measured to hang until the shutdown timeout.
        app[HEALTH].draining = True
        await app[ENGINE].drop_all()
        if handed is not None:
            handed.stop()
        await runner.cleanup()
        for internal_runner in internal_runners:
            await internal_runner.cleanup()


async def _take_handed_connections(
    app: web.Application, runner: web.AppRunner, worker: WorkerRole
) -> tuple[HandedConnections, web.AppRunner]:
    """A worker of `serve --workers`: its Unix sockets for the siblings (requests for its
    sessions, and scrapes), then the connections the supervisor hands over."""
    await web.UnixSite(runner, str(worker.forward_socket(worker.index))).start()
    scrape_runner = web.AppRunner(metrics_view.worker_app(app), access_log=None)
    await scrape_runner.setup()
    await web.UnixSite(scrape_runner, str(worker.scrape_socket(worker.index))).start()
    assert runner.server is not None
    handed = HandedConnections(socket.socket(fileno=worker.channel_fd), runner.server)
    handed.start()
    log.info("worker_listening", worker=worker.index, workers=worker.count)
    return handed, scrape_runner

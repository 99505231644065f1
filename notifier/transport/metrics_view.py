"""What `/metrics` shows: the service's tallies and states, read at scrape time, and the
routes that serve it.

`/metrics` is not for the internet. With `NOTIFIER_INTERNAL_PORT` set it is served on that
listener (bound to `NOTIFIER_INTERNAL_HOST`, loopback by default) without a token, next to
`/healthz` and `/readyz`; on the public port it answers admin tokens only.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from prometheus_client.core import Metric

from ..errors import ErrorCode, NotifierError
from ..keys import HEALTH, METRICS, SIBLINGS, VERIFIER
from ..logs import ClientErrorLog
from ..metrics import CONTENT_TYPE, Metrics, counter, gauge
from ..service import Notifier
from ..wire import EngineServer, SocketServer
from ..wire.codes import SLOW_CONSUMER
from .fanout import SocketFanOut
from .http import health_routes, json_response, worker_summary
from .socket_api import SocketGateway


def read_service(
    metrics: Metrics,
    *,
    engine: EngineServer,
    fanout: SocketFanOut,
    gateway: SocketGateway,
    notifier: Notifier,
    client_errors: ClientErrorLog,
) -> None:
    """Register the readers that turn the service's own counts into metric families."""
    health = notifier.health
    health.timed = metrics.timed

    def read() -> Iterable[Metric]:
        connections = SocketServer.connection_counts(list(engine.sessions.values()))
        yield gauge(
            "notifier_connections",
            "Socket.IO connections on this process",
            ["namespace", "transport"],
            connections,
        )
        yield gauge(
            "notifier_sessions",
            "Engine.IO sessions (connected to a namespace or not)",
            [],
            {(): len(engine.sessions)},
        )
        yield gauge(
            "notifier_rooms",
            "Rooms with at least one connection on this process",
            [],
            {(): fanout.room_count()},
        )
        yield gauge("notifier_ready", "1 while /readyz answers 200", [], {(): 1.0 if health.ready else 0.0})
        yield counter(
            "notifier_events_published",
            "Events appended to room histories here",
            ["type"],
            notifier.published,
        )
        yield counter(
            "notifier_notifications_queued",
            "Notifications stored while the broker failed, left to the redelivery sweep",
            [],
            {(): notifier.inbox.queued},
        )
        yield counter(
            "notifier_notifications_redelivered",
            "Notifications delivered by the redelivery sweep of this process",
            [],
            {(): notifier.inbox.redelivery.redelivered},
        )
        yield counter(
            "notifier_receipt_writes",
            "Store writes of receipts (each carries every receipt reported meanwhile)",
            [],
            {(): notifier.receipts.writes},
        )
        yield counter("notifier_receipts", "Receipts stored (new ones)", [], {(): notifier.receipts.stored})
        escalations = notifier.escalations
        yield counter(
            "notifier_escalations",
            "Escalations run here, by outcome (sent; cancelled: seen first; held: quiet hours)",
            ["outcome"],
            {("sent",): escalations.sent, ("cancelled",): escalations.cancelled, ("held",): escalations.held},
        )
        webhooks = notifier.webhooks
        if webhooks is not None:
            yield counter(
                "notifier_webhooks",
                "Webhook deliveries by outcome (sent, retried: an attempt failed, failed: gave up)",
                ["outcome"],
                {("sent",): webhooks.sent, ("retried",): webhooks.retried, ("failed",): webhooks.failed},
            )
        push = notifier.push
        if push is not None:
            yield counter(
                "notifier_pushes",
                "Web Push messages by outcome (sent, retried, failed; expired: the subscription was gone)",
                ["outcome"],
                {
                    ("sent",): push.sent,
                    ("retried",): push.retried,
                    ("failed",): push.failed,
                    ("expired",): push.expired,
                },
            )
        email = notifier.email
        if email is not None:
            yield counter(
                "notifier_email_digests",
                "E-mail digests by outcome (sent, retried, failed)",
                ["outcome"],
                {("sent",): email.sent, ("retried",): email.retried, ("failed",): email.failed},
            )
        yield counter(
            "notifier_events_delivered", "Events handed to connections here", ["type"], fanout.delivered
        )
        yield counter(
            "notifier_acks",
            "Acknowledgements sent, by result (ok or error code)",
            ["namespace", "code"],
            gateway.acks,
        )
        yield counter(
            "notifier_replays",
            "Rooms clients asked to recover, by outcome",
            ["outcome", "reason"],
            gateway.replays,
        )
        yield counter(
            "notifier_sessions_closed", "Engine.IO sessions ended, by reason", ["reason"], engine.closes
        )
        yield counter(
            "notifier_slow_consumer_evictions",
            "Sessions ended because their client stopped reading",
            [],
            {(): engine.closes.get(SLOW_CONSUMER, 0)},
        )
        yield counter(
            "notifier_rate_limited",
            "Packets refused over a connection's rate limit",
            [],
            {(): engine.rate_limited},
        )
        yield counter(
            "notifier_handshakes_refused_busy",
            "New sessions refused while the event loop was late (admission)",
            [],
            {(): engine.refused_busy},
        )
        yield counter(
            "notifier_handshakes_refused_limit",
            "New sessions refused over a connection limit (the process's, or one address's)",
            [],
            {(): engine.refused_limit},
        )
        yield counter(
            "notifier_client_errors",
            "Malformed or abusive client input (each logged a few times per peer)",
            ["reason"],
            client_errors.counts,
        )

    metrics.read_at_scrape(read)


async def _exposition(app: web.Application) -> web.Response:
    """This process's metrics; under `serve --workers`, every worker's (each labelled)."""
    own = app[METRICS].exposition()
    siblings = app.get(SIBLINGS)
    body = own if siblings is None else await siblings.metrics(own)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def public_metrics(request: web.Request) -> web.Response:
    """`/metrics` on the clients' port: admin tokens only."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if not request.app[VERIFIER].verify(token).is_admin:
        raise NotifierError(
            ErrorCode.FORBIDDEN,
            "/metrics needs an admin token here; Prometheus should scrape NOTIFIER_INTERNAL_PORT",
        )
    return await _exposition(request.app)


def internal_app(service: web.Application) -> web.Application:
    """The internal listener: /metrics, /healthz and /readyz, no token (keep it private)."""
    app = web.Application()
    app[METRICS] = service[METRICS]
    app[HEALTH] = service[HEALTH]
    if SIBLINGS in service:
        app[SIBLINGS] = service[SIBLINGS]

    async def scrape(request: web.Request) -> web.Response:
        return await _exposition(app)

    app.router.add_get("/metrics", scrape)
    app.add_routes(health_routes)
    return app


def worker_app(service: web.Application) -> web.Application:
    """What a worker of `serve --workers` tells its siblings, on its Unix socket: its own
    metrics and its summary (they gather every worker's)."""
    app = web.Application()

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=service[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def summary(request: web.Request) -> web.Response:
        return json_response(worker_summary(service))

    app.router.add_get("/metrics", scrape)
    app.router.add_get("/worker", summary)
    return app

"""Typed application keys: the shared state of the aiohttp app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .auth import TokenVerifier
    from .health import Health
    from .metrics import Metrics
    from .service import Notifier
    from .settings import Settings
    from .transport.rest_limits import RestRateLimit
    from .transport.socket_api import SocketGateway
    from .transport.workers import Siblings
    from .wire import EngineServer

NOTIFIER: web.AppKey[Notifier] = web.AppKey("notifier")
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("verifier")
GATEWAY: web.AppKey[SocketGateway] = web.AppKey("gateway")
ENGINE: web.AppKey[EngineServer] = web.AppKey("engine")
HEALTH: web.AppKey[Health] = web.AppKey("health")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
REST_LIMIT: web.AppKey[RestRateLimit] = web.AppKey("rest_limit")
# Under `serve --workers`: the other workers of this one.
SIBLINGS: web.AppKey[Siblings] = web.AppKey("siblings")

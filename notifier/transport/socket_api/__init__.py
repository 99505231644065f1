"""notifier's Socket.IO API over the wire layer: `/` for end users, `/workers` for
publishing processes. Handlers are thin: they authenticate, validate (through `acked`) and
call the service. One table of events, payload models and handlers per namespace
(`user_events`, `worker_events`)."""

from .gateway import SocketGateway
from .tables import EVENT_MODELS, USER_NAMESPACE, WORKER_NAMESPACE

__all__ = ["EVENT_MODELS", "USER_NAMESPACE", "WORKER_NAMESPACE", "SocketGateway"]

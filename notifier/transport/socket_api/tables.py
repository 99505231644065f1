"""Every namespace's table, and the payload models of each event (for the docs and the
TypeScript declarations' check)."""

from __future__ import annotations

from pydantic import BaseModel

from ..fanout import USER_NAMESPACE
from .context import EventTable
from .user_events import USER_EVENTS
from .worker_events import WORKER_EVENTS

WORKER_NAMESPACE = "/workers"

TABLES: dict[str, EventTable] = {USER_NAMESPACE: USER_EVENTS, WORKER_NAMESPACE: WORKER_EVENTS}

EVENT_MODELS: dict[str, dict[str, type[BaseModel]]] = {
    namespace: {event: model for event, (model, _) in table.items()} for namespace, table in TABLES.items()
}

__all__ = ["EVENT_MODELS", "TABLES", "USER_NAMESPACE", "WORKER_NAMESPACE"]

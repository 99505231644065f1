"""Readiness: which parts of the service work right now, and whether it is draining.

Components (the store, the broker) report failures and recoveries here; each change is
logged once, and `/readyz` answers 503 while any component fails or the service drains, so a
load balancer stops sending it new clients. They also report how long their operations take
(`timed`), which the metrics turn into latency histograms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .logs import get_logger

# (component, operation, seconds)
Timing = Callable[[str, str, float], None]


def _untimed(component: str, operation: str, seconds: float) -> None:
    pass


log = get_logger("notifier.health")


class Health:
    def __init__(self) -> None:
        self._problems: dict[str, str] = {}
        self.draining = False
        self.timed: Timing = _untimed

    def fail(self, component: str, detail: str) -> None:
        if self._problems.get(component) != detail:
            log.error("component_unavailable", component=component, detail=detail)
        self._problems[component] = detail

    def recover(self, component: str) -> None:
        if self._problems.pop(component, None) is not None:
            log.info("component_recovered", component=component)

    def failing(self, component: str) -> bool:
        return component in self._problems

    @property
    def ready(self) -> bool:
        return not self._problems and not self.draining

    def report(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "draining": self.draining,
            "problems": dict(self._problems),
        }

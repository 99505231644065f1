"""Prometheus metrics (prometheus-client), one registry per service.

Hot paths count into plain dicts (`Tally`), a dictionary update and no lock; the registry
reads them, and every state (connections, sessions, rooms), when Prometheus scrapes. Latencies
are histograms observed once per store commit or broker call, which are already batched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A delivery takes milliseconds; being seen, minutes to days.
_RECEIPT_BUCKETS = (0.01, 0.05, 0.25, 1, 5, 30, 120, 600, 3600, 6 * 3600, 86400, 7 * 86400)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_LAG_PERIOD = 0.1
_LAG_WINDOW = 100  # periods: the max gauge covers the last ten seconds

StateReader = Callable[[], Iterable[Metric]]


class Tally(dict[Any, int]):
    """Counts by label. Labels that clients choose (event types) are bounded: past `limit`
    distinct ones, the rest count as `other`, so no publisher can grow the registry."""

    __slots__ = ("limit",)

    def __init__(self, limit: int = 200) -> None:
        super().__init__()
        self.limit = limit

    def add(self, label: Any, count: int = 1) -> None:
        if label not in self and len(self) >= self.limit:
            label = OTHER
        self[label] = self.get(label, 0) + count


class _States:
    """A collector that reads what the running service holds at scrape time."""

    def __init__(self) -> None:
        self.readers: list[StateReader] = []

    def collect(self) -> Iterable[Metric]:
        for read in self.readers:
            yield from read()


class Metrics:
    def __init__(self, worker: int | None = None) -> None:
        # Under `serve --workers`, every sample names its worker (a scrape merges them all).
        self._worker = worker
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._states = _States()
        registry.register(self._states)
        self.store_seconds = Histogram(
            "notifier_store_seconds",
            "Store operations: commits (SQLite) and queries (PostgreSQL)",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.broker_seconds = Histogram(
            "notifier_broker_seconds",
            "Broker operations (Redis appends: one per batch)",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.receipt_seconds = Histogram(
            "notifier_receipt_seconds",
            "From a notification's creation to its receipt, by kind (delivered, seen, read, actioned)",
            ["kind"],
            buckets=_RECEIPT_BUCKETS,
            registry=registry,
        )
        self.loop_lag = Histogram(
            "notifier_event_loop_lag_seconds",
            "How late a 100 ms timer fires: what any callback may wait at worst",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.loop_lag_max = Gauge(
            "notifier_event_loop_lag_max_seconds",
            "The largest event-loop lag in the current 10-second window",
            registry=registry,
        )
        self._lag_task: asyncio.Task[None] | None = None
        # The lag of the last tick: admission of new sessions looks at it.
        self.latest_lag = 0.0

    def timed(self, component: str, operation: str, seconds: float) -> None:
        """A `health.Timing`: the store's and the broker's operations."""
        histogram = self.store_seconds if component == "store" else self.broker_seconds
        histogram.labels(operation).observe(seconds)

    def read_at_scrape(self, reader: StateReader) -> None:
        self._states.readers.append(reader)

    def exposition(self) -> bytes:
        text = generate_latest(self.registry)
        return text if self._worker is None else labelled(text, "worker", str(self._worker))

    # Event-loop lag: a timer every 100 ms, and how late it fires.

    def start(self) -> None:
        self._lag_task = asyncio.get_running_loop().create_task(self._watch_lag(), name="loop-lag")

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            await asyncio.gather(self._lag_task, return_exceptions=True)
            self._lag_task = None

    async def _watch_lag(self) -> None:
        window_max, ticks = 0.0, 0
        while True:
            expected = time.monotonic() + _LAG_PERIOD
            await asyncio.sleep(_LAG_PERIOD)
            lag = max(0.0, time.monotonic() - expected)
            self.latest_lag = lag
            self.loop_lag.observe(lag)
            window_max, ticks = max(window_max, lag), ticks + 1
            self.loop_lag_max.set(window_max)
            if ticks >= _LAG_WINDOW:
                window_max, ticks = 0.0, 0


def counter(
    name: str, documentation: str, labels: list[str], counts: Mapping[Any, int]
) -> CounterMetricFamily:
    """A counter family from a tally (label tuples, or one label value, to counts)."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label, count in list(counts.items()):
        family.add_metric(list(label) if isinstance(label, tuple) else [str(label)], count)
    return family


def gauge(name: str, documentation: str, labels: list[str], values: Mapping[Any, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label, value in values.items():
        family.add_metric(list(label) if isinstance(label, tuple) else [str(label)], value)
    return family


def labelled(exposition: bytes, name: str, value: str) -> bytes:
    """The same exposition (text format 0.0.4) with one more label on every sample."""
    label = f'{name}="{value}"'.encode()
    lines = []
    for line in exposition.split(b"\n"):
        if line and not line.startswith(b"#"):
            # A metric name holds neither "{" nor a space: the first of them ends it.
            brace, space = line.find(b"{"), line.find(b" ")
            if brace != -1 and brace < space:
                line = line[: brace + 1] + label + b"," + line[brace + 1 :]
            else:
                line = line[:space] + b"{" + label + b"}" + line[space:]
        lines.append(line)
    return b"\n".join(lines)


def merged(expositions: Iterable[bytes]) -> bytes:
    """Several processes' expositions as one: each family's HELP and TYPE once, followed by
    every process's samples of it (the text format wants a family's lines together)."""
    families: dict[bytes, tuple[list[bytes], list[bytes]]] = {}
    for exposition in expositions:
        samples: list[bytes] | None = None
        for line in exposition.split(b"\n"):
            if line.startswith(b"# "):
                parts = line.split(b" ", 3)
                if len(parts) >= 3 and parts[1] in (b"HELP", b"TYPE"):
                    header, samples = families.setdefault(parts[2], ([], []))
                    if not any(known.split(b" ", 2)[1] == parts[1] for known in header):
                        header.append(line)
            elif line and samples is not None:
                samples.append(line)
    out = [line for header, samples in families.values() for line in (*header, *samples)]
    return b"\n".join(out) + b"\n"

"""Structured logging: one event per line, key=value text or JSON, every key a field.

`get_logger(name).info("connected", sid=..., user=...)` logs the event `connected` with its
fields through stdlib logging (as `extra`), so both formatters see them as data: the text one
prints `event=connected sid=... user=...`, the JSON one `{"event": "connected", "sid": ...}`.

Lines a client can cause (malformed packets, refused handshakes, bad HTTP requests) go through
`ClientErrorLog`: a few per peer and reason, then one in a while with the count of those
left out, so no client can grow the log without bound.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter, OrderedDict
from typing import Any

import orjson

_FIELDS = "notifier_fields"


class EventLogger:
    """A stdlib logger that takes an event name and fields."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={_FIELDS: fields}, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the traceback of the exception being handled (our bugs only)."""
        self._log(logging.ERROR, event, fields, exc_info=True)


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return getattr(record, _FIELDS, None) or {}


# What a value may not hold bare in a key=value line: separators, quotes, and control
# characters (a client's ESC or CR must not reach a terminal or split a line).
_NEEDS_QUOTES = re.compile(r'[\s"=\\\x00-\x1f\x7f-\x9f]')


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """`<time> level=INFO logger=notifier.x event=connected sid=abc user=alice`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if fields or hasattr(record, _FIELDS):
            message = (
                "event="
                + _text_value(record.message)
                + "".join(f" {key}={_text_value(value)}" for key, value in fields.items())
            )
        else:
            message = record.message  # another library's line, as it wrote it
        return f"{self.formatTime(record)} level={record.levelname} logger={record.name} {message}"


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": "info", "logger": ..., "event": ..., <fields>}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if hasattr(record, _FIELDS):
            entry["event"] = record.getMessage()
            for key, value in _fields(record).items():
                entry.setdefault(key, value)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class ClientErrorLog:
    """Client-caused log lines, limited per (peer, reason); the rest are counted.

    Each key may log `burst` lines, then one every `interval` seconds carrying how many were
    left out since. At most `max_keys` keys are remembered (the oldest are forgotten), so the
    limiter's own memory is bounded too. Over all keys together, at most `total_burst` lines,
    then `total_rate` a second: many addresses (or connections, or users) cannot add up to a
    flood either; a line after a stretch of that says how many all keys had left out
    (`suppressed_all`).
    """

    def __init__(
        self,
        logger: EventLogger,
        burst: int = 3,
        interval: float = 60.0,
        max_keys: int = 2_000,
        total_burst: int = 100,
        total_rate: float = 2.0,
    ) -> None:
        self._log = logger
        self._burst = burst
        self._interval = interval
        self._max_keys = max_keys
        self._keys: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._total_burst = float(total_burst)
        self._total_rate = total_rate
        self._total = [float(total_burst), time.monotonic(), 0.0]  # allowance, refilled, left out
        self.counts: Counter[str] = Counter()

    def note(self, reason: str, detail: str, peer: Any, **extra: Any) -> None:
        self.counts[reason] += 1
        peer_text = _peer_text(peer)
        key = (peer_text, reason)
        now = time.monotonic()
        state = self._keys.get(key)
        if state is None:
            state = [float(self._burst), now, 0.0]  # allowance, last refill, left out
            self._keys[key] = state
            if len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            state[0] = min(float(self._burst), state[0] + (now - state[1]) / self._interval)
            state[1] = now
        if state[0] < 1.0:
            state[2] += 1
            return
        total = self._total
        total[0] = min(self._total_burst, total[0] + (now - total[1]) * self._total_rate)
        total[1] = now
        if total[0] < 1.0:
            total[2] += 1
            state[2] += 1
            return
        total[0] -= 1.0
        state[0] -= 1.0
        suppressed, state[2] = int(state[2]), 0.0
        fields: dict[str, Any] = {"reason": reason, "peer": peer_text, **extra, "detail": detail[:200]}
        if suppressed:
            fields["suppressed"] = suppressed
        if total[2]:
            fields["suppressed_all"], total[2] = int(total[2]), 0.0
        self._log.info("client_error", **fields)


def _peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "unknown")

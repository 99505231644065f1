"""Per-user delivery preferences: which channels each category escalates to, and quiet hours
(in the user's time zone) during which only critical notifications escalate."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from .models import Preferences


def channels_for(preferences: Preferences | None, category: str, asked: list[str]) -> list[str]:
    """The user's choice for the category wins (an empty list: none); else what the
    publisher asked for."""
    if preferences is not None and category in preferences.channels:
        return list(preferences.channels[category])
    return asked


def quiet_until(preferences: Preferences | None, now: float) -> float | None:
    """When the quiet hours around `now` (epoch seconds) end; None outside them."""
    quiet = preferences.quiet_hours if preferences is not None else None
    if quiet is None:
        return None
    zone = ZoneInfo(quiet.timezone)
    local = datetime.fromtimestamp(now, zone)
    start, end = _clock(quiet.start), _clock(quiet.end)
    today = local.time()
    if start <= end:
        inside = start <= today < end
    else:  # across midnight: 22:00-07:00
        inside = today >= start or today < end
    if not inside:
        return None
    ends = datetime.combine(local.date(), end, zone)
    if ends <= local:
        ends += timedelta(days=1)
    return ends.timestamp()


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))

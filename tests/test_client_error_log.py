"""What clients can put in the log is bounded: per address and reason, across all addresses
together, and whatever bytes they send, one line stays one line."""

from __future__ import annotations

import logging

import pytest

from notifier.logs import ClientErrorLog, TextFormatter, get_logger


def test_ten_thousand_addresses_cannot_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.clients")
    errors = ClientErrorLog(get_logger("test.clients"))
    for n in range(10_000):
        errors.note("parse error", "garbage", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    lines = [r for r in caplog.records if r.name == "test.clients"]
    assert 0 < len(lines) <= 110, len(lines)
    assert errors.counts["parse error"] == 10_000
    assert len(errors._keys) <= 2_000  # the limiter's own memory is bounded


def test_control_characters_from_a_client_stay_inside_one_line() -> None:
    record = logging.LogRecord("notifier.clients", logging.INFO, __file__, 1, "client_error", None, None)
    record.notifier_fields = {"detail": "evil\x1b[2J\rforged=1\nlevel=ERROR", "user": "josé"}
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert '"evil\\u001b[2J\\rforged=1\\nlevel=ERROR"' in line
    assert "user=josé" in line

"""The wire layer's codes in notifier's words: one table, used for HTTP bodies, acks and
CONNECT_ERRORs alike, so a client sees one error format whoever refused it."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import ErrorCode, error_body
from ..wire import WireCode

ERROR_CODES: dict[WireCode, ErrorCode] = {
    WireCode.MALFORMED: ErrorCode.INVALID_PAYLOAD,
    WireCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    WireCode.TOO_LARGE: ErrorCode.PAYLOAD_TOO_LARGE,
    WireCode.RATE_LIMITED: ErrorCode.RATE_LIMITED,
    WireCode.UNSUPPORTED: ErrorCode.INVALID_PAYLOAD,
    WireCode.FORBIDDEN: ErrorCode.FORBIDDEN,
    WireCode.BUSY: ErrorCode.UNAVAILABLE,
    WireCode.TIMED_OUT: ErrorCode.TIMEOUT,
    WireCode.INTERNAL: ErrorCode.INTERNAL,
}


def http_error_body(code: WireCode, message: str) -> bytes:
    """The JSON body of an HTTP error (`{error: {code, message}}`, as REST's)."""
    return orjson.dumps({"error": {"code": ERROR_CODES[code].value, "message": message}})


class NotifierErrorShapes:
    """`wire.ErrorShapes`: refusals worded as notifier's acks and connect errors."""

    def connect_error(self, code: WireCode, message: str) -> Any:
        return {"code": ERROR_CODES[code].value, "message": message}

    def ack_error(self, code: WireCode, message: str) -> Any:
        return error_body(ERROR_CODES[code], message)

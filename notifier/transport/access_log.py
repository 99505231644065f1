"""The optional HTTP access log (`NOTIFIER_ACCESS_LOG=true`): one structured line per request.

Only the path is logged, never the query string: it may carry a token.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..logs import get_logger

log = get_logger("notifier.access")


class AccessLog(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.info(
            "http_request",
            method=request.method,
            path=request.path,
            status=response.status,
            bytes=response.body_length,
            ms=round(time * 1000, 2),
            peer=request.remote,
            forwarded_for=request.headers.get("X-Forwarded-For", "")[:200],
            user_agent=request.headers.get("User-Agent", "")[:200],
        )

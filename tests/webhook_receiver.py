"""A webhook receiver as an application writes one: a real HTTP server that verifies every
Standard Webhooks signature (and the timestamp's tolerance), refuses what fails, and drops
repeats by `webhook-id`. It can be down (503) or slow."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass
class Received:
    id: str
    type: str
    data: dict[str, Any]


@dataclass
class WebhookReceiver:
    secret: str = SECRET
    down: bool = False
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)  # each webhook-id once
    repeats: int = 0
    refused: int = 0  # bad signatures
    attempts_while_down: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hooks"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.type == event_type]

    async def _handle(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            self.attempts_while_down += 1
            return web.Response(status=503)
        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.refused += 1
            return web.Response(status=401)
        webhook_id = request.headers["webhook-id"]
        if any(r.id == webhook_id for r in self.received):
            self.repeats += 1  # acknowledged again, applied once
            return web.Response(status=204)
        self.received.append(Received(webhook_id, payload["type"], payload["data"]))
        return web.Response(status=204)

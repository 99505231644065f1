"""The push-service side of Web Push (RFC 8030), written for the tests: browsers' devices with
their own keys, an endpoint per device that checks the VAPID signature and claims (RFC 8292)
and decrypts the message with the device's private key (RFC 8291), as a browser would before
showing it. A device can be gone (410)."""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@dataclass
class Device:
    name: str
    endpoint: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))
    gone: bool = False
    shown: list[dict[str, Any]] = field(default_factory=list)  # decrypted messages

    def subscription(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives in a browser."""
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


@dataclass
class PushService:
    devices: dict[str, Device] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # why requests were refused
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push/{device}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def device(self, name: str) -> Device:
        device = self.devices[name] = Device(name, f"{self.url}/push/{name}")
        return device

    def _refuse(self, why: str, status: int = 400) -> web.Response:
        self.refused.append(why)
        return web.Response(status=status, text=why)

    async def _receive(self, request: web.Request) -> web.Response:
        device = self.devices.get(request.match_info["device"])
        if device is None or device.gone:
            return web.Response(status=410)
        auth = request.headers.get("Authorization", "")
        try:
            valid = Vapid02.verify(auth)
        except Exception as exc:  # a malformed header
            return self._refuse(f"bad VAPID header: {exc!r}", 401)
        if not valid:
            return self._refuse("VAPID signature does not verify", 401)
        token = auth.split("t=", 1)[1].split(",", 1)[0]
        claims = json.loads(b64url_decode(token.split(".")[1]))
        if claims.get("aud") != self.url:
            return self._refuse(f"aud {claims.get('aud')!r} is not this push service", 403)
        if not claims.get("exp", 0) > time.time() or not str(claims.get("sub", "")).startswith("mailto:"):
            return self._refuse(f"bad claims {claims}", 403)
        if request.headers.get("Content-Encoding") != "aes128gcm" or "TTL" not in request.headers:
            return self._refuse("not aes128gcm, or no TTL")
        body = await request.read()
        try:
            plain = http_ece.decrypt(
                body, private_key=device.key, auth_secret=device.auth, version="aes128gcm"
            )
        except Exception as exc:
            return self._refuse(f"cannot decrypt: {exc!r}")
        device.shown.append(json.loads(plain))
        return web.Response(status=201)

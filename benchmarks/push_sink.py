"""A push service for the escalation benchmark, in a process of its own: every endpoint
`/push/<n>` shares one device key pair; each message is kept with the time it arrived and
decrypted (RFC 8291) only when `GET /stats` asks, to read when it was due, so that the sink
takes no CPU from the processes measured while pushes arrive. Prints its port, then serves."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY = ec.generate_private_key(ec.SECP256R1())
AUTH = os.urandom(16)
arrived: list[tuple[float, bytes]] = []  # (epoch ms, encrypted body)
received: dict[str, float] = {}  # notification id -> lateness (ms after it was due)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def keys(request: web.Request) -> web.Response:
    public = KEY.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return web.json_response({"p256dh": b64url(public), "auth": b64url(AUTH)})


async def push(request: web.Request) -> web.Response:
    arrived.append((time.time() * 1000, await request.read()))
    return web.Response(status=201)


async def stats(request: web.Request) -> web.Response:
    if request.query.get("decrypt"):
        while arrived:
            at, body = arrived.pop()
            plain = http_ece.decrypt(body, private_key=KEY, auth_secret=AUTH, version="aes128gcm")
            message = json.loads(plain)
            received.setdefault(message["id"], at - message["data"]["due"])
        return web.json_response({"received": len(received), "lateness_ms": sorted(received.values())})
    return web.json_response({"received": len(arrived) + len(received)})


async def main() -> None:
    app = web.Application()
    app.router.add_get("/keys", keys)
    app.router.add_post("/push/{n}", push)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    sys.stdout.close()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())

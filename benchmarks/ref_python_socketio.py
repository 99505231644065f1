"""Reference: plain python-socketio on aiohttp, defaults. A client's "publish" goes to all others."""

from __future__ import annotations

import os

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
app = web.Application()
sio.attach(app)


@sio.on("publish")
async def publish(sid: str, message: dict) -> dict:
    await sio.emit(message["type"], message, skip_sid=sid)
    return {"ok": True}


if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)

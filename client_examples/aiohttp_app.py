"""An aiohttp application of your own with notifier inside: handlers publish in-process.

    NOTIFIER_JWT_SECRET=... .venv/bin/python client_examples/aiohttp_app.py --port 8081
    curl -X POST localhost:8081/orders -d '{"shop": "demo", "id": 1}'

Subscribers of `project:<shop>` get an `order.paid` event for each order.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from notifier import NOTIFIER, Settings, create_app
from notifier.models import PublishRequest


async def place_order(request: web.Request) -> web.Response:
    order = await request.json()
    # The same service the Socket.IO and REST handlers use: stored, replayable, fanned out.
    envelope = await request.app[NOTIFIER].publish(
        PublishRequest(room=f"project:{order['shop']}", type="order.paid", data=order)
    )
    return web.json_response({"ok": True, "event_id": envelope["id"]})


def build_app(settings: Settings | None = None) -> web.Application:
    app = create_app(settings or Settings())
    app.router.add_post("/orders", place_order)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    web.run_app(build_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()

"""notifier with a trigger for the benchmark: publishes through the in-process API.

`POST /bench/publish {"count": N, "window": W, "pad": "..."}` publishes N broadcasts with
`await notifier.publish(...)`, at most W at a time, as an application's own handler would.
"""

from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web

from notifier import Settings
from notifier.app import create_app
from notifier.keys import NOTIFIER
from notifier.models import PublishRequest


async def publish_burst(request: web.Request) -> web.Response:
    body = await request.json()
    notifier = request.app[NOTIFIER]
    window = asyncio.Semaphore(body["window"])

    async def one(seq: int) -> None:
        async with window:
            data = {"sent": time.time() * 1000, "seq": seq, "pad": body["pad"]}
            await notifier.publish(PublishRequest(room="*", type="tick", data=data))

    await asyncio.gather(*(one(n) for n in range(body["count"])))
    return web.json_response({"ok": True})


def main() -> None:
    try:
        import uvloop
    except ImportError:  # as `notifier serve`: the default loop where uvloop is unavailable
        uvloop = None
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create_app(Settings())
    app.router.add_post("/bench/publish", publish_burst)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["NOTIFIER_PORT"]), print=None, access_log=None)


if __name__ == "__main__":
    main()

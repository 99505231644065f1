"""Publishing from Python inside an aiohttp app built around the service, and from threads."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
from aiohttp import web

from notifier import NOTIFIER, Settings
from notifier.models import PublishRequest
from tests.conftest import RunningServer, start_server, stop_server


async def place_order(request: web.Request) -> web.Response:
    """A handler of the user's own app: it emits through the service it runs beside."""
    order = await request.json()
    await request.app[NOTIFIER].publish(
        PublishRequest(room=f"project:{order['shop']}", type="order.paid", data=order)
    )
    return web.json_response({"ok": True})


async def test_own_handler_publishes_through_request_app(server_settings: Settings) -> None:
    server, runner = await start_server(
        server_settings, lambda app: app.router.add_post("/orders", place_order)
    )
    try:
        alice = await server.connect("alice", projects=["shop1"])
        await alice.call("subscribe", {"rooms": ["project:shop1"]})

        async with aiohttp.ClientSession() as session:
            response = await session.post(server.url + "/orders", json={"shop": "shop1", "id": 9})
            assert response.status == 200

        assert (await alice.next_event("order.paid"))["data"] == {"shop": "shop1", "id": 9}
    finally:
        await stop_server(server, runner)


async def test_threads_publish_on_the_service_loop(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])
    await alice.call("subscribe", {"rooms": ["project:p1"]})
    blocking = server.notifier.threadsafe()
    results: list[object] = []

    def legacy_worker(n: int) -> None:
        results.append(blocking.publish("project:p1", "scan.found", {"n": n}))

    threads = [threading.Thread(target=legacy_worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(asyncio.to_thread(thread.join) for thread in threads))

    await alice.next_event("scan.found", count=4)
    assert sorted(e["data"]["n"] for e in alice.of_type("scan.found")) == [0, 1, 2, 3]
    assert len(results) == 4

"""Token deadlines hold from the first second of a process: the clients that reconnect right
after a restart (with long tokens) must not postpone anyone else's notice or expiry, and a
connection that ends leaves no deadline behind."""

from __future__ import annotations

import asyncio
import gc

from notifier.keys import ENGINE
from notifier.wire import EngineSession, SocketConnection
from tests.conftest import RunningServer, until


async def test_tokens_connected_right_after_start_leave_later_deadlines_alone(
    server: RunningServer,
) -> None:
    # As after a restart: the first client, with an hour-long token, connects at once.
    early = await server.connect("early", ttl=3600)
    # After the credentials' first sweep (one second), a client with a short token.
    await asyncio.sleep(1.2)
    short = await server.connect("short", ttl=3)

    notice = await short.next_event("auth.expiring", timeout=4)
    assert notice["data"]["expires_at"]
    expired = await short.next_event("auth.expired", timeout=4)
    assert expired["data"]["code"] == "AUTH_EXPIRED"
    await until(lambda: not short.sio.connected, timeout=3)
    assert early.sio.connected
    assert (await early.call("ping", {}))["ok"]


async def test_ended_connections_are_freed_at_once(server: RunningServer) -> None:
    engine = server.app[ENGINE]
    for _ in range(20):
        client = await server.connect("alice", ttl=3600)
        await client.disconnect()
    await until(lambda: not engine.sessions, timeout=5)
    gc.collect()
    # Nothing (deadline structures included) keeps them: not one of them is left in memory.
    assert _alive(EngineSession) == 0
    assert _alive(SocketConnection) == 0


def _alive(kind: type) -> int:
    return sum(1 for thing in gc.get_objects() if type(thing) is kind)

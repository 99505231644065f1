"""Recovering one's own user room, as docs/recovery.md's client does it: through the auth
positions (replay first, then live) and through `subscribe {since}` after live events came
(the replay arrives later, marked `replayed: true`): either way nothing is lost."""

from __future__ import annotations

import asyncio

from notifier.client import Subscriber
from tests.conftest import RunningServer, until


async def notify(server: RunningServer, title: str) -> None:
    token = server.token("svc", role="publisher")
    status, _ = await server.http(
        "POST", "/api/v1/notifications", token, json={"user_ids": ["alice"], "title": title}
    )
    assert status == 201


async def test_own_room_recovery_through_subscribe_since_loses_nothing(server: RunningServer) -> None:
    first = Subscriber(server.url, server.token("alice"))
    titles: list[str] = []
    first.on("notification", lambda env: titles.append(env["data"]["title"]))
    await first.connect()
    await notify(server, "one")
    await until(lambda: titles == ["one"])
    position = dict(first.positions["user:alice"] or {})
    await first.close()

    await notify(server, "missed")  # while away
    # Back without positions in the auth payload: the own room is joined at its head...
    again = Subscriber(server.url, server.token("alice"))
    got: list[dict] = []
    again.on("notification", got.append)
    await again.connect()
    await notify(server, "live")  # ...and a live event comes before any recovery is asked for
    await until(lambda: [e["data"]["title"] for e in got] == ["live"])
    # Then the client asks for what it missed, from where it stood.
    reply = await again.call("subscribe", {"rooms": ["user:alice"], "since": {"user:alice": position}})
    assert reply["rooms"]["user:alice"]["recovered"] is True
    await until(lambda: {e["data"]["title"] for e in got} == {"live", "missed"}, timeout=5)
    assert [e.get("replayed", False) for e in got] == [False, True]
    await asyncio.sleep(0)  # nothing else arrives: no duplicate of "live"
    assert len(got) == 2
    await again.close()

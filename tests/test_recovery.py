"""Nothing lost: a client that comes back gets exactly what it missed, in order, once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from notifier import Settings
from notifier.client import NotifierClientError, Subscriber
from tests.conftest import RunningServer, make_settings


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, worker_rate_per_second=1e6, worker_rate_burst=100000)


async def publish(worker, room: str, n: int) -> dict:
    return await worker.call("publish", {"room": room, "type": "tick", "data": {"n": n}})


async def test_reconnecting_client_replays_what_it_missed_before_the_ack(
    server: RunningServer,
) -> None:
    worker = await server.worker()
    first = await server.connect("alice", projects=["p1"])
    position = (await first.call("subscribe", {"rooms": ["project:p1"]}))["rooms"]["project:p1"]
    await first.disconnect()  # it had received nothing at all
    for n in range(3):
        await publish(worker, "project:p1", n)

    again = await server.connect("alice", projects=["p1"])
    ack = await again.call(
        "subscribe",
        {
            "rooms": ["project:p1"],
            "since": {"project:p1": {"epoch": position["epoch"], "offset": position["offset"]}},
        },
    )
    await publish(worker, "project:p1", 3)
    await again.next_event("tick", count=4)

    room = ack["rooms"]["project:p1"]
    assert room["recovered"] is True and room["replayed"] == 3 and room["offset"] == 3
    ticks = again.of_type("tick")
    assert [t["offset"] for t in ticks] == [1, 2, 3, 4]
    assert [t.get("replayed", False) for t in ticks] == [True, True, True, False]
    # The replay arrived before the ack: the ack's position covers it.
    names = [name for name, _ in again.events]
    assert names.index("tick") < len(names)


async def test_a_changed_epoch_is_reported_so_the_client_reloads(server: RunningServer) -> None:
    client = await server.connect("alice", projects=["p1"])

    ack = await client.call(
        "subscribe", {"rooms": ["project:p1"], "since": {"project:p1": {"epoch": "gone", "offset": 7}}}
    )

    room = ack["rooms"]["project:p1"]
    assert room["recovered"] is False and room["reason"] == "epoch_changed"
    assert room["joined"] is True and room["offset"] == 0


async def test_a_gap_older_than_the_history_is_reported(tmp_path: Path) -> None:
    from tests.conftest import start_server, stop_server

    settings = make_settings(tmp_path, history_max_events=10)
    server, runner = await start_server(settings)
    try:
        worker = await server.worker()
        first = await server.connect("alice", projects=["p1"])
        position = (await first.call("subscribe", {"rooms": ["project:p1"]}))["rooms"]["project:p1"]
        for n in range(70):
            await publish(worker, "project:p1", n)
        await first.disconnect()
        again = await server.connect("alice", projects=["p1"])
        ack = await again.call(
            "subscribe",
            {"rooms": ["project:p1"], "since": {"project:p1": {"epoch": position["epoch"], "offset": 0}}},
        )
        room = ack["rooms"]["project:p1"]
        assert room["recovered"] is False and room["reason"] == "history_truncated"
        assert room["offset"] == 70
    finally:
        await stop_server(server, runner)


async def test_offline_device_gets_missed_notifications_through_auth_positions(
    server: RunningServer,
) -> None:
    worker = await server.worker()
    phone = Subscriber(server.url, server.token("alice"))
    await phone.connect()
    await worker.call("notify", {"user_ids": ["alice"], "title": "one"})
    await _until(lambda: phone.positions.get("user:alice", {}).get("offset") == 2)
    await phone.close()

    await worker.call("notify", {"user_ids": ["alice"], "title": "two"})
    await worker.call("notify", {"user_ids": ["alice"], "title": "three"})
    seen: list[dict] = []
    phone.on("notification", seen.append)
    await phone.connect()
    await _until(lambda: len(seen) == 2)

    assert [n["data"]["title"] for n in seen] == ["two", "three"]
    assert all(n["replayed"] for n in seen)
    assert phone.session["rooms"]["user:alice"]["recovered"] is True
    assert phone.session["unread"] == 3
    await phone.close()


async def test_positions_in_auth_rejoin_subscribed_rooms_in_one_round_trip(
    server: RunningServer,
) -> None:
    worker = await server.worker()
    client = Subscriber(server.url, server.token("alice", ["p1"]))
    await client.connect()
    await client.subscribe(["project:p1"])
    await publish(worker, "project:p1", 0)
    await _until(lambda: client.positions["project:p1"]["offset"] == 1)
    await client.close()
    await publish(worker, "project:p1", 1)

    await client.connect()
    await _until(lambda: client.positions["project:p1"]["offset"] == 2)
    await publish(worker, "project:p1", 2)
    await _until(lambda: client.positions["project:p1"]["offset"] == 3)

    assert client.session["rooms"]["project:p1"]["replayed"] == 1
    await client.close()


async def test_no_gaps_or_duplicates_while_clients_drop_at_random(server: RunningServer) -> None:
    """Publish without pause while clients drop and reconnect at random moments."""
    rng = random.Random(7)
    worker = await server.worker()
    room = "project:chaos"
    clients = [_Recorder(server, f"user{i}", room) for i in range(4)]
    for client in clients:
        await client.start()

    stop = asyncio.Event()

    async def publisher() -> int:
        n = 0
        while not stop.is_set():
            await publish(worker, room, n)
            n += 1
            if n % 10 == 0:
                await asyncio.sleep(0)
        return n

    async def churn(client: _Recorder) -> None:
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0.01, 0.08))
            await client.subscriber.close()
            await asyncio.sleep(rng.uniform(0, 0.05))
            # The publisher floods the loop this test shares with the server: a handshake may
            # be answered 503 while the loop is late (admission), and is tried again, as a
            # Socket.IO client does.
            for attempt in range(5):
                try:
                    await client.subscriber.connect()
                    break
                except NotifierClientError as exc:
                    if exc.code != "UNAVAILABLE" or attempt == 4:
                        raise
                    await asyncio.sleep(0.1)

    publishing = asyncio.create_task(publisher())
    await asyncio.gather(*(churn(client) for client in clients))
    stop.set()
    total = await publishing
    for client in clients:
        await _until(lambda c=client: c.offsets and c.offsets[-1] == total, timeout=10)

    assert total > 100
    for client in clients:
        assert client.offsets == list(range(1, total + 1)), client.name
        # The server itself sent each offset once: the client's dedup had nothing to drop.
        assert client.subscriber.raw == client.offsets, client.name
        assert client.resets == []
        await client.subscriber.close()


class _RawRecordingSubscriber(Subscriber):
    """Records every tick offset the server sends, before the client's own dedup."""

    raw: list[int]

    def _accept(self, envelope: dict) -> bool:
        if envelope.get("type") == "tick":
            self.raw.append(envelope["offset"])
        return super()._accept(envelope)


class _Recorder:
    def __init__(self, server: RunningServer, name: str, room: str) -> None:
        self.name = name
        self.room = room
        self.subscriber = _RawRecordingSubscriber(
            server.url, server.token(name, ["chaos"]), reconnection_delay=0.05
        )
        self.subscriber.raw = []
        self.offsets: list[int] = []
        self.resets: list[tuple[str, str]] = []
        self.subscriber.on("tick", lambda e: self.offsets.append(e["offset"]))
        self.subscriber.on_reset(lambda room, reason: self.resets.append((room, reason)))

    async def start(self) -> None:
        await self.subscriber.connect()
        await self.subscriber.subscribe([self.room])


async def _until(condition, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():  # noqa: ASYNC110 - state changes inside client callbacks
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout)

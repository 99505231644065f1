"""The Engine.IO session state machine, driven by hypothesis over real sockets: random
interleavings of polls, posts, events, publishes, stalls, an upgrade and a close, by one raw
client against the real server, while a websocket bystander shares its room.

Invariants, checked over each whole run:
- every poll is answered within ping interval + ping timeout;
- every event published to the room reaches the client exactly once and in order, across
  the upgrade (unless the client closed the session), and reaches the bystander likewise;
- every acked event sent by the client is answered exactly once;
- a stalled session costs the bystander nothing: its events keep arriving.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier import Settings
from tests.conftest import Client, RunningServer, make_settings
from tests.wire_client import SEPARATOR, Polling, receive_text, websocket

PING_INTERVAL = 1.0
PING_TIMEOUT = 1.0
_rooms = itertools.count()

Step = tuple[str, int]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("poll"), st.just(0)),
        st.tuples(st.just("event"), st.integers(1, 3)),
        st.tuples(st.just("publish"), st.integers(1, 4)),
        st.tuples(st.just("stall"), st.integers(0, 300)),
        st.tuples(st.just("upgrade"), st.just(0)),
        st.tuples(st.just("close"), st.just(0)),
    ),
    min_size=1,
    max_size=14,
)


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, ping_interval_seconds=1, ping_timeout_seconds=1)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class RawClient:
    """One Engine.IO session by hand: long-polling first, a websocket after an upgrade."""

    polling: Polling
    ws: aiohttp.ClientWebSocketResponse | None = None
    closed: bool = False
    ticks: list[int] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    next_ack: int = 1
    longest_poll: float = 0.0

    def take(self, packets: list[str]) -> list[str]:
        """Record ticks and acks; return the PINGs to answer."""
        pings = []
        for packet in packets:
            if packet == "2":
                pings.append(packet)
            elif packet.startswith('42["tick"'):
                self.ticks.append(orjson.loads(packet[2:])[1]["data"]["n"])
            elif packet.startswith("43"):
                self.acks.append(int(packet[2:].split("[", 1)[0]))
            elif packet == "1":
                self.closed = True
        return pings

    async def poll(self) -> None:
        started = time.monotonic()
        status, body = await self.polling.poll()
        self.longest_poll = max(self.longest_poll, time.monotonic() - started)
        if status != 200:
            self.closed = True
            return
        for _ in self.take(body.split(SEPARATOR)):
            await self.send("3")

    async def read_websocket(self, timeout: float) -> None:
        assert self.ws is not None
        try:
            while True:
                message = await self.ws.receive(timeout=timeout)
                if message.type is not aiohttp.WSMsgType.TEXT:
                    self.closed = True
                    return
                for _ in self.take([message.data]):
                    await self.send("3")
                timeout = 0.01
        except TimeoutError:
            return

    async def send(self, packet: str) -> None:
        if self.ws is not None:
            await self.ws.send_str(packet)
        else:
            status, _ = await self.polling.post(packet)
            if status != 200:
                self.closed = True

    async def event(self, count: int) -> None:
        packets = []
        for _ in range(count):
            packets.append(f'42{self.next_ack}["ping",{{}}]')
            self.next_ack += 1
        if self.ws is not None:
            for packet in packets:
                await self.ws.send_str(packet)
        else:
            await self.send(SEPARATOR.join(packets))

    async def upgrade(self, http: aiohttp.ClientSession, url: str) -> None:
        if self.ws is not None:
            return
        # The client pauses polling (no request of ours is pending here), probes, upgrades.
        ws = await websocket(http, url, sid=self.polling.sid)
        await ws.send_str("2probe")
        assert await receive_text(ws) == "3probe"
        await ws.send_str("5")
        self.ws = ws


async def run_steps(
    server: RunningServer, http: aiohttp.ClientSession, bystander: Client, room: str, steps: list[Step]
) -> None:
    project = room.split(":", 1)[1]
    polling = Polling(http, server.url)
    await polling.open()
    client = RawClient(polling)
    await polling.connect(server.token("alice", projects=[project]))
    await client.send("421" + orjson.dumps(["subscribe", {"rooms": [room]}]).decode())
    client.next_ack = 2
    while 1 not in client.acks:  # subscribed before anything is published
        await client.poll()
    published = 0
    publisher = server.token("worker", role="publisher")
    bystander_seen = len([e for e in bystander.of_type("tick") if e["room"] == room])

    for kind, amount in steps:
        if client.closed:
            break
        if kind == "poll":
            if client.ws is None:
                await client.poll()
            else:
                await client.read_websocket(0.05)
        elif kind == "event":
            await client.event(amount)
        elif kind == "publish":
            for _ in range(amount):
                status, _ = await asyncio.wait_for(
                    server.http(
                        "POST",
                        "/api/v1/publish",
                        publisher,
                        json={"room": room, "type": "tick", "data": {"n": published}},
                    ),
                    5,
                )
                assert status == 201
                published += 1
        elif kind == "stall":
            await asyncio.sleep(amount / 1000)
        elif kind == "upgrade":
            await client.upgrade(http, server.url)
        elif kind == "close":
            await client.send("1")
            client.closed = True

    # The bystander, in the same room, got every event whatever the session did.
    expected = list(range(published))
    await bystander.wait_until(
        lambda: [e["data"]["n"] for e in bystander.of_type("tick") if e["room"] == room] == expected,
        what=f"{published} ticks at the bystander",
    )
    assert bystander_seen == 0
    if client.closed:
        return

    async def drain() -> None:
        while client.ticks != expected or len(client.acks) < client.next_ack - 1:
            assert not client.closed, "the session ended by itself"
            if client.ws is None:
                await client.poll()
            else:
                await client.read_websocket(0.2)

    await asyncio.wait_for(drain(), 10)
    assert client.ticks == expected, "lost, duplicated or reordered across the run"
    assert sorted(client.acks) == list(range(1, client.next_ack)), "an ack lost or sent twice"
    assert client.longest_poll <= PING_INTERVAL + PING_TIMEOUT + 0.1
    await client.send("1")
    if client.ws is not None:
        await client.ws.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
async def test_random_interleavings_lose_nothing_and_answer_every_poll(
    server: RunningServer, http: aiohttp.ClientSession, steps: list[Step]
) -> None:
    room = f"project:machine{next(_rooms)}"
    project = room.split(":", 1)[1]
    bystander = await server.connect("bob", projects=[project])
    assert (await bystander.call("subscribe", {"rooms": [room]}))["ok"]
    try:
        await run_steps(server, http, bystander, room, steps)
    finally:
        await bystander.disconnect()
        server.clients.remove(bystander)

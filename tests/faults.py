"""Fault injection on real connections: a TCP proxy that can make subscriptions go silent.

A Redis subscription can die quietly: its connection stays open, nothing arrives (a NAT or
a failover in the middle). `SilencingProxy` forwards a service's connections to Redis and, on
`silence_subscriptions()`, stops passing data to the connections that subscribed, without
closing them; everything else keeps working. `delay` holds back everything Redis sends by
that many seconds (a slow link: each round trip costs at least that much).
`silence_replication()` does the same to a replica's link (a replica that lags unawares), and
`cut()` closes every connection and refuses new ones.
"""

from __future__ import annotations

import asyncio
import contextlib


class SilencingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._subscribers: set[asyncio.StreamWriter] = set()
        self._silenced: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[asyncio.StreamWriter] = set()
        self._replicas: set[asyncio.StreamWriter] = set()
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence_subscriptions(self) -> int:
        """Stop delivering to every connection that has subscribed so far; how many."""
        self._silenced |= self._subscribers
        return len(self._subscribers)

    def silence_replication(self) -> int:
        """Stop the replication stream to every replica linked through here (its link stays
        up, so it lags without knowing); how many."""
        self._silenced |= self._replicas
        return len(self._replicas)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # Redis is down: so is the link
            client_writer.close()
            return
        self._open.update((client_writer, upstream_writer))

        async def client_to_redis() -> None:
            while data := await client_reader.read(65536):
                if b"SUBSCRIBE" in data.upper():
                    self._subscribers.add(client_writer)
                if b"REPLCONF" in data.upper():  # a replica's link to its primary
                    self._replicas.add(client_writer)
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def redis_to_client() -> None:
            while data := await upstream_reader.read(65536):
                if client_writer in self._silenced:
                    continue  # the connection stays open; nothing more arrives on it
                if self.delay:
                    await asyncio.sleep(self.delay)  # the link's latency, on every answer
                client_writer.write(data)
                await client_writer.drain()

        pumps = [asyncio.ensure_future(client_to_redis()), asyncio.ensure_future(redis_to_client())]
        with contextlib.suppress(Exception):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_writer, upstream_writer):
            writer.close()
            self._open.discard(writer)

    def cut(self) -> None:
        """The link goes: no new connections, and every open one is closed."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

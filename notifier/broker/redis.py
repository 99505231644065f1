"""The Redis broker: room histories and delivery shared by every service process.

Per room, Redis keeps a meta hash (`e`: the history's epoch, `s`: its last offset) and a
stream of envelopes (bounded by count, and by age: old entries are dropped as new ones come,
and an idle room's stream expires). Appending an event (taking the room's next offset, adding
it to the stream, publishing it to every process) is one Lua script, so every process sees a
room's events in offset order; the appends of one loop iteration are one script call.

Each process subscribes to one channel and delivers the events of the rooms its connections
follow. It tracks the last offset it delivered per room: a duplicate is dropped, a gap is
filled from the history before the event that revealed it, and a gap the history cannot fill
(or a new epoch: Redis lost its data) makes the room's connections here reconnect and recover,
where they are told `recovered: false`. Nothing is lost silently.

A subscription can die quietly (python-socketio's Redis manager has that failure): each
process publishes a heartbeat on the channel every second and must hear its own within
three; if not, it resubscribes and fills what it missed. The heartbeats also register the
process (with its connection counts) for `/api/v1/status`.

Not supported: Redis Cluster (a script touches several rooms' keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from ..batching import Batcher
from ..errors import ErrorCode, NotifierError, StartupError
from ..health import Health
from ..logs import get_logger
from ..records import Envelope, StreamPosition
from . import Delivery, Guard, NewEvent, Node

log = get_logger("notifier.broker")

COMPONENT = "broker"
_HEARTBEAT_SECONDS = 1.0
_SILENCE_SECONDS = 3.0  # no heartbeat of our own heard for this long: the subscription is dead
_NODE_TTL_SECONDS = 5.0  # a process unheard of for this long is gone
_META_TTL_SECONDS = 30 * 86400  # a room's epoch and last offset outlive its events

_APPEND = """
local now, new_epoch, max_len = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local stream_ttl, meta_ttl, cutoff = ARGV[4], ARGV[5], tonumber(ARGV[1]) - tonumber(ARGV[6])
local channel, prefix, groups = ARGV[7], ARGV[8], tonumber(ARGV[9])
local i, out = 10, {}
for g = 1, groups do
  local guard_key, guard_version, count = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local skip = false
  if guard_key ~= '' then
    local key = prefix .. ':guard:' .. guard_key
    local seen = redis.call('GET', key)
    if seen and tonumber(seen) >= guard_version then
      skip = true
    else
      redis.call('SET', key, guard_version, 'EX', meta_ttl)
    end
  end
  out[#out + 1] = skip and 0 or 1
  for e = 1, count do
    local room, kind, id, ts, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    i = i + 5
    if not skip then
      local meta, log = prefix .. ':meta:' .. room, prefix .. ':log:' .. room
      local epoch = redis.call('HGET', meta, 'e')
      if not epoch then
        epoch = new_epoch
        redis.call('HSET', meta, 'e', epoch)
      end
      local offset = redis.call('HINCRBY', meta, 's', 1)
      if offset == 1 then
        redis.call('DEL', log)
      end
      local json = '{"id":"' .. id .. '","type":"' .. kind .. '","room":"' .. room .. '","ts":' ..
        ts .. ',"data":' .. data .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
      redis.call('XADD', log, 'MAXLEN', max_len, offset .. '-0', 't', ts, 'd', json)
      if offset % 64 == 0 then
        for _, entry in ipairs(redis.call('XRANGE', log, '-', '+', 'COUNT', 64)) do
          if tonumber(entry[2][2]) >= cutoff then break end
          redis.call('XDEL', log, entry[1])
        end
      end
      redis.call('EXPIRE', log, stream_ttl)
      redis.call('EXPIRE', meta, meta_ttl)
      local header = room .. '\\n' .. offset .. '\\n' .. epoch .. '\\n' .. kind .. '\\n'
      redis.call('PUBLISH', channel, header .. json)
      out[#out + 1] = offset
      out[#out + 1] = epoch
    end
  end
end
return out
"""

_BOUNDS = """
local meta, log = ARGV[1] .. ':meta:' .. ARGV[2], ARGV[1] .. ':log:' .. ARGV[2]
local values = redis.call('HMGET', meta, 'e', 's')
local epoch, head = values[1], tonumber(values[2] or 0)
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', meta, 'e', epoch)
  redis.call('EXPIRE', meta, ARGV[4])
end
local first = head + 1
local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
if #oldest > 0 then first = tonumber(string.match(oldest[1][1], '^(%d+)')) end
return {epoch, head, first}
"""

_REDIS_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError,
                 redis_errors.BusyLoadingError, redis_errors.ReadOnlyError)


class RedisBroker:
    shared = True

    def __init__(
        self, url: str, health: Health, *, max_events_per_room: int, max_age_seconds: float,
        prefix: str = "notifier",
    ) -> None:
        self._url = url
        self._health = health
        self._max_events = max_events_per_room
        self._max_age = max_age_seconds
        self._prefix = prefix
        self._channel = f"{prefix}:events"
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._redis: aioredis.Redis | None = None
        self._append: Any = None
        self._bounds: Any = None
        self._node: Node | None = None
        self._appends: Batcher[tuple[Sequence[NewEvent], Guard | None], list[Envelope] | None] = (
            Batcher(self._append_batch))
        # Per followed room: (epoch, offset) delivered last by this process.
        self._last: dict[str, tuple[str, int]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._heard_own = 0.0
        self._cluster: dict[str, Any] = {"broker": "redis", "node": self.node_id, "nodes": [],
                                         "user_connections": 0}

    # Lifecycle

    async def start(self, node: Node) -> None:
        self._node = node
        self._redis = aioredis.Redis.from_url(
            self._url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5,
            health_check_interval=10,
        )
        try:
            await self._redis.ping()
        except (*_REDIS_ERRORS, redis_errors.RedisError) as exc:
            await self._redis.aclose()
            raise StartupError(
                f"NOTIFIER_BROKER_URL: cannot reach Redis at {_where(self._url)}: {exc}") from exc
        self._append = self._redis.register_script(_APPEND)
        self._bounds = self._redis.register_script(_BOUNDS)
        self._heard_own = time.monotonic()
        self._listener = asyncio.ensure_future(self._listen())
        self._heartbeat = asyncio.ensure_future(self._beat())

    async def stop(self) -> None:
        await self._appends.close()
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._redis is not None:
            with contextlib.suppress(*_REDIS_ERRORS):
                await self._redis.hdel(f"{self._prefix}:nodes", self.node_id)
                await self._redis.zrem(f"{self._prefix}:alive", self.node_id)
            await self._redis.aclose()
            self._redis = None

    async def _call(self, work: Any) -> Any:
        """A Redis call; an outage becomes STORE_UNAVAILABLE and shows in readiness."""
        try:
            result = await work
        except _REDIS_ERRORS as exc:
            self._health.fail(COMPONENT, f"Redis at {_where(self._url)}: {type(exc).__name__}: {exc}")
            raise NotifierError(ErrorCode.STORE_UNAVAILABLE,
                                "the broker cannot be reached right now; retry") from exc
        return result

    # Appending

    async def publish(
        self, events: Sequence[NewEvent], guard: Guard | None = None
    ) -> list[Envelope] | None:
        return await self._appends.submit((events, guard))

    async def _append_batch(
        self, groups: list[tuple[Sequence[NewEvent], Guard | None]]
    ) -> list[list[Envelope] | None]:
        args: list[Any] = [
            int(time.time() * 1000), secrets.token_hex(8), self._max_events,
            int(self._max_age), _META_TTL_SECONDS, int(self._max_age * 1000), self._channel,
            self._prefix, len(groups),
        ]
        for events, guard in groups:
            args += [guard.key if guard else "", guard.version if guard else 0, len(events)]
            for event in events:
                args += [event.room, event.type, event.id, event.ts, orjson.dumps(event.data)]
        out = await self._call(self._append(keys=[], args=args))
        results: list[list[Envelope] | None] = []
        position = 0
        for events, _ in groups:
            appended = out[position] == 1
            position += 1
            if not appended:
                results.append(None)
                continue
            envelopes = []
            for event in events:
                offset, epoch = int(out[position]), out[position + 1]
                position += 2
                envelopes.append({"id": event.id, "type": event.type, "room": event.room,
                                  "ts": event.ts, "data": event.data, "offset": offset,
                                  "epoch": epoch})
            results.append(envelopes)
        return results

    # Reading

    async def read(self, room: str, after: int, limit: int) -> list[Envelope]:
        assert self._redis is not None
        entries = await self._call(self._redis.xrange(
            f"{self._prefix}:log:{room}", f"{after + 1}-0", "+", count=limit))
        return [orjson.loads(fields["d"]) for _, fields in entries]

    async def bounds(self, room: str) -> tuple[StreamPosition, int]:
        epoch, head, first = await self._call(self._bounds(
            keys=[], args=[self._prefix, room, secrets.token_hex(8), _META_TTL_SECONDS]))
        return StreamPosition(epoch, int(head)), int(first)

    async def trim(self, older_than_ts: int, max_per_room: int) -> int:
        return 0  # done as events are appended, and by the streams' expiry

    # Delivery

    def observe(self, room: str, position: StreamPosition) -> None:
        # Where delivery stands for a room no event has reached yet: after a lost subscription,
        # what followed this position is filled in.
        self._last.setdefault(room, (position.epoch, position.offset))

    async def _listen(self) -> None:
        """Subscribe, fill what was missed, deliver; again whenever the subscription dies."""
        assert self._redis is not None
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            self._pubsub = pubsub
            try:
                await pubsub.subscribe(self._channel)
                self._heard_own = time.monotonic()
                await self._catch_up()
                self._health.recover(COMPONENT)
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except (*_REDIS_ERRORS, NotifierError) as exc:
                self._health.fail(COMPONENT, f"Redis subscription at {_where(self._url)}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _on_message(self, text: str) -> None:
        if text[:1] == "!":
            if text[1:] == self.node_id:
                self._heard_own = time.monotonic()
            return
        room, offset_text, epoch, event_type, json = text.split("\n", 4)
        node = self._node
        assert node is not None
        offset = int(offset_text)
        delivery = Delivery(room, offset, epoch, event_type, json)
        if not node.wanted(room):
            self._last.pop(room, None)
            if event_type == "config.updated":
                node.deliver(delivery)  # every process follows configuration changes
            return
        last = self._last.get(room)
        if last is not None:
            if last[0] != epoch:
                node.lost(room, "epoch_changed")
            elif offset <= last[1]:
                return  # delivered already (a gap fill got there first)
            elif offset > last[1] + 1 and not await self._fill(room, last, offset - 1):
                node.lost(room, "history_truncated")
        self._last[room] = (epoch, offset)
        node.deliver(delivery)

    async def _fill(self, room: str, last: tuple[str, int], until: int) -> bool:
        """Deliver the events after `last` up to `until` from the history; False if it no
        longer has them all."""
        node = self._node
        assert node is not None
        missing = await self.read(room, last[1], until - last[1])
        expected = last[1] + 1
        for envelope in missing:
            if envelope["offset"] != expected or envelope["epoch"] != last[0]:
                return False
            node.deliver(Delivery.of(envelope))
            expected += 1
        return expected == until + 1

    async def _catch_up(self) -> None:
        """After (re)subscribing: what the followed rooms got while we were not listening."""
        node = self._node
        assert node is not None
        for room, last in list(self._last.items()):
            if not node.wanted(room):
                self._last.pop(room, None)
                continue
            head, _ = await self.bounds(room)
            if head.epoch != last[0]:
                node.lost(room, "epoch_changed")
                self._last[room] = (head.epoch, head.offset)
            elif head.offset > last[1]:
                if not await self._fill(room, last, head.offset):
                    node.lost(room, "history_truncated")
                self._last[room] = (head.epoch, head.offset)

    # Heartbeats, the node registry, and one-offs

    async def _beat(self) -> None:
        assert self._redis is not None and self._node is not None
        nodes, alive = f"{self._prefix}:nodes", f"{self._prefix}:alive"
        while True:
            await asyncio.sleep(_HEARTBEAT_SECONDS)
            try:
                now = time.time()
                described = {**self._node.describe(), "seen": int(now * 1000)}
                pipe = self._redis.pipeline(transaction=False)
                pipe.publish(self._channel, f"!{self.node_id}")
                pipe.hset(nodes, self.node_id, orjson.dumps(described).decode())
                pipe.zadd(alive, {self.node_id: now})
                pipe.zremrangebyscore(alive, 0, now - _NODE_TTL_SECONDS)
                pipe.zrangebyscore(alive, now - _NODE_TTL_SECONDS, "+inf")
                # Bounded: a Redis that stopped answering must not stop the silence check.
                *_, living = await asyncio.wait_for(pipe.execute(), _HEARTBEAT_SECONDS * 2)
                infos = await self._redis.hmget(nodes, living) if living else []
                self._cluster = _cluster(self.node_id, living, infos)
            except (TimeoutError, *_REDIS_ERRORS) as exc:
                self._health.fail(COMPONENT, f"Redis at {_where(self._url)}: {exc!r}")
            if time.monotonic() - self._heard_own > _SILENCE_SECONDS:
                # Our own heartbeats no longer come back: the subscription is dead, however
                # alive its connection looks. Drop it; the listener subscribes again.
                self._health.fail(COMPONENT, "the Redis subscription went silent; resubscribing")
                self._heard_own = time.monotonic()
                if self._listener is not None:
                    self._listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await self._listener
                self._listener = asyncio.ensure_future(self._listen())
            for room in [room for room in self._last if not self._node.wanted(room)]:
                self._last.pop(room, None)

    async def claim(self, name: str, ttl_seconds: float) -> bool:
        assert self._redis is not None
        won = await self._call(self._redis.set(
            f"{self._prefix}:claim:{name}", self.node_id, nx=True, px=max(int(ttl_seconds * 1000), 1)))
        return bool(won)

    def cluster(self) -> dict[str, Any]:
        return self._cluster


def _cluster(node_id: str, living: list[str], infos: list[str | None]) -> dict[str, Any]:
    nodes = []
    for name, info in zip(living, infos, strict=True):
        described = orjson.loads(info) if info else {}
        nodes.append({"id": name, **described})
    return {
        "broker": "redis", "node": node_id, "nodes": nodes,
        "user_connections": sum(int(n.get("user_connections", 0)) for n in nodes),
    }


def _where(url: str) -> str:
    """The Redis address without credentials, for messages and logs."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path}"

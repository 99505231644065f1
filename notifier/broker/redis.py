"""The Redis broker: room histories and delivery shared by every service process.

Per room, Redis keeps a meta hash (`e`: the history's epoch, `s`: its last offset) and a
stream of envelopes (bounded by count, and by age: old entries are dropped as new ones come,
and an idle room's stream expires). Appending an event (taking the room's next offset, adding
it to the stream, publishing it to every process) is one Lua script, so every process sees a
room's events in offset order; the appends of one loop iteration are one script call.

Each room has a channel; a process subscribes to the rooms its connections follow (before it
reads a room's history for a joining connection, so nothing falls between the two), and to
the broadcast room and a control channel always. It tracks the last offset it delivered per
room: a duplicate is dropped, a gap is filled from the history before the event that revealed
it, and a gap the history cannot fill (or a new epoch: Redis lost its data) makes the room's
connections here reconnect and recover, where they are told `recovered: false`. Nothing is
lost silently.

A subscription can die quietly (python-socketio's Redis manager has that failure): each
process publishes a heartbeat on the control channel every second and must hear its own
within three; if not, it resubscribes and fills what it missed. The subscription's connection
has redis-py's transparent retries turned off: a reconnect it made by itself would lose what
was published meanwhile without telling anyone. The heartbeats also register the process
(with its connection counts) for `/api/v1/status`.

Not supported: Redis Cluster (a script touches several rooms' keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..batching import Batcher
from ..errors import ErrorCode, NotifierError, StartupError
from ..health import Health
from ..logs import get_logger
from ..records import Envelope, StreamPosition
from ..rooms import ALL_PROJECTS_ROOM, BROADCAST_ROOM
from . import UNKEPT, Delivery, Guard, NewEvent, Node, PresenceBackend
from .redis_presence import RedisPresence

log = get_logger("notifier.broker")

COMPONENT = "broker"
# The subscription fails and recovers on its own: calls can work while it is being renewed.
SUBSCRIPTION = "broker subscription"
_HEARTBEAT_SECONDS = 1.0
_SILENCE_SECONDS = 3.0  # no heartbeat of our own heard for this long: the subscription is dead
_NODE_TTL_SECONDS = 5.0  # a process unheard of for this long is gone
_META_TTL_SECONDS = 30 * 86400  # a room's epoch and last offset outlive its events
_POOL_SIZE = 32
_MAX_SEEN = 100_000  # rooms whose highest offset seen here is remembered, to notice rewinds
# A floor no head can reach: the epoch at hand is retired outright (its offsets were reused).
_RETIRE = 2**53
_CATCH_UP_BATCH = 500  # rooms whose bounds one pipelined round trip reads after a resubscription

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
    -- One argument per event: room, type, id, ts, the epoch and offset the node saw the room
    -- reach (its floor), and data, separated by \31 (unit separator).
    local event = ARGV[i]
    i = i + 1
    local a = string.find(event, '\\31', 1, true)
    local b = string.find(event, '\\31', a + 1, true)
    local c = string.find(event, '\\31', b + 1, true)
    local d = string.find(event, '\\31', c + 1, true)
    local f = string.find(event, '\\31', d + 1, true)
    local g = string.find(event, '\\31', f + 1, true)
    local room, kind = string.sub(event, 1, a - 1), string.sub(event, a + 1, b - 1)
    local id, ts = string.sub(event, b + 1, c - 1), string.sub(event, c + 1, d - 1)
    local floor_epoch = string.sub(event, d + 1, f - 1)
    local floor_offset = tonumber(string.sub(event, f + 1, g - 1))
    local h = string.find(event, '\\31', g + 1, true)
    local once = string.sub(event, g + 1, h - 1) == '1'
    local data = string.sub(event, h + 1)
    local mark = once and (prefix .. ':once:' .. room .. ':' .. id) or nil
    local before = mark and redis.call('GET', mark)
    if before and not skip then
      -- Appended already (a retry): its first offset and epoch, nothing appended again.
      local space = string.find(before, ' ', 1, true)
      out[#out + 1] = tonumber(string.sub(before, 1, space - 1))
      out[#out + 1] = string.sub(before, space + 1)
    elseif not skip then
      local meta, log = prefix .. ':meta:' .. room, prefix .. ':log:' .. room
      local values = redis.call('HMGET', meta, 'e', 's')
      local epoch = values[1]
      if not epoch then
        epoch = new_epoch
        redis.call('HSET', meta, 'e', epoch)
      elseif epoch == floor_epoch and tonumber(values[2] or 0) < floor_offset then
        -- Older than what the node saw (Redis came back from an older snapshot, or a lagging
        -- replica took over): that history is lost, and its offsets are never handed out
        -- again in its epoch. A new epoch starts; clients positioned in the old one are told
        -- they cannot recover.
        epoch = new_epoch
        redis.call('DEL', log)
        redis.call('HSET', meta, 'e', epoch, 's', 0)
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
      redis.call('PUBLISH', channel .. room, header .. json)
      if mark then
        -- Kept as long as a retry of a request that died here can come (claims go stale in
        -- 15 s, retries wait 20 s): minutes, not the history's life, since every keyed
        -- publish leaves one.
        redis.call('SET', mark, offset .. ' ' .. epoch, 'EX', 300)
      end
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
if epoch and epoch == ARGV[5] and head < tonumber(ARGV[6]) then
  -- The history went back below what was seen of it (see _APPEND): a new epoch.
  epoch, head = ARGV[3], 0
  redis.call('DEL', log)
  redis.call('HSET', meta, 'e', epoch, 's', 0)
  redis.call('EXPIRE', meta, ARGV[4])
end
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

_REDIS_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.MaxConnectionsError,
)


class RedisBroker:
    shared = True

    def __init__(
        self,
        url: str,
        health: Health,
        *,
        max_events_per_room: int,
        max_age_seconds: float,
        prefix: str = "notifier",
    ) -> None:
        self._url = url
        self._health = health
        self._max_events = max_events_per_room
        self._max_age = max_age_seconds
        self.prefix = prefix
        self._control = f"{prefix}:control"
        self._room_channel = f"{prefix}:room:"
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._redis: aioredis.Redis | None = None
        self._subscriber: aioredis.Redis | None = None  # the subscription's, without retries
        self._append: Any = None
        self._bounds: Any = None
        self._node: Node | None = None
        # Two batches in flight: one on its way while the next fills. Each is atomic, and
        # offsets (not the order batches complete in) order delivery.
        self._appends: Batcher[tuple[Sequence[NewEvent], Guard | None], list[Envelope] | None] = Batcher(
            self._append_batch, max_in_flight=2
        )
        # Rooms followed (subscribed), and per room the (epoch, offset) delivered last here.
        self._followed: set[str] = {BROADCAST_ROOM}
        self._last: dict[str, tuple[str, int]] = {}
        # Per room, the offset and id of the event its subscription delivered last.
        self._last_ids: dict[str, tuple[int, str]] = {}
        # The highest (epoch, offset) seen here per room, by appending, delivering or reading
        # bounds: a Redis that comes back with less (an older snapshot, a lagging replica) is
        # noticed by it, and the room's history starts a new epoch instead of reusing offsets.
        self._seen: OrderedDict[str, tuple[str, int]] = OrderedDict()
        # Subscriptions sent and not yet confirmed by Redis, per channel and per room.
        self._confirming: dict[str, list[asyncio.Future[None]]] = {}
        self._following: dict[str, asyncio.Future[None]] = {}
        self._subscribed = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._heard_own = 0.0
        self._cluster: dict[str, Any] = {
            "broker": "redis",
            "node": self.node_id,
            "nodes": [],
            "user_connections": 0,
        }

    # Lifecycle

    async def start(self, node: Node) -> None:
        self._node = node
        if self._url.startswith(SENTINEL_SCHEME):
            self._redis, self._subscriber = _sentinel_clients(self._url)
        else:
            # A bounded pool that makes callers wait for a connection (redis-py's default pool
            # raises once it has none free: a reconnect storm's history reads would fail).
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                decode_responses=True,
                socket_timeout=5,
                socket_connect_timeout=5,
                health_check_interval=10,
                max_connections=_POOL_SIZE,
                timeout=5,
            )
            self._redis = aioredis.Redis(connection_pool=pool)
            self._subscriber = aioredis.Redis.from_url(
                self._url,
                decode_responses=True,
                socket_timeout=None,
                socket_connect_timeout=5,
                retry=Retry(NoBackoff(), 0),
            )
        try:
            await self._redis.ping()
        except (*_REDIS_ERRORS, redis_errors.RedisError) as exc:
            await self._redis.aclose()
            raise StartupError(
                f"NOTIFIER_BROKER_URL: cannot reach Redis at {_where(self._url)}: {exc}"
            ) from exc
        self._append = self._redis.register_script(_APPEND)
        self._bounds = self._redis.register_script(_BOUNDS)
        self._heard_own = time.monotonic()
        self._listener = asyncio.ensure_future(self._listen())
        self._heartbeat = asyncio.ensure_future(self._beat())
        # Connections may join rooms as soon as this returns: be subscribed by then.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 10)

    async def stop(self) -> None:
        await self._appends.close()
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._redis is not None:
            with contextlib.suppress(*_REDIS_ERRORS):
                await self._redis.hdel(f"{self.prefix}:nodes", self.node_id)
                await self._redis.zrem(f"{self.prefix}:alive", self.node_id)
            await self._redis.aclose()
            self._redis = None
        if self._subscriber is not None:
            await self._subscriber.aclose()
            self._subscriber = None

    async def call(self, work: Any, operation: str = "call") -> Any:
        """A Redis call; an outage becomes STORE_UNAVAILABLE and shows in readiness."""
        started = time.perf_counter()
        try:
            result = await work
        except _REDIS_ERRORS as exc:
            self._health.fail(COMPONENT, f"Redis at {_where(self._url)}: {type(exc).__name__}: {exc}")
            if operation == "append" and isinstance(exc, redis_errors.TimeoutError):
                # Sent, and no answer in time: Redis may have run it. Only a retry under the
                # same idempotency key is safe (its event is appended at most once).
                raise NotifierError(
                    ErrorCode.OUTCOME_UNKNOWN,
                    "the broker did not answer in time: this may or may not have been stored; "
                    "retry with the same idempotency key",
                ) from exc
            raise NotifierError(
                ErrorCode.STORE_UNAVAILABLE, "the broker cannot be reached right now; retry"
            ) from exc
        # Ready again on the next call that works, whichever call failed before.
        self._health.recover(COMPONENT)
        self._health.timed(COMPONENT, operation, time.perf_counter() - started)
        return result

    # Appending

    def publish(
        self, events: Sequence[NewEvent], guard: Guard | None = None
    ) -> Awaitable[list[Envelope] | None]:
        # The batch's own future, no coroutine around it: this is every event's path.
        return self._appends.submit((events, guard))

    async def _append_batch(
        self, groups: list[tuple[Sequence[NewEvent], Guard | None]]
    ) -> list[list[Envelope] | None]:
        args: list[Any] = [
            int(time.time() * 1000),
            secrets.token_hex(8),
            self._max_events,
            int(self._max_age),
            _META_TTL_SECONDS,
            int(self._max_age * 1000),
            self._room_channel,
            self.prefix,
            len(groups),
        ]
        for events, guard in groups:
            args += [guard.key if guard else "", guard.version if guard else 0, len(events)]
            # One argument per event (no field of it but the data can hold \x1f).
            args += [self._event_argument(event) for event in events]
        out = await self.call(self._append(keys=[], args=args), "append")
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
                self._saw(event.room, epoch, offset)
                envelopes.append(
                    {
                        "id": event.id,
                        "type": event.type,
                        "room": event.room,
                        "ts": event.ts,
                        "data": event.data,
                        "offset": offset,
                        "epoch": epoch,
                    }
                )
            results.append(envelopes)
        return results

    # Reading

    async def read(self, room: str, after: int, limit: int) -> list[Envelope]:
        assert self._redis is not None
        entries = await self.call(
            self._redis.xrange(f"{self.prefix}:log:{room}", f"{after + 1}-0", "+", count=limit)
        )
        return [orjson.loads(fields["d"]) for _, fields in entries]

    async def bounds(self, room: str) -> tuple[StreamPosition, int]:
        """The room's bounds. A head below what this node saw of the room (in the same epoch)
        is a rewound history, given a new epoch. (Only what the node saw counts: a client's
        position is its own word, and must not retire a room's history for everyone.)"""
        floor_epoch, floor_offset = self._floor(room)
        return await self._read_bounds(room, floor_epoch, floor_offset)

    async def _read_bounds(
        self, room: str, floor_epoch: str, floor_offset: int
    ) -> tuple[StreamPosition, int]:
        args = [self.prefix, room, secrets.token_hex(8), _META_TTL_SECONDS, floor_epoch, floor_offset]
        epoch, head, first = await self.call(self._bounds(keys=[], args=args))
        if floor_epoch and epoch != floor_epoch:
            self._rewound([room], "a room's head is below what was seen of it")
        self._saw(room, epoch, int(head))
        return StreamPosition(epoch, int(head)), int(first)

    def _event_argument(self, event: NewEvent) -> bytes:
        """room, type, id, ts, floor epoch, floor offset, once, data: as _APPEND reads them."""
        head = f"{event.room}\x1f{event.type}\x1f{event.id}\x1f{event.ts}\x1f{self._floor_text(event.room)}"
        return f"{head}\x1f{'1' if event.once else ''}\x1f".encode() + orjson.dumps(event.data)

    # Rewinds

    def _saw(self, room: str, epoch: str, offset: int) -> None:
        seen = self._seen.get(room)
        if seen is None or seen[0] != epoch or seen[1] < offset:
            self._seen[room] = (epoch, offset)
        self._seen.move_to_end(room)
        if len(self._seen) > _MAX_SEEN:
            self._seen.popitem(last=False)

    def _floor(self, room: str) -> tuple[str, int]:
        """The highest position seen here (epoch "" when none)."""
        seen = self._seen.get(room)
        last = self._last.get(room)
        if last is not None and (seen is None or (last[0] == seen[0] and last[1] > seen[1])):
            seen = last
        return seen if seen is not None else ("", 0)

    def _floor_text(self, room: str) -> str:
        epoch, offset = self._floor(room)
        return f"{epoch}\x1f{offset}"

    def _rewound(self, rooms: list[str], evidence: str) -> None:
        log.warning(
            "broker_history_rewound",
            rooms=len(rooms),
            evidence=evidence,
            detail="Redis holds less than was seen of these rooms (restored from an older snapshot, or a "
            "lagging replica took over): each starts a new epoch; clients positioned in the old one "
            "are told recovered: false",
        )

    async def trim(self, older_than_ts: int, max_per_room: int) -> int:
        return 0  # done as events are appended, and by the streams' expiry

    # Delivery

    async def follow(self, room: str) -> None:
        """Subscribe to the room's channel (a connection here joins it); returns once Redis has
        confirmed, so that what is appended after a history read afterwards arrives here."""
        pending = self._following.get(room)
        if pending is not None:
            await asyncio.shield(pending)  # a subscription on its way: wait for it too
            return
        if room in self._followed:
            return
        pubsub = self._pubsub
        if pubsub is None:
            raise NotifierError(ErrorCode.STORE_UNAVAILABLE, "the broker is reconnecting; retry")
        channel = self._channel_of(room)
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._following[room] = confirmed
        self._confirming.setdefault(channel, []).append(confirmed)
        self._followed.add(room)
        try:
            await self.call(self._subscribe(pubsub, room))
            await asyncio.wait_for(asyncio.shield(confirmed), 5)
        except (TimeoutError, NotifierError) as exc:
            self._followed.discard(room)
            if not confirmed.done():
                confirmed.set_exception(exc)
                confirmed.exception()
            raise NotifierError(
                ErrorCode.STORE_UNAVAILABLE, "the broker did not confirm the subscription; retry"
            ) from exc
        finally:
            del self._following[room]

    def unfollow(self, room: str) -> None:
        """No connection here follows the room any more."""
        if room == BROADCAST_ROOM or room not in self._followed:
            return
        self._followed.discard(room)
        self._last.pop(room, None)
        self._last_ids.pop(room, None)
        pubsub = self._pubsub
        if pubsub is not None:
            task = asyncio.ensure_future(self._unsubscribe(pubsub, room))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _channel_of(self, room: str) -> str:
        """A room's channel; for the all-projects feed, the pattern of every project's."""
        return self._room_channel + room  # "project:*" is that pattern, as it is

    def _subscribe(self, pubsub: Any, room: str) -> Awaitable[Any]:
        subscribing: Awaitable[Any]
        if room == ALL_PROJECTS_ROOM:
            subscribing = pubsub.psubscribe(self._channel_of(room))
        else:
            subscribing = pubsub.subscribe(self._channel_of(room))
        return subscribing

    async def _unsubscribe(self, pubsub: Any, room: str) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            if room == ALL_PROJECTS_ROOM:
                await pubsub.punsubscribe(self._channel_of(room))
            else:
                await pubsub.unsubscribe(self._channel_of(room))

    def observe(self, room: str, position: StreamPosition) -> None:
        # Where delivery stands for a room no event has reached yet: after a lost subscription,
        # what followed this position is filled in.
        self._last.setdefault(room, (position.epoch, position.offset))

    async def _listen(self) -> None:
        """Subscribe, fill what was missed, deliver; again whenever the subscription dies."""
        assert self._subscriber is not None and self._node is not None
        backoff = 0.1
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                channels = [
                    self._control,
                    *(self._channel_of(room) for room in self._followed if room != ALL_PROJECTS_ROOM),
                ]
                await pubsub.subscribe(*channels)
                if ALL_PROJECTS_ROOM in self._followed:
                    await pubsub.psubscribe(self._channel_of(ALL_PROJECTS_ROOM))
                self._pubsub = pubsub
                self._heard_own = time.monotonic()
                await self._catch_up()
                if self._subscribed.is_set():  # a subscription again: signals may be lost
                    self._node.signals_missed()
                self._health.recover(SUBSCRIPTION)
                self._subscribed.set()
                backoff = 0.1
                async for message in pubsub.listen():
                    kind = message["type"]
                    if kind == "message":
                        await self._on_message(message["data"])
                    elif kind == "pmessage":
                        self._on_any_project(message["data"])
                    elif kind in ("subscribe", "psubscribe"):
                        for waiting in self._confirming.pop(message["channel"], ()):
                            if not waiting.done():
                                waiting.set_result(None)
            except asyncio.CancelledError:
                raise
            except (*_REDIS_ERRORS, NotifierError) as exc:
                self._health.fail(SUBSCRIPTION, f"Redis subscription at {_where(self._url)}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _on_message(self, text: str) -> None:
        if text[:1] == "!":
            if text[1:] == self.node_id:
                self._heard_own = time.monotonic()
            return
        if text[:1] == "{":  # a signal to every node
            message = orjson.loads(text)
            assert self._node is not None
            self._node.signal(message["signal"], message["data"])
            return
        room, offset_text, epoch, event_type, json = text.split("\n", 4)
        node = self._node
        assert node is not None
        offset = int(offset_text)
        delivery = Delivery(room, offset, epoch, event_type, json)
        if room not in self._followed:
            return  # in flight when the room was left
        if offset == UNKEPT:
            node.deliver(delivery)
            return
        last = self._last.get(room)
        event_id = json[7 : json.find('"', 7)]  # the envelope's JSON starts with {"id":"
        if last is not None:
            if last[0] != epoch:
                node.lost(room, "epoch_changed")
            elif offset <= last[1]:
                known = self._last_ids.get(room)
                if known is not None and known[0] == offset and known[1] != event_id:
                    # Another event under an offset delivered already: Redis went back and
                    # handed it out again. That epoch is retired; its clients are told.
                    await self._read_bounds(room, epoch, _RETIRE)
                    node.lost(room, "epoch_changed")
                    self._last.pop(room, None)
                return  # delivered already (a gap fill got there first)
            elif offset > last[1] + 1 and not await self._fill(room, last, offset - 1):
                node.lost(room, "history_truncated")
        self._last[room] = (epoch, offset)
        self._last_ids[room] = (offset, event_id)
        self._saw(room, epoch, offset)
        node.deliver(delivery)

    def _on_any_project(self, text: str) -> None:
        """An event of some project's room, for the all-projects feed: live, no gap filling.
        A room followed here as well comes through its own channel too, and is taken there."""
        room, offset, epoch, event_type, json = text.split("\n", 4)
        if room not in self._followed and self._node is not None:
            self._node.deliver(Delivery(room, int(offset), epoch, event_type, json))

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
        """After (re)subscribing: what the followed rooms got while we were not listening.

        The bounds of every followed room are read in pipelined batches: a round trip per
        batch, not per room, so a node following thousands of rooms catches up in a few round
        trips even over a slow link; and each batch counts as a sign of life, so the silence
        check does not restart a catch-up that is making progress."""
        node = self._node
        assert node is not None and self._redis is not None
        for room in [room for room in self._last if room not in self._followed]:
            self._last.pop(room, None)
        rooms = list(self._last)
        for start in range(0, len(rooms), _CATCH_UP_BATCH):
            batch = rooms[start : start + _CATCH_UP_BATCH]
            pipe = self._redis.pipeline(transaction=False)
            for room in batch:
                floor_epoch, floor_offset = self._floor(room)
                args = [self.prefix, room, secrets.token_hex(8), _META_TTL_SECONDS, floor_epoch, floor_offset]
                # Queued, not sent: redis-py's scripts join a pipeline when awaited with it.
                await self._bounds(keys=[], args=args, client=pipe)
            answers = await self.call(pipe.execute(), "catch_up")
            self._heard_own = time.monotonic()
            floors = [self._floor(room)[0] for room in batch]
            rewound = [
                room
                for room, floor, (epoch, _, _) in zip(batch, floors, answers, strict=True)
                if floor and epoch != floor
            ]
            if rewound:
                self._rewound(rewound, "heads below what was delivered here, after a reconnection")
            for room, (epoch, offset, _first) in zip(batch, answers, strict=True):
                self._saw(room, epoch, int(offset))
                await self._caught_up(room, StreamPosition(epoch, int(offset)))

    async def _caught_up(self, room: str, head: StreamPosition) -> None:
        node = self._node
        assert node is not None
        last = self._last.get(room)
        if last is None:
            return  # left while the batch was read
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
        nodes, alive = f"{self.prefix}:nodes", f"{self.prefix}:alive"
        while True:
            await asyncio.sleep(_HEARTBEAT_SECONDS)
            try:
                now = time.time()
                described = {**self._node.describe(), "seen": int(now * 1000)}
                pipe = self._redis.pipeline(transaction=False)
                pipe.publish(self._control, f"!{self.node_id}")
                pipe.hset(nodes, self.node_id, orjson.dumps(described).decode())
                pipe.zadd(alive, {self.node_id: now})
                pipe.zremrangebyscore(alive, 0, now - _NODE_TTL_SECONDS)
                pipe.zrangebyscore(alive, now - _NODE_TTL_SECONDS, "+inf")
                # Bounded: a Redis that stopped answering must not stop the silence check.
                *_, living = await asyncio.wait_for(pipe.execute(), _HEARTBEAT_SECONDS * 2)
                infos = await self._redis.hmget(nodes, living) if living else []
                self._cluster = _cluster(self.node_id, living, infos)
                self._health.recover(COMPONENT)
            except (TimeoutError, *_REDIS_ERRORS) as exc:
                self._health.fail(COMPONENT, f"Redis at {_where(self._url)}: {exc!r}")
            if time.monotonic() - self._heard_own > _SILENCE_SECONDS:
                # Our own heartbeats no longer come back: the subscription is dead, however
                # alive its connection looks. Drop it; the listener subscribes again.
                self._health.fail(SUBSCRIPTION, "the Redis subscription went silent; resubscribing")
                self._heard_own = time.monotonic()
                if self._listener is not None:
                    self._listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await self._listener
                self._listener = asyncio.ensure_future(self._listen())

    async def claim(self, name: str, ttl_seconds: float) -> bool:
        assert self._redis is not None
        won = await self.call(
            self._redis.set(
                f"{self.prefix}:claim:{name}", self.node_id, nx=True, px=max(int(ttl_seconds * 1000), 1)
            )
        )
        return bool(won)

    def cluster(self) -> dict[str, Any]:
        return self._cluster

    @property
    def redis(self) -> aioredis.Redis:
        assert self._redis is not None, "the broker is not started"
        return self._redis

    async def announce(self, events: Sequence[tuple[str, NewEvent]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for route, event in events:
            delivery = Delivery.unkept(route, event)
            pipe.publish(self._room_channel + route, f"{route}\n{UNKEPT}\n\n{event.type}\n{delivery.text}")
        await self.call(pipe.execute(), "announce")

    async def signal(self, kind: str, data: dict[str, Any]) -> None:
        message = orjson.dumps({"signal": kind, "data": data}).decode()
        await self.call(self.redis.publish(self._control, message), "signal")

    def presence(self, *, grace_seconds: float, ttl_seconds: float) -> PresenceBackend:
        return RedisPresence(self, grace_seconds=grace_seconds, ttl_seconds=ttl_seconds)


def _cluster(node_id: str, living: list[str], infos: list[bytes | str | None]) -> dict[str, Any]:
    nodes = []
    for name, info in zip(living, infos, strict=True):
        described = orjson.loads(info) if info else {}
        nodes.append({"id": name, **described})
    return {
        "broker": "redis",
        "node": node_id,
        "nodes": nodes,
        "user_connections": sum(int(n.get("user_connections", 0)) for n in nodes),
    }


SENTINEL_SCHEME = "redis+sentinel://"


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """`redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]`: the sentinels,
    the monitored primary's name, the database and the password (Redis's, not the sentinels')."""
    rest = url.removeprefix(SENTINEL_SCHEME)
    netloc, _, path = rest.partition("/")
    password = None
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        password = credentials.partition(":")[2] or credentials or None
    sentinels = []
    for address in netloc.split(","):
        host, _, port = address.partition(":")
        sentinels.append((host or "localhost", int(port or 26379)))
    names = [part for part in path.split("/") if part]
    if not names:
        raise StartupError("NOTIFIER_BROKER_URL: name the primary, redis+sentinel://host:26379/<name>[/db]")
    return sentinels, names[0], int(names[1]) if len(names) > 1 else 0, password


def _sentinel_clients(url: str) -> tuple[aioredis.Redis, aioredis.Redis]:
    """Clients of the primary that the sentinels name; after a failover, of the new one
    (redis-py's Sentinel support asks them again on every new connection)."""
    from redis.asyncio.sentinel import Sentinel

    sentinels, service, db, password = _sentinel_parts(url)
    sentinel = Sentinel(sentinels, socket_timeout=1)  # type: ignore[no-untyped-call]
    common: dict[str, Any] = {
        "decode_responses": True,
        "db": db,
        "password": password,
        "socket_connect_timeout": 5,
    }
    calls = sentinel.master_for(service, socket_timeout=5, max_connections=_POOL_SIZE, **common)
    subscriber = sentinel.master_for(service, socket_timeout=None, retry=Retry(NoBackoff(), 0), **common)
    return calls, subscriber


def _where(url: str) -> str:
    """The Redis address without credentials, for messages and logs."""
    from urllib.parse import urlsplit

    if url.startswith(SENTINEL_SCHEME):
        sentinels, service, db, _ = _sentinel_parts(url)
        return f"primary {service!r} of sentinels {','.join(f'{h}:{p}' for h, p in sentinels)}/{db}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path}"

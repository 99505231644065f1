"""Presence for a cluster, in Redis: every change is one script call, O(1) per room and user.

Keys (under the broker's prefix):
- `presence:room:<room>`  hash: user -> connections on all nodes (0: gone, within the grace);
- `presence:node:<node>`  hash: room \\x1f user -> connections on that node;
- `presence:nodes`        set of nodes with entries; `presence:alive:<node>` expires after the
                          TTL unless the node's heartbeat renews it;
- `presence:leaving`      sorted set: room \\x1f user, scored by when the grace ends.

Any node's sweep removes the entries of nodes whose alive key expired (a node killed with
-9 leaves no ghosts beyond the TTL) and ends the graces that ran out. A node whose entries
were removed while it was still running (a pause longer than the TTL, Redis losing its data)
finds out on its next heartbeat or change and writes them again.
"""

from __future__ import annotations

from typing import Any

from . import EntriesLost, Member

_SEP = "\x1f"
_SWEEP_LIMIT = 5000

_FUNCTIONS = """
local p, node, now, grace = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local nodes, leaving = p .. ':presence:nodes', p .. ':presence:leaving'

local function split(field)
  local sep = string.find(field, '\\31', 1, true)
  return string.sub(field, 1, sep - 1), string.sub(field, sep + 1)
end

-- Adds to the room's count for the user; true if the user was absent until now.
local function add(field, delta)
  local room, user = split(field)
  local key = p .. ':presence:room:' .. room
  local before = redis.call('HGET', key, user)
  local after = math.max((tonumber(before) or 0) + delta, 0)
  redis.call('HSET', key, user, after)
  if after == 0 then redis.call('ZADD', leaving, now + grace, field) end
  return (not before) and after > 0
end

local function change_mine(field, delta)
  local key = p .. ':presence:node:' .. node
  local mine = tonumber(redis.call('HGET', key, field) or '0')
  if delta < -mine then delta = -mine end
  if delta == 0 then return false end
  if mine + delta == 0 then
    redis.call('HDEL', key, field)
  else
    redis.call('HSET', key, field, mine + delta)
  end
  return add(field, delta)
end

local function remove_node(name)
  local key = p .. ':presence:node:' .. name
  local entries = redis.call('HGETALL', key)
  for i = 1, #entries, 2 do add(entries[i], -tonumber(entries[i + 1])) end
  redis.call('DEL', key)
  redis.call('SREM', nodes, name)
end

local function register(ttl)
  redis.call('SADD', nodes, node)
  redis.call('SET', p .. ':presence:alive:' .. node, 1, 'EX', ttl)
end

local function apply(first)
  local joined = {}
  for i = first, #ARGV, 2 do
    if change_mine(ARGV[i], tonumber(ARGV[i + 1])) then joined[#joined + 1] = ARGV[i] end
  end
  return joined
end
"""

# ARGV: prefix, node, now, grace, ttl, registered, then field and delta pairs.
_CHANGE = (
    _FUNCTIONS
    + """
if ARGV[6] == '1' and redis.call('SISMEMBER', nodes, node) == 0 then return {'lost'} end
register(ARGV[5])
local joined = apply(7)
table.insert(joined, 1, 'ok')
return joined
"""
)

# ARGV: prefix, node, now, grace, ttl, then field and count pairs.
_REPLACE = (
    _FUNCTIONS
    + """
remove_node(node)
register(ARGV[5])
return apply(6)
"""
)

# ARGV: prefix, node, now, grace.
_REMOVE = (
    _FUNCTIONS
    + """
remove_node(node)
redis.call('DEL', p .. ':presence:alive:' .. node)
return 0
"""
)

# ARGV: prefix, node, now, grace, ttl. 1 if this node's entries are still there.
_HEARTBEAT = (
    _FUNCTIONS
    + """
if redis.call('SISMEMBER', nodes, node) == 0 then return 0 end
register(ARGV[5])
return 1
"""
)

# ARGV: prefix, node, now, grace, limit. The members that are absent now.
_SWEEP = (
    _FUNCTIONS
    + """
for _, name in ipairs(redis.call('SMEMBERS', nodes)) do
  if redis.call('EXISTS', p .. ':presence:alive:' .. name) == 0 then remove_node(name) end
end
local left = {}
for _, field in ipairs(redis.call('ZRANGEBYSCORE', leaving, '-inf', now, 'LIMIT', 0, ARGV[5])) do
  redis.call('ZREM', leaving, field)
  local room, user = split(field)
  local key = p .. ':presence:room:' .. room
  if redis.call('HGET', key, user) == '0' then
    redis.call('HDEL', key, user)
    left[#left + 1] = field
  end
end
return left
"""
)


class RedisPresence:
    def __init__(self, broker: Any, *, grace_seconds: float, ttl_seconds: float) -> None:
        """`broker`: the RedisBroker whose connection and error handling this shares."""
        self._broker = broker
        self._grace = grace_seconds
        self._ttl = max(round(ttl_seconds), 1)
        self._registered = False
        self._scripts: dict[str, Any] = {}

    def _script(self, name: str, text: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._broker.redis.register_script(text)
        return script

    def _head(self, now: float) -> list[Any]:
        return [self._broker.prefix, self._broker.node_id, now, self._grace]

    async def _run(self, name: str, text: str, args: list[Any]) -> Any:
        return await self._broker.call(self._script(name, text)(keys=[], args=args), "presence")

    async def change(self, deltas: dict[Member, int], now: float) -> list[Member]:
        args = [*self._head(now), self._ttl, "1" if self._registered else "0"]
        for (room, user), delta in deltas.items():
            args += [room + _SEP + user, delta]
        out = await self._run("change", _CHANGE, args)
        if out[0] == "lost":
            self._registered = False
            raise EntriesLost()
        self._registered = True
        return _members(out[1:])

    async def replace_mine(self, counts: dict[Member, int], now: float) -> list[Member]:
        args = [*self._head(now), self._ttl]
        for (room, user), count in counts.items():
            args += [room + _SEP + user, count]
        joined = _members(await self._run("replace", _REPLACE, args))
        self._registered = True
        return joined

    async def remove_mine(self, now: float) -> None:
        await self._run("remove", _REMOVE, self._head(now))
        self._registered = False

    async def heartbeat(self, now: float) -> bool:
        if not self._registered:
            return True  # nothing written yet, nothing to lose
        kept = await self._run("heartbeat", _HEARTBEAT, [*self._head(now), self._ttl])
        if not kept:
            self._registered = False
        return bool(kept)

    async def sweep(self, now: float) -> list[Member]:
        return _members(await self._run("sweep", _SWEEP, [*self._head(now), _SWEEP_LIMIT]))

    async def members(self, room: str) -> dict[str, int]:
        users = await self._broker.call(
            self._broker.redis.hgetall(f"{self._broker.prefix}:presence:room:{room}"), "presence"
        )
        return {user: int(count) for user, count in users.items()}


def _members(fields: list[str]) -> list[Member]:
    members = []
    for field in fields:
        room, _, user = field.partition(_SEP)
        members.append((room, user))
    return members

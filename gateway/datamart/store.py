"""Writing profiles: each change applied exactly once, merged customers folded into survivors.

A profile is the keys ``keys.profile_keys(customer)`` (one hash tag per customer). The apply
script takes a customer's :class:`~gateway.datamart.deltas.Delta` s; each is applied only if
its id is not in the customer's processed set (``done``, capped by ``collector.dedup_window``
and :data:`DONE_CAP`), and its id is added in the same script — so a replayed event changes
nothing. A delta that stands for several events (:class:`~gateway.datamart.deltas.Combined`:
a batch's events of one customer, ~8 per script call instead of one) is applied only when
none of its ids is there, and records them all; when some are (a replay overlapping new
events), the script hands it back with those ids and the others go again one by one.

Folding a merged customer into the survivor crosses two hash tags, so it is three idempotent
steps, each atomic: *seal* the merged profile (it gets ``merged_into``; from then on the apply
script refuses it and answers where it went) and take its snapshot; *fold* the snapshot into
the survivor as one delta with id ``merge:<merged>`` (processed ids included, so replays of the
merged customer's events stay absorbed); *purge* the merged profile down to its tombstone. Any
member may run or re-run them (the identity agent right after a merge, the profile agent when
it meets a sealed profile, the identity agent's tick for merges a crash interrupted).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.bus import Bus
from gateway.config import CollectorConfig
from gateway.datamart.deltas import Combined, encode, fold_delta
from gateway.datamart.lua import Script, execute, pairs, scored, text
from gateway.datamart.records import Snapshot
from gateway.errors import BusUnavailable
from gateway.keys import Keys

#: Processed event ids kept per customer at most (besides the time window).
DONE_CAP: Final = 5000
#: Deltas per script call (a script blocks Redis while it runs).
CHUNK: Final = 200
MAX_HOPS: Final = 8

APPLY: Final = Script(
    """
local p, attr, sessions, done = KEYS[1], KEYS[2], KEYS[8], KEYS[9]
local into = redis.call('HGET', p, 'merged_into')
if into then return {-1, into} end
local now = tonumber(ARGV[1])
local done_cap, recent_cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local sessions_cap, window, interests_cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local RECENT = {viewed = KEYS[3], carted = KEYS[4], bought = KEYS[5]}
local SCORES = {interests = KEYS[6], stores = KEYS[7]}
local applied, trim, site, redo = 0, {}, nil, {}
for i = 7, #ARGV do
  local d = cjson.decode(ARGV[i])
  local fresh
  if d.more then
    -- several events as one delta: applied whole when none was, else handed back with the
    -- ids already applied, for the caller to send the others one by one
    local ids, seen = {d.id}, {}
    for _, x in ipairs(d.more) do ids[#ids + 1] = x end
    for k, score in ipairs(redis.call('ZMSCORE', done, unpack(ids))) do
      if score then seen[#seen + 1] = ids[k] end
    end
    fresh = #seen == 0
    if not fresh and #seen < #ids then redo[#redo + 1] = {i - 6, seen} end
  else
    fresh = not redis.call('ZSCORE', done, d.id)
  end
  if fresh then
    site = site or d.site
    for f, n in pairs(d.incr or {}) do redis.call('HINCRBY', p, f, n) end
    for f, n in pairs(d.fincr or {}) do redis.call('HINCRBYFLOAT', p, f, n) end
    for f, t in pairs(d.min or {}) do
      local cur = tonumber(redis.call('HGET', p, f))
      if not cur or t < cur then redis.call('HSET', p, f, t) end
    end
    for f, t in pairs(d.max or {}) do
      local cur = tonumber(redis.call('HGET', p, f))
      if not cur or t > cur then redis.call('HSET', p, f, t) end
    end
    for f, v in pairs(d.latest or {}) do
      local cur = redis.call('HGET', attr, f)
      if not cur or cjson.decode(cur).at <= v[1] then redis.call('HSET', attr, f, v[2]) end
    end
    for name, items in pairs(d.recent or {}) do
      local key = RECENT[name]
      for _, it in ipairs(items) do redis.call('ZADD', key, 'GT', it[2], it[1]) end
      trim[key] = recent_cap
    end
    for name, items in pairs(d.scores or {}) do
      local key = SCORES[name]
      for _, it in ipairs(items) do redis.call('ZINCRBY', key, it[2], it[1]) end
      trim[key] = interests_cap
    end
    local seen = d.sessions or {}
    if #seen > 0 or d.visits then
      local fresh = 0
      for _, s in ipairs(seen) do
        if not redis.call('ZSCORE', sessions, s[1]) then fresh = fresh + 1 end
        redis.call('ZADD', sessions, 'GT', s[2], s[1])
      end
      local visits = fresh
      if d.visits then visits = d.visits - (#seen - fresh) end
      if visits ~= 0 then redis.call('HINCRBY', p, 'visits', visits) end
      trim[sessions] = sessions_cap
    end
    for _, x in ipairs(d.done or {}) do redis.call('ZADD', done, 'GT', x[2], x[1]) end
    local marks = {now, d.id}
    for _, x in ipairs(d.more or {}) do marks[#marks + 1] = now; marks[#marks + 1] = x end
    redis.call('ZADD', done, unpack(marks))
    applied = applied + #marks / 2
  end
end
if site then redis.call('HSETNX', p, 'site', site) end
for key, cap in pairs(trim) do redis.call('ZREMRANGEBYRANK', key, 0, -(cap + 1)) end
redis.call('ZREMRANGEBYSCORE', done, '-inf', '(' .. (now - window))
redis.call('ZREMRANGEBYRANK', done, 0, -(done_cap + 1))
if #redo > 0 then return {applied, '', cjson.encode(redo)} end
return {applied, ''}
"""
)

SEAL: Final = Script(
    """
local into = redis.call('HGET', KEYS[1], 'merged_into')
if not into then
  redis.call('HSET', KEYS[1], 'merged_into', ARGV[1])
  into = ARGV[1]
end
local out = {into, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
for i = 3, 9 do out[#out + 1] = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES') end
return out
"""
)

PURGE: Final = Script(
    """
local p = redis.call('HMGET', KEYS[1], 'merged_into', 'site')
if not p[1] then return 0 end
for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HSET', KEYS[1], 'merged_into', p[1])
if p[2] then redis.call('HSET', KEYS[1], 'site', p[2]) end
return 1
"""
)


@dataclass(frozen=True)
class StoreSettings:
    """Caps and windows of the profile store."""

    recent_items: int = 20
    window_ms: int = 86_400_000
    done_cap: int = DONE_CAP
    sessions_cap: int = 100
    interests_cap: int = 100

    @classmethod
    def from_config(cls, collector: CollectorConfig) -> StoreSettings:
        """The settings of ``[collector]``."""
        return cls(
            recent_items=collector.recent_items, window_ms=int(collector.dedup_window * 1000)
        )


#: What the apply script takes: an encoded delta, or several events' as one.
Change = bytes | Combined


def _encoded(change: Change) -> bytes:
    return change if isinstance(change, bytes) else change.encoded


def _rest(changes: Sequence[Change], reply: Sequence[Any]) -> list[bytes]:
    """The deltas still to apply, one per event, of the combined changes the script handed
    back because some of their events were applied already."""
    if len(reply) < 3:
        return []
    rest: list[bytes] = []
    for index, seen in json.loads(text(reply[2])):
        change = changes[int(index) - 1]
        if isinstance(change, Combined):
            rest += change.rest({text(i) for i in seen})
    return rest


def apply_command(
    keys: Keys, customer: str, deltas: Sequence[Change], settings: StoreSettings, now_ms: int
) -> tuple[Any, ...]:
    """The EVALSHA that applies encoded ``deltas`` to ``customer`` (load :data:`APPLY` first)."""
    args = [
        now_ms,
        settings.done_cap,
        settings.recent_items,
        settings.sessions_cap,
        settings.window_ms,
        settings.interests_cap,
        *map(_encoded, deltas),
    ]
    return APPLY.call(keys.profile_keys(customer), args)


async def apply(
    bus: Bus, keys: Keys, groups: Iterable[tuple[str, Sequence[Change]]], settings: StoreSettings
) -> int:
    """Apply changes per customer (one pipeline); return how many events' were new.

    ``groups`` is taken as the pipeline is packed: when its changes are made as they are taken,
    Redis applies one part while the next is made."""
    now_ms = int(time.time() * 1000)
    calls: list[tuple[str, Sequence[Change]]] = []

    def commands() -> Iterator[tuple[Any, ...]]:
        yield APPLY.load()
        for customer, deltas in groups:
            for i in range(0, len(deltas), CHUNK):
                calls.append((customer, deltas[i : i + CHUNK]))
                yield apply_command(keys, customer, calls[-1][1], settings, now_ms)

    replies = (await execute(bus, commands()))[1:]
    applied = 0
    for (customer, chunk), reply in zip(calls, replies, strict=True):
        count, into = int(reply[0]), text(reply[1])
        if count >= 0:
            applied += count
            if rest := _rest(chunk, reply):  # a replay overlapping what was applied
                applied += (await apply_one(bus, keys, customer, rest, settings))[1]
            continue
        # sealed: folded (or being folded) into another customer; finish that, then go there
        survivor = await complete_merge(bus, keys, customer, into, settings)
        applied += (await apply_one(bus, keys, survivor, chunk, settings))[1]
    return applied


async def apply_one(
    bus: Bus,
    keys: Keys,
    customer: str,
    deltas: Sequence[Change],
    settings: StoreSettings,
    depth: int = 0,
) -> tuple[str, int]:
    """Apply to ``customer`` or whoever it was merged into; (where it went, how many events'
    were new)."""
    target, total = customer, 0
    for _ in range(MAX_HOPS):
        now_ms = int(time.time() * 1000)
        command = apply_command(keys, target, deltas, settings, now_ms)
        reply = (await execute(bus, [APPLY.load(), command]))[1]
        count, into = int(reply[0]), text(reply[1])
        if count >= 0:
            total += count
            deltas = _rest(deltas, reply)
            if not deltas:
                return target, total
            continue  # the events of a combined change not applied yet, one by one
        target = await complete_merge(bus, keys, target, into, settings, depth + 1)
    raise BusUnavailable(f"profile {customer}: merged more than {MAX_HOPS} times over")


async def complete_merge(
    bus: Bus, keys: Keys, merged: str, survivor: str, settings: StoreSettings, depth: int = 0
) -> str:
    """Seal, fold and purge ``merged`` into ``survivor`` (idempotent); the final survivor."""
    if depth > MAX_HOPS:
        raise BusUnavailable(f"profile {merged}: merge chain longer than {MAX_HOPS}")
    reply = (await execute(bus, [SEAL.load(), SEAL.call(keys.profile_keys(merged), [survivor])]))[1]
    snap = snapshot(reply)
    final, _ = await apply_one(
        bus, keys, snap.into, [encode(fold_delta(merged, snap))], settings, depth
    )
    await execute(bus, [PURGE.load(), PURGE.call(keys.profile_keys(merged), [])])
    return final


def snapshot(reply: Sequence[Any]) -> Snapshot:
    """The seal script's reply → a Snapshot."""
    p = pairs(reply[1])
    p.pop("merged_into", None)
    p.pop("site", None)
    zsets = [scored(z) for z in reply[3:10]]
    return Snapshot(
        into=text(reply[0]),
        p=p,
        attr=pairs(reply[2]),
        viewed=zsets[0],
        carted=zsets[1],
        bought=zsets[2],
        interests=zsets[3],
        stores=zsets[4],
        sessions=zsets[5],
        done=zsets[6],
    )

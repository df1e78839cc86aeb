"""The identity graph: every identifier of a site → one customer id, with merges and flags.

One key per identifier (``keys.identifier``) holds its customer id, so a look-up is one GET. A
site's whole graph shares one hash tag, so resolving an event — look up its identifiers, make
a customer, link new identifiers, merge two known customers — is one atomic script: members
racing on the same person cannot split or double-merge them, and a replayed event finds its
links made and changes nothing.

Merges happen on ``identify`` and ``alias`` when their identifiers point at two or more known
customers: the customer seen first survives, the others' identifiers re-point to it, their
logs join its log, and ``"<merged> <survivor>"`` goes on the site's pending-folds set until the
profiles are folded together (:func:`gateway.datamart.store.complete_merge`). Merge storms
are bounded: an identifier that would glue more than ``max_merges_per_identifier`` customers
(counted on the strongest identifier each merged customer shows on the event) is flagged and no
longer glues anyone (it still resolves to its customer); a merge that would give a customer
more than ``max_identifiers`` identifiers, or two different user ids or ERP party ids, is
refused. User ids and ERP party ids — the shop's own keys, one per customer — are exempt from
the first cap (a person signing in on a new browser folds that browser's history in each time)
and bounded by the other two. Every merge and refusal is logged with its time, identifier and
event.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis

from gateway.datamart.identifiers import customer_id_for
from gateway.datamart.lua import Script, text
from gateway.keys import Keys

#: Log entries kept per customer (oldest dropped first).
LOG_CAP: Final = 1000
_json: Final = msgspec.json.Encoder()

RESOLVE: Final = Script(
    """
local base = KEYS[1]
local events = cjson.decode(ARGV[1])
local max_links = tonumber(ARGV[2])
local max_ids = tonumber(ARGV[3])
local log_cap = tonumber(ARGV[4])
local flags_key, links_key, folds_key = base .. ':flags', base .. ':links', base .. ':folds'
local UNIQUE = {user_id = true, erp_party_id = true}

local function id_key(ident) return base .. ':id:' .. ident end
local function cust_key(c) return base .. ':cust:' .. c end
local function ids_key(c) return base .. ':ids:' .. c end
local function log_key(c) return base .. ':log:' .. c end
local function from_key(c) return base .. ':from:' .. c end
local function kind_of(ident) return string.match(ident, '^([^:]+):') end
local function count(c, f) return tonumber(redis.call('HGET', cust_key(c), f) or '0') end

local function note(c, entry)
  redis.call('RPUSH', log_key(c), cjson.encode(entry))
  redis.call('LTRIM', log_key(c), -log_cap, -1)
end

local function refuse(customers, reason, ident, ev)
  for _, c in ipairs(customers) do
    note(c, {type = 'refused', reason = reason, identifier = ident, event = ev.e,
             event_type = ev.t, at = ev.at, customers = customers})
  end
end

local function flag(ident, reason, ev, customers)
  redis.call('HSETNX', flags_key, ident, cjson.encode(
    {reason = reason, event = ev.e, at = ev.at, customers = customers}))
  refuse(customers, reason, ident, ev)
end

local function link(c, ident)
  redis.call('SET', id_key(ident), c)
  redis.call('SADD', ids_key(c), ident)
  redis.call('HINCRBY', cust_key(c), 'ids', 1)
  redis.call('HINCRBY', cust_key(c), 'k:' .. kind_of(ident), 1)
end

local created = {}
local function create(c, ident, ev)
  local key = cust_key(c)
  local into = redis.call('HGET', key, 'merged_into')
  if into then return into end
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'first_seen', ev.at, 'created_by', ident, 'created_event', ev.e)
    created[#created + 1] = c
  end
  return c
end

local merges, current = {}, 0
local function merge(loser, survivor, ev, glue, joined)
  local moved = redis.call('SMEMBERS', ids_key(loser))
  for _, ident in ipairs(moved) do
    redis.call('SET', id_key(ident), survivor)
    redis.call('SADD', ids_key(survivor), ident)
    redis.call('HINCRBY', cust_key(survivor), 'k:' .. kind_of(ident), 1)
  end
  redis.call('HINCRBY', cust_key(survivor), 'ids', #moved)
  local lf = tonumber(redis.call('HGET', cust_key(loser), 'first_seen'))
  local sf = tonumber(redis.call('HGET', cust_key(survivor), 'first_seen'))
  if lf and (not sf or lf < sf) then redis.call('HSET', cust_key(survivor), 'first_seen', lf) end
  local created_by = redis.call('HGET', cust_key(loser), 'created_by') or ''
  redis.call('DEL', ids_key(loser), cust_key(loser))
  redis.call('HSET', cust_key(loser), 'merged_into', survivor, 'merged_at', ev.at,
             'first_seen', lf or ev.at, 'created_by', created_by)
  for _, entry in ipairs(redis.call('LRANGE', log_key(loser), 0, -1)) do
    redis.call('RPUSH', log_key(survivor), entry)
  end
  redis.call('DEL', log_key(loser))
  note(survivor, {type = 'merge', survivor = survivor, merged = loser, identifier = glue,
                  merged_identifier = joined, event = ev.e, event_type = ev.t, at = ev.at})
  for _, c in ipairs(redis.call('SMEMBERS', from_key(loser))) do
    redis.call('HSET', cust_key(c), 'merged_into', survivor)
    redis.call('SADD', from_key(survivor), c)
  end
  redis.call('DEL', from_key(loser))
  redis.call('SADD', from_key(survivor), loser)
  redis.call('SADD', folds_key, loser .. ' ' .. survivor)
  merges[#merges + 1] = {loser, survivor, current}
end

local function try_merge(ev, known, known_at, idents, resolved, flagged)
  local survivor, best
  for _, c in ipairs(known) do
    local f = tonumber(redis.call('HGET', cust_key(c), 'first_seen') or '0')
    if not survivor or f < best or (f == best and c < survivor) then survivor, best = c, f end
  end
  -- each customer's strongest identifier on the event is what glues it to the others; the
  -- shop's own keys (one per customer) are bounded by that rule instead
  local glued, refused, glue = #known - 1, false, {}
  for _, c in ipairs(known) do
    local k = known_at[c]
    if not UNIQUE[kind_of(idents[k])] then
      glue[#glue + 1] = idents[k]
      local l = tonumber(redis.call('HGET', links_key, idents[k]) or '1')
      if l + glued > max_links then
        flag(idents[k], 'max_merges_per_identifier', ev, known)
        flagged[k], refused = true, true
      end
    end
  end
  if refused then
    -- the event goes to the customer its other identifiers name, not to the shared one's
    for k = 1, #idents do
      if resolved[k] and not flagged[k] then return resolved[k] end
    end
    return known[1]
  end
  local total, holders = 0, {}
  for _, c in ipairs(known) do
    total = total + count(c, 'ids')
    for kind in pairs(UNIQUE) do
      if count(c, 'k:' .. kind) > 0 then holders[kind] = (holders[kind] or 0) + 1 end
    end
  end
  if total > max_ids then
    for _, c in ipairs(known) do redis.call('HSET', cust_key(c), 'flag', 'max_identifiers') end
    refuse(known, 'max_identifiers', idents[known_at[known[2]]], ev)
    return known[1]
  end
  for kind, n in pairs(holders) do
    if n > 1 then
      refuse(known, 'conflicting ' .. kind, idents[known_at[known[2]]], ev)
      return known[1]
    end
  end
  for _, ident in ipairs(glue) do
    redis.call('HSETNX', links_key, ident, 1)
    redis.call('HINCRBY', links_key, ident, glued)
  end
  local by = idents[known_at[survivor]]
  for _, c in ipairs(known) do
    if c ~= survivor then merge(c, survivor, ev, by, idents[known_at[c]]) end
  end
  return survivor
end

local out = {}
for n, ev in ipairs(events) do
  current = n
  local idents, resolved, flagged, known, known_at = {}, {}, {}, {}, {}
  for k, pair in ipairs(ev.i) do
    local ident, c = pair[1], false
    if string.sub(ident, 1, 9) == 'previous:' then
      local v = string.sub(ident, 10)
      c = redis.call('GET', id_key('user_id:' .. v))
      if c then ident = 'user_id:' .. v else
        ident = 'anonymous_id:' .. v
        c = redis.call('GET', id_key(ident))
      end
    else
      c = redis.call('GET', id_key(ident))
    end
    idents[k], resolved[k] = ident, c
    flagged[k] = redis.call('HEXISTS', flags_key, ident) == 1
    if c and not flagged[k] and not known_at[c] then
      known[#known + 1] = c
      known_at[c] = k
    end
  end
  local target = false
  if #known == 0 then
    for k, ident in ipairs(idents) do
      if not resolved[k] and not flagged[k] then target = create(ev.i[k][2], ident, ev); break end
    end
    if not target then
      for k = 1, #idents do if resolved[k] then target = resolved[k]; break end end
    end
  elseif #known == 1 or (ev.t ~= 'identify' and ev.t ~= 'alias') then
    target = known[1]
  else
    target = try_merge(ev, known, known_at, idents, resolved, flagged)
  end
  if target then
    for k, ident in ipairs(idents) do
      local kind = kind_of(ident)
      if not resolved[k] and not flagged[k] and UNIQUE[kind]
         and count(target, 'k:' .. kind) > 0 then
        -- another person's own id on a known browser (a shared computer): a customer of its own
        target = create(ev.i[k][2], ident, ev)
        break
      end
    end
    local first = tonumber(redis.call('HGET', cust_key(target), 'first_seen'))
    if first and ev.at < first then redis.call('HSET', cust_key(target), 'first_seen', ev.at) end
    for k, ident in ipairs(idents) do
      if not resolved[k] and not flagged[k] then
        local kind = kind_of(ident)
        if UNIQUE[kind] and count(target, 'k:' .. kind) > 0 then
          -- a second user id on one event: left unlinked
        elseif count(target, 'ids') >= max_ids then
          redis.call('HSET', cust_key(target), 'flag', 'max_identifiers')
          refuse({target}, 'max_identifiers', ident, ev)
        else
          link(target, ident)
        end
      end
    end
  end
  out[n] = target
end
return cjson.encode({c = out, m = merges, n = created})
"""
)


@dataclass(frozen=True)
class Resolution:
    """What one resolve call decided: a customer per event, merges made, customers created."""

    customers: list[str | None]
    #: ``(merged, survivor, index of the event that merged them)``, in the order made.
    merges: list[tuple[str, str, int]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def payload(
    site: str, event_id: str, type_: str, at_ms: int, ids: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """One event as the resolve script takes it (identifiers with their would-be customer)."""
    return {"e": event_id, "t": type_, "at": at_ms, "i": [_linked(site, *pair) for pair in ids]}


@functools.lru_cache(maxsize=100_000)
def _linked(site: str, kind: str, value: str) -> tuple[str, str]:
    """``(kind:value, the customer id it would found)`` (a visitor's events repeat them)."""
    return f"{kind}:{value}", customer_id_for(site, kind, value)


def resolve_command(
    keys: Keys, site: str, events: Sequence[dict[str, Any]], max_links: int, max_ids: int
) -> tuple[Any, ...]:
    """The EVALSHA that resolves ``events`` of ``site`` (load :data:`RESOLVE` first)."""
    return RESOLVE.call([keys.identity(site)], [_json.encode(events), max_links, max_ids, LOG_CAP])


def parse_resolution(reply: Any) -> Resolution:
    """The resolve script's JSON reply → a Resolution."""
    data = msgspec.json.decode(reply if isinstance(reply, bytes) else text(reply).encode())

    def items(value: Any) -> list[Any]:
        return value if isinstance(value, list) else []  # cjson writes an empty list as {}

    return Resolution(
        customers=[c or None for c in items(data.get("c"))],
        merges=[(str(a), str(b), int(n) - 1) for a, b, n in items(data.get("m"))],
        created=[str(c) for c in items(data.get("n"))],
    )


# --- reading the graph -----------------------------------------------------------------------


async def survivor_of(client: aioredis.Redis, keys: Keys, site: str, customer_id: str) -> str:
    """Follow ``merged_into`` to the customer that holds ``customer_id``'s identity now."""
    current = customer_id
    for _ in range(32):
        into = await client.hget(keys.identity_customer(site, current), "merged_into")
        if not into:
            return current
        current = text(into)
    return current


async def explain(
    client: aioredis.Redis, keys: Keys, site: str, customer_id: str
) -> dict[str, Any]:
    """Why a customer is who it is: identifiers (with flags), merges and refusals, in order."""
    survivor = await survivor_of(client, keys, site, customer_id)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.identity_customer(site, survivor))
        pipe.smembers(keys.customer_identifiers(site, survivor))
        pipe.lrange(keys.merge_log(site, survivor), 0, -1)
        pipe.smembers(keys.merged_from(site, survivor))
        record, ids, log, merged = await pipe.execute()
    identifiers = sorted(text(i) for i in ids)
    flags: dict[str, Any] = {}
    if identifiers:
        values = await client.hmget(keys.identity_flags(site), identifiers)
        flags = {i: json.loads(text(v)) for i, v in zip(identifiers, values, strict=True) if v}
    entries = sorted((json.loads(text(e)) for e in log), key=lambda e: e.get("at", 0))
    info = {text(k): text(v) for k, v in record.items()}
    return {
        "customer_id": survivor,
        "requested": customer_id,
        "site": site,
        "first_seen": int(float(info["first_seen"])) if "first_seen" in info else None,
        "created_by": info.get("created_by"),
        "flag": info.get("flag"),
        "identifiers": identifiers,
        "flags": flags,
        "merged_from": sorted(text(m) for m in merged),
        "log": entries,
    }

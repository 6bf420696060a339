"""Redis counters: the scale-out backend, shared by every gateway process.

Semantics are those of ``quotagate/limits/model.py`` plus the decisions in
:mod:`quotagate.store.counters_common`, identical to the in-process backend (one contract suite runs both).

One decision is one ``EVALSHA`` (check and count all or nothing); a settlement is another. Scripts are
loaded on first use and again after ``NOSCRIPT`` (a restarted or failed-over Redis). Every call is bounded by
``timeout_ms`` as a whole (an asyncio deadline over pool wait, connect, send and reply); failures raise
:class:`~quotagate.errors.BackendUnavailable` and the connection pool reconnects on the next call, so a Redis
that comes back is used again without recreating this object. Redis-py's own retries are off; a call that
broke on a stale connection (Redis restarted since it was opened) is sent once more on a fresh one, which never
counts twice (see ``_run``). A decision that timed out may still have been counted (Redis was slow, not gone):
the caller failed closed and the reservation is swept when it expires, so the error only ever over-counts.

Missing spend or credit counters (fresh Redis, restart, month change) make the script answer "seed first":
the baseline is read from the durable store (at most one read per counter set at a time in this process),
written set-if-absent, and the decision retried.

Key layout (``P`` = prefix; every key of one decision carries the organization's hash tag, so a decision
touches one Redis Cluster slot)::

    P:{org}:w:<counter_id>:<minute>  hash r=requests t=tokens            TTL 120 s, renewed on admission
    P:{org}:s:<counter_id>:<month>   string spend nanos                   TTL to month end + 3 days (set by the seed)
    P:{org}:c:<credit_id>            hash b=balance nanos w=watermark     no TTL (credits have no window)
    P:{org}:cp:<credit_id>           hash seq -> nanos, credits added while unseeded (TTL 1 day)
    P:{org}:r:<reservation_id>       hash t c a x [n] + one field per counter key to settle   TTL ttl_s + 1 h
                                     (+ k=1 once claimed; a settled claim leaves only done=1 until the TTL; a
                                     provisional settlement keeps the hash with done=p and t c = its figures)
    P:{org}:exp                      zset reservation_id by expiry (the sweeper claims by removing)
    P:{org}:reg                      marker: the organization is listed in the sweep registry
    P:{~sweep}:orgs                  set of organizations that had reservations (own tag: read by the sweeper only)

The settle and claim scripts reach counter and reservation keys named inside the reservation hash rather
than passed as KEYS: they carry the same organization tag, so they live in the same Cluster slot.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from quotagate.errors import BackendUnavailable
from quotagate.limits.model import (
    Admission,
    BaselineSource,
    CounterState,
    Decision,
    ExpiredReservation,
    LimitCheck,
    ReservationRequest,
    Settlement,
)
from quotagate.store.counters_common import (
    PENDING_CREDIT_TTL_S,
    RESERVATION_MARGIN_S,
    SEED_ATTEMPTS,
    WINDOW_TTL_S,
    Figures,
    SingleFlight,
    build_decision,
    minute_of,
    month_ttl_s,
    validate_credit,
    validate_request,
    validate_settlement,
)
from quotagate.store.redis_link import RedisLink

log = logging.getLogger(__name__)
T = TypeVar("T")

# Reserve: KEYS 1 reservation, 2 expiry zset, 3 registration marker, then nw windows, ns spend, nc credits.
# ARGV 1 the reservation id; ARGV 3 its note ('' = none); ARGV 2 space-separated (one argument, not forty: encoding each argument costs the
# client more than the script costs Redis): tokens, cost, -cost, expires_at, reservation ttl, window ttl,
# created_at, nw, ns, nc, number of checks, then per check: enforce, rpm, tpm, spend limit ('-' = none),
# window, spend and credit index (0 = none).
# Replies {-1} duplicate id; {0, {missing spend/credit indexes}} seed first; {1 allowed | 2 denied,
# registered, r1, t1, ..., s1, ..., b1, ...} with the figures before the request.
_RESERVE_LUA = """
local res = KEYS[1]
if redis.call('EXISTS', res) == 1 then return {-1} end
local v = {}
for word in string.gmatch(ARGV[2], '%S+') do v[#v + 1] = word end
local nw, ns, nc, n = tonumber(v[8]), tonumber(v[9]), tonumber(v[10]), tonumber(v[11])
local sb, cb = 3 + nw, 3 + nw + ns
local s, b, missing = {}, {}, {}
for i = 1, ns do
  local x = redis.call('GET', KEYS[sb + i])
  if x then s[i] = tonumber(x) else missing[#missing + 1] = i end
end
for i = 1, nc do
  local x = redis.call('HGET', KEYS[cb + i], 'b')
  if x then b[i] = tonumber(x) else missing[#missing + 1] = ns + i end
end
if #missing > 0 then return {0, missing} end
local r, t = {}, {}
for i = 1, nw do
  local got = redis.call('HMGET', KEYS[3 + i], 'r', 't')
  r[i] = tonumber(got[1]) or 0
  t[i] = tonumber(got[2]) or 0
end
local tokens, cost = tonumber(v[1]), tonumber(v[2])
local ok = true
local a = 12
for j = 1, n do
  if v[a] == '1' then
    local rpm, tpm, cap = tonumber(v[a + 1]), tonumber(v[a + 2]), tonumber(v[a + 3])
    local wi, si, ci = tonumber(v[a + 4]), tonumber(v[a + 5]), tonumber(v[a + 6])
    if (rpm and r[wi] >= rpm) or (tpm and tokens > tpm - t[wi]) or (cap and cost > cap - s[si])
        or (ci > 0 and b[ci] < cost) then
      ok = false
      break
    end
  end
  a = a + 7
end
if ok then
  local fields = {'t', v[1], 'c', v[2], 'a', v[7], 'x', v[4]}
  if ARGV[3] ~= '' then
    fields[#fields + 1] = 'n'
    fields[#fields + 1] = ARGV[3]
  end
  a = 12
  for j = 1, n do
    local wi = tonumber(v[a + 4])
    if wi > 0 then
      local k = KEYS[3 + wi]
      if v[a + 1] ~= '-' then redis.call('HINCRBY', k, 'r', 1) end
      if v[a + 2] ~= '-' then
        redis.call('HINCRBY', k, 't', v[1])
        fields[#fields + 1] = k
        fields[#fields + 1] = 'w'
      end
      redis.call('EXPIRE', k, v[6])
    end
    a = a + 7
  end
  for i = sb + 1, sb + ns do
    redis.call('INCRBY', KEYS[i], v[2])
    fields[#fields + 1] = KEYS[i]
    fields[#fields + 1] = 's'
  end
  for i = cb + 1, cb + nc do
    redis.call('HINCRBY', KEYS[i], 'b', v[3])
    fields[#fields + 1] = KEYS[i]
    fields[#fields + 1] = 'c'
  end
  redis.call('HSET', res, unpack(fields))
  redis.call('EXPIRE', res, v[5])
  redis.call('ZADD', KEYS[2], v[4], ARGV[1])
  if redis.call('TTL', KEYS[2]) < tonumber(v[5]) then redis.call('EXPIRE', KEYS[2], v[5]) end
end
local out = {ok and 1 or 2, ok and redis.call('EXISTS', KEYS[3]) or 1}
for i = 1, nw do
  out[#out + 1] = r[i]
  out[#out + 1] = t[i]
end
for i = 1, ns do out[#out + 1] = s[i] end
for i = 1, nc do out[#out + 1] = b[i] end
return out
"""

# Settle: KEYS 1 reservation, 2 expiry zset; ARGV 1 reservation id, 2 actual tokens, 3 actual cost, 4 '1' if
# provisional. Applies actual - counted to every counter the reservation counted that still exists and replies 1.
# A claimed reservation (swept) leaves a 'done' marker for the rest of its lifetime; a provisional settlement keeps
# the hash as marker done=p with t c = its figures, which the first real settlement replaces (then done=1).
# 0: settled before (the marker); -1: unknown, i.e. lost (the lost-settlement script may count it).
# Lua numbers are doubles: deltas are formatted back to integers ('%d'), exact below 2**53.
_SETTLE_LUA = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return -1 end
local f = {}
for i = 1, #h, 2 do f[h[i]] = h[i + 1] end
local provisional, done = ARGV[4] == '1', f['done']
if done and (done ~= 'p' or provisional) then return 0 end
local ttl = (f['k'] or done or provisional) and redis.call('PTTL', KEYS[1]) or 0
redis.call('ZREM', KEYS[2], ARGV[1])
if provisional and ttl > 0 then
  redis.call('HSET', KEYS[1], 't', ARGV[2], 'c', ARGV[3], 'done', 'p')
else
  redis.call('DEL', KEYS[1])
  if ttl > 0 then
    redis.call('HSET', KEYS[1], 'done', '1')
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
local dt = tonumber(ARGV[2]) - tonumber(f['t'])
local dc = tonumber(ARGV[3]) - tonumber(f['c'])
local st, up, down = string.format('%d', dt), string.format('%d', dc), string.format('%d', -dc)
for k, kind in pairs(f) do
  if #k > 1 and k ~= 'done' and (kind == 'w' or kind == 's' or kind == 'c') and redis.call('EXISTS', k) == 1 then
    if kind == 'w' then
      if dt ~= 0 then redis.call('HINCRBY', k, 't', st) end
    elseif kind == 's' then
      if dc ~= 0 then redis.call('INCRBY', k, up) end
    elseif dc ~= 0 then
      redis.call('HINCRBY', k, 'b', down)
    end
  end
end
return 1
"""

# Extend: KEYS 1 reservation, 2 expiry zset; ARGV 1 reservation id, 2 new expiry. Moves the expiry of an outstanding,
# unclaimed reservation later (never earlier) and its hash's lifetime by as much; 1 done, 0 not outstanding/claimed.
_EXTEND_LUA = """
local x = redis.call('HGET', KEYS[1], 'x')
if not x or redis.call('HEXISTS', KEYS[1], 'done') == 1 or redis.call('HEXISTS', KEYS[1], 'k') == 1 then return 0 end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local add = tonumber(ARGV[2]) - tonumber(x)
if add <= 0 then return 1 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], 'x', ARGV[2])
local ttl = redis.call('PTTL', KEYS[1]) + math.ceil(add * 1000)
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], string.format('%d', ttl)) end
return 1
"""

# Lost settlement: KEYS 1 reservation, then nw TPM windows, ns spend counters, nc credit hashes; ARGV 1 actual
# tokens, 2 actual cost, 3 nw, 4 ns, 5 nc. Only for a reservation that is still unknown: counts the actual
# figures as if 0 had been reserved (windows that exist get the tokens) and replies 1; {missing spend/credit
# indexes}: seed first; 0: the reservation exists after all (nothing done).
_LOST_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local nw, ns, nc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local sb, cb = 1 + nw, 1 + nw + ns
local missing = {}
for i = 1, ns do
  if redis.call('EXISTS', KEYS[sb + i]) == 0 then missing[#missing + 1] = i end
end
for i = 1, nc do
  if redis.call('EXISTS', KEYS[cb + i]) == 0 then missing[#missing + 1] = ns + i end
end
if #missing > 0 then return missing end
if ARGV[1] ~= '0' then
  for i = 2, 1 + nw do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HINCRBY', KEYS[i], 't', ARGV[1]) end
  end
end
if ARGV[2] ~= '0' then
  for i = sb + 1, sb + ns do redis.call('INCRBY', KEYS[i], ARGV[2]) end
  for i = cb + 1, cb + nc do redis.call('HINCRBY', KEYS[i], 'b', '-' .. ARGV[2]) end
end
return 1
"""

# Claim: KEYS 1 expiry zset of one organization; ARGV 1 now, 2 limit, 3 reservation key prefix.
# Takes reservations due by now off the expiry index (so each is returned exactly once) and returns
# {id, tokens, cost, created_at, note, ...}; the reservations themselves stay for the caller's settle.
_CLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local v = redis.call('HMGET', ARGV[3] .. id, 't', 'c', 'a', 'n')
  if v[1] then
    redis.call('HSET', ARGV[3] .. id, 'k', '1')
    out[#out + 1] = id
    out[#out + 1] = v[1]
    out[#out + 1] = v[2]
    out[#out + 1] = v[3]
    out[#out + 1] = v[4] or ''
  end
end
return out
"""

# Seed: KEYS ns spend counters, nc credit hashes, nc pending-credit hashes; ARGV 1 ns, 2 nc, then per spend
# counter its value and TTL, then per credit its balance and watermark. Set-if-absent; a credit seed also
# applies the credits added while it was unseeded whose sequence is above the seed's watermark.
_SEED_LUA = """
local ns, nc = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = 3
for i = 1, ns do
  redis.call('SET', KEYS[i], ARGV[a], 'NX', 'EX', ARGV[a + 1])
  a = a + 2
end
for j = 1, nc do
  local k, pk = KEYS[ns + j], KEYS[ns + nc + j]
  if redis.call('EXISTS', k) == 0 then
    local mark = tonumber(ARGV[a + 1])
    local top, top_s = mark, ARGV[a + 1]
    redis.call('HSET', k, 'b', ARGV[a], 'w', ARGV[a + 1])
    local p = redis.call('HGETALL', pk)
    for x = 1, #p, 2 do
      local seq = tonumber(p[x])
      if seq > mark then
        redis.call('HINCRBY', k, 'b', p[x + 1])
        if seq > top then top, top_s = seq, p[x] end
      end
    end
    redis.call('HSET', k, 'w', top_s)
    redis.call('DEL', pk)
  end
  a = a + 2
end
return 1
"""

# Add credits: KEYS 1 credit hash, 2 pending-credit hash; ARGV 1 nanos, 2 seq, 3 pending TTL.
# Unseeded: remember as pending, reply nil. Seeded: the watermark rule; reply the balance.
_ADD_CREDITS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return false
end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'w')) then
  redis.call('HSET', KEYS[1], 'w', ARGV[2])
  return redis.call('HINCRBY', KEYS[1], 'b', ARGV[1])
end
return tonumber(redis.call('HGET', KEYS[1], 'b'))
"""


class _Script:
    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


_RESERVE = _Script("reserve", _RESERVE_LUA)
_SETTLE = _Script("settle", _SETTLE_LUA)
_EXTEND = _Script("extend", _EXTEND_LUA)
_LOST = _Script("lost settlement", _LOST_LUA)
_CLAIM = _Script("claim", _CLAIM_LUA)
_SEED = _Script("seed", _SEED_LUA)
_ADD_CREDITS = _Script("add_credits", _ADD_CREDITS_LUA)
SCRIPTS = (_RESERVE, _SETTLE, _EXTEND, _LOST, _CLAIM, _SEED, _ADD_CREDITS)

_DUPLICATE, _NEED_SEED, _ALLOWED, _DENIED = -1, 0, 1, 2
_CLAIM_BATCH = 500  # organizations per pipelined ZCOUNT when looking for due reservations


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


class RedisCounters:
    """The :class:`~quotagate.limits.model.Counters` shared through one Redis by many gateway processes."""

    def __init__(
        self, url: str, *, prefix: str, timeout_ms: int, baseline: BaselineSource, max_connections: int = 32
    ) -> None:
        if not prefix or any(ch in prefix for ch in "{}*?[]\\ "):
            raise ValueError(f"Redis prefix {prefix!r} must be non-empty, without braces, glob characters or spaces")
        self._prefix = prefix
        self._baseline = baseline
        self._link = RedisLink(url, timeout_ms=timeout_ms, max_connections=max_connections)
        self._redis: Redis = self._link.client
        self._where = self._link.where
        self._registry = f"{prefix}:{{~sweep}}:orgs"
        self._flights = SingleFlight()

    def _base(self, org: str) -> str:
        return f"{self._prefix}:{{{org}}}:"

    async def connect(self) -> None:
        """Check Redis answers and load the scripts (otherwise done lazily by the first call)."""
        for script in SCRIPTS:
            await self._run(f"SCRIPT LOAD {script.name}", partial(self._redis.script_load, script.source))

    async def ping(self) -> None:
        """Raise BackendUnavailable unless Redis answers within the timeout."""
        await self._run("PING", self._redis.ping)

    async def close(self) -> None:
        await self._link.close()

    async def _run(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """One bounded Redis round trip (redis_link.py). Sending again never counts twice: a decision names its
        reservation and the script refuses an id already outstanding (``reserve`` then fails closed),
        settlements and seeds are idempotent, credits carry their sequence number, and a claim takes only what is
        still due."""
        return await self._link.run(what, op)

    async def _eval(self, script: _Script, keys: list[str], args: list[str], sends: list[None] | None = None) -> Any:
        """Run a script; ``sends`` (if given) gets one item per time it was sent (see :meth:`_run`)."""

        async def op() -> Any:
            if sends is not None:
                sends.append(None)
            try:
                return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                # A restarted (or failed-over) Redis has an empty script cache: load it and run again.
                await self._redis.script_load(script.source)
                return await self._redis.evalsha(script.sha, len(keys), *keys, *args)

        return await self._run(script.name, op)

    async def reserve(self, request: ReservationRequest) -> Decision:
        validate_request(request)
        org, checks, month = request.org_id, request.checks, request.month
        base = self._base(org)
        minute = minute_of(request.now)
        windows: list[str] = []
        spend_ids: list[str] = []
        credit_ids: list[str] = []
        slots: list[tuple[int, int, int]] = []  # per check: window, spend, credit index (1-based, 0 = none)
        spec: list[str] = []
        for check in checks:
            cid = check.counter_id
            wi = si = ci = 0
            if check.rpm_limit is not None or check.tpm_limit is not None:
                windows.append(f"{base}w:{cid}:{minute}")
                wi = len(windows)
            if check.spend_limit_nanos is not None:
                spend_ids.append(cid)
                si = len(spend_ids)
            if check.prepaid and check.credit_id:
                if check.credit_id not in credit_ids:  # one balance, charged once
                    credit_ids.append(check.credit_id)
                ci = credit_ids.index(check.credit_id) + 1
            slots.append((wi, si, ci))
            spec += (
                "1" if check.enforce else "0",
                _opt(check.rpm_limit),
                _opt(check.tpm_limit),
                _opt(check.spend_limit_nanos),
                str(wi),
                str(si),
                str(ci),
            )
        keys = [f"{base}r:{request.reservation_id}", base + "exp", base + "reg", *windows]
        keys += [f"{base}s:{cid}:{month}" for cid in spend_ids]
        keys += [f"{base}c:{credit_id}" for credit_id in credit_ids]
        ttl = request.ttl_s + RESERVATION_MARGIN_S
        header = (
            f"{request.tokens} {request.cost_nanos} {-request.cost_nanos} {request.now + request.ttl_s!r} {ttl} "
            f"{WINDOW_TTL_S} {request.now!r} {len(windows)} {len(spend_ids)} {len(credit_ids)} {len(checks)} "
        )
        args = [request.reservation_id, header + " ".join(spec), request.note]
        for _ in range(SEED_ATTEMPTS):
            since = self._flights.now()
            sends: list[None] = []
            reply = await self._eval(_RESERVE, keys, args, sends)
            status = reply[0]
            if status == _NEED_SEED:
                missing = [int(i) for i in reply[1]]
                ns = len(spend_ids)
                await self._seed(
                    org,
                    month,
                    request.now,
                    [spend_ids[i - 1] for i in missing if i <= ns],
                    [credit_ids[i - ns - 1] for i in missing if i > ns],
                    since,
                )
                continue
            if status == _DUPLICATE:
                if len(sends) > 1:  # the first send was counted before its connection broke: the reply is lost
                    raise BackendUnavailable(
                        f"Redis at {self._where} broke during a decision; failing closed (its reservation is "
                        "released when it expires)"
                    )
                raise ValueError(f"reservation {request.reservation_id!r} of {org!r} is already outstanding")
            values: list[int] = reply[2:]
            nw, ns = len(windows), len(spend_ids)
            figures: list[Figures] = []
            for wi, si, ci in slots:
                figures.append(
                    (
                        values[2 * wi - 2] if wi else 0,
                        values[2 * wi - 1] if wi else 0,
                        values[2 * nw + si - 1] if si else 0,
                        values[2 * nw + ns + ci - 1] if ci else 0,
                    )
                )
            decision = build_decision(request, figures, minute)
            if decision.allowed != (status == _ALLOWED):  # the Lua comparisons and Python's must agree
                raise RuntimeError(f"counter script and build_decision disagree on {request!r} with {figures!r}")
            if status == _ALLOWED and not reply[1]:
                await self._register(org)
            return decision
        raise BackendUnavailable(f"counters of {org!r} vanished while being seeded {SEED_ATTEMPTS} times")

    async def _register(self, org: str) -> None:
        """List the organization for the sweeper (once per organization, again after Redis lost its data). The
        decision is already made: a failure here is retried by the next decision, not raised."""
        try:
            await self._run("SADD sweep registry", lambda: self._redis.sadd(self._registry, org))
            await self._run("SET registration", lambda: self._redis.set(self._base(org) + "reg", "1"))
        except BackendUnavailable as exc:
            log.warning("could not list %r for the reservation sweeper: %s", org, exc)

    async def _seed(
        self, org: str, month: str, now: float, spend_ids: list[str], credit_ids: list[str], since: float
    ) -> None:
        async def seed() -> None:
            baseline = await self._baseline.baseline(org, list(spend_ids), list(credit_ids), month)
            base = self._base(org)
            ttl = str(month_ttl_s(month, now))
            keys = [f"{base}s:{cid}:{month}" for cid in spend_ids]
            keys += [f"{base}c:{credit_id}" for credit_id in credit_ids]
            keys += [f"{base}cp:{credit_id}" for credit_id in credit_ids]
            args = [str(len(spend_ids)), str(len(credit_ids))]
            for cid in spend_ids:
                args += (str(int(baseline.spend_nanos.get(cid, 0))), ttl)
            for credit_id in credit_ids:
                args += (
                    str(int(baseline.credit_nanos.get(credit_id, 0))),
                    str(int(baseline.credit_watermark.get(credit_id, 0))),
                )
            await self._eval(_SEED, keys, args)

        await self._flights.run((org, month, tuple(spend_ids), tuple(credit_ids)), seed, since)

    async def settle(self, settlement: Settlement) -> bool:
        validate_settlement(settlement.tokens, settlement.cost_nanos)
        base = self._base(settlement.org_id)
        reservation = f"{base}r:{settlement.reservation_id}"
        reply = await self._eval(
            _SETTLE,
            [reservation, base + "exp"],
            [
                settlement.reservation_id,
                str(settlement.tokens),
                str(settlement.cost_nanos),
                "1" if settlement.provisional else "0",
            ],
        )
        if reply == -1 and settlement.admission is not None:
            await self._settle_lost(settlement, settlement.admission, reservation)
        return bool(reply == 1)

    async def extend(self, org_id: str, reservation_id: str, expires_at: float) -> bool:
        base = self._base(org_id)
        reply = await self._eval(
            _EXTEND, [f"{base}r:{reservation_id}", base + "exp"], [reservation_id, repr(float(expires_at))]
        )
        return bool(reply == 1)

    async def _settle_lost(self, settlement: Settlement, admission: Admission, reservation: str) -> None:
        """Count the actual figures of a reservation Redis lost (see ``Counters.settle``)."""
        org, month, base = settlement.org_id, admission.month, self._base(settlement.org_id)
        minute = minute_of(admission.now)
        windows: list[str] = []
        spend_ids: list[str] = []
        credit_ids: list[str] = []
        for check in admission.checks:
            if check.tpm_limit is not None:
                windows.append(f"{base}w:{check.counter_id}:{minute}")
            if check.spend_limit_nanos is not None and check.counter_id not in spend_ids:
                spend_ids.append(check.counter_id)
            if check.prepaid and check.credit_id and check.credit_id not in credit_ids:
                credit_ids.append(check.credit_id)
        if not (windows or spend_ids or credit_ids):
            return
        keys = [reservation, *windows, *(f"{base}s:{cid}:{month}" for cid in spend_ids)]
        keys += [f"{base}c:{credit_id}" for credit_id in credit_ids]
        args = [str(settlement.tokens), str(settlement.cost_nanos), str(len(windows))]
        args += [str(len(spend_ids)), str(len(credit_ids))]
        for _ in range(SEED_ATTEMPTS):
            since = self._flights.now()
            reply = await self._eval(_LOST, keys, args)
            if not isinstance(reply, list):
                if reply == 1:
                    log.warning(
                        "reservation %s of %r was lost by Redis (restart or eviction); its actual figures were "
                        "counted on settlement",
                        settlement.reservation_id,
                        org,
                    )
                return
            missing = [int(i) for i in reply]
            ns = len(spend_ids)
            await self._seed(
                org,
                month,
                admission.now,
                [spend_ids[i - 1] for i in missing if i <= ns],
                [credit_ids[i - ns - 1] for i in missing if i > ns],
                since,
            )
        raise BackendUnavailable(f"counters of {org!r} vanished while being seeded {SEED_ATTEMPTS} times")

    async def expired(self, now: float, limit: int = 1000) -> list[ExpiredReservation]:
        if limit <= 0:
            return []
        members = await self._run("SMEMBERS sweep registry", lambda: self._redis.smembers(self._registry))
        orgs = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        due_at = repr(now)
        out: list[ExpiredReservation] = []
        for start in range(0, len(orgs), _CLAIM_BATCH):
            batch = orgs[start : start + _CLAIM_BATCH]

            async def count(batch: list[str] = batch) -> list[Any]:
                # One pipelined round trip finds the organizations with something due; only those are claimed.
                pipe = self._redis.pipeline(transaction=False)
                for org in batch:
                    pipe.zcount(self._base(org) + "exp", "-inf", due_at)
                return await pipe.execute()

            counts = await self._run("ZCOUNT expiry", count)
            for org, due in zip(batch, counts, strict=True):
                if not due:
                    continue
                base = self._base(org)
                reply = await self._eval(_CLAIM, [base + "exp"], [due_at, str(limit - len(out)), base + "r:"])
                for i in range(0, len(reply), 5):
                    rid, tokens, cost, created, note = reply[i : i + 5]
                    out.append(
                        ExpiredReservation(
                            rid.decode(), org, int(tokens), int(cost), float(created), note.decode() if note else ""
                        )
                    )
                if len(out) >= limit:
                    return out
        return out

    async def add_credits(self, org_id: str, credit_id: str, nanos: int, seq: int) -> int | None:
        validate_credit(nanos, seq)
        base = self._base(org_id)
        reply = await self._eval(
            _ADD_CREDITS,
            [f"{base}c:{credit_id}", f"{base}cp:{credit_id}"],
            [str(nanos), str(seq), str(PENDING_CREDIT_TTL_S)],
        )
        return None if reply is None else int(reply)

    async def state(self, org_id: str, checks: tuple[LimitCheck, ...], now: float, month: str) -> list[CounterState]:
        base = self._base(org_id)
        minute = minute_of(now)

        async def read() -> list[Any]:
            # One pipelined round trip; each check reads only the counters it keeps, in this order.
            pipe = self._redis.pipeline(transaction=False)
            for check in checks:
                if check.rpm_limit is not None or check.tpm_limit is not None:
                    pipe.hmget(f"{base}w:{check.counter_id}:{minute}", ["r", "t"])
                if check.spend_limit_nanos is not None:
                    pipe.get(f"{base}s:{check.counter_id}:{month}")
                if check.prepaid and check.credit_id:
                    pipe.hget(f"{base}c:{check.credit_id}", "b")
            return await pipe.execute()

        for _ in range(SEED_ATTEMPTS):
            since = self._flights.now()
            replies = iter(await self._run("state", read))
            spend_ids: list[str] = []
            credit_ids: list[str] = []
            out: list[CounterState] = []
            for check in checks:
                requests = tokens = spent = 0
                balance: int | None = None
                if check.rpm_limit is not None or check.tpm_limit is not None:
                    r, t = next(replies)
                    requests = int(r or 0) if check.rpm_limit is not None else 0
                    tokens = int(t or 0) if check.tpm_limit is not None else 0
                if check.spend_limit_nanos is not None:
                    value = next(replies)
                    if value is None:
                        spend_ids.append(check.counter_id)
                    spent = int(value or 0)
                if check.prepaid and check.credit_id:
                    value = next(replies)
                    if value is None and check.credit_id not in credit_ids:
                        credit_ids.append(check.credit_id)
                    balance = int(value or 0)
                out.append(CounterState(check.counter_id, requests, tokens, spent, balance))
            if not spend_ids and not credit_ids:
                return out
            await self._seed(org_id, month, now, spend_ids, credit_ids, since)
        raise BackendUnavailable(f"counters of {org_id!r} vanished while being seeded {SEED_ATTEMPTS} times")

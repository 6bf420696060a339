"""Seen actor-signature nonces in Redis, shared by every gateway process (see quotagate.governance.replay).

One key per nonce, ``P:{org}:an:<key_id>:<nonce>``, expiring when the signature leaves the replay window;
the organization's hash tag keeps it in the slot of that organization's counters. The claim is one
script call: set the key unless it exists, and answer the value it holds. Each claim writes a value of
its own, so a claim sent twice (the first send broke on a stale connection after the set) still counts
as the first use and is not taken for a replay.
"""

from __future__ import annotations

import secrets

from quotagate.store.redis_link import RedisLink

_CLAIM_LUA = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""


class RedisNonces:
    def __init__(self, url: str, *, prefix: str, timeout_ms: int, max_connections: int = 8) -> None:
        self._prefix = prefix
        self._link = RedisLink(url, timeout_ms=timeout_ms, max_connections=max_connections)
        self._claim = self._link.client.register_script(_CLAIM_LUA)

    async def first_use(self, org_id: str, key_id: str, nonce: str, ttl_s: float) -> bool:
        key = f"{self._prefix}:{{{org_id}}}:an:{key_id}:{nonce}"
        token = secrets.token_hex(8)
        ttl_ms = str(max(int(ttl_s * 1000), 1000))
        held = await self._link.run("the nonce claim", lambda: self._claim(keys=[key], args=[token, ttl_ms]))
        return bool(held == token.encode())

    async def close(self) -> None:
        await self._link.close()

"""Failed-authentication counts in Redis, shared by every gateway process.

One failure is one round trip (MULTI INCR EXPIRE EXEC) on ``P:af:<source>:<window>``; the key outlives its
window by a second, so nothing needs cleaning up. Authenticated requests never reach Redis from here.
Every call is bounded by ``timeout_ms``; a failure raises BackendUnavailable (the caller still refuses).
"""

from __future__ import annotations

from quotagate.identity.throttle import FailedAuthThrottle
from quotagate.store.redis_link import RedisLink


class RedisAuthThrottle(FailedAuthThrottle):
    def __init__(
        self, url: str, *, prefix: str, timeout_ms: int, limit: int, window_s: int, max_connections: int = 8
    ) -> None:
        super().__init__(limit=limit, window_s=window_s)
        self._prefix = prefix
        self._link = RedisLink(url, timeout_ms=timeout_ms, max_connections=max_connections)

    async def _count(self, source: str, window: int) -> int:
        key = f"{self._prefix}:af:{source}:{window}"
        return await self._link.run("INCR of a failed authentication", lambda: self._incr(key))

    async def _incr(self, key: str) -> int:
        # Counting twice after a broken connection only ever over-counts one failure.
        async with self._link.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window_s + 1)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        await self._link.close()

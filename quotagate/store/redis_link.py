"""One connection pool to Redis and the bounded round trip every Redis-backed store makes over it.

Each call is bounded as a whole by one asyncio deadline (pool wait, connect, send, reply). Redis-py's own
per-read timeouts are off: they add a timer per read and a task per send (about half the client overhead of a
call here); only the connect phase keeps its own bound.

After Redis restarted (or failed over), pooled connections opened before still look usable and fail on their
first use. On a broken connection the idle ones, which point at the same server, are dropped and the call is sent
once more on a fresh connection, within the same deadline. Callers make sending twice harmless (idempotent
scripts, or at worst one over-counted failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from quotagate.errors import BackendUnavailable

T = TypeVar("T")


class RedisLink:
    def __init__(self, url: str, *, timeout_ms: int, max_connections: int) -> None:
        if timeout_ms < 1:
            raise ValueError(f"timeout_ms must be >= 1, got {timeout_ms}")
        self.timeout_s = timeout_ms / 1000
        self._pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=None,
            socket_timeout=None,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.client: Redis = Redis(connection_pool=self._pool)
        kw = self._pool.connection_kwargs
        self.where = str(kw.get("path") or f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}")

    async def run(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """One bounded round trip; every failure becomes BackendUnavailable (the caller fails closed)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    return await op()
                except RedisConnectionError:
                    await self._pool.disconnect(inuse_connections=False)
                    return await op()
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"Redis at {self.where} did not answer {what} within {self.timeout_s * 1000:g} ms"
            ) from exc
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"Redis at {self.where} failed {what}: {exc.__class__.__name__}: {exc}") from exc

    async def close(self) -> None:
        await self.client.aclose()
        await self._pool.disconnect()

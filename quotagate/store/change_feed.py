"""Change fan-out: a process that changes configuration (revokes a key, applies a manifest) tells the others,
which reload within about a second instead of waiting for their next poll.

Redis: ``PUBLISH`` on ``<prefix>:changes``; each subscriber holds one pub/sub connection. Pub/sub does not
keep messages for a disconnected subscriber, so after reconnecting the iterator yields :data:`RESYNC`: the
consumer must reload everything. In-process (embedded default): delivered to this process's subscribers.
Polling (``config_refresh_ms``) stays the backstop either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from quotagate.errors import BackendUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

RESYNC = "resync"  # yielded after a reconnection: changes may have been missed, reload everything
_POLL_S = 1.0  # a subscriber wakes at least this often (and notices a closed feed)
_MAX_BACKOFF_S = 2.0


class ChangeFeed(Protocol):
    async def publish(self, topic: str = "config") -> None: ...

    def subscribe(self) -> AsyncIterator[str]:
        """Topics as they are published, from now on (each subscriber gets every one)."""
        ...

    async def close(self) -> None: ...


class MemoryChangeFeed:
    """Fan-out within one process."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[str]] = set()

    async def publish(self, topic: str = "config") -> None:
        for queue in self._queues:
            queue.put_nowait(topic)

    async def subscribe(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    async def close(self) -> None:
        """Nothing to release."""


class RedisChangeFeed:
    """Fan-out to every process sharing one Redis."""

    def __init__(self, url: str, *, prefix: str, timeout_ms: int) -> None:
        # Imported here: importing redis takes a noticeable part of a second, which the embedded default skips.
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)  # OSError includes TimeoutError
        self.channel = f"{prefix}:changes"
        self._timeout = timeout_ms / 1000
        # Publishing is bounded like every other Redis call; the subscriber's reads are bounded by _POLL_S
        # instead (an idle channel is normal), with a health-check PING to notice a silent dead connection.
        self._redis: Redis = Redis.from_url(
            url, socket_connect_timeout=self._timeout, retry=Retry(NoBackoff(), 0), health_check_interval=10
        )
        self._closed = False

    async def publish(self, topic: str = "config") -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.publish(self.channel, topic)
        except self._errors as exc:
            raise BackendUnavailable(f"could not publish {topic!r} on {self.channel}: {exc!r}") from exc

    async def subscribe(self) -> AsyncIterator[str]:
        backoff = 0.1
        connected_before = False
        while not self._closed:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if connected_before:
                    yield RESYNC
                connected_before, backoff = True, 0.1
                while not self._closed:
                    message = await pubsub.get_message(timeout=_POLL_S)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        yield data.decode() if isinstance(data, bytes) else str(data)
            except self._errors as exc:
                log.warning("change feed %s lost its connection (%r); reconnecting", self.channel, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                connected_before = True
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        self._closed = True
        await self._redis.aclose()

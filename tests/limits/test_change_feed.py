"""Config changes reach every subscriber: in-process, and across processes through Redis within a second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from quotagate.errors import BackendUnavailable
from quotagate.store.change_feed import RESYNC, MemoryChangeFeed, RedisChangeFeed
from tests.limits.conftest import redis_available, unique_prefix
from tests.support.servers import redis_url, unavailable
from tests.support.throwaway import ThrowawayRedis, free_port


async def first(feed: AsyncIterator[str], n: int = 1) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(3):
        async for topic in feed:
            got.append(topic)
            if len(got) == n:
                break
    return got


async def test_in_process_subscribers_each_get_every_change() -> None:
    feed = MemoryChangeFeed()
    one, two = feed.subscribe(), feed.subscribe()
    reading = asyncio.gather(first(one, 2), first(two, 2))
    await asyncio.sleep(0)  # both subscribed
    await feed.publish("keys")
    await feed.publish()
    assert await reading == [["keys", "config"], ["keys", "config"]]
    await feed.close()


@pytest.mark.redis
async def test_a_change_published_by_one_process_reaches_another_within_a_second() -> None:
    url = redis_url()
    await redis_available(url)
    prefix = unique_prefix()
    publisher = RedisChangeFeed(url, prefix=prefix, timeout_ms=1000)
    subscriber = RedisChangeFeed(url, prefix=prefix, timeout_ms=1000)
    stream = subscriber.subscribe()
    started = asyncio.get_running_loop().time()
    reading = asyncio.ensure_future(first(stream))
    for _ in range(50):  # until the subscription is live (messages before it are not kept)
        await publisher.publish("revoked")
        await asyncio.sleep(0.02)
        if reading.done():
            break
    assert await reading == ["revoked"]
    assert asyncio.get_running_loop().time() - started < 1.5
    await stream.aclose()
    await publisher.close()
    await subscriber.close()


async def publish_until(feed: RedisChangeFeed, topic: str, got: list[str]) -> None:
    """Publish until the subscriber has seen `topic` (pub/sub keeps nothing for a subscriber not yet live)."""
    async with asyncio.timeout(5):
        while topic not in got:
            await feed.publish(topic)
            await asyncio.sleep(0.05)


@pytest.mark.redis
async def test_a_subscriber_reconnects_and_asks_for_a_resync_after_an_outage() -> None:
    server = ThrowawayRedis()
    if server.binary() is None:
        unavailable("redis-server binary", "PATH", FileNotFoundError("redis-server"))
    server.start()
    feed = RedisChangeFeed(server.url, prefix="qgtest", timeout_ms=500)
    got: list[str] = []

    async def read() -> None:
        async for topic in feed.subscribe():
            got.append(topic)

    reader = asyncio.ensure_future(read())
    try:
        await publish_until(feed, "before", got)
        server.kill()
        with pytest.raises(BackendUnavailable):
            await feed.publish("lost")
        server.start()
        await publish_until(feed, "after", got)
        assert got.index("before") < got.index(RESYNC) < got.index("after")
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await feed.close()
        server.kill()


async def test_publishing_to_an_unreachable_redis_fails_clearly() -> None:
    feed = RedisChangeFeed(f"redis://127.0.0.1:{free_port()}/0", prefix="qgtest", timeout_ms=200)
    with pytest.raises(BackendUnavailable, match="could not publish"):
        await feed.publish()
    await feed.close()

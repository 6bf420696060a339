"""One place picks the counter backend: Redis when a URL is set, else in-process."""

from __future__ import annotations

from quotagate.settings import Settings
from quotagate.store.counters_factory import open_counters
from quotagate.store.counters_memory import MemoryCounters
from quotagate.store.counters_redis import RedisCounters
from tests.limits.conftest import FakeBaseline


async def test_embedded_default_is_in_process() -> None:
    settings = Settings()
    assert isinstance(open_counters(settings, FakeBaseline()), MemoryCounters)


async def test_a_redis_url_selects_redis_without_connecting_yet() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_prefix="qgx", redis_timeout_ms=77)
    counters = open_counters(settings, FakeBaseline())
    assert isinstance(counters, RedisCounters)
    assert counters._prefix == "qgx" and counters._link.timeout_s == 0.077
    await counters.close()

"""The one place that decides which counter backend (and change feed) a process uses: Redis when
``QUOTAGATE_REDIS_URL`` is set, else in-process."""

from __future__ import annotations

from quotagate.limits.model import BaselineSource, Counters
from quotagate.settings import Settings
from quotagate.store.change_feed import ChangeFeed, MemoryChangeFeed
from quotagate.store.counters_memory import MemoryCounters


def open_counters(settings: Settings, baseline: BaselineSource) -> Counters:
    if settings.redis_url:
        from quotagate.store.counters_redis import RedisCounters  # imports redis only when it is used

        return RedisCounters(
            settings.redis_url,
            prefix=settings.redis_prefix,
            timeout_ms=settings.redis_timeout_ms,
            baseline=baseline,
        )
    return MemoryCounters(baseline)


def open_change_feed(settings: Settings) -> ChangeFeed:
    if settings.redis_url:
        from quotagate.store.change_feed import RedisChangeFeed

        return RedisChangeFeed(settings.redis_url, prefix=settings.redis_prefix, timeout_ms=settings.redis_timeout_ms)
    return MemoryChangeFeed()

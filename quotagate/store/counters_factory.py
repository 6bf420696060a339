"""The one place that decides which counter backend (and failed-authentication throttle, and actor-nonce
store) a process uses: Redis when ``QUOTAGATE_REDIS_URL`` is set, else in-process."""

from __future__ import annotations

from quotagate.governance.replay import MemoryNonces, NonceStore
from quotagate.identity.throttle import FailedAuthThrottle
from quotagate.limits.model import BaselineSource, Counters
from quotagate.settings import Settings
from quotagate.store.auth_throttle import MemoryAuthThrottle
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


def open_auth_throttle(settings: Settings) -> FailedAuthThrottle:
    limit, window_s = settings.auth_failure_limit, settings.auth_failure_window_s
    if settings.redis_url:
        from quotagate.store.auth_throttle_redis import RedisAuthThrottle

        return RedisAuthThrottle(
            settings.redis_url,
            prefix=settings.redis_prefix,
            timeout_ms=settings.redis_timeout_ms,
            limit=limit,
            window_s=window_s,
        )
    return MemoryAuthThrottle(limit=limit, window_s=window_s)


def open_nonces(settings: Settings) -> NonceStore:
    """Where actor-signature nonces are remembered: beside the counters, so every process sees them."""
    if settings.redis_url:
        from quotagate.store.nonces_redis import RedisNonces

        return RedisNonces(settings.redis_url, prefix=settings.redis_prefix, timeout_ms=settings.redis_timeout_ms)
    return MemoryNonces()

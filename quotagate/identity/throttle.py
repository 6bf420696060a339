"""Failed-authentication throttling per client address: the policy; the stores only count.

A failure is a presented credential (gateway key or admin token) that does not verify: malformed, unknown
id, wrong secret. After `limit` failures from one address in a fixed window, its further *failures* are
answered 429 with Retry-After instead of 401. A valid credential is never refused by the throttle, because:

* secrets are 256 random bits, so online guessing is hopeless with or without a throttle, and
* refusing every request from a throttled address would let anyone who shares it (a NAT, a corporate
  egress, a load balancer whose address was not declared in `trusted_proxies`) lock out every legitimate
  client behind it with a few bad requests.

What the throttle buys is a bounded, visible failure rate per address: a scanner or a misconfigured client
stuck in a loop gets 429 and ``x-should-retry: false``. Telling a valid credential from an invalid one needs
its hash, so the hash is computed on every attempt (one SHA-256, about a microsecond); the counting costs
one backend call on the failure path only, and nothing on an authenticated request.

IPv6 clients are counted per /64 (one host usually owns a whole /64 and can rotate through it).
"""

from __future__ import annotations

import ipaddress
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from quotagate.governance.ip import IPAddress

IPV6_PREFIX = 64


@dataclass(frozen=True, slots=True)
class ThrottleVerdict:
    throttled: bool
    retry_after_s: int = 0  # seconds until the window ends (>= 1 when throttled)


NOT_THROTTLED = ThrottleVerdict(False)


def source_key(addr: IPAddress | None) -> str:
    """What failures are counted under: the IPv4 address, the IPv6 /64, or 'unknown' (no usable address)."""
    if addr is None:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(addr) >> (128 - IPV6_PREFIX) << (128 - IPV6_PREFIX), IPV6_PREFIX)))
    return str(addr)


class FailedAuthThrottle(ABC):
    """Counts failed authentications per source and window; subclasses store the counts."""

    def __init__(self, *, limit: int, window_s: int) -> None:
        if limit < 0 or window_s < 1:
            raise ValueError(f"limit must be >= 0 and window_s >= 1, got {limit} and {window_s}")
        self.limit = limit  # 0: throttling is off
        self.window_s = window_s

    async def failed(self, addr: IPAddress | None, now: float) -> ThrottleVerdict:
        """Count one failure from `addr`; whether it (and so the answer to it) is over the limit.

        Raises BackendUnavailable when the shared store cannot count: the caller still refuses (401)."""
        if self.limit == 0:
            return NOT_THROTTLED
        window = int(now // self.window_s)
        count = await self._count(source_key(addr), window)
        if count <= self.limit:
            return NOT_THROTTLED
        return ThrottleVerdict(True, max(1, math.ceil((window + 1) * self.window_s - now)))

    @abstractmethod
    async def _count(self, source: str, window: int) -> int:
        """Add one failure of `source` in `window` (an index: epoch seconds // window_s); the window's total."""

    async def close(self) -> None:  # noqa: B027 - only backends holding connections need it
        """Release connections (if any)."""

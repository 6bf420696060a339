"""Seen actor-signature nonces: a signed actor header is accepted once.

A nonce is remembered for as long as its signature's timestamp is inside the replay window, so a
header captured and sent again (while it has not expired) is refused. The store is the counter
backend's: in process on the embedded default, Redis (``quotagate.store.nonces_redis``) when the
gateway runs as several processes, so a replay to another process is caught too.
"""

from __future__ import annotations

import heapq
import secrets
import time
from collections.abc import Callable
from typing import Protocol


class NonceStore(Protocol):
    async def first_use(self, org_id: str, key_id: str, nonce: str, ttl_s: float) -> bool:
        """Remember (org, key, nonce) for `ttl_s`; True the first time, False when already remembered.
        Raises BackendUnavailable when the store cannot answer (the caller fails closed)."""
        ...

    async def close(self) -> None: ...


class MemoryNonces:
    """The in-process store: seen nonces with their expiry, the expired ones dropped as time passes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str, str], float] = {}
        self._expiries: list[tuple[float, tuple[str, str, str]]] = []

    async def first_use(self, org_id: str, key_id: str, nonce: str, ttl_s: float) -> bool:
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            expiry, old = heapq.heappop(self._expiries)
            if self._seen.get(old) == expiry:
                del self._seen[old]
        key = (org_id, key_id, nonce)
        if key in self._seen:
            return False
        expiry = now + max(ttl_s, 1.0)
        self._seen[key] = expiry
        heapq.heappush(self._expiries, (expiry, key))
        return True

    def __len__(self) -> int:
        return len(self._seen)

    async def close(self) -> None:
        pass


def new_nonce() -> str:
    """What a client sends as `n=`: 128 random bits, urlsafe base64 (22 characters)."""
    return secrets.token_urlsafe(16)

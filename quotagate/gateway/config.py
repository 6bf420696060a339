"""The current configuration snapshot of this process, refreshed when the stored version changes.

Propagation between processes is this poll of the stored config version, every `config_refresh_ms` (at most
1000, so a revocation lands everywhere within about a second, even when Redis is down). A change made in this
process (admin API) calls `refresh()` before answering, so it is enforced here at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from quotagate.snapshot import Snapshot

log = logging.getLogger(__name__)


class ConfigCache:
    """Readers take `.snapshot` (one attribute read, always a consistent version); `run` polls in the background."""

    def __init__(
        self, load: Callable[[], Snapshot], read_version: Callable[[], int], *, refresh_s: float = 0.25
    ) -> None:
        self._load = load
        self._read_version = read_version
        self._refresh_s = refresh_s
        self.snapshot: Snapshot = load()
        self.failures = 0
        # One refresh at a time: a poll that read the store before an admin commit must not install its older
        # snapshot after the admin's refresh installed the newer one.
        self._refreshing = asyncio.Lock()

    async def refresh(self) -> bool:
        async with self._refreshing:
            version = await asyncio.to_thread(self._read_version)
            if version == self.snapshot.version:
                return False
            self.snapshot = await asyncio.to_thread(self._load)
        log.info("configuration version %s loaded", self.snapshot.version)
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.refresh()
                self.failures = 0
            except Exception as exc:  # the store may be down; keep serving the last good snapshot
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("configuration refresh failed (%s); serving version %s", exc, self.snapshot.version)
            # Poll every refresh_s, not refresh_s after a (maybe slow) reload: the bound on propagation holds.
            await asyncio.sleep(max(self._refresh_s - (loop.time() - started), 0))

"""The current configuration snapshot of this process, refreshed when the stored version changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from quotagate.snapshot import Snapshot

log = logging.getLogger(__name__)


class ConfigCache:
    """Readers take `.snapshot` (one attribute read, always a consistent version); a background task polls."""

    def __init__(
        self, load: Callable[[], Snapshot], read_version: Callable[[], int], *, refresh_s: float = 0.25
    ) -> None:
        self._load = load
        self._read_version = read_version
        self._refresh_s = refresh_s
        self.snapshot: Snapshot = load()
        self.failures = 0
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Refresh at once (a change notification arrived)."""
        self._wake.set()

    async def refresh(self) -> bool:
        version = await asyncio.to_thread(self._read_version)
        if version == self.snapshot.version:
            return False
        self.snapshot = await asyncio.to_thread(self._load)
        log.info("configuration version %s loaded", self.snapshot.version)
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
                self.failures = 0
            except Exception as exc:  # the store may be down; keep serving the last good snapshot
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("configuration refresh failed (%s); serving version %s", exc, self.snapshot.version)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._refresh_s)
            self._wake.clear()

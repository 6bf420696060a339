"""In-process failed-authentication counts: the embedded backend (one process), bounded in memory."""

from __future__ import annotations

import threading

from quotagate.identity.throttle import FailedAuthThrottle

# Enough for a busy deployment's failing addresses in one window; past it the oldest entries are forgotten
# (an attacker spreading over this many addresses gets a few more attempts each, never an admission).
MAX_SOURCES = 100_000


class MemoryAuthThrottle(FailedAuthThrottle):
    def __init__(self, *, limit: int, window_s: int, max_sources: int = MAX_SOURCES) -> None:
        super().__init__(limit=limit, window_s=window_s)
        self._max_sources = max_sources
        self._counts: dict[str, tuple[int, int]] = {}  # source -> (window, failures in it), oldest first
        # Check and the HTTP API may run on different threads (the mitmproxy addon, thread-served APIs).
        self._lock = threading.Lock()

    async def _count(self, source: str, window: int) -> int:
        with self._lock:
            seen, count = self._counts.pop(source, (window, 0))
            count = count + 1 if seen == window else 1
            if len(self._counts) >= self._max_sources:
                self._forget(window)
            self._counts[source] = (window, count)  # re-inserted last: the dict stays oldest first
            return count

    def _forget(self, window: int) -> None:
        stale = [s for s, (w, _) in self._counts.items() if w != window]
        for source in stale:
            del self._counts[source]
        while len(self._counts) >= self._max_sources:
            del self._counts[next(iter(self._counts))]

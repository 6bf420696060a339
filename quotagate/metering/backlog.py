"""How far behind the metering of this process is, as the front door that can measure it reports.

Check over HTTP answers on a cheaper path than the metering streams, so on its own it would admit more than the
process can meter: the surplus streams queue, Envoy drops them (``deferred_close_timeout``) and those responses are
charged only as the sweep's estimate. The Envoy front door measures the queue (a probe stream queued with the
metering streams, ``ext_authz/metering_probe.py``); while it waits longer than ``Settings.metering_lag_limit_ms``
new Checks wait (at most ``WAIT_S``) for it to drain, then are refused (503 ``metering_behind``). Waiting, not
refusing at once, is what drains it: a refusal costs the event loop about what an admission does, so a client
that retries at once would keep the loop as busy as before and the streams queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

WAIT_S = 1.0  # how long a Check waits for the metering to catch up (Envoy's Check timeout is longer: 3 s)


class MeteringBacklog:
    def __init__(self, limit_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit_s
        self._clock = clock
        self._lag = 0.0
        self._waiting_since: float | None = None  # a probe sent and not answered yet
        self._caught_up = asyncio.Event()

    def probe_sent(self) -> None:
        self._waiting_since = self._clock()

    def probe_answered(self) -> None:
        if self._waiting_since is not None:
            self._lag = self._clock() - self._waiting_since
        self._waiting_since = None
        if self._lag <= self._limit:
            self._caught_up.set()

    @property
    def lag_s(self) -> float:
        """The last probe's wait, or the current one's if it has waited longer."""
        pending = 0.0 if self._waiting_since is None else self._clock() - self._waiting_since
        return max(self._lag, pending)

    def behind(self) -> bool:
        return self.lag_s > self._limit

    async def caught_up(self, wait_s: float = WAIT_S) -> bool:
        """True at once if the metering keeps up; else after it caught up, or False if it has not in `wait_s`."""
        if not self.behind():
            return True
        self._caught_up.clear()
        try:
            await asyncio.wait_for(self._caught_up.wait(), wait_s)
        except TimeoutError:
            return not self.behind()
        return True

"""Keeps the reservations of responses still being metered from being swept (a stream may outlive ``ttl_s``).

Each open Meter registers its reservation; a background task moves every registered reservation's expiry to
``now + ttl_s`` a few times per ``ttl_s``. Only a process that died (or a meter dropped without finishing: the
registry holds meters weakly) stops extending, so only its reservations expire and are swept.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable

from quotagate.limits.model import Counters

log = logging.getLogger(__name__)
BEATS_PER_TTL = 4  # extensions per ttl_s: a missed beat or two still leaves the reservation alive


class OpenReservations:
    def __init__(self, counters: Counters, ttl_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._counters = counters
        self._ttl = ttl_s
        self._clock = clock
        self._open: weakref.WeakValueDictionary[tuple[str, str], object] = weakref.WeakValueDictionary()
        self._kicks: set[asyncio.Task[bool]] = set()
        self.lost = 0  # reservations a sweeper claimed while still open here (their real figures correct it)

    @property
    def interval_s(self) -> float:
        return self._ttl / BEATS_PER_TTL

    def add(self, org_id: str, reservation_id: str, admitted_at: float, owner: object) -> None:
        """Keep (org_id, reservation_id) alive while ``owner`` (the meter) lives and until ``discard``."""
        self._open[(org_id, reservation_id)] = owner
        if self._clock() - admitted_at > self._ttl - 2 * self.interval_s:
            # Opened late (a slow first byte): the next beat may come after the expiry, so extend now.
            try:
                task = asyncio.get_running_loop().create_task(self._extend(org_id, reservation_id))
            except RuntimeError:  # no loop (a synchronous caller): the next beat does it
                return
            self._kicks.add(task)
            task.add_done_callback(self._kicks.discard)

    def discard(self, org_id: str, reservation_id: str) -> None:
        self._open.pop((org_id, reservation_id), None)

    def __len__(self) -> int:
        return len(self._open)

    async def beat_once(self) -> int:
        """Extend every open reservation; returns how many were extended."""
        extended = 0
        for org_id, reservation_id in list(self._open.keys()):
            try:
                if await self._extend(org_id, reservation_id):
                    extended += 1
            except Exception as exc:  # backend down: the next beat retries; a sweep meanwhile is corrected later
                log.warning("extending open reservations failed: %s", exc)
                break
        return extended

    async def _extend(self, org_id: str, reservation_id: str) -> bool:
        if await self._counters.extend(org_id, reservation_id, self._clock() + self._ttl):
            return True
        if self._open.pop((org_id, reservation_id), None) is not None:
            self.lost += 1
            log.warning(
                "reservation %s was swept while its response was still being metered; its real figures will "
                "replace the sweep's estimate",
                reservation_id,
            )
        return False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)  # cancellation ends the loop (GatewayRuntime.stop awaits it)
            await self.beat_once()

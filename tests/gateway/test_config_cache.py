"""The configuration cache: a slow poll never undoes a newer refresh (an admin change made in this process)."""

from __future__ import annotations

import asyncio
import threading

from quotagate.gateway.config import ConfigCache
from quotagate.snapshot import Snapshot


class Store:
    """A stored config version; `hold_one()` makes the next load wait (a slow poll) until `release()`."""

    def __init__(self) -> None:
        self.version = 0
        self._held: threading.Event | None = None  # the next load waits for it
        self._gate = threading.Event()
        self.loading = threading.Event()

    def hold_one(self) -> None:
        self._gate.clear()
        self._held = self._gate
        self.loading.clear()

    def release(self) -> None:
        self._gate.set()

    def read_version(self) -> int:
        return self.version

    def load(self) -> Snapshot:
        seen = self.version  # a load returns the version as of its start
        held, self._held = self._held, None
        self.loading.set()
        if held is not None:
            held.wait(timeout=10)
        return Snapshot(version=seen)


async def test_a_refresh_that_read_an_older_version_does_not_overwrite_a_newer_one() -> None:
    store = Store()
    cache = ConfigCache(store.load, store.read_version)
    store.version = 1
    store.hold_one()
    poll = asyncio.create_task(cache.refresh())  # reads version 1, then its load is slow
    await asyncio.to_thread(store.loading.wait, 10)
    store.version = 2  # an admin change commits while the poll is loading
    admin = asyncio.create_task(cache.refresh())  # the admin API's refresh after its commit
    await asyncio.wait({admin}, timeout=0.2)  # unserialized, it would install version 2 now
    store.release()
    await asyncio.gather(poll, admin)
    assert cache.snapshot.version == 2


async def test_the_poll_picks_up_a_stored_change() -> None:
    store = Store()
    cache = ConfigCache(store.load, store.read_version, refresh_s=0.01)
    runner = asyncio.create_task(cache.run())
    try:
        store.version = 7
        deadline = asyncio.get_running_loop().time() + 5
        while cache.snapshot.version != 7:
            assert asyncio.get_running_loop().time() < deadline, "the poll never loaded the new version"
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()

"""The retention job: purges logged prompts past their project's retention, recording what went."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from quotagate.gateway.config import ConfigCache
from quotagate.governance.policy import PromptLogMode
from quotagate.store.database import Database
from quotagate.store.prompt_logs_repo import purge_expired

log = logging.getLogger(__name__)


class PromptRetention:
    """Every process may run it: each purge is one transaction, and only rows it deleted are recorded."""

    def __init__(
        self, db: Database, config: ConfigCache, *, interval_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._config = config
        self._interval = interval_s
        self._clock = clock

    def purge_once(self) -> dict[str, int]:
        """Organization id -> rows purged now."""
        policies = self._config.snapshot.governance.projects
        # Projects that still log keep their (possibly shortened) retention; the rest purge by stored expiry.
        retention = {pid: p.retention_days for pid, p in policies.items() if p.prompt_mode is not PromptLogMode.OFF}
        now = datetime.fromtimestamp(self._clock(), UTC)
        total: dict[str, int] = {}
        while True:
            with self._db.transaction() as session:
                counts = purge_expired(session, now, retention)
            if not counts:
                return total
            for org, n in counts.items():
                total[org] = total.get(org, 0) + n
                log.info("purged %d logged prompt(s) of organization %s past retention", n, org)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.purge_once)
            except Exception as exc:  # database down: the next round purges
                log.warning("prompt retention purge failed: %s", exc)
            await asyncio.sleep(self._interval)

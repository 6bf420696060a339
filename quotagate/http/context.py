"""What every handler works with: the runtime, and store calls run off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

from fastapi import Request

from quotagate.identity.credentials import SecretHasher
from quotagate.runtime import GatewayRuntime
from quotagate.settings import Settings
from quotagate.snapshot import Snapshot
from quotagate.store.database import Database

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class Context:
    def __init__(self, runtime: GatewayRuntime) -> None:
        self.runtime = runtime
        self.zone = ZoneInfo(runtime.settings.spend_timezone)
        # rate card version -> its creation time (epoch seconds), for /v1/models
        self.rate_card_times: dict[str, int] = {}

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def db(self) -> Database:
        return self.runtime.app.db

    @property
    def hasher(self) -> SecretHasher:
        return self.runtime.app.hasher

    @property
    def snapshot(self) -> Snapshot:
        return self.runtime.config.snapshot

    def month(self, now: float) -> str:
        """The calendar month key of spend counters, in the spend time zone."""
        return datetime.fromtimestamp(now, self.zone).strftime("%Y-%m")

    async def read(self, fn: Callable[Concatenate[Any, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(session, ...)` in a read session, in a worker thread (the store is synchronous)."""

        def run() -> T:
            with self.db.read() as session:
                return fn(session, *args, **kwargs)

        return await asyncio.to_thread(run)

    async def write(self, fn: Callable[Concatenate[Any, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(session, ...)` in one transaction (IMMEDIATE on SQLite: ledger and audit appends read then write),
        then this process reloads its snapshot so the change is enforced here before the response."""

        def run() -> T:
            with self.db.transaction(immediate=True) as session:
                return fn(session, *args, **kwargs)

        result = await asyncio.to_thread(run)
        await self.refresh()
        return result

    async def refresh(self) -> None:
        # Other processes poll the bumped config version; a failure here only delays this one by a poll.
        try:
            await self.runtime.config.refresh()
        except Exception as exc:
            log.warning("snapshot refresh after an admin change failed: %s", exc)


def context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx

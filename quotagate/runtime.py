"""A running gateway process: the core wired to its backends, with its background tasks.

Front doors (ext_authz server, mitmproxy addon) build one GatewayRuntime and call `gatekeeper.check`
and `meter(ticket)`; everything else (config refresh, usage writer, reservation sweeper) runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from quotagate.app import App, open_app
from quotagate.errors import ConfigError
from quotagate.gateway.check import Gatekeeper
from quotagate.gateway.config import ConfigCache
from quotagate.gateway.ticket import Ticket
from quotagate.governance.alerts import AlertEvaluator
from quotagate.governance.replay import NonceStore
from quotagate.governance.retention import PromptRetention
from quotagate.identity.throttle import FailedAuthThrottle
from quotagate.limits.model import Counters, Settlement
from quotagate.metering.access_log import AccessLogSink
from quotagate.metering.backlog import MeteringBacklog
from quotagate.metering.keepalive import OpenReservations
from quotagate.metering.meter import Meter, MeterServices
from quotagate.metering.sweeper import Sweeper
from quotagate.metrics import MetricsSink
from quotagate.settings import Settings
from quotagate.snapshot import Snapshot
from quotagate.store.baseline import StoreBaseline
from quotagate.store.config_state import read_config_version
from quotagate.store.counters_factory import open_auth_throttle, open_counters, open_nonces
from quotagate.store.ledger_checkpoints import Checkpointer, open_checkpointer
from quotagate.store.prompt_log_writer import PromptLogWriter
from quotagate.store.snapshot_loader import load_snapshot
from quotagate.store.usage_repo import recorded_figures
from quotagate.store.usage_writer import UsageWriter
from quotagate.upstream_keys import ProviderKeys


@dataclass
class GatewayRuntime:
    app: App
    config: ConfigCache
    counters: Counters
    writer: UsageWriter
    gatekeeper: Gatekeeper
    meter_services: MeterServices
    sweeper: Sweeper
    auth_throttle: FailedAuthThrottle
    nonces: NonceStore  # seen actor-signature nonces (the gatekeeper's)
    metering_backlog: MeteringBacklog  # how far the metering lags (measured by the Envoy front door, if at all)
    checkpointer: Checkpointer | None = None
    prompt_log: PromptLogWriter | None = None
    alerts: AlertEvaluator | None = None  # None: alert_interval_s is 0
    retention: PromptRetention | None = None  # None: prompt_log_purge_interval_s is 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def meter(self, ticket: Ticket) -> Meter:
        return Meter(ticket, self.meter_services)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def resettle(items: list[Settlement]) -> None:
            # Real figures the writer found over a sweep's estimate go to the counters (from the writer's thread).
            asyncio.run_coroutine_threadsafe(self.sweeper.resettle(items), loop)

        self.writer.on_resettle = resettle
        self.writer.start()
        self._tasks = [
            asyncio.create_task(self.config.run(), name="config-refresh"),
            asyncio.create_task(self.sweeper.run(), name="reservation-sweeper"),
        ]
        if self.meter_services.open_reservations is not None:
            keepalive = self.meter_services.open_reservations.run()
            self._tasks.append(asyncio.create_task(keepalive, name="reservation-keepalive"))
        if self.checkpointer is not None:
            self._tasks.append(asyncio.create_task(self.checkpointer.run(), name="ledger-checkpoints"))
        if self.prompt_log is not None:
            self.prompt_log.start()
        if self.alerts is not None:
            self._tasks.append(asyncio.create_task(self.alerts.run(), name="alerts"))
        if self.retention is not None:
            self._tasks.append(asyncio.create_task(self.retention.run(), name="prompt-retention"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.writer.stop)
        if self.prompt_log is not None:
            await asyncio.to_thread(self.prompt_log.stop)
        await self.counters.close()
        await self.auth_throttle.close()
        await self.nonces.close()
        self.app.close()


def open_runtime(settings: Settings | None = None) -> GatewayRuntime:
    """Raises ConfigError, before anything starts, when periodic ledger checkpoints are on but cannot be
    signed (PostgreSQL without the shared signing key): a gateway must not run silently unanchored."""
    app = open_app(settings)
    s = app.settings
    db = app.db
    try:
        checkpointer = open_checkpointer(s, db)
    except ConfigError as exc:
        app.close()
        raise ConfigError(
            f"{exc}. Set the same key in every gateway process, or QUOTAGATE_LEDGER_CHECKPOINT_INTERVAL_S=0 "
            "to run without periodic checkpoints (then sign with `quotagate audit checkpoint` where the key is)"
        ) from exc

    def load() -> Snapshot:
        with db.read() as session:
            return load_snapshot(session)

    def version() -> int:
        with db.read() as session:
            return read_config_version(session)

    config = ConfigCache(load, version, refresh_s=s.config_refresh_ms / 1000)
    counters = open_counters(s, StoreBaseline(db, s.spend_timezone))
    auth_throttle = open_auth_throttle(s)  # failed authentications per client address (gateway and admin API)
    writer = UsageWriter(db, s.home / "spool")
    # Every event is counted, logged as one JSON access line, then spooled durably.
    sink = MetricsSink(AccessLogSink(writer))
    prompt_log = PromptLogWriter(db, lambda project_id: config.snapshot.governance.project(project_id))
    nonces = open_nonces(s)
    # Swept requests get an event, an access line and metrics like any other (the sink).
    sweeper = Sweeper(
        counters=counters,
        find_recorded=lambda rid: recorded_figures(db, rid, s.home / "spool"),
        sink=sink,
        config=config,
        interval_s=min(5.0, s.reservation_ttl_s / 4),
    )
    backlog = MeteringBacklog(s.metering_lag_limit_ms / 1000)
    gatekeeper = Gatekeeper(
        config=config,
        hasher=app.hasher,
        counters=counters,
        provider_keys=ProviderKeys(app.secret_box),
        settings=s,
        sink=sink,
        auth_throttle=auth_throttle,
        clock=time.time,
        content=prompt_log,
        nonces=nonces,
        settle_later=sweeper.retry_later,
        backlog=backlog,
    )
    services = MeterServices(
        config=config,
        counters=counters,
        sink=sink,
        content=prompt_log,
        spend_timezone=s.spend_timezone,
        open_reservations=OpenReservations(counters, s.reservation_ttl_s),
        settle_later=sweeper.retry_later,
    )
    return GatewayRuntime(
        app,
        config,
        counters,
        writer,
        gatekeeper,
        services,
        sweeper,
        auth_throttle,
        nonces,
        backlog,
        checkpointer,
        prompt_log=prompt_log,
        alerts=AlertEvaluator(db, s) if s.alert_interval_s > 0 else None,
        retention=(
            PromptRetention(db, config, interval_s=s.prompt_log_purge_interval_s)
            if s.prompt_log_purge_interval_s > 0
            else None
        ),
    )

"""The Quotagate addon: the same core as the Envoy front door, in mitmproxy's event loop.

Each request gets the ext_authz decision; allowed ones go upstream with the provider key and the body
rewrite, and their responses are metered as they pass. `quotagate_addon.py` is the script mitmproxy loads.

Facts of mitmproxy 11.0 this relies on:
* A hook that raises is logged and the flow goes on upstream (fail open), so `request` catches everything
  and answers 503 itself: authorization fails closed.
* A stream callable that raises kills the connection, so `passthrough` never raises.
* With `connection_strategy=lazy` no upstream connection opens before `request` has allowed the flow, so the
  addon refuses to run with mitmproxy's default, `eager` (which connects as soon as a client does).
* A flow whose `request` hook set a response still goes through `responseheaders` and `response`: local
  answers (no route, a certificate that does not verify) are metered there, as ext_proc meters Envoy's.
* `server_connect` runs before the upstream TLS handshake; the `sni` it sets is also the name verified.
* `mitmdump -s` may call `running` and `done` synchronously (script reloads), so they are plain methods
  returning a task; mitmproxy awaits it when it can.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from mitmproxy import addonmanager, ctx, exceptions, http
from mitmproxy.proxy import server_hooks

from addons.quotagate_budget import budget_left
from addons.quotagate_flows import (
    apply_allow,
    check_input,
    client_headers,
    deny_response,
    failure,
    passthrough,
    set_headers,
    unrouted,
    upstream_tls_failed,
)
from addons.quotagate_report import Summary, note_admitted, note_denied, note_metered
from addons.quotagate_tls import AmbiguousServerName, CertificateCheck, Trust, upstream_server_name
from quotagate.errors import ConfigError
from quotagate.gateway.outcome import Deny
from quotagate.manifest.desired import DesiredState, desired_state
from quotagate.manifest.load import load_file
from quotagate.metering.meter import Meter
from quotagate.runtime import GatewayRuntime, open_runtime
from quotagate.settings import Settings, load_settings
from quotagate.store.manifest_apply import apply_plan, plan_manifest
from quotagate.usage.factory import is_event_stream

log = logging.getLogger(__name__)

MANIFEST = "quotagate_manifest"
DATABASE_URL = "quotagate_database_url"
REDIS_URL = "quotagate_redis_url"
_DATABASE_SCHEMES = ("sqlite", "postgresql")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
LAZY_NEEDED = (
    "Quotagate needs --set connection_strategy=lazy: with mitmproxy's default (eager) the upstream connection "
    "opens as soon as a client connects, before the addon has decided anything."
)


@dataclass
class _Exchange:
    """An allowed flow on its way: its meter and the headers its response gets for the client."""

    meter: Meter
    client_headers: tuple[tuple[str, str], ...]
    streamed: bool = False
    local: bool = False  # answered by the addon itself (as Envoy would): never streamed


class QuotagateAddon:
    def __init__(self) -> None:
        self.summary = Summary()
        self._settings: Settings | None = None
        self._desired: DesiredState | None = None
        self._starting: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._runtime: GatewayRuntime | None = None
        self._open: dict[str, _Exchange] = {}  # flow id -> exchange, until response or error
        self._tasks: set[asyncio.Task[None]] = set()
        self._certificates = CertificateCheck()

    # -- options
    def load(self, loader: addonmanager.Loader) -> None:
        loader.add_option(
            MANIFEST,
            str | None,  # type: ignore[arg-type]  # mitmproxy takes Optional[...] specs
            None,
            "A Quotagate manifest (YAML or JSON) to validate and apply when the addon starts, and again whenever "
            "this option changes. Unset: the configuration already stored in the database is used as it is.",
        )
        loader.add_option(
            DATABASE_URL,
            str | None,  # type: ignore[arg-type]
            None,
            "SQLAlchemy URL of Quotagate's database, e.g. postgresql+psycopg://user@host/db. Unset: "
            "QUOTAGATE_DATABASE_URL, or else the embedded SQLite file in QUOTAGATE_HOME (default ~/.quotagate).",
        )
        loader.add_option(
            REDIS_URL,
            str | None,  # type: ignore[arg-type]
            None,
            "Redis URL for counters shared with other gateway processes, e.g. redis://127.0.0.1:6379/0. Unset: "
            "QUOTAGATE_REDIS_URL, or else in-process counters.",
        )

    def configure(self, updated: set[str]) -> None:
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            raise _invalid(LAZY_NEEDED)
        if not updated & {MANIFEST, DATABASE_URL, REDIS_URL}:
            return
        if self._starting is not None and updated & {DATABASE_URL, REDIS_URL}:
            raise _invalid("Quotagate's backends cannot change while mitmproxy runs; restart it.")
        self._settings = _settings(ctx.options.quotagate_database_url, ctx.options.quotagate_redis_url)
        self._desired = _desired(ctx.options.quotagate_manifest)
        if self._starting is not None and MANIFEST in updated and self._desired is not None:
            self._background(self._apply_manifest(self._desired))

    # -- lifecycle
    def running(self) -> asyncio.Task[None]:
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start(), name="quotagate-start")
        return self._starting

    def done(self) -> asyncio.Task[None]:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(), name="quotagate-stop")
        return self._stopping

    async def _start(self) -> None:
        """Never raises: a failure is logged as an error (mitmdump then exits) and every request gets 503."""
        if getattr(ctx.options, "connection_strategy", None) != "lazy":  # mitmweb runs on after a configure error
            log.error("Quotagate did not start. %s", LAZY_NEEDED)
            return
        try:
            runtime = open_runtime(self._settings)
        except Exception as exc:
            log.error("Quotagate could not start: %s", exc, exc_info=not isinstance(exc, ConfigError))
            return
        self._runtime = runtime
        if self._desired is not None:
            await self._apply_manifest(self._desired)
        await runtime.start()
        snap = runtime.config.snapshot
        log.info(
            "Quotagate ready: configuration version %s, %d key(s), %s database, %s counters",
            snap.version,
            len(snap.keys),
            runtime.app.db.dialect,
            "Redis" if runtime.settings.redis_url else "in-process",
        )

    async def _apply_manifest(self, desired: DesiredState) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        try:
            summary = await asyncio.to_thread(_apply, runtime, desired)
            await runtime.config.refresh()
        except Exception as exc:
            log.error("Quotagate could not apply the manifest: %s", exc)
            return
        log.info("Quotagate manifest: %s", summary)

    async def _stop(self) -> None:
        if self._starting is not None:
            await self._starting
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        for flow_id in list(self._open):
            exchange = self._open.pop(flow_id, None)  # a response hook may take it meanwhile
            if exchange is not None:
                self.summary.add(await exchange.meter.finish(error="mitmproxy shut down before the response ended"))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.to_thread(runtime.writer.flush, 10.0)
        except Exception as exc:  # the events stay in the spool; the next start writes them
            log.warning("Quotagate: usage events stay spooled (%s)", exc)
        await runtime.stop()
        # Printed, not logged: the session's usage is the report a developer stops mitmdump for, at any verbosity.
        print(self.summary.render(), file=sys.stderr, flush=True)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- request side
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # The decision needs the whole body before anything goes upstream, so never stream a request.
        flow.request.stream = False

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # answered locally by another addon: nothing goes upstream
            return
        try:
            await self._admit(flow)
        except Exception:
            log.exception("Quotagate: checking %s %s failed; answering 503", flow.request.method, flow.request.path)
            exchange = self._open.pop(flow.id, None)
            if exchange is not None:  # give the reservation back: nothing went upstream
                await exchange.meter.finish(error="the gateway failed before dispatch")
            self._refuse(flow, failure(flow))

    async def _admit(self, flow: http.HTTPFlow) -> None:
        runtime = await self._started()
        outcome = await runtime.gatekeeper.check(check_input(flow))
        if isinstance(outcome, Deny):
            self._refuse(flow, outcome)
            return
        ticket = outcome.ticket
        exchange = self._open[flow.id] = _Exchange(runtime.meter(ticket), client_headers(outcome))
        upstream = runtime.config.snapshot.upstreams.get(ticket.upstream)
        if upstream is None:  # Envoy's catch-all route answers this 404; metered like any answer
            exchange.local, flow.response = True, unrouted()
            return
        problem = await self._certificates.problem(upstream, _trust())
        if problem is not None:
            log.error("Quotagate: not sending %s upstream: %s", flow.request.path, problem)
            exchange.local, flow.response = True, upstream_tls_failed(problem)
            return
        apply_allow(flow, outcome, upstream)
        note_admitted(flow, ticket)

    async def _started(self) -> GatewayRuntime:
        if self._starting is None:
            raise RuntimeError("mitmproxy has not sent the running event yet")
        await asyncio.shield(self._starting)  # a flow that goes away must not cancel the start
        if self._runtime is None:
            raise RuntimeError("Quotagate did not start; see the error logged at startup")
        return self._runtime

    def _refuse(self, flow: http.HTTPFlow, denial: Deny) -> None:
        flow.response = deny_response(denial)
        note_denied(flow, denial)
        self.summary.deny(denial)

    # -- upstream connection: Envoy's SNI and certificate name
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        runtime, address = self._runtime, data.server.address
        if runtime is None or address is None:
            return
        try:
            name = upstream_server_name(runtime.config.snapshot, (str(address[0]), int(address[1])))
        except AmbiguousServerName as exc:
            data.server.error = str(exc)  # fail closed: no connection rather than one checked against a guess
            return
        if name is not None:
            data.server.sni = name

    # -- response side: metering never blocks or changes traffic
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = self._open.get(flow.id)
        if exchange is None or flow.response is None:
            return
        response = flow.response
        content_type = response.headers.get("content-type")
        exchange.meter.response_headers(response.status_code, content_type)
        set_headers(response, exchange.client_headers)
        if exchange.local:  # a whole body of ours, metered in `response`
            return
        # Streams pass chunk by chunk; so does a body mitmproxy already chose to stream (stream_large_bodies).
        if exchange.meter.ticket.stream or is_event_stream(content_type) or response.stream:
            response.stream = passthrough(exchange.meter)
            exchange.streamed = True

    async def response(self, flow: http.HTTPFlow) -> None:
        exchange = self._open.pop(flow.id, None)
        if exchange is None:
            return
        if not exchange.streamed and flow.response is not None:
            exchange.meter.chunk(flow.response.raw_content or b"")
        await self._finish(flow, exchange, None)

    async def error(self, flow: http.HTTPFlow) -> None:
        """Client gone, upstream unreachable or cut mid-body: charge what was generated, as on the Envoy path."""
        exchange = self._open.pop(flow.id, None)
        if exchange is None:
            return
        await self._finish(flow, exchange, flow.error.msg if flow.error else "the exchange failed")

    async def _finish(self, flow: http.HTTPFlow, exchange: _Exchange, error: str | None) -> None:
        record = await exchange.meter.finish(error=error)
        self.summary.add(record)
        left: list[str] = []
        if self._runtime is not None:
            try:
                left = await budget_left(self._runtime, exchange.meter.ticket, exchange.client_headers)
            except Exception as exc:  # only the comment loses its budget figures
                log.debug("Quotagate: reading the budget left failed: %s", exc)
        note_metered(flow, record, left)


def _trust() -> Trust:
    options = ctx.options
    return Trust(
        insecure=bool(options.ssl_insecure),
        ca_file=options.ssl_verify_upstream_trusted_ca,
        ca_dir=options.ssl_verify_upstream_trusted_confdir,
    )


def _invalid(message: str) -> exceptions.OptionsError:
    """mitmproxy rejects the option change with this message (and rolls it back)."""
    return exceptions.OptionsError(message)  # type: ignore[no-untyped-call]


def _settings(database_url: str | None, redis_url: str | None) -> Settings:
    if database_url and not database_url.startswith(_DATABASE_SCHEMES):
        raise _invalid(f"{DATABASE_URL} must be a sqlite:// or postgresql+psycopg:// URL, not {database_url!r}.")
    if redis_url and not redis_url.startswith(_REDIS_SCHEMES):
        raise _invalid(f"{REDIS_URL} must be a redis://, rediss:// or unix:// URL, not {redis_url!r}.")
    overrides = {k: v for k, v in (("database_url", database_url), ("redis_url", redis_url)) if v}
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise _invalid(f"Quotagate settings: {exc}") from None


def _desired(path: str | None) -> DesiredState | None:
    if not path:
        return None
    try:
        return desired_state(load_file(path))
    except ConfigError as exc:  # an unreadable file, or ManifestError listing every problem with its path
        raise _invalid(f"{MANIFEST}: {exc}") from None


def _apply(runtime: GatewayRuntime, desired: DesiredState) -> str:
    with runtime.app.db.transaction() as session:
        plan = plan_manifest(session, desired)
        apply_plan(session, desired, plan, actor="mitmproxy addon")
    return "no changes" if plan.empty else plan.summary()

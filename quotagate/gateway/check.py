"""Check: authenticate, parse, route, authorize, reserve every limit atomically, then allow or deny.

Front doors (Envoy ext_authz, the mitmproxy addon) translate their request into a CheckInput and the
Outcome back into their protocol; every decision is made here. No SQL runs here: configuration comes
from the in-memory snapshot, counters from one backend call.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from quotagate.apis import Api, Provider, api_for_path
from quotagate.errors import BackendUnavailable
from quotagate.gateway.config import ConfigCache
from quotagate.gateway.denials import deny
from quotagate.gateway.outcome import Allow, CheckInput, Deny, Outcome
from quotagate.gateway.ratelimit_headers import denial_headers, remaining_headers, tightest_remaining
from quotagate.gateway.request import BadRequest, ParsedRequest, parse_request
from quotagate.gateway.rewrite import INCLUDE_USAGE_APIS
from quotagate.gateway.ticket import Ticket
from quotagate.governance.content import ContentSink
from quotagate.governance.gate import GOVERNANCE_HEADERS, GovernanceGate, Refusal
from quotagate.governance.ip import client_address
from quotagate.governance.replay import NonceStore
from quotagate.identity.authenticate import AuthFailure, authenticate
from quotagate.identity.credentials import CREDENTIAL_HEADERS, SecretHasher, credential_from_headers
from quotagate.identity.throttle import FailedAuthThrottle
from quotagate.limits.model import Counters, Decision, LimitKind, ReservationRequest, Settlement
from quotagate.metering.backlog import MeteringBacklog
from quotagate.metering.record import UsageRecord, UsageSink
from quotagate.metering.sweep_note import SweepNote
from quotagate.metrics import ADMITTED_WITHOUT_LIMITS, BACKEND_ERRORS, DECISION_SECONDS
from quotagate.models_catalog import split_model
from quotagate.policy import counter_id, limit_checks, model_allowed, quotas_for
from quotagate.pricing import worst_case_nanos
from quotagate.settings import Settings
from quotagate.snapshot import Snapshot
from quotagate.tokens import estimate_prompt_tokens, hidden_tokens_allowance, upper_bound_tokens
from quotagate.upstream_keys import ProviderKeys, credential_headers

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
UPSTREAM_HEADER = "x-quotagate-upstream"

_AUTH_MESSAGES = {
    AuthFailure.MISSING_CREDENTIAL: "No gateway key provided. Send it as 'Authorization: Bearer <key>'.",
    AuthFailure.INVALID_CREDENTIAL: "Invalid gateway key.",
    AuthFailure.KEY_SUSPENDED: "This gateway key is suspended.",
    AuthFailure.KEY_REVOKED: "This gateway key has been revoked.",
    AuthFailure.KEY_EXPIRED: "This gateway key has expired.",
    AuthFailure.KEY_DISABLED: "This gateway key is disabled.",
    AuthFailure.CLIENT_DISABLED: "The client of this gateway key is disabled.",
    AuthFailure.PROJECT_DISABLED: "The project of this gateway key is disabled.",
    AuthFailure.ORGANIZATION_DISABLED: "The organization of this gateway key is disabled.",
}
AUTH_THROTTLED = "auth_throttled"


class Gatekeeper:
    def __init__(
        self,
        *,
        config: ConfigCache,
        hasher: SecretHasher,
        counters: Counters,
        provider_keys: ProviderKeys,
        settings: Settings,
        sink: UsageSink,
        auth_throttle: FailedAuthThrottle,
        clock: Callable[[], float] = time.time,
        content: ContentSink | None = None,
        nonces: NonceStore | None = None,
        settle_later: Callable[[Settlement], None] | None = None,
        backlog: MeteringBacklog | None = None,
    ) -> None:
        self._config = config
        self._hasher = hasher
        self._counters = counters
        self._keys = provider_keys
        self._settings = settings
        self._sink = sink
        self._auth_throttle = auth_throttle
        self._clock = clock
        self._zone = ZoneInfo(settings.spend_timezone)
        self._governance = GovernanceGate(settings, nonces=nonces)  # nonces: in process unless given
        self._content = content  # logged prompts (per project policy); None: never logged
        # A reserve that timed out may still have landed: released at zero soon, not held until it expires.
        self._settle_later = settle_later
        self._backlog = backlog  # measured only where the Check can outrun the metering (Check over HTTP)

    async def check(self, req: CheckInput) -> Outcome:
        started = time.perf_counter()
        try:
            return await self._check(req)
        finally:
            DECISION_SECONDS.observe(time.perf_counter() - started)

    async def _check(self, req: CheckInput) -> Outcome:
        now = self._clock()
        snapshot = self._config.snapshot
        # Our own id keys the usage event and the reservation: a client (or a retry) reusing its
        # x-request-id must never merge two requests. The caller's id is kept as a tag.
        request_id = uuid.uuid4().hex
        caller_id = req.headers.get("x-request-id")
        path = req.path.split("?", 1)[0]
        route = snapshot.route_for(path)
        shape = route.provider if route else None

        outcome = authenticate(
            snapshot, self._hasher, credential_from_headers(req.headers), datetime.fromtimestamp(now, UTC)
        )
        if isinstance(outcome, AuthFailure):
            return await self._refuse_unauthenticated(req, outcome, shape, request_id, now)
        identity = outcome
        tags = _tags(identity.client.default_tag, caller_id)
        # What a refusal's usage event says, filled in as the request is understood; refuse_known reads them when
        # it is called. An admitted request builds no record here: the meter writes its event.
        parsed: ParsedRequest | None = None
        provider_name: str | None = None
        left_requests: int | None = None
        left_tokens: int | None = None

        def refuse_known(status: int, reason: str, message: str, **kw: object) -> Deny:
            denial = deny(shape, status, reason, message, request_id=request_id, **kw)  # type: ignore[arg-type]
            self._sink.record(
                _denied_record(
                    req,
                    denial,
                    now,
                    tags,
                    org_id=identity.org.id,
                    project_id=identity.project.id,
                    client_id=identity.client.id,
                    key_id=identity.key.key_id,
                    provider=provider_name,
                    api=parsed.api.value if parsed else None,
                    model_requested=parsed.model if parsed else None,
                    stream=parsed.stream if parsed else False,
                    remaining_requests=left_requests,
                    remaining_tokens=left_tokens,
                )
            )
            return denial

        if self._backlog is not None and self._backlog.behind() and not await self._backlog.caught_up():
            return refuse_known(
                503,
                "metering_behind",
                "The gateway is at capacity (it could not meter more responses just now). Try again shortly.",
                headers=(("retry-after", "1"),),
            )
        admitted = await self._governance.admit(snapshot, identity, req, now)
        if isinstance(admitted, Refusal):
            tags = {**tags, **admitted.tags}
            return refuse_known(admitted.status, admitted.reason, admitted.message)
        if admitted:  # verified actor (or a flagged problem under the optional policy)
            tags = {**tags, **admitted}

        api = api_for_path(req.path)
        if route is None or api is None:
            return refuse_known(404, "unknown_endpoint", f"The gateway does not serve {req.path}.")
        if req.method.upper() != "POST":
            return refuse_known(405, "method_not_allowed", f"{req.path} takes POST.")
        if req.body_truncated or len(req.body) > self._settings.max_request_bytes:
            return refuse_known(
                413, "request_too_large", f"The request body exceeds {self._settings.max_request_bytes} bytes."
            )
        try:
            parsed = parse_request(api, req.body)
        except BadRequest as exc:
            return refuse_known(exc.status, exc.code, str(exc))

        prefixed, model = split_model(parsed.model)
        if prefixed is not None and prefixed is not route.provider:
            # The endpoint speaks its route's provider's API: another provider's model cannot be served here.
            return refuse_known(
                404,
                "model_not_found",
                f"The model '{parsed.model}' belongs to {prefixed.value}; {path} serves "
                f"{route.provider.value} models only. Send it to an endpoint of {prefixed.value}.",
            )
        provider = route.provider
        price = snapshot.prices.get((provider, model))
        upstream = route.upstream
        if price is None:
            return refuse_known(
                404, "model_not_found", f"The model '{parsed.model}' does not exist or is not served here."
            )
        provider_name = provider.value
        quotas = quotas_for(snapshot, identity)
        if not model_allowed(identity, quotas, model):
            return refuse_known(403, "model_not_allowed", f"This key may not use the model '{parsed.model}'.")
        provider_key = self._keys.key_for(snapshot.credentials.get(provider))
        if provider_key is None:
            log.error("no credential configured for provider %s", provider.value)
            return refuse_known(
                503, "provider_credential_missing", f"The gateway has no credential for {provider.value}."
            )

        max_output = (
            0
            if api is Api.OPENAI_EMBEDDINGS
            else (parsed.max_output or price.max_output_tokens or self._settings.default_max_output_tokens)
        )
        prompt_estimate = estimate_prompt_tokens(api, parsed.body)
        input_bound = upper_bound_tokens(req.body) + hidden_tokens_allowance(api, parsed.body)
        cost = worst_case_nanos(price, input_bound, max_output)
        checks = limit_checks(quotas, model)
        reservation_id = request_id
        decision = Decision(allowed=True)
        tokens = prompt_estimate + max_output
        if checks:
            try:
                decision = await self._counters.reserve(
                    ReservationRequest(
                        org_id=identity.org.id,
                        reservation_id=reservation_id,
                        checks=checks,
                        tokens=tokens,
                        cost_nanos=cost,
                        now=now,
                        month=datetime.fromtimestamp(now, self._zone).strftime("%Y-%m"),
                        ttl_s=self._settings.reservation_ttl_s,
                        # If this process dies mid-request, whoever sweeps the reservation records and charges it.
                        note=SweepNote(
                            identity.project.id,
                            identity.client.id,
                            identity.key.key_id,
                            provider.value,
                            api.value,
                            model,
                            parsed.model,
                            parsed.stream,
                            prompt_estimate,
                            req.front_door,
                            tags,
                        ).encode(),
                    )
                )
            except BackendUnavailable as exc:
                BACKEND_ERRORS.labels("counters").inc()
                if self._settle_later is not None:
                    self._settle_later(Settlement(reservation_id, identity.org.id, 0, 0))
                if route.auth_fail_closed:
                    log.error("counter backend unavailable, failing closed: %s", exc)
                    return refuse_known(
                        503, "limits_unavailable", "Rate limits cannot be checked right now; try again shortly."
                    )
                log.warning("counter backend unavailable, route admits monitor-only: %s", exc)
                ADMITTED_WITHOUT_LIMITS.inc()
                # Marked on the usage event: this request was neither checked against nor counted in any limit.
                tags = {**tags, "limits": "unavailable"}
                decision = Decision(allowed=True)
                reservation_id = ""
        else:
            reservation_id = ""
        left_requests, left_tokens = tightest_remaining(decision)
        if not decision.allowed and decision.denial is not None:
            d = decision.denial
            if decision.monitored:  # the denial event also says which monitor-mode limits it exceeded
                tags = {**tags, "monitor": _monitored(decision)}
            quota = next((q for q in quotas if counter_id(q) == d.counter_id), None)
            scope = (
                f"{quota.scope_type} {_scope_name(snapshot, quota.scope_type, quota.scope_id)}" if quota else "a scope"
            )
            # Ids only (header-safe), unlike the display names of the message.
            headers = (
                *denial_headers(decision),
                *((("x-quotagate-limit-scope", f"{quota.scope_type}:{quota.scope_id}"),) if quota else ()),
            )
            if d.kind in (LimitKind.SPEND, LimitKind.CREDITS):
                # Retrying cannot help before the month ends or credits are added: SDKs must not retry.
                what = "monthly spend cap" if d.kind is LimitKind.SPEND else "prepaid credit balance"
                return refuse_known(
                    429,
                    "insufficient_quota",
                    f"The {what} of {scope} does not cover this request.",
                    error_type="insufficient_quota" if provider is not Provider.ANTHROPIC else None,
                    headers=(*headers, ("x-should-retry", "false")),
                )
            if d.kind is LimitKind.TPM and tokens > d.limit:
                # Even an empty window cannot take it: a retry would be refused the same way, forever.
                defaulted = max_output and not parsed.max_output
                cap = " (the request set none, so the model's default cap was counted)" if defaulted else ""
                return refuse_known(
                    429,
                    "request_exceeds_tpm",
                    f"This request needs up to {tokens} tokens (prompt estimate {prompt_estimate} + max output "
                    f"{max_output}{cap}), more than the limit of {d.limit} tokens per minute for {scope}, so it can "
                    f"never be admitted; lower max_tokens or shorten the prompt.",
                    headers=(*(h for h in headers if h[0] != "retry-after"), ("x-should-retry", "false")),
                )
            unit = "requests" if d.kind is LimitKind.RPM else "tokens"
            return refuse_known(
                429,
                f"rate_limit_{d.kind.value}",
                f"Rate limit of {d.limit} {unit} per minute reached for {scope}; retry after {d.retry_after_s}s.",
                headers=headers,
            )

        needs_usage = parsed.stream and api in INCLUDE_USAGE_APIS and not parsed.include_usage
        ticket = Ticket(
            request_id=request_id,
            started_at=now,
            org_id=identity.org.id,
            project_id=identity.project.id,
            client_id=identity.client.id,
            key_id=identity.key.key_id,
            provider=provider,
            api=api,
            model=model,
            model_requested=parsed.model,
            stream=parsed.stream,
            reservation_id=reservation_id,
            reserved_tokens=tokens if reservation_id else 0,
            reserved_nanos=cost if reservation_id else 0,
            prompt_estimate=prompt_estimate,
            upstream=upstream,
            inject_include_usage=needs_usage,
            rewrite_model=prefixed is not None,
            front_door=req.front_door,
            monitored=_monitored_ids(decision),
            tags=tags,
            remaining_requests=left_requests,
            remaining_tokens=left_tokens,
        )
        if self._content is not None:
            self._content.request(ticket, req.body)
        set_headers = (
            *credential_headers(provider, provider_key, req.headers),
            *((("x-request-id", request_id),) if not caller_id else ()),
            (UPSTREAM_HEADER, upstream),
        )
        return Allow(
            ticket=ticket,
            set_headers=set_headers,
            # accept-encoding goes too: the provider then answers uncompressed, which metering can read.
            remove_headers=(
                *(h for h in CREDENTIAL_HEADERS if h not in {k for k, _ in set_headers}),
                "accept-encoding",
                *GOVERNANCE_HEADERS,
            ),
            response_headers=remaining_headers(decision),
        )

    async def _refuse_unauthenticated(
        self, req: CheckInput, failure: AuthFailure, shape: Provider | None, request_id: str, now: float
    ) -> Deny:
        """401/403, or 429 once the client's address made too many failed attempts (identity/throttle.py)."""
        addr = client_address(req.client_ip, req.headers.get("x-forwarded-for"), self._settings.trusted_proxies)
        tags = {"client_ip": str(addr) if addr is not None else "unknown"}
        denial = deny(shape, failure.status, failure.value, _AUTH_MESSAGES[failure], request_id=request_id)
        if failure is AuthFailure.INVALID_CREDENTIAL:
            try:
                verdict = await self._auth_throttle.failed(addr, now)
            except BackendUnavailable as exc:  # the credential failed all the same: still refused
                BACKEND_ERRORS.labels("auth_throttle").inc()
                log.warning("failed-authentication throttle unavailable, answering 401: %s", exc)
            else:
                if verdict.throttled:
                    denial = deny(
                        shape,
                        429,
                        AUTH_THROTTLED,
                        "Too many failed authentication attempts from this address; "
                        f"retry after {verdict.retry_after_s}s.",
                        request_id=request_id,
                        headers=(("retry-after", str(verdict.retry_after_s)), ("x-should-retry", "false")),
                    )
        self._sink.record(_denied_record(req, denial, now, tags))
        return denial


def _tags(default_tag: str | None, caller_id: str | None) -> dict[str, str]:
    tags = {"tag": default_tag} if default_tag else {}
    if caller_id and _REQUEST_ID.match(caller_id):
        tags["caller_request_id"] = caller_id
    return tags


def _monitored_ids(decision: Decision) -> tuple[str, ...]:
    return tuple(f"{m.kind.value}:{m.counter_id}" for m in decision.monitored)


def _monitored(decision: Decision) -> str:
    """The `monitor` tag of a usage event, as the meter writes it for an admitted request."""
    return ",".join(_monitored_ids(decision))


def _scope_name(snapshot: Snapshot, scope_type: str, scope_id: str) -> str:
    if scope_type == "organization" and scope_id in snapshot.orgs:
        return snapshot.orgs[scope_id].slug
    if scope_type == "project" and scope_id in snapshot.projects:
        return snapshot.projects[scope_id].slug
    if scope_type == "client" and scope_id in snapshot.clients:
        return snapshot.clients[scope_id].name
    return scope_id


def _denied_record(req: CheckInput, denial: Deny, now: float, tags: dict[str, str], **known: Any) -> UsageRecord:
    """The usage event of a refusal; `known`: what was learnt of the request before it was refused."""
    fields: dict[str, Any] = {"api": (a.value if (a := api_for_path(req.path)) else None), **known}
    return UsageRecord(
        request_id=denial.request_id,
        started_at=now,
        finished_at=now,
        latency_ms=0,
        status=denial.status,
        decision="denied",
        deny_reason=denial.reason,
        front_door=req.front_door,
        tags=tags,
        **fields,
    )

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
from zoneinfo import ZoneInfo

from quotagate.apis import Api, Provider, api_for_path
from quotagate.errors import BackendUnavailable
from quotagate.gateway.config import ConfigCache
from quotagate.gateway.denials import deny
from quotagate.gateway.outcome import Allow, CheckInput, Deny, Outcome
from quotagate.gateway.ratelimit_headers import denial_headers, remaining_headers, tightest_remaining
from quotagate.gateway.request import BadRequest, parse_request
from quotagate.gateway.rewrite import INCLUDE_USAGE_APIS
from quotagate.gateway.ticket import Ticket
from quotagate.governance.content import ContentSink
from quotagate.governance.gate import GOVERNANCE_HEADERS, GovernanceGate, Refusal
from quotagate.identity.authenticate import AuthFailure, authenticate
from quotagate.identity.credentials import CREDENTIAL_HEADERS, SecretHasher, credential_from_headers
from quotagate.limits.model import Counters, Decision, LimitKind, ReservationRequest
from quotagate.metering.record import UsageRecord, UsageSink
from quotagate.metrics import BACKEND_ERRORS, DECISION_SECONDS
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
        clock: Callable[[], float] = time.time,
        content: ContentSink | None = None,
    ) -> None:
        self._config = config
        self._hasher = hasher
        self._counters = counters
        self._keys = provider_keys
        self._settings = settings
        self._sink = sink
        self._clock = clock
        self._zone = ZoneInfo(settings.spend_timezone)
        self._governance = GovernanceGate(settings)
        self._content = content  # logged prompts (per project policy); None: never logged

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
        route = snapshot.route_for(req.path.split("?", 1)[0])
        shape = route.provider if route else None

        outcome = authenticate(
            snapshot, self._hasher, credential_from_headers(req.headers), datetime.fromtimestamp(now, UTC)
        )
        if isinstance(outcome, AuthFailure):
            denial = deny(shape, outcome.status, outcome.value, _AUTH_MESSAGES[outcome], request_id=request_id)
            self._sink.record(_denied_record(req, denial, now))
            return denial
        identity = outcome
        base = UsageRecord(
            request_id=request_id,
            started_at=now,
            status=0,
            decision="denied",
            org_id=identity.org.id,
            project_id=identity.project.id,
            client_id=identity.client.id,
            key_id=identity.key.key_id,
            front_door=req.front_door,
            tags=_tags(identity.client.default_tag, caller_id),
        )

        def refuse_known(status: int, reason: str, message: str, **kw: object) -> Deny:
            denial = deny(shape, status, reason, message, request_id=request_id, **kw)  # type: ignore[arg-type]
            self._sink.record(_with_denial(base, denial))
            return denial

        admitted = self._governance.admit(snapshot, identity, req, now)
        if isinstance(admitted, Refusal):
            base = _replace(base, tags={**base.tags, **admitted.tags})
            return refuse_known(admitted.status, admitted.reason, admitted.message)
        if admitted:  # verified actor (or a flagged problem under the optional policy)
            base = _replace(base, tags={**base.tags, **admitted})

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
        base = _replace(base, api=api.value, model_requested=parsed.model, stream=parsed.stream)

        prefixed, model = split_model(parsed.model)
        provider = prefixed or route.provider
        price = snapshot.prices.get((provider, model))
        upstream = route.upstream if provider is route.provider else _upstream_of(snapshot, provider)
        if price is None or upstream is None:
            return refuse_known(
                404, "model_not_found", f"The model '{parsed.model}' does not exist or is not served here."
            )
        base = _replace(base, provider=provider.value)
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
        if checks:
            try:
                decision = await self._counters.reserve(
                    ReservationRequest(
                        org_id=identity.org.id,
                        reservation_id=reservation_id,
                        checks=checks,
                        tokens=prompt_estimate + max_output,
                        cost_nanos=cost,
                        now=now,
                        month=datetime.fromtimestamp(now, self._zone).strftime("%Y-%m"),
                        ttl_s=self._settings.reservation_ttl_s,
                    )
                )
            except BackendUnavailable as exc:
                BACKEND_ERRORS.labels("counters").inc()
                if route.auth_fail_closed:
                    log.error("counter backend unavailable, failing closed: %s", exc)
                    return refuse_known(
                        503, "limits_unavailable", "Rate limits cannot be checked right now; try again shortly."
                    )
                log.warning("counter backend unavailable, route admits monitor-only: %s", exc)
                decision = Decision(allowed=True)
                reservation_id = ""
        else:
            reservation_id = ""
        left_requests, left_tokens = tightest_remaining(decision)
        base = _replace(base, remaining_requests=left_requests, remaining_tokens=left_tokens)
        if not decision.allowed and decision.denial is not None:
            d = decision.denial
            quota = next((q for q in quotas if counter_id(q) == d.counter_id), None)
            scope = (
                f"{quota.scope_type} {_scope_name(snapshot, quota.scope_type, quota.scope_id)}" if quota else "a scope"
            )
            headers = denial_headers(decision)
            if d.kind in (LimitKind.SPEND, LimitKind.CREDITS):
                what = "monthly spend cap" if d.kind is LimitKind.SPEND else "prepaid credit balance"
                return refuse_known(
                    429,
                    "insufficient_quota",
                    f"The {what} of {scope} does not cover this request.",
                    error_type="insufficient_quota" if provider is not Provider.ANTHROPIC else None,
                    headers=(*headers, ("x-should-retry", "false")),
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
            reserved_tokens=prompt_estimate + max_output if reservation_id else 0,
            reserved_nanos=cost if reservation_id else 0,
            prompt_estimate=prompt_estimate,
            upstream=upstream,
            inject_include_usage=needs_usage,
            rewrite_model=prefixed is not None,
            front_door=req.front_door,
            monitored=tuple(f"{m.kind.value}:{m.counter_id}" for m in decision.monitored),
            tags=base.tags,
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


def _tags(default_tag: str | None, caller_id: str | None) -> dict[str, str]:
    tags = {"tag": default_tag} if default_tag else {}
    if caller_id and _REQUEST_ID.match(caller_id):
        tags["caller_request_id"] = caller_id
    return tags


def _upstream_of(snapshot: Snapshot, provider: Provider) -> str | None:
    return next((r.upstream for r in snapshot.routes if r.provider is provider), None)


def _scope_name(snapshot: Snapshot, scope_type: str, scope_id: str) -> str:
    if scope_type == "organization" and scope_id in snapshot.orgs:
        return snapshot.orgs[scope_id].slug
    if scope_type == "project" and scope_id in snapshot.projects:
        return snapshot.projects[scope_id].slug
    if scope_type == "client" and scope_id in snapshot.clients:
        return snapshot.clients[scope_id].name
    return scope_id


def _denied_record(req: CheckInput, denial: Deny, now: float) -> UsageRecord:
    return UsageRecord(
        request_id=denial.request_id,
        started_at=now,
        finished_at=now,
        latency_ms=0,
        status=denial.status,
        decision="denied",
        deny_reason=denial.reason,
        api=(a.value if (a := api_for_path(req.path)) else None),
        front_door=req.front_door,
    )


def _with_denial(base: UsageRecord, denial: Deny) -> UsageRecord:
    return _replace(base, status=denial.status, deny_reason=denial.reason, finished_at=base.started_at, latency_ms=0)


def _replace(record: UsageRecord, **changes: object) -> UsageRecord:
    from dataclasses import replace

    return replace(record, **changes)  # type: ignore[arg-type]

"""Limits as Check applies them: per-model TPM, requests that never fit, monitor mode, fail-open routes, and
provider-key rotation without restart."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import select

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.errors import BackendUnavailable, ConfigError
from quotagate.gateway.outcome import Allow, Deny
from quotagate.limits.model import Decision, ReservationRequest
from quotagate.manifest.load import load_text
from quotagate.metrics import REGISTRY
from quotagate.policy import limit_checks, quotas_of
from quotagate.store.credentials_repo import set_provider_key
from quotagate.store.tables import UsageEvent
from tests.support.gateway import (
    SEED_LOG_FIELDS,
    apply_manifest,
    chat_request,
    edit_manifest,
    issue_key,
    manifest_text,
    running_runtime,
)


@pytest.fixture(autouse=True)
def provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-env-key")
    monkeypatch.setenv("QUOTAGATE_DEMO_ANTHROPIC_KEY", "sk-ant-env-key")


def _add_quota(**quota: object) -> str:
    def edit(d: dict) -> None:  # type: ignore[type-arg]
        d["organizations"][0]["quotas"].append({"scope_type": "project", "project_id": "proj-demo", **quota})

    return edit_manifest(manifest_text(), edit)


async def test_a_per_model_tpm_limit_applies_to_that_model_only() -> None:
    # gpt-5.4 gets 1,500 tokens/min; each request reserves its prompt estimate (~8) + max_tokens 1,000.
    apply_manifest(_add_quota(tpm_limit=1500, applies_to_models=["gpt-5.4"], quota_id="gpt54-tpm"))
    cred = issue_key("demo-key")
    body = {"model": "gpt-5.4", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    async with running_runtime() as rt:
        first = await rt.gatekeeper.check(chat_request(cred, body))
        second = await rt.gatekeeper.check(chat_request(cred, body))
        # Three times the gpt-5.4 limit of another model: neither limited nor refused by that quota.
        others = [await rt.gatekeeper.check(chat_request(cred, {**body, "model": "gpt-5.4-mini"})) for _ in range(3)]
    assert isinstance(first, Allow)
    assert isinstance(second, Deny) and second.reason == "rate_limit_tpm"
    headers = dict(second.headers)
    assert headers["x-ratelimit-limit-tokens"] == "1500"
    assert headers["x-quotagate-limit-scope"] == "project:proj-demo"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert all(isinstance(o, Allow) for o in others)
    # Their headroom is the project's own 2,000,000 TPM limit, not the gpt-5.4 one.
    assert all(("x-ratelimit-limit-tokens", "2000000") in o.response_headers for o in others if isinstance(o, Allow))


async def test_a_model_allowlist_still_restricts_the_scope_to_its_models() -> None:
    apply_manifest(_add_quota(tpm_limit=1500, model_allowlist=["gpt-5.4"], quota_id="gpt54-only"))
    cred = issue_key("demo-key")
    body = {"model": "gpt-5.4-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with running_runtime() as rt:
        other = await rt.gatekeeper.check(chat_request(cred, body))
        listed = await rt.gatekeeper.check(chat_request(cred, {**body, "model": "gpt-5.4"}))
    assert isinstance(other, Deny) and (other.status, other.reason) == (403, "model_not_allowed")
    assert isinstance(listed, Allow)


def test_a_quota_takes_an_allowlist_or_applies_to_models_not_both() -> None:
    text = _add_quota(tpm_limit=1500, model_allowlist=["gpt-5.4"], applies_to_models=["gpt-5.4"])
    with pytest.raises(ConfigError, match="model_allowlist and applies_to_models are exclusive"):
        load_text(text)
    with pytest.raises(ConfigError, match=r"applies_to_models\[0\].*no rate"):
        load_text(_add_quota(tpm_limit=1500, applies_to_models=["gpt-9"]))
    with pytest.raises(ConfigError, match="a quota needs one of"):
        load_text(_add_quota(applies_to_models=["gpt-5.4"]))  # selects models, limits nothing


async def test_two_per_model_quotas_of_one_scope_need_no_quota_id() -> None:
    text = _add_quota(tpm_limit=1500, applies_to_models=["gpt-5.4"])
    text = edit_manifest(
        text,
        lambda d: d["organizations"][0]["quotas"].append(
            {
                "scope_type": "project",
                "project_id": "proj-demo",
                "tpm_limit": 3000,
                "applies_to_models": ["gpt-5.4-mini"],
            }
        ),
    )
    apply_manifest(text)
    cred = issue_key("demo-key")
    body = {"max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    async with running_runtime() as rt:
        big = [await rt.gatekeeper.check(chat_request(cred, {**body, "model": "gpt-5.4"})) for _ in range(2)]
        mini = [await rt.gatekeeper.check(chat_request(cred, {**body, "model": "gpt-5.4-mini"})) for _ in range(3)]
    assert [type(o) for o in big] == [Allow, Deny]
    assert [type(o) for o in mini] == [Allow, Allow, Deny]


async def test_a_request_that_can_never_fit_the_tpm_limit_is_told_not_to_retry() -> None:
    apply_manifest(_add_quota(tpm_limit=1500, applies_to_models=["gpt-5.4"], quota_id="gpt54-tpm"))
    cred = issue_key("demo-key")
    prompt = [{"role": "user", "content": "hi"}]
    async with running_runtime() as rt:
        too_big = await rt.gatekeeper.check(
            chat_request(cred, {"model": "gpt-5.4", "max_tokens": 2000, "messages": prompt})
        )
        # No max_tokens: gpt-5.4 has no cap in the rate card, so default_max_output_tokens (4096) is counted.
        no_cap = await rt.gatekeeper.check(chat_request(cred, {"model": "gpt-5.4", "messages": prompt}))
        fits = await rt.gatekeeper.check(
            chat_request(cred, {"model": "gpt-5.4", "max_tokens": 1400, "messages": prompt})
        )
    for denied in (too_big, no_cap):
        assert isinstance(denied, Deny) and (denied.status, denied.reason) == (429, "request_exceeds_tpm")
        headers = dict(denied.headers)
        assert headers["x-should-retry"] == "false" and "retry-after" not in headers
        assert headers["x-ratelimit-limit-tokens"] == "1500"
        message = json.loads(denied.body)["error"]["message"]
        assert "more than the limit of 1500 tokens per minute for project demo-app" in message
        assert "never be admitted" in message
    assert isinstance(no_cap, Deny) and "default cap" in json.loads(no_cap.body)["error"]["message"]
    assert "+ max output 4096" in json.loads(no_cap.body)["error"]["message"]
    # Nothing was reserved by the refusals: the whole window is still free for a request that fits.
    assert isinstance(fits, Allow)


@pytest.mark.parametrize("fail_closed", [True, False])
async def test_a_route_may_admit_unlimited_while_the_counter_backend_is_down(fail_closed: bool) -> None:
    text = edit_manifest(
        manifest_text(),
        lambda d: d["deployment"]["gateway"]["routes"][0].update(auth_fail_closed=fail_closed),
    )
    apply_manifest(text)
    cred = issue_key("demo-key")
    admitted_before = REGISTRY.get_sample_value("quotagate_admitted_without_limits_total") or 0
    # A real Redis client pointed at a port nothing listens on: every reserve raises BackendUnavailable.
    async with running_runtime(redis_url=f"redis://127.0.0.1:{_closed_port()}/0", redis_timeout_ms=200) as rt:
        out = await rt.gatekeeper.check(chat_request(cred))
        if isinstance(out, Allow):
            meter = rt.meter(out.ticket)
            meter.response_headers(200, "application/json")
            meter.chunk(orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 2}, "model": "gpt-4o-mini"}))
            await meter.finish()
        rt.writer.flush()
        with rt.app.db.read() as session:
            (event,) = session.scalars(select(UsageEvent)).all()
    admitted = (REGISTRY.get_sample_value("quotagate_admitted_without_limits_total") or 0) - admitted_before
    if fail_closed:
        assert isinstance(out, Deny) and (out.status, out.reason) == (503, "limits_unavailable")
        assert (event.decision, event.deny_reason) == ("denied", "limits_unavailable")
        assert admitted == 0
    else:
        assert isinstance(out, Allow)
        assert out.ticket.reservation_id == "" and out.ticket.reserved_nanos == 0
        assert out.ticket.tags["limits"] == "unavailable"
        assert not any(name.startswith("x-ratelimit") for name, _ in out.response_headers)
        assert (event.decision, event.status, event.tags["limits"]) == ("allowed", 200, "unavailable")
        assert event.cost_nanos > 0  # still metered and priced
        assert admitted == 1


async def test_a_reserve_that_timed_out_after_landing_is_released_on_the_next_sweep_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis ran the reserve script but answered after the client's timeout: the request is refused (503), so
    the reservation it left must not hold the worst case until it expires (nor be charged when swept)."""
    apply_manifest(manifest_text())
    cred = issue_key("demo-key")
    async with running_runtime() as rt:
        real_reserve = rt.counters.reserve

        async def landed_then_timed_out(request: ReservationRequest) -> Decision:
            await real_reserve(request)
            raise BackendUnavailable("Redis at 127.0.0.1:6379 did not answer reserve within 250 ms")

        monkeypatch.setattr(rt.counters, "reserve", landed_then_timed_out)
        out = await rt.gatekeeper.check(chat_request(cred))
        assert isinstance(out, Deny) and (out.status, out.reason) == (503, "limits_unavailable")
        rt.writer.flush()
        with rt.app.db.read() as session:
            (event,) = session.scalars(select(UsageEvent)).all()
        snap = rt.config.snapshot
        checks = limit_checks(
            quotas_of(snap, event.organization_id, event.project_id, event.client_id, event.key_id), "gpt-4o-mini"
        )
        assert any(c.spend_limit_nanos is not None for c in checks)
        month = datetime.now(UTC).strftime("%Y-%m")

        async def spend() -> list[int]:
            states = await rt.counters.state(event.organization_id, checks, time.time(), month)
            return [st.spend_this_month_nanos for st in states]

        assert any(await spend())  # the landed reservation holds its worst case
        assert rt.sweeper.retrying == 1
        await rt.sweeper.sweep_once()
        assert await spend() == [0] * len(checks)  # released at zero: a refused request costs nothing
        assert rt.sweeper.retrying == 0 and event.cost_nanos == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed when the socket is: connections to it are refused


async def test_monitor_mode_never_denies_but_records() -> None:
    apply_manifest(_add_quota(rpm_limit=1, enforcement_mode="monitor", quota_id="watch-rpm"))
    cred = issue_key("demo-key")
    async with running_runtime() as rt:
        outs = [await rt.gatekeeper.check(chat_request(cred)) for _ in range(3)]
        assert all(isinstance(o, Allow) for o in outs)
        tickets = [o.ticket for o in outs if isinstance(o, Allow)]
        assert [bool(t.monitored) for t in tickets] == [False, True, True]
        assert tickets[1].monitored[0].startswith("rpm:")
        for t in tickets:
            meter = rt.meter(t)
            meter.response_headers(200, "application/json")
            meter.chunk(orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 2}, "model": "gpt-4o-mini"}))
            record = await meter.finish()
        assert record.tags.get("monitor", "").startswith("rpm:")


async def test_a_rotated_provider_key_is_used_without_a_restart() -> None:
    text = edit_manifest(
        manifest_text(), lambda d: d["deployment"]["gateway"]["credentials"][0].update(api_key="stored")
    )
    apply_manifest(text)
    cred = issue_key("demo-key")
    app = open_app()
    with app.db.transaction() as session:
        set_provider_key(session, app.secret_box(), Provider.OPENAI, "sk-stored-one", actor="test")
    async with running_runtime(config_refresh_ms=20) as rt:
        out = await rt.gatekeeper.check(chat_request(cred))
        assert isinstance(out, Allow) and dict(out.set_headers)["authorization"] == "Bearer sk-stored-one"
        with app.db.transaction() as session:
            set_provider_key(session, app.secret_box(), Provider.OPENAI, "sk-stored-two", actor="test")
        await rt.config.refresh()
        out = await rt.gatekeeper.check(chat_request(cred))
        assert isinstance(out, Allow) and dict(out.set_headers)["authorization"] == "Bearer sk-stored-two"
    app.close()


async def test_the_access_log_line_has_the_seed_fields(caplog: pytest.LogCaptureFixture) -> None:
    apply_manifest(manifest_text())
    cred = issue_key("demo-key")
    caplog.set_level(logging.INFO, logger="quotagate.access")
    async with running_runtime() as rt:
        out = await rt.gatekeeper.check(chat_request(cred))
        assert isinstance(out, Allow)
        meter = rt.meter(out.ticket)
        meter.response_headers(200, "application/json")
        meter.chunk(orjson.dumps({"usage": {"prompt_tokens": 1000, "completion_tokens": 500}, "model": "gpt-4o-mini"}))
        await meter.finish()
        await rt.gatekeeper.check(chat_request(cred, {"model": "nope", "messages": []}))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "quotagate.access"]
    seed_fields = set(SEED_LOG_FIELDS)
    assert all(seed_fields <= line.keys() for line in lines)
    allowed, denied = lines
    assert (allowed["gateway_key_id"], allowed["model"], allowed["status"]) == ("demo-key", "gpt-4o-mini", "200")
    assert allowed["input_cost"] == "0.00015" and allowed["output_cost"] == "0.0003"  # 1000 @0.15, 500 @0.60 per 1M
    assert allowed["total_cost"] == "0.000450000" and allowed["cost_status"] == "reported"
    assert allowed["request_remaining"] == "599"
    assert (denied["status"], denied["cost_status"], denied["deny_reason"]) == ("404", "denied", "model_not_found")


async def test_while_the_metering_lags_a_check_waits_then_is_admitted_or_refused() -> None:
    """Check over HTTP can outrun the metering streams; while the front door's probe says they wait too long, a
    Check waits for them to catch up (admitted) or, if they do not within a second, is refused 503 (recorded)."""
    apply_manifest(manifest_text())
    cred = issue_key("demo-key")
    async with running_runtime(metering_lag_limit_ms=20) as rt:
        backlog = rt.metering_backlog
        backlog.probe_sent()
        await asyncio.sleep(0.05)  # the probe has waited past the limit: behind
        waiting = asyncio.create_task(rt.gatekeeper.check(chat_request(cred)))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # held, not refused
        backlog.probe_answered()
        backlog.probe_sent()
        backlog.probe_answered()  # caught up
        assert isinstance(await asyncio.wait_for(waiting, 2), Allow)

        backlog.probe_sent()
        await asyncio.sleep(0.05)
        started = time.monotonic()
        out = await rt.gatekeeper.check(chat_request(cred))
        assert time.monotonic() - started >= 0.9  # it waited for the metering first
        assert isinstance(out, Deny) and (out.status, out.reason) == (503, "metering_behind")
        assert ("retry-after", "1") in out.headers
        rt.writer.flush()
        with rt.app.db.read() as session:
            reasons = [e.deny_reason for e in session.scalars(select(UsageEvent))]
        assert reasons == ["metering_behind"]  # the admitted one has no event until its meter writes it

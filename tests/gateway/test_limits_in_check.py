"""Limits as Check applies them: per-model TPM, monitor mode, and provider-key rotation without restart."""

from __future__ import annotations

import json
import logging

import orjson
import pytest

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.gateway.outcome import Allow, Deny
from quotagate.store.credentials_repo import set_provider_key
from tests.support.gateway import apply_manifest, chat_request, edit_manifest, issue_key, manifest_text, running_runtime


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
    text = _add_quota(tpm_limit=1500, model_allowlist=["gpt-5.4"], quota_id="gpt54-tpm")
    # The scope's allowlists are a union: the other models stay allowed, with their own quota.
    text = edit_manifest(
        text,
        lambda d: d["organizations"][0]["quotas"].append(
            {
                "scope_type": "project",
                "project_id": "proj-demo",
                "rpm_limit": 1000,
                "quota_id": "others",
                "model_allowlist": [
                    "gpt-4o-mini",
                    "gpt-5.4-mini",
                    "text-embedding-3-small",
                    "claude-haiku-4-5",
                    "claude-sonnet-4-6",
                ],
            }
        ),
    )
    apply_manifest(text)
    cred = issue_key("demo-key")
    body = {"model": "gpt-5.4", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    async with running_runtime() as rt:
        first = await rt.gatekeeper.check(chat_request(cred, body))
        second = await rt.gatekeeper.check(chat_request(cred, body))
        other = await rt.gatekeeper.check(chat_request(cred, {**body, "model": "gpt-4o-mini"}))
    assert isinstance(first, Allow)
    assert isinstance(second, Deny) and second.reason == "rate_limit_tpm"
    headers = dict(second.headers)
    assert headers["x-ratelimit-limit-tokens"] == "1500"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert isinstance(other, Allow)  # the gpt-5.4 quota does not apply to gpt-4o-mini


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
    seed_fields = {
        "time",
        "org",
        "project",
        "client",
        "gateway_key_id",
        "provider",
        "model",
        "rate_limit_reason",
        "request_remaining",
        "token_remaining",
        "input_cost",
        "output_cost",
        "total_cost",
        "cost_status",
        "status",
        "request_time",
    }
    assert all(seed_fields <= line.keys() for line in lines)
    allowed, denied = lines
    assert (allowed["gateway_key_id"], allowed["model"], allowed["status"]) == ("demo-key", "gpt-4o-mini", "200")
    assert allowed["input_cost"] == "0.00015" and allowed["output_cost"] == "0.0003"  # 1000 @0.15, 500 @0.60 per 1M
    assert allowed["total_cost"] == "0.000450000" and allowed["cost_status"] == "reported"
    assert allowed["request_remaining"] == "599"
    assert (denied["status"], denied["cost_status"], denied["deny_reason"]) == ("404", "denied", "model_not_found")

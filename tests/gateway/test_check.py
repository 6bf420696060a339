"""The Check decision in process: every refusal in the right shape, every allow with the right headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import orjson
import pytest

from quotagate.gateway.outcome import Allow, Deny
from quotagate.runtime import GatewayRuntime
from tests.support.gateway import apply_manifest, chat_request, edit_manifest, issue_key, manifest_text, running_runtime

PROVIDER_KEY = "sk-provider-test-123"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", PROVIDER_KEY)
    monkeypatch.setenv("QUOTAGATE_DEMO_ANTHROPIC_KEY", "sk-ant-provider")


@pytest.fixture
async def gw(env: None) -> AsyncIterator[tuple[GatewayRuntime, str]]:
    apply_manifest(manifest_text())
    cred = issue_key("demo-key")
    async with running_runtime() as rt:
        yield rt, cred


def body_of(d: Deny) -> dict:  # type: ignore[type-arg]
    return json.loads(d.body)


async def test_allow_swaps_the_credential(gw: tuple[GatewayRuntime, str]) -> None:
    rt, cred = gw
    out = await rt.gatekeeper.check(chat_request(cred, **{"x-api-key": cred}))
    assert isinstance(out, Allow)
    headers = dict(out.set_headers)
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert headers["x-quotagate-upstream"] == "openai_local"
    assert "x-api-key" in out.remove_headers and "x-api-token" in out.remove_headers
    assert "authorization" not in out.remove_headers  # overwritten, not removed
    t = out.ticket
    assert (t.org_id, t.project_id, t.key_id, t.model) == ("org-demo", "proj-demo", "demo-key", "gpt-4o-mini")
    assert t.reservation_id == t.request_id
    assert t.reserved_nanos > 0 and t.reserved_tokens > t.prompt_estimate
    assert ("x-ratelimit-limit-requests", "600") in out.response_headers


@pytest.mark.parametrize("header", ["authorization", "x-api-key", "x-api-token"])
async def test_each_credential_header_is_accepted(gw: tuple[GatewayRuntime, str], header: str) -> None:
    rt, cred = gw
    assert isinstance(await rt.gatekeeper.check(chat_request(cred, header=header)), Allow)


async def test_missing_and_wrong_credentials_are_401_and_indistinguishable(gw: tuple[GatewayRuntime, str]) -> None:
    rt, cred = gw
    missing = await rt.gatekeeper.check(chat_request(None))
    assert isinstance(missing, Deny) and missing.status == 401
    wrong = await rt.gatekeeper.check(chat_request(cred[:-2] + "xx"))
    unknown = await rt.gatekeeper.check(chat_request("nobody-key." + cred.partition(".")[2]))
    assert isinstance(wrong, Deny) and isinstance(unknown, Deny)
    assert (wrong.status, wrong.reason) == (unknown.status, unknown.reason) == (401, "invalid_credential")
    assert body_of(wrong) == body_of(unknown)
    assert body_of(wrong)["error"]["code"] == "invalid_credential"


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer garbage"},
        {"authorization": "Bearer nodot-but-long-enough-secret"},
        {"authorization": "Bearer"},
        {"authorization": "Basic ZGVtbzpzZWNyZXQ="},
        {"x-api-key": "garbage"},
        {"x-api-token": "demo-key.short"},
    ],
)
async def test_a_malformed_credential_is_invalid_not_missing(
    gw: tuple[GatewayRuntime, str], headers: dict[str, str]
) -> None:
    rt, cred = gw
    malformed = await rt.gatekeeper.check(chat_request(None, **headers))
    wrong = await rt.gatekeeper.check(chat_request(cred[:-2] + "xx"))
    assert isinstance(malformed, Deny) and isinstance(wrong, Deny)
    assert (malformed.status, malformed.reason) == (401, "invalid_credential")
    assert body_of(malformed) == body_of(wrong)  # malformed, unknown and wrong secret look the same


@pytest.mark.parametrize("header", ["x-api-key", "x-api-token"])
async def test_a_non_bearer_authorization_does_not_hide_the_gateway_key(
    gw: tuple[GatewayRuntime, str], header: str
) -> None:
    rt, cred = gw
    out = await rt.gatekeeper.check(chat_request(cred, header=header, authorization="Basic ZGVtbzpzZWNyZXQ="))
    assert isinstance(out, Allow) and out.ticket.key_id == "demo-key"
    # The Basic header is a credential header too: overwritten with the provider key, never forwarded.
    assert dict(out.set_headers)["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert header in out.remove_headers


@pytest.mark.parametrize(
    ("path", "model", "served_by"),
    [
        ("/v1/messages", "openai/gpt-4o-mini", "anthropic"),
        ("/v1/chat/completions", "anthropic/claude-sonnet-4-6", "openai"),
        ("/v1/embeddings", "anthropic/claude-haiku-4-5", "openai"),
    ],
)
async def test_a_provider_prefix_the_endpoint_does_not_serve_is_404_and_reserves_nothing(
    gw: tuple[GatewayRuntime, str], path: str, model: str, served_by: str
) -> None:
    rt, cred = gw
    body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "input": "hi"}
    out = await rt.gatekeeper.check(chat_request(cred, body, path=path))
    assert isinstance(out, Deny) and (out.status, out.reason) == (404, "model_not_found")
    message = body_of(out)["error"]["message"]
    assert f"'{model}' belongs to {model.split('/')[0]}" in message and f"serves {served_by} models only" in message
    # Nothing was counted: the next request sees the whole project window (600 RPM) minus itself.
    allowed = await rt.gatekeeper.check(chat_request(cred))
    assert isinstance(allowed, Allow) and allowed.ticket.remaining_requests == 599


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        (b"[1,2]", 400, "invalid_request"),
        ({"messages": []}, 400, "missing_model"),
        ({"model": 5, "messages": []}, 400, "invalid_model"),
        ({"model": "gpt-4o-mini", "max_tokens": "ten"}, 400, "invalid_request"),
        ({"model": "gpt-4o-mini", "max_tokens": -1}, 400, "invalid_request"),
        ({"model": "gpt-4o-mini", "stream": "yes"}, 400, "invalid_request"),
        ({"model": "gpt-9-ultra", "messages": []}, 404, "model_not_found"),
        ({"model": "anthropic/gpt-4o-mini", "messages": []}, 404, "model_not_found"),
    ],
)
async def test_bad_requests(gw: tuple[GatewayRuntime, str], body: object, status: int, code: str) -> None:
    rt, cred = gw
    out = await rt.gatekeeper.check(chat_request(cred, body))  # type: ignore[arg-type]
    assert isinstance(out, Deny)
    assert (out.status, out.reason) == (status, code)
    assert body_of(out)["error"]["code"] == code


async def test_provider_prefixed_model_is_routed_and_rewritten(gw: tuple[GatewayRuntime, str]) -> None:
    rt, cred = gw
    out = await rt.gatekeeper.check(chat_request(cred, {"model": "openai/gpt-4o-mini", "messages": []}))
    assert isinstance(out, Allow)
    assert out.ticket.model == "gpt-4o-mini" and out.ticket.rewrite_model


async def test_streaming_openai_chat_asks_for_include_usage(gw: tuple[GatewayRuntime, str]) -> None:
    rt, cred = gw
    out = await rt.gatekeeper.check(chat_request(cred, {"model": "gpt-4o-mini", "stream": True, "messages": []}))
    assert isinstance(out, Allow) and out.ticket.inject_include_usage
    asked = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    out2 = await rt.gatekeeper.check(chat_request(cred, asked))
    assert isinstance(out2, Allow) and not out2.ticket.needs_body_rewrite


async def test_anthropic_refusals_have_anthropic_shape(gw: tuple[GatewayRuntime, str]) -> None:
    rt, _ = gw
    out = await rt.gatekeeper.check(chat_request("bad-key.abcdefghijklmnopqrstu", path="/v1/messages"))
    assert isinstance(out, Deny)
    assert body_of(out)["type"] == "error" and body_of(out)["error"]["type"] == "authentication_error"


async def test_anthropic_allow_sets_x_api_key_and_version(gw: tuple[GatewayRuntime, str]) -> None:
    rt, cred = gw
    body = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    out = await rt.gatekeeper.check(chat_request(cred, body, path="/v1/messages", header="x-api-key"))
    assert isinstance(out, Allow)
    headers = dict(out.set_headers)
    assert headers["x-api-key"] == "sk-ant-provider" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" in out.remove_headers


async def test_unknown_endpoint_and_oversized_body(gw: tuple[GatewayRuntime, str]) -> None:
    rt, cred = gw
    out = await rt.gatekeeper.check(chat_request(cred, path="/v1/files"))
    assert isinstance(out, Deny) and out.status == 404
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    out = await rt.gatekeeper.check(chat_request(cred, big))
    assert isinstance(out, Deny) and (out.status, out.reason) == (413, "request_too_large")


async def test_rpm_limit_denies_with_retry_after(env: None) -> None:
    text = edit_manifest(manifest_text(), lambda d: d["organizations"][0]["quotas"][1].update(rpm_limit=3))
    apply_manifest(text)
    cred = issue_key("demo-key")
    async with running_runtime() as rt:
        outs = [await rt.gatekeeper.check(chat_request(cred)) for _ in range(4)]
    assert [type(o).__name__ for o in outs] == ["Allow", "Allow", "Allow", "Deny"]
    denied = outs[3]
    assert isinstance(denied, Deny) and denied.status == 429 and denied.reason == "rate_limit_rpm"
    headers = dict(denied.headers)
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-remaining-requests"] == "0"
    assert body_of(denied)["error"]["type"] == "rate_limit_exceeded"


async def test_model_allowlist(env: None) -> None:
    def restrict(d: dict) -> None:  # type: ignore[type-arg]
        d["organizations"][0]["quotas"].append(
            {"scope_type": "project", "project_id": "proj-demo", "rpm_limit": 5, "model_allowlist": ["gpt-5.4"]}
        )

    apply_manifest(edit_manifest(manifest_text(), restrict))
    cred = issue_key("demo-key")
    async with running_runtime() as rt:
        no = await rt.gatekeeper.check(chat_request(cred))
        yes = await rt.gatekeeper.check(chat_request(cred, {"model": "openai/gpt-5.4", "messages": []}))
    assert isinstance(no, Deny) and (no.status, no.reason) == (403, "model_not_allowed")
    assert isinstance(yes, Allow)


async def test_spend_cap_admits_only_what_fits_under_concurrency(env: None) -> None:
    """Worst-case reservations: N concurrent requests, only as many as the cap covers are admitted."""
    body = {"model": "gpt-5.4", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    raw = orjson.dumps(body)
    # worst case = len(raw) input tokens at 2.50 + 1000 output at 15.00 per 1M
    from decimal import Decimal

    worst = (Decimal(len(raw)) * Decimal("2.50") + 1000 * Decimal("15.00")) / 1_000_000
    cap = worst * 7 + worst / 2  # fits 7, not 8

    def capped(d: dict) -> None:  # type: ignore[type-arg]
        d["organizations"][0]["quotas"][2]["monthly_spend_limit"] = str(cap.quantize(Decimal("0.000000001")))

    apply_manifest(edit_manifest(manifest_text(), capped))
    cred = issue_key("demo-key")
    async with running_runtime() as rt:
        outs = await asyncio.gather(*(rt.gatekeeper.check(chat_request(cred, raw)) for _ in range(20)))
    allowed = [o for o in outs if isinstance(o, Allow)]
    denied = [o for o in outs if isinstance(o, Deny)]
    assert len(allowed) == 7
    assert {d.reason for d in denied} == {"insufficient_quota"}
    d = denied[0]
    assert d.status == 429 and body_of(d)["error"]["type"] == "insufficient_quota"
    assert ("x-should-retry", "false") in d.headers
    assert "key demo-key" in body_of(d)["error"]["message"]


async def test_denied_requests_are_recorded_with_their_reason(gw: tuple[GatewayRuntime, str]) -> None:
    rt, cred = gw
    await rt.gatekeeper.check(chat_request(None))
    await rt.gatekeeper.check(chat_request(cred, {"model": "nope", "messages": []}))
    rt.writer.flush()
    from sqlalchemy import select

    from quotagate.store.tables import UsageEvent

    with rt.app.db.read() as s:
        rows = {(e.deny_reason, e.key_id, e.status) for e in s.scalars(select(UsageEvent))}
    assert rows == {("missing_credential", None, 401), ("model_not_found", "demo-key", 404)}


async def test_ticket_carries_the_headroom_for_the_access_log(gw: tuple[GatewayRuntime, str]) -> None:
    rt, cred = gw
    out = await rt.gatekeeper.check(chat_request(cred))
    assert isinstance(out, Allow)
    assert out.ticket.remaining_requests == 599
    assert out.ticket.remaining_tokens is not None and out.ticket.remaining_tokens < 2_000_000
    from quotagate.gateway.ticket import Ticket

    assert Ticket.from_metadata(out.ticket.to_metadata()) == out.ticket

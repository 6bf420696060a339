"""End to end through the real Envoy: the official SDKs -> Envoy -> Check / metering -> the fake provider.

Every test runs twice: Check over gRPC and Check over HTTP must be indistinguishable to clients and providers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.support.envoy import PROVIDER_KEYS, GatewayStack, running_stack

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Say something about gateways."}]
EXPIRED = "2020-01-01T00:00:00Z"


def _extra_keys(doc: dict[str, Any]) -> None:
    """Keys for the refusal cases, in a project of their own under the demo organization."""
    org = doc["organizations"][0]
    keys = {
        "rpm-key": {},
        "broke-key": {},
        "mini-only-key": {"models": ["gpt-4o-mini"]},
        "suspended-key": {"status": "suspended"},
        "revoked-key": {},
        "expired-key": {"expires_at": EXPIRED},
    }
    org["projects"].append(
        {
            "project_id": "proj-edge",
            "project_slug": "edge",
            "project_name": "Edge cases",
            "clients": [
                {"client_id": f"client-{key}", "client_name": key, "api_keys": [{"key_id": key, **extra}]}
                for key, extra in keys.items()
            ],
        }
    )
    org["quotas"] += [
        {"scope_type": "key", "key_id": "rpm-key", "rpm_limit": 2},
        {"scope_type": "key", "key_id": "broke-key", "monthly_spend_limit": "0.000001", "monthly_spend_unit": "usd"},
    ]


@pytest.fixture(scope="module", params=["grpc-check", "http-check"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    """Every case over both Check transports: gRPC (the default) and HTTP (`quotagate up --check-port`)."""
    over_http = request.param == "http-check"
    with running_stack(tmp_path_factory.mktemp("front-door"), edit=_extra_keys, check_over_http=over_http) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _clear_provider_log(gw: GatewayStack) -> None:
    gw.fake.clear_requests()


def _openai_nanos(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * 150 + output_tokens * 600  # gpt-4o-mini: $0.15 / $0.60 per 1M tokens


def _anthropic_nanos(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * 3000 + output_tokens * 15000  # claude-sonnet-4-6: $3 / $15 per 1M tokens


# -- allowed


def test_a_good_key_gets_the_answer_and_its_usage_is_priced_exactly(gw: GatewayStack) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT)
    completion = raw.parse()
    assert raw.status_code == 200
    assert completion.usage is not None
    assert raw.headers["x-ratelimit-limit-requests"] == "600"
    assert raw.headers["x-request-id"].startswith("req_")  # the provider's own id passes through
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert (event.status, event.decision, event.key_id, event.model_served) == (
        200,
        "allowed",
        "demo-key",
        "gpt-4o-mini",
    )
    assert (event.input_tokens, event.output_tokens) == (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    assert event.cost_nanos == _openai_nanos(event.input_tokens, event.output_tokens)
    assert event.usage_source == "reported"


def test_the_provider_gets_its_key_and_never_the_gateway_credential(gw: GatewayStack) -> None:
    secret = gw.credential.split(".", 1)[1]
    gw.openai().chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    gw.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=32, messages=PROMPT)  # x-api-key
    httpx.post(  # X-API-Token
        gw.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": PROMPT},
        headers={"x-api-token": gw.credential},
    ).raise_for_status()
    received = gw.fake.requests()
    assert len(received) == 3
    for request in received:
        assert not any(secret in value or gw.credential in value for value in request["headers"].values())
        assert "x-api-token" not in request["headers"]
        assert "x-quotagate-upstream" not in request["headers"]
    openai_request, anthropic_request, token_request = received
    assert openai_request["headers"]["authorization"] == f"Bearer {PROVIDER_KEYS['openai']}"
    assert token_request["headers"]["authorization"] == f"Bearer {PROVIDER_KEYS['openai']}"
    assert anthropic_request["headers"]["x-api-key"] == PROVIDER_KEYS["anthropic"]
    assert "authorization" not in anthropic_request["headers"]


def test_a_stream_gets_usage_injected_and_the_event_has_the_exact_cost(gw: GatewayStack) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT, stream=True)
    chunks = list(raw.parse())
    usage = chunks[-1].usage
    assert usage is not None, "the gateway asks the provider for usage (stream_options.include_usage)"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    upstream = gw.fake.last_request()
    assert upstream["body"]["stream_options"] == {"include_usage": True}
    # Envoy drops the client's content-length once the body changed and frames the new one itself.
    assert "content-length" not in upstream["headers"]
    assert upstream["headers"]["transfer-encoding"] == "chunked"
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert event.stream is True
    assert (event.input_tokens, event.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert event.cost_nanos == _openai_nanos(usage.prompt_tokens, usage.completion_tokens)
    assert event.error is None


def test_a_client_that_asks_for_usage_itself_gets_no_rewrite(gw: GatewayStack) -> None:
    stream = gw.openai().chat.completions.create(
        model="gpt-4o-mini", messages=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    assert list(stream)[-1].usage is not None
    assert "content-length" in gw.fake.last_request()["headers"]  # the body went through untouched


def test_a_provider_prefixed_model_reaches_the_provider_bare(gw: GatewayStack) -> None:
    gw.openai().chat.completions.create(model="openai/gpt-4o-mini", messages=PROMPT)
    assert gw.fake.last_request()["body"]["model"] == "gpt-4o-mini"


def test_anthropic_messages_json_and_stream_are_metered(gw: GatewayStack) -> None:
    client = gw.anthropic()
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=64, messages=PROMPT)
    message = raw.parse()
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert (event.input_tokens, event.output_tokens) == (message.usage.input_tokens, message.usage.output_tokens)
    assert event.cost_nanos == _anthropic_nanos(event.input_tokens, event.output_tokens)

    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=PROMPT) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-quotagate-request-id"]
    event = gw.usage_event(request_id)
    assert (event.input_tokens, event.output_tokens) == (final.usage.input_tokens, final.usage.output_tokens)
    assert event.cost_nanos == _anthropic_nanos(final.usage.input_tokens, final.usage.output_tokens)
    assert event.stream is True


def test_a_prompt_of_several_mib_is_checked_and_forwarded(gw: GatewayStack) -> None:
    big = [{"role": "user", "content": "word " * (1024 * 1024)}]  # 5 MiB
    completion = gw.openai().chat.completions.create(model="gpt-4o-mini", messages=big, max_tokens=8)
    assert completion.choices
    assert len(gw.fake.last_request()["body"]["messages"][0]["content"]) == 5 * 1024 * 1024


# -- refused


@pytest.mark.parametrize("credential", ["demo-key.not-the-secret-at-all-000000", "garbage"])
def test_a_bad_key_is_401(gw: GatewayStack, credential: str) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.openai(credential).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    assert caught.value.status_code == 401
    assert gw.fake.requests() == []


def test_a_missing_key_is_401_and_recorded_under_the_id_the_client_sees(gw: GatewayStack) -> None:
    response = httpx.post(gw.openai_base_url + "/chat/completions", json={"model": "gpt-4o-mini", "messages": PROMPT})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_credential"
    assert gw.fake.requests() == []
    event = gw.usage_event(response.headers["x-quotagate-request-id"])
    assert (event.decision, event.deny_reason) == ("denied", "missing_credential")


@pytest.mark.parametrize(
    ("key_id", "reason"),
    [("suspended-key", "key_suspended"), ("revoked-key", "key_revoked"), ("expired-key", "key_expired")],
)
def test_a_suspended_revoked_or_expired_key_is_403(gw: GatewayStack, key_id: str, reason: str) -> None:
    credential = gw.issue_key(key_id)
    if key_id == "revoked-key":
        gw.set_key_status(key_id, "revoke")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai(credential).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    assert caught.value.response.headers["x-quotagate-deny-reason"] == reason
    assert gw.fake.requests() == []


def test_a_model_the_key_may_not_use_is_403(gw: GatewayStack) -> None:
    client = gw.openai(gw.issue_key("mini-only-key"))
    client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-5.4", messages=PROMPT)
    assert caught.value.code == "model_not_allowed"


def test_an_unknown_model_is_404(gw: GatewayStack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gw.openai().chat.completions.create(model="gpt-0-imaginary", messages=PROMPT)
    assert caught.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError):
        gw.anthropic().messages.create(model="claude-imaginary", max_tokens=8, messages=PROMPT)


def test_malformed_json_is_400_in_the_providers_shape(gw: GatewayStack) -> None:
    response = httpx.post(
        gw.openai_base_url + "/chat/completions",
        content=b'{"model": "gpt-4o-mini", "messages": [',
        headers={"authorization": f"Bearer {gw.credential}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert gw.fake.requests() == []


def test_a_body_over_the_limit_is_413_in_the_providers_shape(gw: GatewayStack) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"x" * (9 * 1024 * 1024) + b'"}]}'
    response = httpx.post(
        gw.openai_base_url + "/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {gw.credential}", "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_the_rpm_limit_is_429_with_retry_after_and_rate_limit_headers(gw: GatewayStack) -> None:
    client = gw.openai(gw.issue_key("rpm-key"))
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    headers = caught.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in headers
    assert len(gw.fake.requests()) == 2


def test_a_spend_cap_is_429_insufficient_quota(gw: GatewayStack) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        gw.openai(gw.issue_key("broke-key")).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"
    assert gw.fake.requests() == []


def test_a_client_cannot_pick_the_upstream_or_force_a_rewrite(gw: GatewayStack) -> None:
    client = gw.openai(default_headers={"x-quotagate-upstream": "anthropic_local", "x-quotagate-rewrite": "1"})
    client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    request = gw.fake.last_request()
    assert request["path"] == "/v1/chat/completions"
    assert "content-length" in request["headers"]  # not rewritten
    assert "x-quotagate-rewrite" not in request["headers"]


# -- streams that end badly are still charged


def test_a_client_that_hangs_up_mid_stream_is_charged_for_what_was_generated(gw: GatewayStack) -> None:
    with httpx.stream(
        "POST",
        gw.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": PROMPT, "stream": True},
        headers={
            "authorization": f"Bearer {gw.credential}",
            "x-fake-chunk-delay-ms": "50",
            "x-fake-output-tokens": "40",
        },
    ) as response:
        request_id = response.headers["x-quotagate-request-id"]
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: ") for line in seen)
    event = gw.usage_event(request_id)
    assert event.error is not None
    assert event.usage_source == "estimated"
    assert 0 < event.output_tokens < 40
    assert event.cost_nanos > 0


def test_a_provider_that_cuts_the_stream_still_gets_the_request_charged(gw: GatewayStack) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=PROMPT, stream=True, extra_headers={"x-fake-cut-after": "5"}
    )
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(raw.parse())
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert event.error is not None
    assert event.usage_source == "estimated"
    assert event.output_tokens >= 5


def _access_line(gw: GatewayStack, request_id: str) -> dict[str, Any]:
    for _ in range(100):  # Envoy flushes its access log file every 100 ms here
        for line in gw.envoy.access_log():
            if line.startswith("{") and (entry := orjson.loads(line))["request_id"] == request_id:
                return dict(entry)
        time.sleep(0.05)
    raise AssertionError(f"request {request_id} never reached the access log")


def test_the_access_log_is_json_keyed_by_the_gateway_request_id(gw: GatewayStack) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT)
    allowed = _access_line(gw, raw.headers["x-quotagate-request-id"])
    assert (allowed["status"], allowed["key"], allowed["org"], allowed["deny_reason"]) == (
        200,
        "demo-key",
        "org-demo",
        None,
    )
    assert allowed["upstream"] == "upstream_openai_local"
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.openai("demo-key.wrong-secret-0000000000000").chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    denied = _access_line(gw, caught.value.response.headers["x-quotagate-request-id"])
    assert (denied["status"], denied["deny_reason"]) == (401, "invalid_credential")

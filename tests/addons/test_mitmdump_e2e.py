"""End to end through a real mitmdump: the official SDKs -> mitmdump + the addon -> the fake provider."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from addons.quotagate_gateway import LAZY_NEEDED
from tests.addons.mitmdump import AddonStack, clean_env, mitmdump_argv, running_process
from tests.support.envoy import PROVIDER_KEYS, free_port

PROMPT = [{"role": "user", "content": "Say something about gateways."}]


@pytest.fixture
def gw(addon_stack: AddonStack) -> AddonStack:
    addon_stack.fake.clear_requests()
    return addon_stack


def _openai_nanos(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * 150 + output_tokens * 600  # gpt-4o-mini: $0.15 / $0.60 per 1M tokens


def _anthropic_nanos(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * 3000 + output_tokens * 15000  # claude-sonnet-4-6: $3 / $15 per 1M tokens


def test_an_allowed_request_reaches_the_provider_with_its_key_and_is_priced_exactly(gw: AddonStack) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT)
    completion = raw.parse()
    assert completion.usage is not None
    assert raw.headers["x-ratelimit-limit-requests"] == "600"
    (received,) = gw.fake.requests()
    assert received["headers"]["authorization"] == f"Bearer {PROVIDER_KEYS['openai']}"
    secret = gw.credential.split(".", 1)[1]
    assert not any(secret in value for value in received["headers"].values())
    assert "x-quotagate-upstream" not in received["headers"]
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert (event.status, event.decision, event.key_id, event.front_door) == (200, "allowed", "demo-key", "mitmproxy")
    assert (event.input_tokens, event.output_tokens) == (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    assert event.cost_nanos == _openai_nanos(event.input_tokens, event.output_tokens)
    assert event.usage_source == "reported"


def test_anthropic_gets_its_own_key_header(gw: AddonStack) -> None:
    raw = gw.anthropic().messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=32, messages=PROMPT)
    message = raw.parse()
    (received,) = gw.fake.requests()
    assert received["headers"]["x-api-key"] == PROVIDER_KEYS["anthropic"]
    assert "authorization" not in received["headers"]
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert (event.input_tokens, event.output_tokens) == (message.usage.input_tokens, message.usage.output_tokens)
    assert event.cost_nanos == _anthropic_nanos(event.input_tokens, event.output_tokens)


def test_bad_keys_are_401_for_both_sdks_and_never_reach_the_provider(gw: AddonStack) -> None:
    wrong = "demo-key.not-the-secret-at-all-000000"
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.openai(wrong).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    assert caught.value.response.headers["x-quotagate-deny-reason"] == "invalid_credential"
    with pytest.raises(anthropic.AuthenticationError) as anthropic_caught:
        gw.anthropic(wrong).messages.create(model="claude-sonnet-4-6", max_tokens=32, messages=PROMPT)
    assert anthropic_caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert gw.fake.requests() == []


def test_a_model_the_key_may_not_use_is_403(gw: AddonStack) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai(gw.credentials["mini-only-key"]).chat.completions.create(model="gpt-5.4", messages=PROMPT)
    assert caught.value.response.headers["x-quotagate-deny-reason"] == "model_not_allowed"
    assert gw.fake.requests() == []


def test_past_the_rate_limit_is_429_with_retry_after(gw: AddonStack) -> None:
    refused = _first_refusal(gw.openai(gw.credentials["rpm-key"]))
    assert int(refused.response.headers["retry-after"]) >= 1
    assert refused.response.headers["x-quotagate-deny-reason"] == "rate_limit_rpm"
    assert len(gw.fake.requests()) < 3


def _first_refusal(client: openai.OpenAI) -> openai.RateLimitError:
    for _ in range(3):  # 1 per minute: the second is refused unless a minute boundary falls in between
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
        except openai.RateLimitError as exc:
            return exc
    raise AssertionError("three requests in a row at 1 per minute were never refused")


def test_a_stream_gets_usage_injected_and_passes_chunk_by_chunk(gw: AddonStack) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=PROMPT,
        stream=True,
        extra_headers={"x-fake-chunks": "4", "x-fake-chunk-delay-ms": "150"},
    )
    arrivals: list[float] = []
    chunks = []
    for chunk in raw.parse():
        arrivals.append(time.monotonic())
        chunks.append(chunk)
    assert arrivals[-1] - arrivals[0] > 0.3, "chunks arrive as the provider sends them, not all at the end"
    usage = chunks[-1].usage
    assert usage is not None, "the gateway asks the provider for usage (stream_options.include_usage)"
    assert gw.fake.last_request()["body"]["stream_options"] == {"include_usage": True}
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert event.stream is True and event.error is None
    assert (event.input_tokens, event.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert event.cost_nanos == _openai_nanos(usage.prompt_tokens, usage.completion_tokens)


def test_an_anthropic_stream_is_metered(gw: AddonStack) -> None:
    with gw.anthropic().messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=PROMPT) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-quotagate-request-id"]
    event = gw.usage_event(request_id)
    assert (event.input_tokens, event.output_tokens) == (final.usage.input_tokens, final.usage.output_tokens)
    assert event.cost_nanos == _anthropic_nanos(final.usage.input_tokens, final.usage.output_tokens)
    assert event.stream is True


def test_a_stream_the_provider_cuts_is_charged_as_estimated(gw: AddonStack) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=PROMPT, stream=True, extra_headers={"x-fake-cut-after": "5"}
    )
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(raw.parse())
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert event.error is not None
    assert event.usage_source == "estimated"
    assert event.output_tokens >= 5 and event.cost_nanos > 0


def test_a_client_that_hangs_up_mid_stream_is_charged_for_what_was_generated(gw: AddonStack) -> None:
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


def test_a_refused_request_opens_no_upstream_connection(gw: AddonStack) -> None:
    """Counted in TCP accepts at the provider, not HTTP requests: mitmproxy connects lazily, after the decision."""
    gw.fake.clear_connections()
    with pytest.raises(openai.AuthenticationError):
        gw.openai("demo-key.not-the-secret-at-all-000000").chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    with pytest.raises(openai.PermissionDeniedError):
        gw.openai(gw.credentials["mini-only-key"]).chat.completions.create(model="gpt-5.4", messages=PROMPT)
    assert gw.fake.connections()["accepted"] == 0
    gw.openai().chat.completions.create(model="gpt-4o-mini", messages=PROMPT)  # the count sees the addon's
    assert gw.fake.connections()["accepted"] == 1


@pytest.mark.parametrize("strategy", [None, "eager"])  # None: the flag forgotten, mitmproxy's default (eager)
def test_mitmdump_refuses_to_run_with_eager_connections(tmp_path: Path, strategy: str | None) -> None:
    argv = mitmdump_argv(tmp_path, [("http://127.0.0.1:9", free_port())], connection_strategy=strategy)
    with running_process(argv, env=clean_env(tmp_path / "home"), log_path=tmp_path / "mitmdump.log") as mitmdump:
        assert mitmdump.process.wait(timeout=60) != 0
    assert LAZY_NEEDED in mitmdump.log()

"""The same requests through Envoy and through mitmdump + the addon: the same decisions, usage and cost."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from quotagate.store.tables import UsageEvent
from tests.addons.mitmdump import AddonStack, edge_case_keys
from tests.support.envoy import GatewayStack, running_stack

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Say something about gateways."}]
# What a usage event says about a request, apart from its id and timings.
FIGURES = (
    "status",
    "decision",
    "deny_reason",
    "key_id",
    "provider",
    "api",
    "model_requested",
    "model_served",
    "stream",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost_input",
    "cost_cached_input",
    "cost_cache_write",
    "cost_output",
    "cost_nanos",
    "unit",
    "rate_card_version",
    "reserved_tokens",
    "reserved_nanos",
)

Stack = GatewayStack | AddonStack


def _openai(stack: Stack, credential: str | None = None) -> openai.OpenAI:
    return stack.openai(credential)


def _chat(stack: Stack) -> httpx.Headers:
    return _openai(stack).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT).headers


def _chat_prefixed_with_cached_tokens(stack: Stack) -> httpx.Headers:
    return (
        _openai(stack)
        .chat.completions.with_raw_response.create(
            model="openai/gpt-4o-mini", messages=PROMPT, extra_headers={"x-fake-cached-tokens": "4"}
        )
        .headers
    )


def _chat_stream(stack: Stack) -> httpx.Headers:
    raw = _openai(stack).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT, stream=True)
    list(raw.parse())
    return raw.headers


def _responses_stream(stack: Stack) -> httpx.Headers:
    raw = _openai(stack).responses.with_raw_response.create(
        model="gpt-5.4-mini", input="Say something.", stream=True, extra_headers={"x-fake-reasoning-tokens": "7"}
    )
    list(raw.parse())
    return raw.headers


def _anthropic_stream(stack: Stack) -> httpx.Headers:
    client: anthropic.Anthropic = stack.anthropic()
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=PROMPT,
        extra_headers={"x-fake-cached-tokens": "3", "x-fake-cache-write-tokens": "2"},
    ) as stream:
        stream.get_final_message()
        return stream.response.headers


def _cut_stream(stack: Stack) -> httpx.Headers:
    raw = _openai(stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=PROMPT, stream=True, extra_headers={"x-fake-cut-after": "5"}
    )
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(raw.parse())
    return raw.headers


def _bad_key(stack: Stack) -> httpx.Headers:
    with pytest.raises(openai.AuthenticationError) as caught:
        _openai(stack, "demo-key.not-the-secret-at-all-000000").chat.completions.create(
            model="gpt-4o-mini", messages=PROMPT
        )
    return caught.value.response.headers


EXCHANGES: dict[str, Callable[[Stack], httpx.Headers]] = {
    "chat": _chat,
    "chat, provider prefix, cached tokens": _chat_prefixed_with_cached_tokens,
    "chat stream, usage injected": _chat_stream,
    "responses stream, reasoning": _responses_stream,
    "anthropic stream, cache read and write": _anthropic_stream,
    "cut stream, estimated": _cut_stream,
    "bad key": _bad_key,
}


@pytest.fixture(scope="module")
def stacks(
    tmp_path_factory: pytest.TempPathFactory, addon_stack: AddonStack
) -> Iterator[tuple[GatewayStack, AddonStack]]:
    with running_stack(tmp_path_factory.mktemp("parity"), edit=edge_case_keys) as envoy:
        yield envoy, addon_stack


def _figures(event: UsageEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in FIGURES}


@pytest.mark.parametrize("name", EXCHANGES)
def test_the_addon_records_what_envoy_records(stacks: tuple[GatewayStack, AddonStack], name: str) -> None:
    envoy, addon = stacks
    envoy_headers, addon_headers = EXCHANGES[name](envoy), EXCHANGES[name](addon)
    envoy_event = envoy.usage_event(envoy_headers["x-quotagate-request-id"])
    addon_event = addon.usage_event(addon_headers["x-quotagate-request-id"])
    assert _figures(addon_event) == _figures(envoy_event)
    assert (envoy_event.front_door, addon_event.front_door) == ("envoy", "mitmproxy")
    for header in ("x-quotagate-deny-reason", "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens"):
        assert addon_headers.get(header) == envoy_headers.get(header)


def test_a_denial_is_the_same_answer(stacks: tuple[GatewayStack, AddonStack]) -> None:
    body = {"model": "gpt-4o-mini", "messages": PROMPT}
    envoy, addon = (httpx.post(f"{s.openai_base_url}/chat/completions", json=body) for s in stacks)
    assert (addon.status_code, orjson.loads(addon.content)) == (envoy.status_code, orjson.loads(envoy.content))
    for header in ("content-type", "content-length", "x-quotagate-deny-reason"):
        assert addon.headers[header] == envoy.headers[header]
    for answer in (envoy, addon):  # each request gets its own id, under both names
        assert answer.headers["x-request-id"] == answer.headers["x-quotagate-request-id"]

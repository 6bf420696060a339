"""The official anthropic SDK against the fake provider: JSON and streaming, HTTP and TLS."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from quotagate.apis import Api
from quotagate.fake_provider.testing import FakeProvider
from quotagate.tokens import count_tokens, estimate_prompt_tokens

BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are a helpful assistant."}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Two names for a pet pelican, be brief"}]}],
}


def test_message_json_usage(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(**BODY)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    text = message.content[0]
    assert isinstance(text, anthropic.types.TextBlock)
    assert message.usage.input_tokens == estimate_prompt_tokens(Api.ANTHROPIC_MESSAGES, BODY)
    assert message.usage.output_tokens == count_tokens(text.text) == 16
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    again = anthropic_client.messages.create(**BODY)
    assert again.content == message.content


def test_cache_reads_and_writes_are_excluded_from_input(anthropic_client: anthropic.Anthropic) -> None:
    prompt = estimate_prompt_tokens(Api.ANTHROPIC_MESSAGES, BODY)
    message = anthropic_client.messages.create(
        **BODY, extra_headers={"x-fake-cached-tokens": "20", "x-fake-cache-write-tokens": "5"}
    )
    usage = message.usage
    assert usage.cache_read_input_tokens == 20
    assert usage.cache_creation_input_tokens == 5
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 5
    assert usage.input_tokens == prompt - 25  # Anthropic's input_tokens exclude cache reads and writes


def test_max_tokens_stops_the_reply(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(**{**BODY, "max_tokens": 5})
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


def test_thinking_block_from_reasoning_tokens(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        **BODY, extra_headers={"x-fake-reasoning-tokens": "6", "x-fake-output-tokens": "3"}
    )
    thinking, text = message.content
    assert isinstance(thinking, anthropic.types.ThinkingBlock)
    assert isinstance(text, anthropic.types.TextBlock)
    assert count_tokens(thinking.thinking) == 6
    assert count_tokens(text.text) == 3
    assert message.usage.output_tokens == 9  # thinking is billed as output


def test_stream_events_and_usage(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(**BODY) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert final.usage.input_tokens == estimate_prompt_tokens(Api.ANTHROPIC_MESSAGES, BODY)
    text = final.content[0]
    assert isinstance(text, anthropic.types.TextBlock)
    assert final.usage.output_tokens == count_tokens(text.text) == 16
    json_reply = anthropic_client.messages.create(**BODY)
    assert [block.text for block in json_reply.content if block.type == "text"] == [text.text]


def test_stream_with_thinking(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        **{**BODY, "max_tokens": 10}, extra_headers={"x-fake-reasoning-tokens": "4", "x-fake-chunks": "2"}
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 10


@pytest.mark.parametrize(
    ("status", "exception", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_injected_errors_raise_the_sdks_exceptions(
    anthropic_client: anthropic.Anthropic, status: int, exception: type[anthropic.APIStatusError], kind: str
) -> None:
    with pytest.raises(exception) as caught:
        anthropic_client.messages.create(**BODY, extra_headers={"x-fake-error-status": str(status)})
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["request_id"] == caught.value.request_id == caught.value.response.headers["request-id"]


def read_text(client: anthropic.Anthropic, headers: dict[str, str], into: list[str]) -> None:
    with client.messages.stream(**BODY, extra_headers=headers) as stream:
        into.extend(stream.text_stream)


def test_in_stream_overloaded_error(anthropic_client: anthropic.Anthropic) -> None:
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        read_text(anthropic_client, {"x-fake-stream-error-after": "2"}, texts)
    assert len(texts) == 2


def test_cut_stream_raises(anthropic_client: anthropic.Anthropic) -> None:
    texts: list[str] = []
    with pytest.raises((httpx.RemoteProtocolError, anthropic.APIError)):
        read_text(anthropic_client, {"x-fake-cut-after": "4"}, texts)
    assert len(texts) == 4


def read_bytes(response: httpx.Response, into: bytearray) -> None:
    for part in response.iter_bytes():
        into += part


def test_cut_after_the_last_delta_drops_only_the_terminal_events(fake: FakeProvider, http_client: httpx.Client) -> None:
    with http_client.stream(
        "POST", fake.base_url + "/v1/messages", json={**BODY, "stream": True}, headers={"x-fake-cut-after": "99"}
    ) as response:
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            read_bytes(response, received)
    assert received.count(b"event: content_block_delta") == 16
    assert b"message_delta" not in received
    assert b"message_stop" not in received


def test_models_in_anthropic_shape(anthropic_client: anthropic.Anthropic) -> None:
    ids = [model.id for model in anthropic_client.models.list()]
    assert "claude-sonnet-4-5" in ids


def test_the_provider_sees_the_callers_key(anthropic_client: anthropic.Anthropic, fake: FakeProvider) -> None:
    anthropic_client.messages.create(**BODY)
    seen = fake.last_request()
    assert seen["headers"]["x-api-key"] == "sk-ant-upstream"
    assert "authorization" not in seen["headers"]
    assert seen["headers"]["anthropic-version"]


async def test_async_client(fake: FakeProvider) -> None:
    async with httpx.AsyncClient(verify=fake.verify) as http:
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="k", http_client=http, max_retries=0)
        async with client.messages.stream(**BODY) as stream:
            final = await stream.get_final_message()
    assert final.usage.output_tokens == 16

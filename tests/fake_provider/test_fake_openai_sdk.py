"""The official openai SDK against the fake provider: every endpoint, JSON and streaming, HTTP and TLS."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import openai
import pytest

from quotagate.apis import Api
from quotagate.fake_provider.testing import FakeProvider
from quotagate.tokens import count_tokens, estimate_prompt_tokens

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "What is the capital of Mexico?"}]},
]


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": MESSAGES, **extra}


def test_chat_json_usage_is_the_tokenizers_count(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(**chat_body())
    text = reply.choices[0].message.content
    assert text
    assert reply.object == "chat.completion"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == estimate_prompt_tokens(Api.OPENAI_CHAT, chat_body())
    assert reply.usage.completion_tokens == count_tokens(text) == 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 0


def test_chat_reply_is_deterministic(openai_client: openai.OpenAI) -> None:
    first = openai_client.chat.completions.create(**chat_body())
    second = openai_client.chat.completions.create(**chat_body())
    other = openai_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Other"}])
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.id != second.id


def test_chat_stream_with_usage(openai_client: openai.OpenAI) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    chunks = list(openai_client.chat.completions.create(**body))
    assert all(chunk.usage is None for chunk in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert last.usage.prompt_tokens == estimate_prompt_tokens(Api.OPENAI_CHAT, body)
    assert last.usage.completion_tokens == count_tokens(text)
    json_reply = openai_client.chat.completions.create(**chat_body())
    assert text == json_reply.choices[0].message.content  # streaming does not change the reply


def test_chat_stream_without_usage_has_no_usage_anywhere(
    fake: FakeProvider, http_client: httpx.Client, openai_client: openai.OpenAI
) -> None:
    chunks = list(openai_client.chat.completions.create(**chat_body(stream=True)))
    assert all(chunk.usage is None for chunk in chunks)
    raw = http_client.post(fake.openai_base_url + "/chat/completions", json=chat_body(stream=True)).text
    assert '"usage"' not in raw
    assert raw.endswith("data: [DONE]\n\n")


def test_chat_max_completion_tokens_truncates(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(**chat_body(max_completion_tokens=5))
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5 == count_tokens(reply.choices[0].message.content or "")
    legacy = openai_client.chat.completions.create(**chat_body(max_tokens=3))
    assert legacy.usage is not None
    assert legacy.usage.completion_tokens == 3


def test_chat_cached_and_reasoning_tokens(openai_client: openai.OpenAI) -> None:
    headers = {"x-fake-cached-tokens": "10", "x-fake-reasoning-tokens": "7", "x-fake-output-tokens": "4"}
    reply = openai_client.chat.completions.create(**chat_body(), extra_headers=headers)
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.completion_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 10  # included in prompt_tokens, as OpenAI does
    assert usage.prompt_tokens == estimate_prompt_tokens(Api.OPENAI_CHAT, chat_body())
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert usage.completion_tokens == 11  # reasoning is part of completion tokens
    assert count_tokens(reply.choices[0].message.content or "") == 4


def test_cached_tokens_never_exceed_the_prompt(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(**chat_body(), extra_headers={"x-fake-cached-tokens": "100000"})
    assert reply.usage is not None
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == reply.usage.prompt_tokens


def test_reasoning_counts_against_the_cap(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        **chat_body(max_completion_tokens=100), extra_headers={"x-fake-reasoning-tokens": "150"}
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == ""
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 100
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 100


def test_completions_json_and_stream(openai_client: openai.OpenAI) -> None:
    prompt = "def fib(n):\n    if n <= 1:\n        return n"
    body = {"model": "babbage-002", "prompt": prompt, "max_tokens": 25}
    reply = openai_client.completions.create(model="babbage-002", prompt=prompt, max_tokens=25)
    assert reply.object == "text_completion"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_tokens(prompt) == estimate_prompt_tokens(Api.OPENAI_COMPLETIONS, body)
    assert reply.usage.completion_tokens == count_tokens(reply.choices[0].text) == 16
    chunks = list(
        openai_client.completions.create(
            model="babbage-002", prompt=prompt, max_tokens=4, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    text_chunks = [c for c in chunks if c.choices]
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in text_chunks)


def test_completions_token_array_prompt(openai_client: openai.OpenAI) -> None:
    reply = openai_client.completions.create(model="babbage-002", prompt=[1, 2, 3, 4, 5])
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 5


def test_embeddings_float_and_base64(
    openai_client: openai.OpenAI, http_client: httpx.Client, fake: FakeProvider
) -> None:
    # The SDK asks for base64 by default and decodes it.
    decoded = openai_client.embeddings.create(
        model="text-embedding-3-small", input=["How do I reset my password?", "b"]
    )
    assert [item.index for item in decoded.data] == [0, 1]
    assert len(decoded.data[0].embedding) == 1536
    assert decoded.usage.prompt_tokens == count_tokens("How do I reset my password?") + count_tokens("b") == 8
    assert decoded.usage.total_tokens == decoded.usage.prompt_tokens
    floats = openai_client.embeddings.create(
        model="text-embedding-3-small", input="How do I reset my password?", encoding_format="float", dimensions=256
    )
    vector = floats.data[0].embedding
    assert len(vector) == 256
    assert abs(sum(x * x for x in vector) - 1) < 1e-3  # a unit vector, like the real ones
    raw = http_client.post(
        fake.openai_base_url + "/embeddings",
        json={"model": "text-embedding-3-small", "input": "How do I reset my password?", "dimensions": 256,
              "encoding_format": "base64"},
    ).json()  # fmt: skip
    packed = base64.b64decode(raw["data"][0]["embedding"])
    as_floats = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert as_floats == pytest.approx(vector, abs=1e-6)


def test_embeddings_reject_bad_dimensions(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=-1)
    assert caught.value.status_code == 400


def test_responses_json(openai_client: openai.OpenAI) -> None:
    body = {"model": "gpt-5", "input": "Reply with exactly: pong", "instructions": "Be terse."}
    reply = openai_client.responses.create(**body)
    assert reply.status == "completed"
    assert reply.usage is not None
    assert reply.usage.input_tokens == estimate_prompt_tokens(Api.OPENAI_RESPONSES, body)
    assert reply.usage.output_tokens == count_tokens(reply.output_text) == 16
    assert reply.instructions == "Be terse."


def test_responses_incomplete_with_reasoning(openai_client: openai.OpenAI) -> None:
    reply = openai_client.responses.create(
        model="gpt-5", input="hi", max_output_tokens=10, extra_headers={"x-fake-reasoning-tokens": "4"}
    )
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    assert reply.usage is not None
    assert reply.usage.output_tokens == 10
    assert reply.usage.output_tokens_details.reasoning_tokens == 4
    assert count_tokens(reply.output_text) == 6


def test_responses_stream_usage_only_at_completion(openai_client: openai.OpenAI) -> None:
    body = {"model": "gpt-5", "input": [{"role": "user", "content": "hello"}]}
    events = list(openai_client.responses.create(**body, stream=True, extra_headers={"x-fake-cached-tokens": "3"}))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.input_tokens == estimate_prompt_tokens(Api.OPENAI_RESPONSES, body)
    assert completed.response.usage.input_tokens_details.cached_tokens == 3
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert completed.response.usage.output_tokens == count_tokens(text)
    assert all(getattr(e, "response", None) is None or e.response.usage is None for e in events[:-1])


def test_responses_stream_helper(openai_client: openai.OpenAI) -> None:
    # The helper needs response.completed (a capped reply ends with response.incomplete, as OpenAI's does).
    with openai_client.responses.stream(model="gpt-5", input="hi", max_output_tokens=30) as stream:
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.usage is not None
    assert final.usage.output_tokens == 16 == count_tokens(final.output_text)


def test_models(openai_client: openai.OpenAI) -> None:
    ids = [model.id for model in openai_client.models.list()]
    assert "gpt-4o" in ids


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_injected_errors_raise_the_sdks_exceptions(
    openai_client: openai.OpenAI, status: int, exception: type[openai.APIStatusError]
) -> None:
    with pytest.raises(exception) as caught:
        openai_client.chat.completions.create(**chat_body(), extra_headers={"x-fake-error-status": str(status)})
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}  # the SDK unwraps {"error": {...}}
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


def test_injected_error_on_a_stream_request_is_json(fake: FakeProvider, http_client: httpx.Client) -> None:
    response = http_client.post(
        fake.openai_base_url + "/chat/completions",
        json=chat_body(stream=True),
        headers={"x-fake-error-status": "429", "x-fake-retry-after": "2", "x-fake-error-type": "tokens"},
    )
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["type"] == "tokens"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def collect_text(stream: openai.Stream[Any], into: list[str]) -> None:
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            into.append(chunk.choices[0].delta.content)


def test_cut_stream_raises(openai_client: openai.OpenAI) -> None:
    received: list[str] = []
    stream = openai_client.chat.completions.create(
        **chat_body(stream=True, stream_options={"include_usage": True}), extra_headers={"x-fake-cut-after": "3"}
    )
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        collect_text(stream, received)
    assert len(received) == 3
    # The client recovers: the next request on the same pool works.
    assert openai_client.chat.completions.create(**chat_body()).usage is not None


def test_cut_responses_stream_raises(openai_client: openai.OpenAI) -> None:
    stream = openai_client.responses.create(
        model="gpt-5", input="hi", stream=True, extra_headers={"x-fake-cut-after": "1"}
    )
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        list(stream)


def test_in_stream_error_raises_api_error(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        **chat_body(stream=True), extra_headers={"x-fake-stream-error-after": "2"}
    )
    with pytest.raises(openai.APIError, match="server had an error"):
        list(stream)


def test_garbage_body_raises(openai_client: openai.OpenAI) -> None:
    with pytest.raises(Exception) as caught:  # the SDK lets a JSON decoding error escape
        openai_client.chat.completions.create(**chat_body(), extra_headers={"x-fake-garbage": "1"})
    assert not isinstance(caught.value, openai.APIStatusError)


def test_the_provider_sees_the_callers_credential(openai_client: openai.OpenAI, fake: FakeProvider) -> None:
    openai_client.chat.completions.create(**chat_body())
    seen = fake.last_request()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == "Bearer sk-upstream"
    assert seen["body"]["messages"] == MESSAGES


async def test_async_client_streams(fake: FakeProvider) -> None:
    async with httpx.AsyncClient(verify=fake.verify) as http:
        client = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k", http_client=http, max_retries=0)
        stream = await client.chat.completions.create(
            **chat_body(stream=True, stream_options={"include_usage": True}), extra_headers={"x-fake-chunks": "4"}
        )
        chunks = [chunk async for chunk in stream]
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 4
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16

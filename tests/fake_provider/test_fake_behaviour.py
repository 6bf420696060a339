"""Knobs (x-fake-* headers and server options), pacing, validation and the request log."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from quotagate.fake_provider import Behaviour, FakeConfig
from quotagate.fake_provider.reply import group, words
from quotagate.fake_provider.testing import FakeProvider, running_fake_provider
from quotagate.tokens import count_tokens

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
MESSAGES = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello!"}]}
STREAM_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {**CHAT, "stream": True},
    "/v1/completions": {"model": "babbage-002", "prompt": "Hello", "stream": True},
    "/v1/responses": {"model": "gpt-5", "input": "Hello", "stream": True},
    "/v1/messages": {**MESSAGES, "stream": True},
}
DELTA_MARKERS = {
    "/v1/chat/completions": b'"delta":{"content"',
    "/v1/completions": b'"text":"',
    "/v1/responses": b"event: response.output_text.delta",
    "/v1/messages": b'"type":"text_delta"',
}


@pytest.mark.parametrize("word_count", [0, 1, 2, 31, 32, 33, 200])
def test_reply_words_are_one_token_each(word_count: int) -> None:
    for seed in range(40):
        assert count_tokens("".join(words(seed, word_count))) == word_count


def test_group_keeps_the_text() -> None:
    pieces = words(3, 10)
    for chunks in (0, 1, 3, 10, 50):
        grouped = group(pieces, chunks)
        assert "".join(grouped) == "".join(pieces)
        assert len(grouped) == (len(pieces) if chunks in (0, 50) else chunks)


@pytest.mark.parametrize("path", sorted(STREAM_BODIES))
def test_chunks_header_sets_the_number_of_deltas(fake: FakeProvider, http_client: httpx.Client, path: str) -> None:
    raw = http_client.post(fake.base_url + path, json=STREAM_BODIES[path], headers={"x-fake-chunks": "3"}).content
    assert raw.count(DELTA_MARKERS[path]) == 3
    default = http_client.post(fake.base_url + path, json=STREAM_BODIES[path]).content
    assert default.count(DELTA_MARKERS[path]) == 16  # one token per delta


def _first_delta_after(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> float:
    start = time.perf_counter()
    with client.stream("POST", url, json=body, headers=headers) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                return time.perf_counter() - start
    raise AssertionError("no content delta")


def test_ttft_delay(fake: FakeProvider, http_client: httpx.Client) -> None:
    url = fake.openai_base_url + "/chat/completions"
    ttft = _first_delta_after(http_client, url, {**CHAT, "stream": True}, {"x-fake-ttft-ms": "250"})
    assert ttft >= 0.25


def test_inter_chunk_delay(fake: FakeProvider, http_client: httpx.Client) -> None:
    start = time.perf_counter()
    response = http_client.post(
        fake.openai_base_url + "/chat/completions",
        json={**CHAT, "stream": True},
        headers={"x-fake-chunks": "4", "x-fake-chunk-delay-ms": "60"},
    )
    assert response.status_code == 200
    assert time.perf_counter() - start >= 3 * 0.06  # three gaps between four deltas


def test_json_latency(fake: FakeProvider, http_client: httpx.Client) -> None:
    start = time.perf_counter()
    http_client.post(fake.openai_base_url + "/chat/completions", json=CHAT, headers={"x-fake-latency-ms": "200"})
    assert time.perf_counter() - start >= 0.2


@pytest.mark.parametrize(
    ("header", "value", "fragment"),
    [
        ("x-fake-nope", "1", "unknown header x-fake-nope"),
        ("x-fake-ttft-ms", "soon", "x-fake-ttft-ms"),
        ("x-fake-output-tokens", "-3", "must be >= 0"),
        ("x-fake-error-status", "200", "HTTP error status"),
        ("x-fake-garbage", "maybe", "true or false"),
    ],
)
def test_bad_knobs_get_a_provider_shaped_400(
    fake: FakeProvider, http_client: httpx.Client, header: str, value: str, fragment: str
) -> None:
    response = http_client.post(fake.openai_base_url + "/chat/completions", json=CHAT, headers={header: value})
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]
    anthropic = http_client.post(fake.base_url + "/v1/messages", json=MESSAGES, headers={header: value})
    assert anthropic.json()["type"] == "error"
    assert fragment in anthropic.json()["error"]["message"]


def test_custom_error_message_and_type(fake: FakeProvider, http_client: httpx.Client) -> None:
    response = http_client.post(
        fake.base_url + "/v1/messages",
        json=MESSAGES,
        headers={"x-fake-error-status": "402", "x-fake-error-message": "no credit", "x-fake-error-type": "billing"},
    )
    assert response.status_code == 402
    assert response.json()["error"] == {"type": "billing", "message": "no credit"}
    assert response.json()["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v1/chat/completions", {"messages": []}, "model"),
        ("/v1/chat/completions", {"model": "m"}, "'messages'"),
        ("/v1/chat/completions", {"model": "m", "messages": []}, "too short"),
        ("/v1/completions", {"model": "m"}, "'prompt'"),
        ("/v1/embeddings", {"model": "m", "input": ""}, "input"),
        ("/v1/responses", {"model": "m"}, "'input'"),
        ("/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": []}, "at least one message"),
    ],
)
def test_invalid_requests_get_400(
    fake: FakeProvider, http_client: httpx.Client, path: str, body: dict[str, Any], fragment: str
) -> None:
    response = http_client.post(fake.base_url + path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"]


@pytest.mark.parametrize("path", sorted(STREAM_BODIES))
def test_malformed_json_gets_400(fake: FakeProvider, http_client: httpx.Client, path: str) -> None:
    response = http_client.post(
        fake.base_url + path, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_path_and_method(fake: FakeProvider, http_client: httpx.Client) -> None:
    missing = http_client.post(fake.base_url + "/v1/nothing", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (POST /v1/nothing)"
    wrong_method = http_client.get(fake.openai_base_url + "/chat/completions")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


def test_garbage_stream(fake: FakeProvider, http_client: httpx.Client) -> None:
    response = http_client.post(
        fake.openai_base_url + "/chat/completions", json={**CHAT, "stream": True}, headers={"x-fake-garbage": "true"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"data: {not json" in response.content


def test_responses_carry_a_request_id(fake: FakeProvider, http_client: httpx.Client) -> None:
    first = http_client.post(fake.openai_base_url + "/chat/completions", json=CHAT)
    second = http_client.post(fake.openai_base_url + "/chat/completions", json={**CHAT, "stream": True})
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(value.startswith("req_") for value in ids)


def test_request_log(fake: FakeProvider, http_client: httpx.Client) -> None:
    http_client.post(
        fake.openai_base_url + "/chat/completions?trace=1", json=CHAT, headers={"authorization": "Bearer up-1"}
    )
    http_client.post(fake.base_url + "/v1/messages", content=b"not json", headers={"x-api-key": "up-2"})
    received = http_client.get(fake.base_url + "/_fake/requests").json()
    assert [item["path"] for item in received] == ["/v1/chat/completions", "/v1/messages"]
    assert received[0]["query"] == "trace=1"
    assert received[0]["headers"]["authorization"] == "Bearer up-1"
    assert received[0]["body"] == CHAT
    assert received[1]["headers"]["x-api-key"] == "up-2"
    assert received[1]["body"] == "not json"
    assert received == fake.requests()
    assert http_client.delete(fake.base_url + "/_fake/requests").status_code == 204
    assert fake.requests() == []


def test_server_defaults_and_key_check() -> None:
    config = FakeConfig(
        defaults=Behaviour(output_tokens=3, cached_tokens=2), record_limit=2, api_keys=frozenset({"good"})
    )
    with running_fake_provider(config=config) as fake, httpx.Client() as client:
        url = fake.openai_base_url + "/chat/completions"
        denied = client.post(url, json=CHAT, headers={"authorization": "Bearer bad"})
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "invalid_api_key"
        anthropic_denied = client.post(fake.base_url + "/v1/messages", json=MESSAGES)
        assert anthropic_denied.json()["error"]["type"] == "authentication_error"
        allowed = client.post(url, json=CHAT, headers={"authorization": "Bearer good"}).json()
        assert allowed["usage"]["completion_tokens"] == 3
        assert allowed["usage"]["prompt_tokens_details"]["cached_tokens"] == 2
        override = client.post(url, json=CHAT, headers={"x-api-key": "good", "x-fake-output-tokens": "5"}).json()
        assert override["usage"]["completion_tokens"] == 5
        assert len(fake.requests()) == 2  # the ring keeps the last record_limit requests

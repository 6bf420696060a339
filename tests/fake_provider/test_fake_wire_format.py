"""The fake's bytes have the shapes of the recorded provider responses (shared/fixtures/providers)."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx
import pytest

from quotagate.fake_provider.testing import FakeProvider

REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = (REPO / "tests" / "fixtures" / "providers", REPO.parent / "shared" / "fixtures" / "providers")
FIXTURES = next((path for path in _CANDIDATES if path.is_dir()), None)
pytestmark = pytest.mark.skipif(FIXTURES is None, reason="recorded provider fixtures not found")

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is the capital of Mexico?"}]}
ANTHROPIC = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}


def fixture_path(case: str, name: str) -> Path:
    assert FIXTURES is not None
    return FIXTURES / case / name


def parse_sse(text: str) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per event; ``[DONE]`` stays a string."""
    events: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def recorded_sse(case: str) -> list[tuple[str | None, Any]]:
    return parse_sse(fixture_path(case, "response.sse").read_text())


def recorded_json(case: str) -> Any:
    return json.loads(fixture_path(case, "response.json").read_text())


def post(client: httpx.Client, url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post(url, json=body, headers=headers)


def keys(value: dict[str, Any]) -> list[str]:
    return list(value)


def test_chat_stream_with_usage_matches_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = post(http_client, fake.openai_base_url + "/chat/completions", body)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    ours = parse_sse(response.text)
    theirs = recorded_sse("openai/chat-stream-include-usage-gpt-4o")
    assert ours[-1] == (None, "[DONE]") == theirs[-1]
    for index in (0, 1, -3, -2):  # role chunk, content chunk, finish chunk, usage chunk
        mine, recorded = ours[index][1], theirs[index][1]
        assert keys(mine) == keys(recorded)
        if mine["choices"]:
            assert keys(mine["choices"][0]) == keys(recorded["choices"][0])
            assert keys(mine["choices"][0]["delta"]) == keys(recorded["choices"][0]["delta"])
    usage, recorded_usage = ours[-2][1]["usage"], theirs[-2][1]["usage"]
    assert keys(usage) == keys(recorded_usage)
    assert keys(usage["prompt_tokens_details"]) == keys(recorded_usage["prompt_tokens_details"])
    assert keys(usage["completion_tokens_details"]) == keys(recorded_usage["completion_tokens_details"])
    assert ours[-2][1]["choices"] == []
    assert all(event[1]["usage"] is None for event in ours[:-2])


def test_chat_stream_without_usage_matches_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    ours = parse_sse(post(http_client, fake.openai_base_url + "/chat/completions", {**CHAT, "stream": True}).text)
    theirs = recorded_sse("openai/chat-stream-no-usage-gpt-5-nano")
    assert keys(ours[1][1]) == keys(theirs[1][1])
    assert all("usage" not in event[1] for event in ours[:-1])


def test_chat_stream_obfuscation_can_be_turned_off(fake: FakeProvider, http_client: httpx.Client) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_obfuscation": False}}
    ours = parse_sse(post(http_client, fake.openai_base_url + "/chat/completions", body).text)
    assert all("obfuscation" not in event[1] for event in ours[:-1])


def test_chat_json_matches_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    ours = post(http_client, fake.openai_base_url + "/chat/completions", CHAT).json()
    theirs = recorded_json("openai/chat-basic-gpt-5-nano")  # keys sorted by the recorder
    assert sorted(ours) == sorted(theirs)
    assert set(ours["choices"][0]) == {*theirs["choices"][0], "logprobs"}  # gpt-4o sends logprobs: null
    assert sorted(ours["choices"][0]["message"]) == sorted(theirs["choices"][0]["message"])
    assert sorted(ours["usage"]) == sorted(theirs["usage"])


def test_completions_match_recordings(fake: FakeProvider, http_client: httpx.Client) -> None:
    request = json.loads(fixture_path("openai/completions-stream-include-usage", "request.json").read_text())
    ours = parse_sse(post(http_client, fake.openai_base_url + "/completions", request).text)
    theirs = recorded_sse("openai/completions-stream-include-usage")
    assert keys(ours[0][1]) == keys(theirs[0][1])
    assert keys(ours[-2][1]) == keys(theirs[-2][1])  # the usage chunk: choices [] last
    assert ours[-2][1]["usage"]["prompt_tokens"] == theirs[-2][1]["usage"]["prompt_tokens"] == 31  # cl100k model
    assert ours[-1] == theirs[-1]
    plain = {key: value for key, value in request.items() if key not in ("stream", "stream_options")}
    reply = post(http_client, fake.openai_base_url + "/completions", plain).json()
    recorded = recorded_json("openai/completions-basic-babbage")
    assert sorted(reply) == sorted(recorded)
    assert reply["usage"] == {"prompt_tokens": 31, "completion_tokens": 16, "total_tokens": 47}


def test_embeddings_match_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    request = json.loads(fixture_path("openai/embeddings-float", "request.json").read_text())
    ours = post(http_client, fake.openai_base_url + "/embeddings", request).json()
    theirs = recorded_json("openai/embeddings-float")
    assert sorted(ours) == sorted(theirs)
    assert sorted(ours["data"][0]) == sorted(theirs["data"][0])
    assert ours["usage"] == theirs["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert len(ours["data"][0]["embedding"]) == len(theirs["data"][0]["embedding"])


def test_responses_stream_matches_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    request = json.loads(fixture_path("openai/responses-stream-basic-gpt-5.5", "request.json").read_text())
    ours = parse_sse(post(http_client, fake.openai_base_url + "/responses", request).text)
    theirs = recorded_sse("openai/responses-stream-basic-gpt-5.5")
    assert [name for name, _ in groupby(n for n, _ in ours)] == [n for n, _ in theirs]
    assert [data["sequence_number"] for _, data in ours] == list(range(len(ours)))
    recorded = {name: data for name, data in theirs}
    for name, data in ours:
        assert name == data["type"]
        assert keys(data) == keys(recorded[name]), name
    created, completed = ours[0][1]["response"], ours[-1][1]["response"]
    assert set(completed) <= set(recorded["response.completed"]["response"])
    assert created["usage"] is None
    assert keys(completed["usage"]) == keys(recorded["response.completed"]["response"]["usage"])


def test_responses_json_matches_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    request = json.loads(fixture_path("openai/responses-basic-gpt-5.5", "request.json").read_text())
    ours = post(http_client, fake.openai_base_url + "/responses", request).json()
    theirs = recorded_json("openai/responses-basic-gpt-5.5")
    assert set(ours) == set(theirs)
    assert keys(ours["usage"]) == keys(theirs["usage"])
    assert set(ours["output"][0]) <= set(theirs["output"][0])


def test_anthropic_stream_matches_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    raw = post(http_client, fake.base_url + "/v1/messages", {**ANTHROPIC, "stream": True}).text
    assert " }\n" in raw  # padded before the closing brace, as Anthropic does
    ours = parse_sse(raw)
    theirs = recorded_sse("anthropic/messages-stream-basic-sonnet-4-5")
    assert [name for name, _ in groupby(n for n, _ in ours)] == [name for name, _ in groupby(n for n, _ in theirs)]
    recorded = {name: data for name, data in theirs}
    for name, data in ours:
        assert name == data["type"]
        assert keys(data) == keys(recorded[name]), name
    start, delta = ours[0][1], ours[-2][1]
    assert keys(start["message"]) == keys(recorded["message_start"]["message"])
    assert set(start["message"]["usage"]) <= set(recorded["message_start"]["message"]["usage"])
    assert keys(delta["usage"]) == keys(recorded["message_delta"]["usage"])
    assert keys(delta["delta"]) == keys(recorded["message_delta"]["delta"])


def test_anthropic_json_matches_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    ours = post(http_client, fake.base_url + "/v1/messages", ANTHROPIC).json()
    theirs = recorded_json("anthropic/messages-basic-sonnet-4")
    assert keys(ours) == keys(theirs)
    assert keys(ours["usage"]) == keys(theirs["usage"])


def test_anthropic_thinking_stream_matches_recording(fake: FakeProvider, http_client: httpx.Client) -> None:
    response = post(
        http_client, fake.base_url + "/v1/messages", {**ANTHROPIC, "stream": True}, **{"x-fake-reasoning-tokens": "5"}
    )
    ours = parse_sse(response.text)
    theirs = recorded_sse("anthropic/messages-stream-thinking-haiku-4-5")

    def shape(events: list[tuple[str | None, Any]]) -> list[tuple[str | None, str | None]]:
        kinds = []
        for name, data in events:
            detail = data.get("delta", data.get("content_block", {})).get("type") if isinstance(data, dict) else None
            kinds.append((name, detail if name != "message_delta" else None))
        return [kind for kind, _ in groupby(kinds)]

    assert shape(ours) == shape(theirs)


@pytest.mark.parametrize(
    ("path", "case"),
    [
        ("/v1/chat/completions", "openai/error-chat-400-unsupported-parameter"),
        ("/v1/responses", "openai/error-responses-401-invalid-api-key"),
        ("/v1/messages", "anthropic/error-400-invalid-request"),
    ],
)
def test_error_bodies_match_recordings(fake: FakeProvider, http_client: httpx.Client, path: str, case: str) -> None:
    status = json.loads(fixture_path(case, "meta.json").read_text())["status"]
    response = post(http_client, fake.base_url + path, {}, **{"x-fake-error-status": str(status)})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    ours, theirs = response.json(), recorded_json(case)
    assert sorted(ours) == sorted(theirs)
    if "error" in ours and isinstance(ours["error"], dict):
        assert sorted(ours["error"]) == sorted(theirs["error"])

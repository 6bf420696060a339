"""Parser behaviour beyond the recordings: odd values, in-stream errors, merging rules, limits."""

from __future__ import annotations

import json

import pytest

from quotagate.apis import Api
from quotagate.usage import ParseResult, Usage, UsageParser, is_event_stream, parser_for
from quotagate.usage.state import TEXT_LIMIT, ParseState
from quotagate.usage.tokens import MAX_TOKENS

from ._fixtures import case


def run(api: Api, body: bytes | str, *, streaming: bool) -> ParseResult:
    parser = parser_for(api, streaming=streaming)
    parser.feed(body.encode() if isinstance(body, str) else body)
    return parser.finish()


def sse(*events: tuple[str, object]) -> bytes:
    """An SSE body; a None name means no ``event:`` line, a str payload is sent verbatim."""
    out = []
    for name, payload in events:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        out.append((f"event: {name}\n" if name else "") + f"data: {data}\n\n")
    return "".join(out).encode()


def chat_chunk(content: str | None = None, usage: object = None, *, choices: bool = True) -> dict[str, object]:
    chunk: dict[str, object] = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-x"}
    chunk["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": None}] if choices else []
    chunk["usage"] = usage
    return chunk


def chat_usage_body(usage: object) -> bytes:
    return json.dumps({"model": "gpt-x", "choices": [], "usage": usage}).encode()


# --- factory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", list(Api))
@pytest.mark.parametrize("streaming", [True, False])
def test_a_parser_for_every_api_either_way(api: Api, streaming: bool) -> None:
    parser: UsageParser = parser_for(api, streaming=streaming)
    parser.feed(b"")
    result = parser.finish()
    assert result.usage is None
    assert not result.complete
    assert not result.malformed
    assert parser.finish() is result  # idempotent


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/event-stream", True),
        ("text/event-stream; charset=utf-8", True),
        (" Text/Event-Stream ;charset=utf-8", True),
        ("application/json", False),
        ("", False),
        (None, False),
    ],
)
def test_is_event_stream(content_type: str | None, expected: bool) -> None:
    assert is_event_stream(content_type) is expected


def test_a_failed_stream_request_is_read_as_json() -> None:
    # stream:true came back as a JSON error: the caller picks the parser by the response type.
    recorded = case("anthropic/error-404-not-found-stream-request")
    assert recorded.meta["stream"] is True
    result = run(recorded.api, recorded.body, streaming=is_event_stream(str(recorded.meta["content_type"])))
    assert result.error == "not_found_error: model: invalid-model-that-does-not-exist-12345"


# --- odd values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected", "malformed"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 5}, Usage(input_tokens=10, output_tokens=5), False),
        # nulls and missing details objects are simply absent
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": None},
            Usage(input_tokens=10, output_tokens=5),
            False,
        ),
        ({"prompt_tokens": 10, "completion_tokens": None}, Usage(input_tokens=10), False),
        # an integral float is a count
        ({"prompt_tokens": 10.0, "completion_tokens": 5}, Usage(input_tokens=10, output_tokens=5), False),
        # wrong types count as absent and flag the result
        ({"prompt_tokens": "10", "completion_tokens": 5}, Usage(output_tokens=5), True),
        ({"prompt_tokens": True, "completion_tokens": 5}, Usage(output_tokens=5), True),
        ({"prompt_tokens": 1.5, "completion_tokens": 5}, Usage(output_tokens=5), True),
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": []},
            Usage(input_tokens=10, output_tokens=5),
            True,
        ),
        # never negative
        ({"prompt_tokens": -3, "completion_tokens": 5}, Usage(output_tokens=5), True),
        # cached cannot exceed prompt, reasoning cannot exceed output
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 20},
                "completion_tokens_details": {"reasoning_tokens": 9},
            },
            Usage(cached_input_tokens=10, output_tokens=5, reasoning_tokens=5),
            True,
        ),
        # absurd figures are clamped
        (
            {"prompt_tokens": 10**15, "completion_tokens": 10**30},
            Usage(input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS),
            True,
        ),
        # a usage object with no count at all cannot be billed
        ({"total_tokens": 15}, None, True),
        ({}, None, True),
        # unknown fields are fine
        (
            {"prompt_tokens": 1, "completion_tokens": 2, "cost": {"x": 1}, "prompt_tokens_details": {"new": 1}},
            Usage(input_tokens=1, output_tokens=2),
            False,
        ),
    ],
)
def test_odd_openai_usage_values(usage: dict[str, object], expected: Usage | None, malformed: bool) -> None:
    body = run(Api.OPENAI_CHAT, chat_usage_body(usage), streaming=False)
    stream = run(Api.OPENAI_CHAT, sse(("", chat_chunk(usage=usage, choices=False)), ("", "[DONE]")), streaming=True)
    for result in (body, stream):
        assert result.usage == expected
        assert result.malformed is malformed


def test_usage_of_the_wrong_type() -> None:
    result = run(Api.OPENAI_CHAT, chat_usage_body([1, 2]), streaming=False)
    assert result.usage is None
    assert result.malformed


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"42", b"null"])
def test_a_json_body_that_is_not_an_object(body: bytes) -> None:
    result = run(Api.OPENAI_CHAT, body, streaming=False)
    assert result.usage is None
    assert result.malformed


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_an_empty_json_body(body: bytes) -> None:
    result = run(Api.ANTHROPIC_MESSAGES, body, streaming=False)
    assert (result.usage, result.complete, result.malformed) == (None, False, False)


def test_a_json_body_that_is_not_json_still_yields_a_whole_usage_object() -> None:
    body = b'{"model":"gpt-x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":4,"completion_tokens":2}, "x": tru'
    result = run(Api.OPENAI_CHAT, body, streaming=False)
    assert result.usage == Usage(input_tokens=4, output_tokens=2)
    assert result.served_model == "gpt-x"
    assert result.malformed
    assert not result.complete


def test_not_json_in_an_openai_stream_is_malformed() -> None:
    result = run(Api.OPENAI_CHAT, b"data: hello\n\ndata: [DONE]\n\n", streaming=True)
    assert result.malformed
    assert result.complete


def test_non_bytes_never_raise() -> None:
    for streaming in (True, False):
        parser = parser_for(Api.OPENAI_CHAT, streaming=streaming)
        parser.feed("data: text, not bytes\n\n")  # type: ignore[arg-type]
        assert parser.finish().malformed


def test_feed_after_finish_is_ignored() -> None:
    parser = parser_for(Api.OPENAI_CHAT, streaming=True)
    parser.feed(sse(("", chat_chunk("a"))))
    first = parser.finish()
    parser.feed(sse(("", chat_chunk("b", usage={"prompt_tokens": 1, "completion_tokens": 1}, choices=False))))
    assert parser.finish() is first
    assert first.output_text == "a"


# --- OpenAI chat streams -----------------------------------------------------------------------------


def test_spaced_json_usage_is_found() -> None:
    body = (
        b'data: {"model": "gpt-x", "choices": [{"delta": {"content": "hi"}}], "usage": null}\n\n'
        b'data: {"model": "gpt-x", "choices": [], "usage" : {"prompt_tokens": 3, "completion_tokens": 1}}\n\n'
    )
    result = run(Api.OPENAI_CHAT, body, streaming=True)
    assert result.usage == Usage(input_tokens=3, output_tokens=1)
    assert result.output_text == "hi"
    assert result.complete


def test_repeated_cumulative_usage_the_last_wins_and_only_an_empty_choices_chunk_ends() -> None:
    body = sse(
        ("", chat_chunk("a", usage={"prompt_tokens": 3, "completion_tokens": 1})),
        ("", chat_chunk("b", usage={"prompt_tokens": 3, "completion_tokens": 2})),
    )
    result = run(Api.OPENAI_CHAT, body, streaming=True)
    assert result.usage == Usage(input_tokens=3, output_tokens=2)
    assert not result.complete  # no [DONE] and no usage-only chunk yet


def test_an_error_object_in_a_chat_stream() -> None:
    body = sse(
        ("", chat_chunk("Hel")),
        ("", {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}),
    )
    result = run(Api.OPENAI_CHAT, body, streaming=True)
    assert result.error == "server_error: The server had an error"
    assert result.usage is None
    assert not result.complete
    assert result.output_text == "Hel"


def test_an_error_event_in_a_chat_stream() -> None:
    result = run(Api.OPENAI_CHAT, sse(("error", {"message": "overloaded", "type": "overloaded"})), streaming=True)
    assert result.error == "overloaded: overloaded"


def test_escaped_text_is_decoded() -> None:
    raw = '{"choices":[{"delta":{"content":"a\\"b\\\\c\\u00e9\\ud83d\\ude00\\n"}}]}'
    result = run(Api.OPENAI_CHAT, f"data: {raw}\n\n", streaming=True)
    assert result.output_text == 'a"b\\c\u00e9\U0001f600\n'


def test_a_lone_surrogate_escape_keeps_its_raw_text() -> None:
    raw = '{"choices":[{"delta":{"content":"x\\ud83d"}}]}'
    result = run(Api.OPENAI_CHAT, f"data: {raw}\n\n", streaming=True)
    assert result.output_text == "x\\ud83d"
    result.output_text.encode()  # still valid for a tokenizer


def test_the_model_is_read_from_a_later_chunk_when_the_first_lacks_it() -> None:
    body = sse(("", {"choices": [{"delta": {"content": "a"}}]}), ("", chat_chunk("b")))
    assert run(Api.OPENAI_CHAT, body, streaming=True).served_model == "gpt-x"


def test_text_in_several_choices_and_tool_calls() -> None:
    chunk = {
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"content": "one"}},
            {"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}]}},
            {"index": 2, "delta": {"reasoning_content": "think"}},
        ],
    }
    assert run(Api.OPENAI_CHAT, sse(("", chunk)), streaming=True).output_text == 'onef{"a":1}think'


def test_generated_text_is_capped_but_counted() -> None:
    piece = "x" * 100_000
    body = b"".join(sse(("", chat_chunk(piece))) for _ in range(12))
    result = run(Api.OPENAI_CHAT, body, streaming=True)
    assert len(result.output_text) == TEXT_LIMIT
    assert result.output_text_chars == 1_200_000


# --- OpenAI Responses streams --------------------------------------------------------------------------


def responses_event(kind: str, **fields: object) -> tuple[str, object]:
    return kind, {"type": kind, **fields}


RESPONSES_USAGE = {
    "input_tokens": 100,
    "input_tokens_details": {"cached_tokens": 60},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 20},
}


def test_response_incomplete_has_usage_and_is_terminal() -> None:
    body = sse(
        responses_event("response.created", response={"model": "gpt-r", "usage": None}),
        responses_event("response.output_text.delta", delta="par"),
        responses_event(
            "response.incomplete", response={"model": "gpt-r", "status": "incomplete", "usage": RESPONSES_USAGE}
        ),
    )
    result = run(Api.OPENAI_RESPONSES, body, streaming=True)
    assert result.usage == Usage(input_tokens=40, cached_input_tokens=60, output_tokens=30, reasoning_tokens=20)
    assert result.complete
    assert result.error is None
    assert result.output_text == "par"


def test_response_failed_reports_its_error_and_usage() -> None:
    body = sse(
        responses_event(
            "response.failed",
            response={
                "model": "gpt-r",
                "status": "failed",
                "error": {"code": "server_error", "message": "boom"},
                "usage": RESPONSES_USAGE,
            },
        )
    )
    result = run(Api.OPENAI_RESPONSES, body, streaming=True)
    assert result.error == "server_error: boom"
    assert result.usage is not None
    assert result.complete


def test_a_responses_error_event() -> None:
    body = sse(
        responses_event("response.created", response={"model": "gpt-r"}),
        responses_event("error", code="rate_limit_exceeded", message="slow down", param=None, sequence_number=1),
    )
    result = run(Api.OPENAI_RESPONSES, body, streaming=True)
    assert result.error == "rate_limit_exceeded: slow down"
    assert not result.complete
    assert result.usage is None


def test_responses_deltas_of_every_kind_but_audio() -> None:
    body = sse(
        responses_event("response.reasoning_summary_text.delta", delta="think "),
        responses_event("response.output_text.delta", delta="say "),
        responses_event("response.audio.delta", delta="QUJDRA=="),
        responses_event("response.function_call_arguments.delta", delta="{}"),
    )
    assert run(Api.OPENAI_RESPONSES, body, streaming=True).output_text == "think say {}"


def test_an_oversized_response_completed_is_salvaged_from_its_tail() -> None:
    huge = "x" * (9 << 20)  # over the 8 MiB event limit, e.g. a generated image in the output
    body = sse(
        responses_event("response.created", response={"model": "gpt-r"}),
        responses_event(
            "response.completed",
            response={"model": "gpt-r", "output": [{"result": huge}], "usage": RESPONSES_USAGE, "metadata": {}},
        ),
    )
    parser = parser_for(Api.OPENAI_RESPONSES, streaming=True)
    for i in range(0, len(body), 1 << 16):
        parser.feed(body[i : i + (1 << 16)])
    result = parser.finish()
    assert result.dropped_events == 1
    assert result.usage == Usage(input_tokens=40, cached_input_tokens=60, output_tokens=30, reasoning_tokens=20)
    assert result.complete


# --- Anthropic streams ---------------------------------------------------------------------------------


def message_start(usage: dict[str, object]) -> tuple[str, object]:
    return "message_start", {"type": "message_start", "message": {"model": "claude-x", "usage": usage}}


def message_delta(usage: dict[str, object]) -> tuple[str, object]:
    return "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}


STOP = ("message_stop", {"type": "message_stop"})


def test_message_delta_without_input_keeps_the_message_start_figures() -> None:
    body = sse(
        message_start(
            {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 7, "output_tokens": 1}
        ),
        message_delta({"output_tokens": 42}),
        STOP,
    )
    result = run(Api.ANTHROPIC_MESSAGES, body, streaming=True)
    assert result.usage == Usage(input_tokens=10, cached_input_tokens=5, cache_write_tokens=7, output_tokens=42)


def test_the_last_figures_win_field_by_field_and_nulls_keep_earlier_ones() -> None:
    body = sse(
        message_start(
            {"input_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 1}
        ),
        message_delta(
            {"input_tokens": 30, "cache_read_input_tokens": 8, "cache_creation_input_tokens": None, "output_tokens": 5}
        ),
        message_delta({"output_tokens": 9, "output_tokens_details": {"thinking_tokens": 4}}),
        STOP,
    )
    result = run(Api.ANTHROPIC_MESSAGES, body, streaming=True)
    assert result.usage == Usage(input_tokens=30, cached_input_tokens=8, output_tokens=9, reasoning_tokens=4)


def test_cache_writes_from_the_ttl_breakdown_alone() -> None:
    body = json.dumps(
        {
            "model": "claude-x",
            "content": [],
            "usage": {
                "input_tokens": 3,
                "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 20},
                "output_tokens": 2,
            },
        }
    )
    result = run(Api.ANTHROPIC_MESSAGES, body, streaming=False)
    assert result.usage == Usage(input_tokens=3, cache_write_tokens=120, output_tokens=2)


def test_an_anthropic_error_event_after_message_start() -> None:
    # Anthropic documents this mid-stream shape (e.g. overloaded_error); no recording exists.
    body = sse(
        message_start({"input_tokens": 25, "output_tokens": 1}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        ),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    result = run(Api.ANTHROPIC_MESSAGES, body, streaming=True)
    assert result.error == "overloaded_error: Overloaded"
    assert result.usage == Usage(input_tokens=25, output_tokens=1)  # output is a lower bound here
    assert not result.complete
    assert result.output_text == "Hel"


def test_signature_and_citation_deltas_are_not_generated_text() -> None:
    body = sse(
        (
            "content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "signature_delta", "signature": "abc"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "citations_delta", "citation": {"cited_text": "quoted"}}},
        ),
        ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "mine"}}),
    )
    assert run(Api.ANTHROPIC_MESSAGES, body, streaming=True).output_text == "mine"


@pytest.mark.parametrize(
    "case_id",
    [
        "anthropic/messages-stream-web-search-cache-in-message-delta",
        "anthropic/messages-stream-thinking-tool-use-thinking-tokens-detail",
        "openai/responses-stream-cached-reasoning-web-search",
        "openai/responses-stream-tool-call-gpt-5.5",
    ],
)
def test_streams_without_event_lines_read_the_same(case_id: str) -> None:
    # A proxy that keeps only data: lines: the parsers fall back on each payload's "type".
    recorded = case(case_id)
    lines = recorded.body.split(b"\n")
    stripped = b"\n".join(line for line in lines if not line.startswith(b"event:"))
    assert run(recorded.api, stripped, streaming=True) == run(recorded.api, recorded.body, streaming=True)


# --- big JSON bodies -------------------------------------------------------------------------------------


def test_an_embeddings_body_over_the_buffer_limit_is_read_from_its_ends() -> None:
    vector = [0.0123456789] * 1536
    body = json.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(600)],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4321, "total_tokens": 4321},
        }
    ).encode()
    assert len(body) > 9 << 20
    parser = parser_for(Api.OPENAI_EMBEDDINGS, streaming=False)
    for i in range(0, len(body), 1 << 16):
        parser.feed(body[i : i + (1 << 16)])
    result = parser.finish()
    assert result.usage == Usage(input_tokens=4321)
    assert result.served_model == "text-embedding-3-small"
    assert result.complete
    assert not result.malformed


def test_many_small_deltas_are_kept_in_order_up_to_the_cap() -> None:
    state = ParseState()
    for i in range(700_000):
        state.add_text("ab" if i % 2 else "c")
    text = state.result(None).output_text
    assert len(text) == TEXT_LIMIT
    assert text == ("cab" * (TEXT_LIMIT // 3 + 1))[:TEXT_LIMIT]
    assert state.text_chars == 350_000 * 3

"""Whatever the bytes, parsers never raise, never hit their own fault guard, and keep their invariants."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotagate.apis import Api
from quotagate.usage import ParseResult, parser_for
from quotagate.usage.state import TEXT_LIMIT
from quotagate.usage.tokens import MAX_TOKENS

from ._fixtures import all_cases

API_MODES = st.tuples(st.sampled_from(list(Api)), st.booleans())


class _Faults(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def no_faults() -> Iterator[None]:
    """The parsers' catch-all logs any exception it swallows: there must be none."""
    handler = _Faults()
    logger = logging.getLogger("quotagate.usage")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, handler.records[0].getMessage()


def run_chunks(api: Api, streaming: bool, body: bytes, size: int) -> ParseResult:
    parser = parser_for(api, streaming=streaming)
    with no_faults():
        for i in range(0, len(body), size):
            parser.feed(body[i : i + size])
        result = parser.finish()
    check_invariants(result)
    return result


def check_invariants(result: ParseResult) -> None:
    if result.usage is not None:
        u = result.usage
        for figure in (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens):
            assert 0 <= figure <= MAX_TOKENS
        assert 0 <= u.reasoning_tokens <= u.output_tokens
    assert len(result.output_text) <= min(TEXT_LIMIT, result.output_text_chars)
    result.output_text.encode()  # no lone surrogates: a tokenizer can take it
    if result.error is not None:
        assert len(result.error) <= 512
    if result.served_model is not None:
        assert len(result.served_model) <= 256


@given(API_MODES, st.binary(max_size=4000), st.integers(1, 300))
def test_arbitrary_bytes_never_raise(mode: tuple[Api, bool], body: bytes, size: int) -> None:
    run_chunks(*mode, body, size)


# Pieces of real payloads, so the soup reaches the JSON and usage paths and not only the framer.
PIECES = [
    b"data: ",
    b"event: ",
    b"\n",
    b"\r\n",
    b"\n\n",
    b": ping\n",
    b"[DONE]",
    b"message_start",
    b"message_delta",
    b"message_stop",
    b"content_block_delta",
    b"content_block_start",
    b"error",
    b"response.completed",
    b"response.failed",
    b"response.output_text.delta",
    b"response.output_item.added",
    b'{"type":"message_start","message":{"model":"m","usage":',
    b'{"type":"message_delta","usage":',
    b'{"type":"response.completed","response":{"model":"m","usage":',
    b'{"type":"response.failed","response":{"error":',
    b'{"model":"m","choices":[],"usage":',
    b'{"choices":[{"delta":{"content":"',
    b'{"delta":{"type":"text_delta","text":"',
    b'{"type":"content_block_start","content_block":{"type":"tool_use","name":',
    b'{"item":{"name":',
    b'{"delta":"',
    b'{"error":{"type":"server_error","message":"x"}}',
    b'{"prompt_tokens":',
    b'{"input_tokens":',
    b'"prompt_tokens_details":{"cached_tokens":',
    b'"output_tokens_details":',
    b'"cache_creation":{"ephemeral_5m_input_tokens":',
    b'"usage":{',
    b'"usage":null',
    b'"model":',
    b'"name":',
    b'"text":"',
    b"12",
    b"-5",
    b"1e400",
    b"99999999999999999999999",
    b"1.5",
    b"true",
    b"null",
    b"[]",
    b"{}",
    b'"x"',
    b"\\ud83d",
    b'\\"',
    b"\xc3\xa9",
    b"\xff",
    b",",
    b":",
    b"}",
    b"]",
    b"}}",
    b'"',
]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(API_MODES, st.lists(st.sampled_from(PIECES), max_size=80), st.integers(1, 64))
def test_payload_soup_never_raises(mode: tuple[Api, bool], pieces: list[bytes], size: int) -> None:
    run_chunks(*mode, b"".join(pieces), size)


@settings(deadline=None)  # a 77 KB recording fed in 1-byte chunks takes a few hundred ms
@given(
    st.sampled_from(all_cases()),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.binary(max_size=8)), min_size=1, max_size=6),
    st.integers(1, 512),
)
def test_mutated_recordings_never_raise(case: object, edits: list[tuple[int, bytes]], size: int) -> None:
    from ._fixtures import Case

    assert isinstance(case, Case)
    body = bytearray(case.body)
    for position, replacement in edits:
        at = position % (len(body) + 1)
        body[at : at + len(replacement)] = replacement
    run_chunks(case.api, case.streaming, bytes(body), size)


@given(st.sampled_from([c for c in all_cases() if c.streaming]), st.lists(st.integers(0, 1 << 20), max_size=10))
def test_any_chunking_of_a_recording_gives_the_same_result(case: object, cuts: list[int]) -> None:
    from ._fixtures import Case

    assert isinstance(case, Case)
    body = case.body
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    parser = parser_for(case.api, streaming=True)
    whole = parser_for(case.api, streaming=True)
    whole.feed(body)
    for chunk in chunks:
        parser.feed(chunk)
    assert parser.finish() == whole.finish()

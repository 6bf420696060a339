"""However a recorded body is chunked, re-terminated or cut, the parsers agree with the whole-body parse.

Every 2-way split and every cut point is tried for bodies up to ``EXHAUSTIVE_BYTES``; for the two larger
recordings (77 KB and 31 KB, a few hundred microseconds per parse) the default run tries every point in
their first and last few KiB, where usage and terminal events sit, plus a stride through the middle;
``QUOTAGATE_SOAK=1`` tries every point of every body.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest

from quotagate.apis import Api
from quotagate.usage import ParseResult, parser_for

from ._expected import EXPECTED
from ._fixtures import Case, all_cases, stream_cases

EXHAUSTIVE_BYTES = 16 << 10
EDGE = 2 << 10
STRIDE = 101
SOAK = os.environ.get("QUOTAGATE_SOAK") == "1"


def positions(body: bytes) -> range | list[int]:
    n = len(body)
    if SOAK or n <= EXHAUSTIVE_BYTES:
        return range(n + 1)
    return sorted({*range(EDGE), *range(n - EDGE, n + 1), *range(EDGE, n - EDGE, STRIDE)})


def parse_chunks(case: Case, chunks: Iterable[bytes]) -> ParseResult:
    parser = parser_for(case.api, streaming=case.streaming)
    for chunk in chunks:
        parser.feed(chunk)
    return parser.finish()


def whole(case: Case) -> ParseResult:
    return parse_chunks(case, [case.body])


def terminal_end(case: Case) -> int:
    """Offset just past the terminal event's data (before its line end), found from the recording."""
    body = case.body
    if case.api is Api.ANTHROPIC_MESSAGES:
        marker = b'data: {"type":"message_stop"'
    elif case.api is Api.OPENAI_RESPONSES:
        marker = b'data: {"type":"response.completed"'
    elif b'"usage":{"prompt_tokens"' in body:  # include_usage: the usage chunk is the last one
        start = body.index(b'"usage":{"prompt_tokens"')
        return body.index(b"\n", start)
    else:
        marker = b"data: [DONE]"
    start = body.index(marker)
    return body.index(b"\n", start)


ALL = pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
STREAMS = pytest.mark.parametrize("case", stream_cases(), ids=lambda c: c.id)


@ALL
def test_every_two_way_split_gives_the_same_result(case: Case) -> None:
    expected = whole(case)
    for k in positions(case.body):
        assert parse_chunks(case, [case.body[:k], case.body[k:]]) == expected, f"split at {k}"


@ALL
def test_one_byte_chunks_give_the_same_result(case: Case) -> None:
    body = case.body
    assert parse_chunks(case, (body[i : i + 1] for i in range(len(body)))) == whole(case)


@STREAMS
@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_other_line_ends_give_the_same_result(case: Case, line_end: bytes) -> None:
    # JSON strings cannot hold a raw LF, so every LF in a recording is a line end.
    body = case.body.replace(b"\n", line_end)
    converted = Case(case.id, case.api, case.streaming, case.status, body, case.meta)
    expected = whole(case)
    assert whole(converted) == expected
    assert parse_chunks(converted, (body[i : i + 1] for i in range(len(body)))) == expected
    # Splits at and around every line end, including between a CR and its LF.
    ends = [i for i, byte in enumerate(body) if byte == line_end[0]]
    for k in sorted({k for i in ends for k in (i, i + 1, i + 2)}):
        assert parse_chunks(converted, [body[:k], body[k:]]) == expected, f"split at {k}"


@STREAMS
def test_a_cut_stream_is_incomplete_until_its_terminal_event(case: Case) -> None:
    end = terminal_end(case)
    full_text = whole(case).output_text
    for k in positions(case.body):
        result = parse_chunks(case, [case.body[:k]])
        assert result.complete is (k >= end), f"cut at {k}"
        assert not result.malformed, f"cut at {k}: a cut is not the provider's fault"
        assert full_text.startswith(result.output_text), f"cut at {k}: the text generated so far"
        if k >= end:
            assert result.usage == EXPECTED[case.id].usage


@pytest.mark.parametrize("case", [c for c in all_cases() if not c.streaming], ids=lambda c: c.id)
def test_a_cut_json_body_is_incomplete(case: Case) -> None:
    last_brace = case.body.rindex(b"}")
    for k in positions(case.body):
        result = parse_chunks(case, [case.body[:k]])
        assert result.complete is (k > last_brace), f"cut at {k}"

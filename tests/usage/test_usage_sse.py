"""The SSE framer on its own: the WHATWG line rules, chunk boundaries anywhere, and bounded memory."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotagate.usage.sse import SseDecoder, SseEvent


def frame(chunks: Iterable[bytes], **limits: int) -> tuple[list[SseEvent], SseDecoder]:
    decoder = SseDecoder(**limits)
    events: list[SseEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.finish()
    return events, decoder


def events_of(body: bytes) -> list[SseEvent]:
    return frame([body])[0]


def test_events_with_and_without_names() -> None:
    body = b'event: message_start\ndata: {"a":1}\n\ndata: {"b":2}\n\n'
    assert events_of(body) == [SseEvent("message_start", '{"a":1}'), SseEvent("", '{"b":2}')]


def test_the_event_name_does_not_leak_into_the_next_event() -> None:
    assert events_of(b"event: ping\n\ndata: x\n\n") == [SseEvent("", "x")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert events_of(b'data: {\ndata:  "a": 1\ndata: }\n\n') == [SseEvent("", '{\n "a": 1\n}')]


def test_comments_keep_alives_and_blank_runs_are_not_events() -> None:
    body = b": keep-alive\n\n\n\n:\ndata: x\n: inside an event\n\n: trailing\n\n"
    assert events_of(body) == [SseEvent("", "x")]


def test_field_parsing_rules() -> None:
    # One optional space after the colon; a line with no colon is a field with an empty value;
    # id, retry and unknown fields are ignored.
    body = b"data:no-space\ndata:  two-spaces\ndata\nid: 7\nretry: 10\nfoo: bar\n\n"
    assert events_of(body) == [SseEvent("", "no-space\n two-spaces\n")]


def test_an_empty_data_field_still_makes_an_event() -> None:
    assert events_of(b"data:\n\n") == [SseEvent("", "")]


def test_a_leading_byte_order_mark_is_ignored() -> None:
    assert events_of(b"\xef\xbb\xbfdata: x\n\n") == [SseEvent("", "x")]
    assert frame([b"\xef", b"\xbb", b"\xbfdata: x\n\n"])[0] == [SseEvent("", "x")]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_line_ending(line_end: bytes) -> None:
    body = b"event: e\ndata: a\ndata: b\n\ndata: [DONE]\n\n".replace(b"\n", line_end)
    assert events_of(body) == [SseEvent("e", "a\nb"), SseEvent("", "[DONE]")]


def test_mixed_line_endings() -> None:
    assert events_of(b"data: a\r\n\rdata: b\n\r\ndata: c\r\r") == [
        SseEvent("", "a"),
        SseEvent("", "b"),
        SseEvent("", "c"),
    ]


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    # Were the LF taken for a second line end, "a" and "b" would be two events.
    assert frame([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])[0] == [SseEvent("", "a\nb")]


def test_lone_cr_at_a_chunk_end_followed_by_more_text() -> None:
    assert frame([b"data: a\r", b"data: b\r\r"])[0] == [SseEvent("", "a\nb")]


def test_a_split_inside_a_multibyte_character() -> None:
    body = 'data: {"text":"h\u00e9\u20ac\U0001f600"}\n\n'.encode()
    for k in range(len(body) + 1):
        assert frame([body[:k], body[k:]])[0] == [SseEvent("", '{"text":"h\u00e9\u20ac\U0001f600"}')]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert events_of(b"data: \xff\xfe\n\n") == [SseEvent("", "\ufffd\ufffd")]


def test_the_open_event_is_flushed_at_end_of_stream() -> None:
    assert events_of(b"data: [DONE]") == [SseEvent("", "[DONE]")]
    assert events_of(b"data: [DONE]\n") == [SseEvent("", "[DONE]")]
    assert events_of(b"event: message_stop\ndata: {}") == [SseEvent("message_stop", "{}")]
    assert events_of(b"event: message_stop\n") == []  # a name and no data is no event


def test_finish_is_final() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a") == []
    assert decoder.finish() == [SseEvent("", "a")]
    assert decoder.finish() == []
    assert decoder.feed(b"\n\ndata: b\n\n") == []


def test_bytearray_and_memoryview_chunks() -> None:
    decoder = SseDecoder()
    assert decoder.feed(bytearray(b"data: a\n\n")) == [SseEvent("", "a")]
    assert decoder.feed(memoryview(b"data: b\n\n")) == [SseEvent("", "b")]


def test_an_oversized_event_is_dropped_counted_and_its_tail_kept() -> None:
    big = b'{"output":"' + b"x" * 5000 + b'","usage":{"input_tokens":3}}'
    body = b"data: small\n\nevent: response.completed\ndata: " + big + b"\n\ndata: after\n\n"
    events, decoder = frame([body], max_event_bytes=1000, tail_bytes=100)
    assert decoder.dropped == 1
    assert events[0] == SseEvent("", "small")
    assert events[2] == SseEvent("", "after")
    truncated = events[1]
    assert truncated.truncated
    assert truncated.event == "response.completed"
    assert len(truncated.data) <= 100
    assert truncated.data.endswith('"usage":{"input_tokens":3}}')


def test_an_oversized_event_of_many_data_lines() -> None:
    body = b"".join(b"data: %d\n" % i for i in range(1000)) + b"\ndata: next\n\n"
    events, decoder = frame([body], max_event_bytes=500, tail_bytes=50)
    assert decoder.dropped == 1
    assert events[0].truncated
    assert events[0].data.endswith("998\n999")
    assert events[1] == SseEvent("", "next")


def test_memory_stays_bounded_for_an_endless_line() -> None:
    decoder = SseDecoder(max_event_bytes=1 << 16, tail_bytes=1 << 10)
    assert decoder.feed(b"data: ") == []
    for _ in range(2000):  # 32 MB of one line, never terminated
        assert decoder.feed(b"y" * (16 << 10)) == []
        assert len(decoder._pending) <= 1 << 16
        assert decoder._overflow is None or len(decoder._overflow) <= 2 << 10
    events = decoder.finish()
    assert decoder.dropped == 1
    assert events == [SseEvent("", "y" * (1 << 10), truncated=True)]


def test_an_oversized_comment_line_is_skipped_without_dropping_an_event() -> None:
    body = b": " + b"z" * 5000 + b"\ndata: x\n\n"
    events, decoder = frame([body[i : i + 64] for i in range(0, len(body), 64)], max_event_bytes=1000)
    assert events == [SseEvent("", "x")]
    assert decoder.dropped == 0


SSE_PIECES = st.sampled_from(
    [b"data:", b"data: ", b"event: ", b"id: 1", b":", b"x", b"{}", b"[DONE]", b"\n", b"\r", b"\r\n", b"\xc3", b"\xa9"]
)


@given(st.lists(SSE_PIECES, max_size=60), st.lists(st.integers(0, 400), max_size=8))
def test_any_chunking_gives_the_same_events(pieces: list[bytes], cuts: list[int]) -> None:
    body = b"".join(pieces)
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert frame(chunks)[0] == events_of(body)


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_arbitrary_bytes_never_raise(body: bytes, size: int) -> None:
    events, _ = frame([body[i : i + size] for i in range(0, len(body), size)], max_event_bytes=256)
    assert all(isinstance(e.data, str) for e in events)


def test_a_line_overflowing_an_event_near_the_limit_drops_the_event() -> None:
    # Two lines fit (990 bytes buffered); the third, arriving byte by byte, overflows mid-line.
    body = b"data: " + b"a" * 490 + b"\ndata: " + b"a" * 498 + b"\ndata: " + b"b" * 50 + b"\n\ndata: next\n\n"
    events, decoder = frame([body[i : i + 1] for i in range(len(body))], max_event_bytes=1000)
    assert decoder.dropped == 1
    assert events[0].truncated
    assert events[0].data.endswith("a\n" + "b" * 50)
    assert events[1] == SseEvent("", "next")


def test_a_field_line_overflowing_an_event_drops_the_event() -> None:
    body = b"data: " + b"a" * 990 + b"\nid: " + b"1" * 20 + b"\n\ndata: next\n\n"
    events, decoder = frame([body[i : i + 1] for i in range(len(body))], max_event_bytes=1000)
    assert decoder.dropped == 1
    assert events[0].truncated
    assert events[1] == SseEvent("", "next")
